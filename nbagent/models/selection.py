"""Choosing the model: the endpoint's when a base URL is configured, else an in-process local model.

The messages of the `ConfigError`s raised here name the command-line flags that would fix them
(``--model``, ``--local-model``): the command line prints them as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nbagent.errors import ConfigError
from nbagent.models.base import Model


@dataclass
class ModelChoice:
    """The model a command will use, and what the user should be told about it."""

    model: Model
    description: str
    local: bool
    context_tokens: int | None = None
    """The model's context length, when known (vLLM's `max_model_len`, a local model's config)."""


def _endpoint_models(base_url: str, api_key: str | None) -> dict[str, int | None]:
    """The models an OpenAI-compatible endpoint serves, with their context length where it says
    (vLLM does); `ConfigError` when the endpoint cannot be reached or is not such an API."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise ConfigError(f"Cannot reach the endpoint {base_url} ({type(exc).__name__}: {exc}).") from exc
    if response.status_code in (401, 403):
        raise ConfigError(f"The endpoint {base_url} refused the API key (HTTP {response.status_code}).")
    if response.status_code >= 400:
        raise ConfigError(
            f"GET {url} answered HTTP {response.status_code}: is this an OpenAI-compatible API?"
        )
    try:
        items = response.json()["data"]
        return {str(item["id"]): item.get("max_model_len") for item in items}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"GET {url} did not return an OpenAI model list.") from exc


def folder_context_tokens(folder: Path) -> int | None:
    """`max_position_embeddings` from a Hugging Face model folder's config, if it has one."""
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def resolve_model(
    base_url: str | None, model: str | None, api_key: str | None, local_model: Path | None
) -> ModelChoice:
    """The endpoint model when a base URL is configured, else the embedded (or given) local model.

    The endpoint is checked first: unreachable, or not serving `model`, raises `ConfigError` with a
    one-line reason.
    """
    if base_url:
        return _endpoint_choice(base_url, model, api_key)
    from nbagent.models.local import adapter_base, default_local_model, ensure_smollm2
    from nbagent.models.local import local_model as load_local_model

    if local_model is not None:
        if not local_model.is_dir():
            raise ConfigError(
                f"--local-model {local_model} is not a folder (expected a Hugging Face model folder or a "
                "LoRA adapter folder)."
            )
        is_adapter = (local_model / "adapter_config.json").is_file()
        return ModelChoice(
            load_local_model(local_model),
            f"local model {local_model} (in-process{', an adapter on its base' if is_adapter else ''})",
            local=True,
            context_tokens=folder_context_tokens(adapter_base(local_model) if is_adapter else local_model),
        )
    return ModelChoice(
        default_local_model(),
        "embedded agent, SmolLM2-135M-Instruct with nbagent's trained adapter (in-process, CPU)",
        local=True,
        context_tokens=folder_context_tokens(ensure_smollm2()),
    )


def _endpoint_choice(base_url: str, model: str | None, api_key: str | None) -> ModelChoice:
    """`model` at the endpoint (its only model when None), checked against what it serves."""
    served = _endpoint_models(base_url, api_key)
    if model is None:
        if len(served) != 1:
            listed = ", ".join(list(served)[:10]) or "none"
            raise ConfigError(f"{base_url} serves {len(served)} models ({listed}): choose one with --model.")
        model = next(iter(served))
    elif served and model not in served:
        listed = ", ".join(list(served)[:10])
        raise ConfigError(f"{base_url} does not serve the model {model!r}; it serves: {listed}.")
    from nbagent.models.openai import OpenAIModel

    return ModelChoice(
        OpenAIModel(model, base_url=base_url, api_key=api_key),
        f"{model} at {base_url}",
        local=False,
        context_tokens=served.get(model),
    )
