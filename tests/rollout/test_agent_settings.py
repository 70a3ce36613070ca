"""Which agent settings win: one rule (`agent_for_environment`) for `collect`, the RL loop and its eval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbagent.environments import SimpleEnvironment
from nbagent.models import ScriptedModel
from nbagent.rollout import agent_for_environment
from nbagent.tools import tool
from nbagent.trajectory import TaskSpec
from nbagent_train.config.rl import RLConfig
from nbagent_train.rl.agent import build_agent


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return key


@tool
def convert(value: float) -> float:
    """Convert a value."""
    return value


@tool
def note(text: str) -> str:
    """Keep a note."""
    return text


def _env() -> SimpleEnvironment:
    return SimpleEnvironment(
        "wishes",
        [TaskSpec(id="t", prompt="What is 1 + 1?", references=["2"])],
        lambda answer, task: 1.0,
        tools=[lookup],
        agent_overrides={"max_steps": 2, "observation_chars": 900, "tools": [convert]},
    )


def test_the_environment_overrides_defaults_and_explicit_choices_override_the_environment() -> None:
    model = ScriptedModel(["x"])
    agent = agent_for_environment(_env(), model, max_steps=5, cell_timeout_s=7.0, tools=[note])
    assert (agent.max_steps, agent.cell_timeout_s, agent.observation_chars) == (2, 7.0, 900)
    assert sorted(agent.toolset.names) == ["convert", "lookup", "note"]
    chosen = agent_for_environment(_env(), model, chosen={"max_steps": 9}, max_steps=5)
    assert (chosen.max_steps, chosen.observation_chars) == (9, 900)


@dataclass
class _Endpoint:
    base_url: str = "http://127.0.0.1:9/v1"
    model_name: str = "policy"


def test_a_recipe_agent_takes_an_environment_that_overrides_tools() -> None:
    built = build_agent(RLConfig.model_validate({"model": "m"}), _env(), _Endpoint())  # type: ignore[arg-type]
    assert sorted(built.toolset.names) == ["convert", "lookup"]
    assert built.max_steps == 2  # the environment's wish beats the recipe's default
    explicit = RLConfig.model_validate({"model": "m", "agent": {"max_steps": 6}})
    assert build_agent(explicit, _env(), _Endpoint()).max_steps == 6  # type: ignore[arg-type]


def test_collect_flags_set_explicitly_beat_the_environment(fake_openai_server: Any) -> None:
    from nbagent.cli.collect import EndpointAgentFactory

    url = fake_openai_server.base_url
    assert EndpointAgentFactory(base_url=url)(_env()).max_steps == 2  # the environment's wish
    explicit = EndpointAgentFactory(base_url=url, max_steps=7, cell_timeout=5.0)(_env())
    assert (explicit.max_steps, explicit.cell_timeout_s, explicit.observation_chars) == (7, 5.0, 900)
    assert sorted(explicit.toolset.names) == ["convert", "lookup"]
