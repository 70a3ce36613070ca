"""Finding environments: the registry, entry points, module paths, and the protocol check."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from nbagent.environments import (
    ENTRY_POINT_GROUP,
    Environment,
    EnvironmentNotFoundError,
    SimpleEnvironment,
    available_environments,
    load_environment,
    register_environment,
)
from nbagent.errors import ConfigError
from nbagent.trajectory import TaskSpec
from nbagent_environments.math import MathEnvironment
from nbagent_environments.qa import QAEnvironment

TASKS = [TaskSpec(id=f"t{i}", prompt=f"What is {i} + 1?", references=[str(i + 1)]) for i in range(20)]


def test_installed_entry_points_load_the_shipped_environments() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"qa", "math"} <= names
    assert {"qa", "math"} <= set(available_environments())
    qa = load_environment("qa")
    math = load_environment("math")
    assert isinstance(qa, QAEnvironment)
    assert qa.name == "qa"
    assert isinstance(math, MathEnvironment)
    assert math.name == "math"
    assert isinstance(qa, Environment)
    assert isinstance(math, Environment)


def test_kwargs_reach_the_factory(fixtures_dir: Path) -> None:
    env = load_environment("qa", dataset=str(fixtures_dir / "nq_test.jsonl"), search="none")
    assert {t.metadata["dataset"] for t in env.tasks("all")} == {"nq_test"}
    assert env.tools() == []


def test_register_and_load_by_name() -> None:
    @register_environment("unit-arith", replace=True)
    def make(offset: int = 0) -> SimpleEnvironment:
        return SimpleEnvironment("unit-arith", TASKS, lambda answer, task: answer == task.references[0])

    assert "unit-arith" in available_environments()
    env = load_environment("unit-arith", offset=1)
    assert env.name == "unit-arith"
    assert len(env.tasks("all")) == 20


def test_registering_a_taken_name_needs_replace() -> None:
    register_environment("unit-taken", lambda: SimpleEnvironment("a", TASKS, lambda a, t: True), replace=True)
    with pytest.raises(ConfigError, match="already registered"):
        register_environment("unit-taken", lambda: SimpleEnvironment("b", TASKS, lambda a, t: True))


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(EnvironmentNotFoundError) as info:
        load_environment("no-such-env")
    message = str(info.value)
    assert "no-such-env" in message
    assert "math" in message
    assert "qa" in message


def test_module_path_with_load_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "my_env_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from nbagent.environments import SimpleEnvironment
            from nbagent.trajectory import TaskSpec

            def load_environment(n: int = 3):
                tasks = [TaskSpec(id=str(i), prompt=f"Say {i}", references=[str(i)]) for i in range(n)]
                return SimpleEnvironment("mine", tasks, lambda answer, task: answer == task.references[0])

            def other():
                return load_environment(n=5)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert len(load_environment("my_env_pkg", n=4).tasks("all")) == 4
        assert len(load_environment("my_env_pkg:other").tasks("all")) == 5
        with pytest.raises(EnvironmentNotFoundError, match="no callable 'missing'"):
            load_environment("my_env_pkg:missing")
        with pytest.raises(EnvironmentNotFoundError, match="cannot import"):
            load_environment("not_a_module_anywhere.sub")
    finally:
        sys.modules.pop("my_env_pkg", None)


def test_a_factory_returning_something_else_is_refused() -> None:
    register_environment("unit-broken", lambda: object(), replace=True)
    with pytest.raises(ConfigError, match="lacks the Environment interface"):
        load_environment("unit-broken")
