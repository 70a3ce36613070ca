"""Where a run's episodes sample from: the `PolicyEndpoint` protocol and `ServerEndpoint`, its form over
the vLLM `PolicyServer` the trainer launches (or attaches to)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nbagent_train.backends import ExportResult
    from nbagent_train.config.rl import RLConfig
    from nbagent_train.serving.policy_server import PolicyServer


class PolicyEndpoint(Protocol):
    """Where episodes sample from, and how new weights get there."""

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (ends in ``/v1``)."""
        ...

    @property
    def model_name(self) -> str:
        """The model name requests use (the LoRA adapter's, or the served checkpoint's)."""
        ...

    async def publish(self, export: ExportResult) -> None:
        """Make the exported weights the ones every later request samples from."""
        ...

    async def serve_base(self) -> None:
        """Sample from the base model again (for evaluations of the untrained policy)."""
        ...

    async def aclose(self) -> None: ...


_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class ServerEndpoint:
    """`PolicyEndpoint` over a `PolicyServer`: LoRA adapters are hot-loaded in place under one name (with
    a prefix-cache reset); full checkpoints restart the server on the new folder (same name, same port)."""

    def __init__(self, server: PolicyServer, lora_name: str) -> None:
        self.server = server
        self.lora_name = lora_name
        self._name = server.served_model_name
        self._base_model = server.model

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def model_name(self) -> str:
        return self._name

    async def publish(self, export: ExportResult) -> None:
        if export.kind == "lora":
            await self.server.load_lora(self.lora_name, export.path)
            self._name = self.lora_name
        else:
            await self.server.arestart(export.path)
            self._name = self.server.served_model_name

    async def serve_base(self) -> None:
        if self.server.model != self._base_model:
            await self.server.arestart(self._base_model)
        self._name = self.server.served_model_name

    async def aclose(self) -> None:
        await self.server.astop()


async def open_endpoint(config: RLConfig, model_path: str, log_path: Path, *, lora: bool) -> ServerEndpoint:
    """Launch the policy server the config describes (or attach to ``server.policy_url``) and wait for it."""
    from nbagent_train.serving.policy_server import PolicyServer

    s = config.server
    if s.policy_url:
        server = PolicyServer.attach(s.policy_url)
    else:
        rank = next((r for r in _VLLM_LORA_RANKS if r >= config.lora.rank), config.lora.rank)
        max_len = s.max_model_len
        if max_len is None and config.samples.max_prompt_tokens and config.samples.max_completion_tokens:
            max_len = config.samples.max_prompt_tokens + config.samples.max_completion_tokens
        server = PolicyServer(
            model_path,
            served_model_name="base" if lora else "policy",
            host=s.host,
            port=s.port,
            max_model_len=max_len,
            enable_lora=lora,
            max_lora_rank=rank,
            max_loras=s.max_loras,
            kv_cache_gb=s.kv_cache_gb,
            gpu_memory_utilization=s.gpu_memory_utilization,
            tensor_parallel_size=s.tensor_parallel_size,
            seed=config.run.seed,
            extra_args=s.extra_args,
            env=s.env,
            log_path=log_path,
            startup_timeout_s=s.startup_timeout_s,
        )
    await server.astart()
    return ServerEndpoint(server, s.lora_name)
