"""The kernels of an RL run: sandboxed unless the recipe says otherwise (the policy's code is untrusted)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nbagent_train.config.rl import RLConfig
from nbagent_train.rl.agent import build_agent
from tests.rollout.envs import load_environment


@dataclass
class _Endpoint:
    base_url: str = "http://127.0.0.1:9/v1"
    model_name: str = "policy"


@pytest.mark.parametrize(
    ("agent", "sandbox", "network"),
    [({}, True, False), ({"allow_network": True}, True, True), ({"sandbox": False}, None, None)],
)
def test_recipe_kernels_are_sandboxed_by_default(
    agent: dict[str, bool], sandbox: bool | None, network: bool | None
) -> None:
    config = RLConfig.model_validate({"model": "m", "agent": agent})
    built = build_agent(config, load_environment(n=1), _Endpoint())  # type: ignore[arg-type]
    kernel = built.kernel_config
    assert (kernel.sandbox if kernel else None) == sandbox
    assert (kernel.allow_network if kernel else None) == network
