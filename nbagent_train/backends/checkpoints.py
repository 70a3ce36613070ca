"""Checkpoints and exports: accelerate's resumable state with our step and RNG, written atomically, and
servable weights (a LoRA adapter folder, or a merged or full HF model folder) with the tokenizer."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from nbagent_train.backends.base import TRAINER_STATE_FILE, ExportResult
from nbagent_train.errors import CheckpointError

_RNG_FILE = "python_rng.json"


def keep_trainable_weights(models: list[Any], weights: list[dict[str, Any]], _dir: str) -> None:
    """accelerate's save-state hook for LoRA: checkpoints hold only the trainable (adapter) weights."""
    for i, model in enumerate(models):
        if i < len(weights):
            trainable = {name for name, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in trainable}


def save_checkpoint(accelerator: Any, path: Path, state: dict[str, Any], rng: random.Random) -> None:
    """Write accelerate's state, `rng` and `state` into `path`, atomically (all processes call it)."""
    partial = path.parent / f".{path.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / _RNG_FILE).write_text(json.dumps(rng.getstate()))
        (partial / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2))
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Any, path: Path, *, lora_rank: int, rng: random.Random) -> dict[str, Any]:
    """Restore accelerate's state and `rng` from a folder `save_checkpoint` wrote; return its `state`."""
    state_file = path / TRAINER_STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no {TRAINER_STATE_FILE}); resume from another one"
        )
    state: dict[str, Any] = json.loads(state_file.read_text())
    lora = lora_rank > 0
    if bool(state.get("lora")) != lora:
        raise CheckpointError(
            f"{path} was written by a {'LoRA' if state.get('lora') else 'full'} run but lora.rank is "
            f"{lora_rank}; use the settings the run was started with"
        )
    accelerator.load_state(str(path), strict=not lora)
    version, internal, gauss = json.loads((path / _RNG_FILE).read_text())
    rng.setstate((version, tuple(internal), gauss))
    return state


def export_weights(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    path: Path,
    *,
    base_model: str,
    lora: bool,
    merged: bool,
    dtype: torch.dtype,
) -> ExportResult:
    """Write `model`'s servable weights and `tokenizer` into `path` (all processes call it).

    With `lora`, an adapter folder, or with `merged` the adapter merged into `base_model` (loaded in
    `dtype`); otherwise an HF model folder.
    """
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        path.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        if lora and merged:
            with tempfile.TemporaryDirectory() as tmp:
                unwrapped.save_pretrained(tmp, state_dict=state_dict)
                _save_merged(Path(tmp), path, base_model, dtype)
        else:
            unwrapped.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(path)
    accelerator.wait_for_everyone()
    kind: Literal["lora", "full"] = "lora" if lora and not merged else "full"
    return ExportResult(path=path, kind=kind, base_model=base_model)


def _save_merged(adapter: Path, path: Path, base_model: str, dtype: torch.dtype) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(path, safe_serialization=True)
