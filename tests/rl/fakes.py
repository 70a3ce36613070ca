"""Test doubles for the loop's logic tests: a trainer backend that records what it is asked, and a policy
endpoint over the fake OpenAI-compatible server (real HTTP). The real backend and vLLM are tested in
test_vllm_loop.py."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbagent_train.backends import ExportResult
from nbagent_train.backends.base import TRAINER_STATE_FILE
from nbagent_train.config.base import TrainConfig
from nbagent_train.objective.samples import Sample
from tests.fixtures.fake_openai import FakeOpenAIServer, first_user_text


class RecordingBackend:
    """A `TrainerBackend` without a model: counts steps, writes small folders for exports and checkpoints."""

    def __init__(self, config: TrainConfig, *, step_s: float = 0.0, main: bool = True) -> None:
        self.config = config
        self.tokenizer: Any = None
        self.step_s = step_s
        self.main = main
        self.steps: list[list[Sample]] = []
        self.exports: list[Path] = []
        self.saved: list[Path] = []
        self.loaded: list[Path] = []
        self.closed = False
        self._global_step = 0

    @property
    def global_step(self) -> int:
        return self._global_step

    @property
    def is_main_process(self) -> bool:
        return self.main

    @property
    def is_lora(self) -> bool:
        return True

    def setup(self, total_steps: int | None = None) -> None:
        self.total_steps = total_steps

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        assert samples
        assert all(len(s.advantages) == len(s.segments) for s in samples)
        time.sleep(self.step_s)
        self.steps.append(list(samples))
        self._global_step += 1
        return {"loss": 0.1 * self._global_step, "tokens": float(sum(s.num_tokens for s in samples))}

    def score(self, samples: Sequence[Sample]) -> list[list[float]]:
        return [[0.0] * len(s.completion_ids) for s in samples]

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        state = {"global_step": self._global_step, "extra": extra or {}}
        (path / TRAINER_STATE_FILE).write_text(json.dumps(state))
        self.saved.append(path)

    def load(self, path: Path) -> dict[str, Any]:
        state = json.loads((path / TRAINER_STATE_FILE).read_text())
        self._global_step = int(state["global_step"])
        self.loaded.append(path)
        return dict(state["extra"])

    def export(self, path: Path, *, merged: bool = False) -> ExportResult:
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights.json").write_text(json.dumps({"global_step": self._global_step}))
        self.exports.append(path)
        return ExportResult(path=path, kind="lora", base_model="fake")

    def barrier(self) -> None:
        """One process: nothing to wait for."""

    def close(self) -> None:
        self.closed = True


class FakeEndpoint:
    """A `PolicyEndpoint` on the fake server: publishing switches requests to the adapter's name."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.published: list[Path] = []
        self._name = "base"

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def model_name(self) -> str:
        return self._name

    async def publish(self, export: ExportResult) -> None:
        self.published.append(export.path)
        self._name = "policy"

    async def serve_base(self) -> None:
        self._name = "base"

    async def aclose(self) -> None:
        pass


def expression_of(body: dict[str, Any]) -> str:
    """The Python expression of the arithmetic question in a chat request ("0" for the kinds it cannot
    write as one)."""
    question = first_user_text(body).split("What is ", 1)[-1].split("?")[0]
    expression = question.replace(" to the power of ", "**").replace(" divided by ", "/")
    return "0" if "sum" in expression else expression


def submission(answer: str) -> str:
    return f"```python\nsubmit_final_answer({answer})\n```\n"


def arithmetic_responder(seed: int = 0) -> Any:
    """Submits the right answer of an arithmetic question about half of the time (rewards vary in a group)."""
    rng = random.Random(seed)

    def respond(body: dict[str, Any]) -> str:
        return submission(expression_of(body) if rng.random() < 0.5 else "0")

    return respond
