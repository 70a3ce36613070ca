"""docs/training.md: the worked example runs and prints what the page shows; the shipped configs parse."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "training.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


def test_worked_example_prints_what_the_page_shows() -> None:
    (example,) = [b for b in _blocks("python") if "build_samples" in b]
    shown = next(b for b in _blocks("text") if b.startswith("per_step"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(PAGE), "exec"), {})
    assert out.getvalue() == shown


def test_recipe_on_the_page_is_a_valid_config(tmp_path: Path) -> None:
    from nbagent_train.config.loading import load_config

    (recipe,) = [b for b in _blocks("yaml") if "reinforce_pp" in b]
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    config = load_config(path)
    assert config.advantage.estimator == "reinforce_pp"
    assert config.loss.clip_high == 0.25


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_load_with_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert config.mixed_precision == "bf16"
    assert path.name in PAGE.read_text()
