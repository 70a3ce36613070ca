"""The vLLM server's HTTP routes that `PolicyServer` calls (sampling goes through the OpenAI API elsewhere).

Each function takes the server's root URL (``http://host:port``) and turns a refusal into a
`PolicyServerError` carrying vLLM's own message.
"""

from __future__ import annotations

import httpx

from nbagent_train.serving.errors import PolicyServerError


def is_healthy(client: httpx.Client, url: str) -> bool:
    """Whether ``/health`` answers 200; False too while nothing listens yet."""
    try:
        return client.get(url + "/health").status_code == 200
    except httpx.TransportError:
        return False


def first_served_model(url: str) -> str:
    """The first model ``/v1/models`` lists."""
    response = httpx.get(url + "/v1/models", timeout=10.0)
    response.raise_for_status()
    data = response.json().get("data") or []
    if not data:
        raise PolicyServerError(f"{url}/v1 serves no model.")
    return str(data[0]["id"])


async def list_models(url: str) -> list[str]:
    """Every model ``/v1/models`` lists: the base model and each loaded adapter."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.get(url + "/v1/models")
    response.raise_for_status()
    return [str(entry["id"]) for entry in response.json().get("data") or []]


async def load_lora_adapter(url: str, name: str, path: str) -> None:
    """Load (or reload in place) the adapter at `path` under `name` (``/v1/load_lora_adapter``)."""
    body = {"lora_name": name, "lora_path": path, "load_inplace": True}
    async with httpx.AsyncClient(timeout=300.0) as client:
        try:
            response = await client.post(url + "/v1/load_lora_adapter", json=body)
        except httpx.TransportError as exc:
            raise PolicyServerError(f"Could not reach vLLM at {url} to load a LoRA adapter: {exc}") from exc
    if response.status_code != 200:
        hint = (
            " Start the server with enable_lora=True (and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."
            if response.status_code == 404
            else ""
        )
        raise PolicyServerError(
            f"vLLM at {url} refused LoRA adapter {name!r} from {path} "
            f"(HTTP {response.status_code}): {_error_text(response)}.{hint}"
        )


async def unload_lora_adapter(url: str, name: str) -> None:
    """Unload the adapter `name` (``/v1/unload_lora_adapter``)."""
    async with httpx.AsyncClient(timeout=60.0) as client:
        response = await client.post(url + "/v1/unload_lora_adapter", json={"lora_name": name})
    if response.status_code != 200:
        raise PolicyServerError(
            f"vLLM at {url} could not unload LoRA adapter {name!r} "
            f"(HTTP {response.status_code}): {_error_text(response)}"
        )


async def reset_prefix_cache(url: str) -> bool:
    """Drop cached prompt blocks (``/reset_prefix_cache``, dev mode); False where the route is missing."""
    async with httpx.AsyncClient(timeout=60.0) as client:
        response = await client.post(url + "/reset_prefix_cache")
    if response.status_code in (404, 405):
        return False
    if response.status_code != 200:
        raise PolicyServerError(
            f"vLLM at {url} failed to reset its prefix cache (HTTP {response.status_code}): "
            f"{_error_text(response)}"
        )
    try:
        return bool(response.json().get("success", True))
    except ValueError:
        return True


def _error_text(response: httpx.Response) -> str:
    """vLLM's message in an error response (OpenAI ``error.message``, ``message`` or ``detail``)."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]
