"""`nbagent-train fit` end to end (real subprocess, real training on the tiny model) and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nbagent_train.cli.options import FIT_FLAGS, resolve_config
from nbagent_train.config.base import TrainConfig
from nbagent_train.config.loading import load_config
from nbagent_train.errors import TrainConfigError
from nbagent_train.runs.metrics import read_metrics
from tests.train.runs import run_cli, write_trajectories


@pytest.mark.train
@pytest.mark.slow
def test_fit_turns_trajectory_files_into_servable_weights(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    a = write_trajectories(tmp_path / "a.jsonl", tiny_tokenizer, groups=1)
    b = write_trajectories(tmp_path / "b.jsonl", tiny_tokenizer, groups=1, offset=1)
    out = tmp_path / "run"
    proc = run_cli(
        "fit", "--trajectories", str(a), str(b), "--model", str(tiny_model_dir), "--out", str(out),
        "--lora-rank", "4", "--algo", "reinforce_pp", "--batch-groups", "1", "--epochs", "2",
        "--set", "optim.learning_rate=0.005", "--set", "loss.kl_coef=0.01", "--export-merged",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Sample build summary" in proc.stdout
    assert "iter 4/4" in proc.stdout

    records = read_metrics(out)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "kl", "clip_frac", "reward_mean", "advantage_mean", "tokens_per_s", "entropy", "lr"):
        assert all(key in r for r in records), key
    assert any(r["kl"] > 0 for r in records)
    assert list((out / "tb").glob("events.out.tfevents.*"))

    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["trajectories"] == 8
    assert summary["samples"] == 16
    config = load_config(out / "config.yaml")
    assert config.advantage.estimator == "reinforce_pp"
    assert config.lora.rank == 4
    assert [Path(p).name for p in config.trajectories] == ["a.jsonl", "b.jsonl"]

    result = json.loads((out / "result.json").read_text())
    assert [e["kind"] for e in result["exports"]] == ["lora", "full"]
    assert (out / "final" / "adapter_model.safetensors").is_file()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out / "final"))
    AutoModelForCausalLM.from_pretrained(out / "final-merged")

    again = run_cli("fit", "-t", str(a), "--model", str(tiny_model_dir), "--out", str(out))
    assert again.returncode == 2
    assert "--resume" in again.stderr


@pytest.mark.train
@pytest.mark.slow
def test_fit_in_bfloat16(tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    """bf16 weights with accelerate's bf16 autocast (on the CPU here; the GPU default)."""
    data = write_trajectories(tmp_path / "a.jsonl", tiny_tokenizer, groups=1)
    out = tmp_path / "run"
    proc = run_cli(
        "fit", "-t", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--dtype", "bfloat16",
        "--lora-rank", "4", "--export-merged",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = read_metrics(out)
    assert record["grad_norm"] > 0
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "final-merged")
    assert str(merged.dtype) == "torch.bfloat16"


@pytest.mark.parametrize(
    ("recipe", "args", "message"),
    [
        ({"loss": {"clip_lo": 0.1}}, [], "loss.clip_lo: unknown field (did you mean `clip_low`?)"),
        ({"run": {"micro_batch_tokens": -5}}, [], "run.micro_batch_tokens: Input should be greater than 0"),
        ({}, ["--algo", "ppo"], "advantage.estimator: Input should be"),
        ({"optim": "fast"}, [], "optim: Input should be a valid dictionary"),
        ({}, ["--set", "loss.kl_coef"], "--set 'loss.kl_coef': write it as section.field=value"),
    ],
)
def test_bad_config_names_the_field(
    tmp_path: Path, recipe: dict[str, Any], args: list[str], message: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run_cli("fit", "-t", "missing.jsonl", "--config", str(path), *args, timeout=120)
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert message in text
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "nope.jsonl does not exist or is not a file"),
        ("", "nope.jsonl holds no trajectories; record some with `nbagent collect`"),
        ("\n\n", "nope.jsonl holds no trajectories"),
        ('{"task": 1}\n', "nope.jsonl:1: corrupt trajectory record"),
    ],
    ids=["missing", "empty", "blank-lines", "corrupt"],
)
def test_unusable_trajectory_files_are_reported_before_any_model_is_loaded(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """One line, exit code 2, no traceback; the model path does not exist, so loading it would fail first."""
    data = tmp_path / "nope.jsonl"
    if content is not None:
        data.write_text(content)
    out = tmp_path / "o"
    model = str(tmp_path / "no-model")
    proc = run_cli("fit", "-t", str(data), "--model", model, "--out", str(out), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = " ".join(proc.stderr.split())
    assert message in text
    assert "no-model" not in text
    assert proc.stderr.startswith("error: "), proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()


def test_every_flag_maps_to_a_config_field(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "trajectories": ["x.jsonl"], "model": "m", "tokenizer": "t", "out": "o", "backend": "trl",
        "lora_rank": 3, "algo": "rloo", "mode": "merged", "lr": 0.5, "epochs": 2, "max_steps": 7,
        "batch_groups": 2, "micro_batch_tokens": 99, "kl_coef": 0.3, "clip_low": 0.1, "clip_high": 0.4,
        "max_prompt_tokens": 11, "max_completion_tokens": 12, "dtype": "float32",
        "gradient_checkpointing": True, "save_every": 5, "seed": 9, "export_merged": True,
    }  # fmt: skip
    assert values.keys() == FIT_FLAGS.keys()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"loss": {"kl_coef": 0.9, "clip_low": 0.05}, "lora": {"rank": 1}}))
    config = resolve_config(recipe, values, ["run.seed=1", "loss.is_cap=4"])
    dumped = config.model_dump(mode="json")
    for flag, dotted in FIT_FLAGS.items():
        node: Any = dumped
        for part in dotted.split("."):
            node = node[part]
        assert node == values[flag], flag
    assert config.loss.is_cap == 4  # --set fields survive; flags win over --set and the recipe
    partial = resolve_config(recipe, {"lora_rank": None}, [])
    assert partial.lora.rank == 1
    assert partial.loss.kl_coef == 0.9


def test_config_round_trips_and_rejects_inconsistent_values(tmp_path: Path) -> None:
    config = TrainConfig.model_validate({"model": "m", "loss": {"is_cap": 3.0, "kl_coef": 0.001}})
    from nbagent_train.config.loading import dump_config

    dump_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    with pytest.raises(TrainConfigError, match="is_floor"):
        load_config(None, {"loss.is_floor": 5.0, "loss.is_cap": 2.0})
    assert load_config(None, {"advantage.estimator": "dr_grpo"}).aggregation == "constant"
    assert load_config(None, {}).aggregation == "token_mean"


@pytest.mark.parametrize("command", ["fit", "sft"])
def test_a_recipes_trajectories_need_no_flag(command: str, tmp_path: Path) -> None:
    """`--trajectories` is optional when the recipe names them; the recipe's file is the one checked."""
    recipe = tmp_path / "recipe.yaml"
    missing = tmp_path / "from-recipe.jsonl"
    recipe.write_text(yaml.safe_dump({"trajectories": [str(missing)], "model": str(tmp_path / "m")}))
    proc = run_cli(command, "--config", str(recipe), "--out", str(tmp_path / "o"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{missing} does not exist" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stdout + proc.stderr


def test_the_app_registers_every_command() -> None:
    from nbagent_train.cli.app import app

    assert [c.name for c in app.registered_commands] == ["fit", "sft", "rl", "eval"]
