"""The online RL loop: serve the policy with vLLM, collect grouped episodes, train, publish, repeat.

One iteration (`RLRun`):

1. **collect** B tasks x K samples with nbagent's collector (`nbagent.rollout.collect.collect`, the code path of
   ``nbagent collect``) against the policy server; every episode records the policy version it was
   sampled from and is appended to ``trajectories/iter-NNNNN.jsonl`` as it finishes;
2. **train**: samples from the recorded token ids, advantages, one `TrainerBackend.step`;
3. **publish**: export the LoRA adapter and hot-load it into the server under the same name (in place),
   or, for full fine-tuning, restart the server on the new checkpoint; the policy version goes up by one;
4. **checkpoint** every N iterations, then one line in ``metrics.jsonl`` and the plots.

Staleness S (``loop.staleness``): batch i may be collected while batch i-1 trains, as long as the policy
that samples it is at most S versions behind the one that trains on it; episodes older than that are
dropped (counted). Publication waits for the batch being collected to finish, so each batch is sampled
from one version. S = 0 is strictly on-policy.

The run folder (see `RunFolder`) holds everything needed to resume after a crash or kill
(``--resume RUN_DIR``): the resolved config, ``state.json``, checkpoints, metrics and trajectories.
Torch, TRL and vLLM are imported only when a run starts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from nbagent.output_files import OutputLock, check_output_folder
from nbagent.trajectory import TaskSpec, Trajectory, read_trajectories
from nbagent_train.config.base import dump_config, load_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import CheckpointError, TrainConfigError, TrainError

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from nbagent.agent.agent import Agent
    from nbagent.environments.base import Environment
    from nbagent_train.backends import ExportResult, TrainerBackend
    from nbagent_train.serving.vllm import PolicyServer

logger = logging.getLogger("nbagent_train")

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"


# --------------------------------------------------------------------------------------------------
# Tasks per iteration
# --------------------------------------------------------------------------------------------------


class TaskSchedule:
    """Which tasks iteration i uses: consecutive slices of a stream of shuffled passes over the split.

    A pure function of (tasks, B, seed, i), so a resumed run asks for the same tasks again.
    """

    def __init__(self, tasks: Sequence[TaskSpec], per_iteration: int, seed: int) -> None:
        if not tasks:
            raise TrainConfigError("env.split: the environment has no tasks in that split")
        if per_iteration > len(tasks):
            raise TrainConfigError(
                f"rollout.tasks_per_iteration: {per_iteration} tasks per iteration, but the split has only "
                f"{len(tasks)}; lower it or use a larger split"
            )
        self.tasks = list(tasks)
        self.per_iteration = per_iteration
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.tasks)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch(self, iteration: int) -> list[TaskSpec]:
        """The tasks of `iteration` (1-based); a batch that crosses a pass boundary never repeats a task."""
        n = len(self.tasks)
        start = (iteration - 1) * self.per_iteration
        chosen: list[int] = []
        position = start
        while len(chosen) < self.per_iteration:
            index = self._order(position // n)[position % n]
            if index not in chosen:
                chosen.append(index)
            position += 1
        return [self.tasks[i] for i in chosen]


# --------------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """``state.json``: written atomically after every finished iteration."""

    iterations_done: int = 0
    policy_version: int = 0
    checkpoint: str | None = None
    """The newest complete checkpoint (relative to the run folder)."""
    wall_s: float = 0.0
    """Seconds spent in iterations so far, across resumes."""
    resumes: int = 0


class RunFolder:
    """Layout of a run folder.

    ``config.yaml`` (resolved recipe), ``state.json``, ``metrics.jsonl``, ``reward.png``, ``metrics.png``,
    ``tb/`` (TensorBoard), ``trajectories/iter-NNNNN.jsonl``, ``adapters/vNNNNN/`` (published weights),
    ``checkpoints/step-NNNNNN/`` (resumable; the number is the iteration), ``vllm.log``, and
    ``superseded/`` for the records of iterations a resume had to redo (nothing is deleted).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def server_log(self) -> Path:
        return self.root / "vllm.log"

    def trajectories(self, iteration: int) -> Path:
        return self.root / "trajectories" / f"iter-{iteration:05d}.jsonl"

    def ready_marker(self, iteration: int) -> Path:
        """Written by the main process once the batch of `iteration` is collected."""
        return self.root / "trajectories" / f"iter-{iteration:05d}.ready.json"

    def newest_adapter(self) -> Path | None:
        folder = self.root / "adapters"
        found = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        return found[-1] if found else None

    def adapter(self, version: int) -> Path:
        return self.root / "adapters" / f"v{version:05d}"

    def checkpoint(self, iteration: int) -> Path:
        from nbagent_train.fit import CHECKPOINTS

        return self.root / CHECKPOINTS / f"step-{iteration:06d}"

    def read_state(self) -> RunState:
        if not self.state_path.is_file():
            return RunState()
        try:
            return RunState(**json.loads(self.state_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.state_path} is unreadable ({exc}); delete it to resume from checkpoints"
            ) from exc

    def write_state(self, state: RunState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_path)

    def supersede(self, after: int, keep_version: int) -> dict[str, int]:
        """Set aside what iterations after `after` recorded, because the resumed run redoes them.

        Metrics lines of those iterations move to ``superseded/metrics-<time>.jsonl``. Each trajectory
        file of those iterations is copied to ``superseded/`` whole, and rewritten with only the episodes
        sampled from a policy version <= `keep_version` (still valid: the collector resumes from them).
        """
        from nbagent_train.runs.metrics import METRICS_FILE

        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = self.root / "superseded"
        counts = {"metrics_lines": 0, "episodes_kept": 0, "episodes_set_aside": 0}
        metrics = self.root / METRICS_FILE
        if metrics.is_file():
            keep: list[str] = []
            drop: list[str] = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    iteration = int(json.loads(line).get("iteration", 0))
                except (ValueError, AttributeError, TypeError):
                    drop.append(line)  # a torn line from the kill
                    continue
                (drop if iteration > after else keep).append(line)
            if drop:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"metrics-{stamp}.jsonl").write_text("".join(x + "\n" for x in drop))
                metrics.write_text("".join(x + "\n" for x in keep))
                counts["metrics_lines"] = len(drop)
        folder = self.root / "trajectories"
        for marker in sorted(folder.glob("iter-*.ready.json")) if folder.is_dir() else []:
            if int(marker.name.split(".")[0].removeprefix("iter-")) > after:
                marker.unlink()
        for path in sorted(folder.glob("iter-*.jsonl")) if folder.is_dir() else []:
            if int(path.stem.removeprefix("iter-")) <= after:
                continue
            kept = [
                t
                for t in read_trajectories(path, on_error="skip")
                if isinstance(t.model.policy_version, int) and t.model.policy_version <= keep_version
            ]
            total = sum(1 for _ in read_trajectories(path, on_error="skip"))
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / f"{path.stem}-{stamp}.jsonl")
            path.write_text("".join(t.to_json_line() for t in kept), encoding="utf-8")
            counts["episodes_kept"] += len(kept)
            counts["episodes_set_aside"] += total - len(kept)
        return counts


# --------------------------------------------------------------------------------------------------
# The policy endpoint
# --------------------------------------------------------------------------------------------------


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
    from nbagent_train.serving.vllm import PolicyServer

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


# --------------------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """The episodes collected for one iteration."""

    iteration: int
    version: int
    """Policy version that sampled the batch (the published version when its collection started)."""
    trajectories: list[Trajectory]
    rollout_s: float
    written: int = 0
    """Episodes collected by this process (the rest were already in the file: a resumed collection)."""


def select_fresh(
    trajectories: Sequence[Trajectory], current_version: int, staleness: int
) -> tuple[list[Trajectory], int]:
    """Episodes sampled at most `staleness` versions before `current_version`, and how many were not.

    An episode without a recorded integer version is treated as too old.
    """
    fresh = []
    for t in trajectories:
        version = t.model.policy_version
        if isinstance(version, int) and current_version - staleness <= version <= current_version:
            fresh.append(t)
    return fresh, len(trajectories) - len(fresh)


@dataclass
class RLResult:
    """What a finished (or stopped) run did."""

    run_dir: Path
    iterations_done: int
    policy_version: int
    wall_s: float
    records: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _launched_as_main() -> bool:
    """True unless this process is a non-zero rank of a distributed launch (accelerate / torchrun)."""
    return os.environ.get("RANK", "0") == "0"


def _barrier(backend: TrainerBackend) -> None:
    """Wait for every training process (a no-op for one process)."""
    accelerator = getattr(backend, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def checkpoint_iteration(path: Path) -> int:
    """The iteration a loop checkpoint was written after (read from its state file)."""
    from nbagent_train.backends.base import STATE_FILE as CHECKPOINT_STATE

    try:
        state = json.loads((path / CHECKPOINT_STATE).read_text())
        return int(state["extra"]["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a checkpoint of `nbagent-train rl` ({exc})") from exc


class RLRun:
    """One online RL run; `await run()` drives it. See the module docstring.

    `endpoint`, `backend` and `environment` can be passed in (tests, custom set-ups); by default the
    loop launches the vLLM server the config describes (or attaches to ``server.policy_url``), builds
    the backend named by ``config.backend`` and loads ``config.env``.

    Under accelerate with several processes, the main process serves, collects and publishes; every
    process reads each batch from the run folder (``trajectories/iter-NNNNN.ready.json`` marks it
    complete) and takes part in the training step, the export and the checkpoint.
    """

    def __init__(
        self,
        config: RLConfig,
        *,
        resume: bool = False,
        console: Console | None = None,
        endpoint: PolicyEndpoint | None = None,
        backend: TrainerBackend | None = None,
        environment: Environment | None = None,
    ) -> None:
        from rich.console import Console

        self.config = config
        self.resume = resume
        self.console = console or Console()
        self.folder = RunFolder(config.run_dir or default_run_dir())
        self._endpoint = endpoint
        self._backend = backend
        self._environment = environment
        self.version = 0
        self.state = RunState()
        self.main = True
        self._published: dict[int, anyio.Event] = {}
        self._collecting = anyio.Lock()
        self._records: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._wall_before = 0.0
        self._last_end = self._started

    # -- set-up ----------------------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        root = self.folder.root
        if self.resume:
            if not self.folder.config_path.is_file():
                raise CheckpointError(f"{root} is not a run folder (no {CONFIG_FILE}); nothing to resume")
            return
        if self.folder.state_path.exists() or self.folder.config_path.exists():
            raise CheckpointError(
                f"{root} already holds a run; continue it with --resume {root}, or choose another --run-dir"
            )
        root.mkdir(parents=True, exist_ok=True)
        dump_config(self.config.model_copy(update={"run_dir": root}), self.folder.config_path)

    def _make_backend(self) -> TrainerBackend:
        if self._backend is not None:
            return self._backend
        from nbagent_train.backends import create_backend

        config = self.config.model_copy(update={"model": self.config.resolved_model()})
        return create_backend(config)

    def _make_environment(self) -> Environment:
        if self._environment is not None:
            return self._environment
        from nbagent.environments.base import load_environment

        return load_environment(self.config.env.name, **self.config.env.kwargs)

    def make_agent(self, env: Environment, endpoint: PolicyEndpoint) -> Agent[Any, Any]:
        """The agent episodes run with: the recipe's settings over the environment's wishes."""
        return build_agent(self.config, env, endpoint)

    async def _open_endpoint(self, backend: TrainerBackend) -> PolicyEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        return await open_endpoint(
            self.config, self.config.resolved_model(), self.folder.server_log, lora=backend.is_lora
        )

    # -- resume ----------------------------------------------------------------------------------------

    def _restore(self, backend: TrainerBackend) -> int:
        """Load the newest checkpoint (when resuming) and set aside later records; return its iteration."""
        from nbagent_train.fit import checkpoint_dirs

        if not self.resume:
            return 0
        self.state = self.folder.read_state()
        checkpoints = checkpoint_dirs(self.folder.root)
        restored = checkpoint_iteration(checkpoints[-1]) if checkpoints else 0
        counts: dict[str, int] = {}
        if self.main:
            counts = self.folder.supersede(after=restored, keep_version=restored)
        _barrier(backend)  # no process reads a batch before the main one has set the old ones aside
        if checkpoints:
            extra = backend.load(checkpoints[-1])
            self._wall_before = float(extra.get("wall_s", 0.0))
        self.state.iterations_done = restored
        self.state.policy_version = restored
        self.state.wall_s = self._wall_before
        self.state.resumes += 1
        if self.main:
            where = (
                f"checkpoint {checkpoints[-1].name}" if checkpoints else "no checkpoint yet: from the start"
            )
            moved = (
                f"; set aside {counts['metrics_lines']} metrics line(s) and {counts['episodes_set_aside']} "
                f"episode(s) of later iterations into superseded/, kept {counts['episodes_kept']} episode(s) "
                "to resume their collection"
                if any(counts.values())
                else ""
            )
            self.console.print(f"resuming {self.folder.root} after iteration {restored} ({where}){moved}")
        return restored

    # -- the loop --------------------------------------------------------------------------------------

    async def run(self) -> RLResult:
        """Run the remaining iterations; the server is stopped and the backend closed however it ends.

        The main process checks the run folder and locks it for the whole run (see
        `nbagent.output_files.OutputLock`): a second run on the same folder is refused naming this one."""
        if not self.config.model:
            raise TrainConfigError(
                "model: no policy given; pass --config RECIPE.yaml or --model PATH_OR_NAME"
            )
        if not _launched_as_main():
            return await self._run()
        with OutputLock(check_output_folder(self.folder.root, "the run folder")):
            self._prepare_folder()
            return await self._run()

    async def _run(self) -> RLResult:
        cfg = self.config
        env = self._make_environment()
        schedule = TaskSchedule(env.tasks(cfg.env.split), cfg.rollout.tasks_per_iteration, cfg.rollout.seed)
        backend = self._make_backend()
        endpoint: PolicyEndpoint | None = None
        log: RunLog | None = None
        try:
            backend.setup(total_steps=cfg.loop.iterations * cfg.run.mini_batches * cfg.run.ppo_epochs)
            self.main = backend.is_main_process
            start = self._restore(backend)
            self.version = start
            self._event(start).set()
            # The policy to sample from first: the restored (or initial) weights. A full fine-tuning run
            # starts on the base model the server already serves.
            initial = backend.export(self.folder.adapter(start)) if backend.is_lora or start > 0 else None
            if self.main:
                log = RunLog(self.folder.root, cfg, start)
                t0 = time.perf_counter()
                endpoint = await self._open_endpoint(backend)
                if initial is not None:
                    await endpoint.publish(initial)
                self.console.print(
                    f"policy version {start} served at {endpoint.base_url} as {endpoint.model_name!r} "
                    f"(ready in {time.perf_counter() - t0:.1f} s); run folder {self.folder.root}"
                )
            self._started = self._last_end = time.perf_counter()
            await self._iterate(env, schedule, backend, endpoint, log, start)
        finally:
            if log is not None:
                log.close()
            if endpoint is not None:
                await endpoint.aclose()
            backend.close()
        return RLResult(
            self.folder.root, self.state.iterations_done, self.version, self.state.wall_s, self._records
        )

    def _event(self, version: int) -> anyio.Event:
        if version not in self._published:
            self._published[version] = anyio.Event()
        return self._published[version]

    async def _iterate(
        self,
        env: Environment,
        schedule: TaskSchedule,
        backend: TrainerBackend,
        endpoint: PolicyEndpoint | None,
        log: RunLog | None,
        start: int,
    ) -> None:
        cfg = self.config
        last = cfg.loop.iterations
        if start >= last:
            self.console.print(f"all {last} iterations are done; raise loop.iterations to continue")
            return
        send, receive = anyio.create_memory_object_stream[Batch](max_buffer_size=cfg.loop.staleness)

        async def produce() -> None:
            async with send:
                for iteration in range(start + 1, last + 1):
                    if endpoint is None:
                        batch = await self._wait_for_batch(iteration)
                    else:
                        # Batch i trains at version i - 1: sample it from a version at least i - 1 - S.
                        await self._event(max(start, iteration - 1 - cfg.loop.staleness)).wait()
                        batch = await self._collect(env, schedule, endpoint, iteration)
                    await send.send(batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive:
                async for batch in receive:
                    await self._train_and_publish(batch, backend, endpoint, log)

    async def _collect(
        self, env: Environment, schedule: TaskSchedule, endpoint: PolicyEndpoint, iteration: int
    ) -> Batch:
        from nbagent.rollout.collect import collect

        cfg = self.config
        path = self.folder.trajectories(iteration)
        async with self._collecting:
            version = self.version
            agent = self.make_agent(env, endpoint)
            t0 = time.perf_counter()
            summary = await collect(
                env,
                agent,
                schedule.batch(iteration),
                out=path,
                split=cfg.env.split,
                samples=cfg.rollout.samples_per_task,
                concurrency=cfg.rollout.concurrency,
                resume=True,
                max_inflight_requests=cfg.rollout.max_inflight_requests,
                tag=f"iter-{iteration}",
                policy_version=version,
                hard_timeout_s=cfg.rollout.hard_timeout_s,
                progress=self.console.is_terminal,
            )
            elapsed = time.perf_counter() - t0
        batch = Batch(
            iteration, version, list(read_trajectories(path, on_error="skip")), elapsed, summary.written
        )
        marker = {
            "iteration": iteration,
            "version": version,
            "rollout_s": elapsed,
            "written": summary.written,
        }
        self.folder.ready_marker(iteration).write_text(json.dumps(marker))
        return batch

    async def _wait_for_batch(self, iteration: int) -> Batch:
        """A non-main process: the batch the main process collected, once its marker is written."""
        marker = self.folder.ready_marker(iteration)
        # The marker is written by another process: there is nothing in this one to wait on.
        while not marker.is_file():  # noqa: ASYNC110
            await anyio.sleep(0.5)
        info = json.loads(marker.read_text())
        path = self.folder.trajectories(iteration)
        trajectories = list(read_trajectories(path, on_error="skip"))
        return Batch(
            iteration, int(info["version"]), trajectories, float(info["rollout_s"]), int(info["written"])
        )

    async def _train_and_publish(
        self, batch: Batch, backend: TrainerBackend, endpoint: PolicyEndpoint | None, log: RunLog | None
    ) -> None:
        from nbagent_train.objective.advantages import compute_advantages
        from nbagent_train.objective.samples import build_samples
        from nbagent_train.runs.plots import episode_metrics, plot_metrics

        cfg = self.config
        fresh, stale = select_fresh(batch.trajectories, self.version, cfg.loop.staleness)
        record: dict[str, Any] = {
            "policy_version": batch.version,
            "staleness": self.version - batch.version,
            "stale_dropped": stale,
            "episodes_collected": batch.written,
        }
        record |= episode_metrics(
            fresh, success_key=cfg.env.success_key, success_threshold=cfg.env.success_threshold
        )
        unscored = [t for t in fresh if t.reward is None]
        if unscored and self.main:
            reason = unscored[0].metadata.get("score_error", "no reward recorded")
            self.console.print(
                f"[yellow]iteration {batch.iteration}: {len(unscored)} episode(s) could not be scored "
                f"(first: {reason}); samples.missing_reward={cfg.samples.missing_reward}[/]"
            )
        sample_set = build_samples(fresh, cfg.samples, getattr(backend, "tokenizer", None))
        rng = random.Random(f"{cfg.run.seed}:{batch.iteration}")
        adv = compute_advantages(sample_set.samples, sample_set.episodes, cfg.advantage, rng)
        record |= {f"advantage/{k}": v for k, v in adv.stats.items() if not k.startswith("reward")}
        record["samples"] = len(adv.samples)
        t0 = time.perf_counter()
        if adv.samples:
            update = await anyio.to_thread.run_sync(backend.step, adv.samples)
            record |= {f"update/{k}": v for k, v in update.items()}
        elif self.main:
            self.console.print(
                f"[yellow]iteration {batch.iteration}: nothing to train on ({adv.groups_dropped} of "
                f"{adv.groups} groups dropped, {stale} stale episodes); the weights are unchanged[/]"
            )
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        export = backend.export(self.folder.adapter(batch.iteration))
        if endpoint is not None:
            async with self._collecting:  # between batches: every batch is sampled from one version
                await endpoint.publish(export)
        self.version = batch.iteration
        self._event(self.version).set()
        publish_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        final = batch.iteration == cfg.loop.iterations
        now = time.perf_counter()
        self.state.wall_s = self._wall_before + (now - self._started)
        if batch.iteration % cfg.loop.checkpoint_every == 0 or final:
            path = self.folder.checkpoint(batch.iteration)
            backend.save(path, {"iteration": batch.iteration, "wall_s": self.state.wall_s})
            self.state.checkpoint = str(path.relative_to(self.folder.root))
        checkpoint_s = time.perf_counter() - t0
        record |= {
            "time/rollout_s": batch.rollout_s,
            "time/train_s": train_s,
            "time/publish_s": publish_s,
            "time/checkpoint_s": checkpoint_s,
            "time/iteration_s": time.perf_counter() - self._last_end,
            "wall_s": self.state.wall_s,
        }
        self._last_end = time.perf_counter()
        self.state.iterations_done = batch.iteration
        self.state.policy_version = self.version
        self._records.append({"iteration": batch.iteration, **record})
        if log is None:  # not the main process
            return
        self._prune()
        log.log(batch.iteration, record)
        self.folder.write_state(self.state)
        if batch.iteration % cfg.loop.plot_every == 0 or final:
            plot_metrics(self.folder.root)
        self.console.print(format_iteration(batch.iteration, cfg.loop.iterations, record))

    def _prune(self) -> None:
        """Keep the newest `loop.keep_adapters` adapters and `run.keep_checkpoints` checkpoints."""
        from nbagent_train.fit import checkpoint_dirs

        folder = self.folder.adapter(0).parent
        adapters = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("v"))
        for old in adapters[: -self.config.loop.keep_adapters]:
            shutil.rmtree(old, ignore_errors=True)
        for old in checkpoint_dirs(self.folder.root)[: -self.config.run.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


class RunLog:
    """Where each iteration's record goes: ``metrics.jsonl`` and TensorBoard, and wandb when configured."""

    def __init__(self, root: Path, config: RLConfig, start: int) -> None:
        from nbagent_train.runs.metrics import MetricsLogger
        from nbagent_train.runs.plots import WandbMirror

        self._wandb = None
        if config.loop.wandb_project:
            self._wandb = WandbMirror(config.loop.wandb_project, root, config.model_dump(mode="json"))
        self._log = MetricsLogger(root, tensorboard=config.loop.tensorboard, keep_until=start)

    def log(self, iteration: int, record: dict[str, Any]) -> None:
        self._log.log(iteration, record)
        if self._wandb is not None:
            self._wandb.log(iteration, record)

    def close(self) -> None:
        self._log.close()
        if self._wandb is not None:
            self._wandb.close()


def build_agent(config: RLConfig, env: Environment, endpoint: PolicyEndpoint) -> Agent[Any, Any]:
    """The agent of a run or evaluation: the recipe's agent settings over the environment's wishes,
    sampling from the endpoint's current model."""
    from nbagent.agent.agent import Agent
    from nbagent.kernel import KernelConfig
    from nbagent.models.openai import OpenAIModel
    from nbagent.trajectory import SamplingSettings

    a = config.agent
    settings: dict[str, Any] = {
        "max_steps": a.max_steps,
        "episode_timeout_s": a.episode_timeout_s,
        "cell_timeout_s": a.cell_timeout_s,
        "context_budget_tokens": a.context_budget_tokens,
        "context_policy": a.context_policy,
        "action_format": a.action_format,
        "prefill": a.prefill,
        "system_prompt": a.system_prompt,
        "instructions": a.instructions,
        "max_format_errors": a.max_format_errors,
        "observation_chars": a.observation_chars,
    }
    chosen = {k: v for k, v in settings.items() if k in a.model_fields_set}
    merged = {**settings, **env.agent_overrides(), **chosen}
    sampling = SamplingSettings(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens)
    tokenizer = config.resolved_model() if a.context_budget_tokens is not None else None
    model = OpenAIModel(endpoint.model_name, base_url=endpoint.base_url, tokenizer=tokenizer)
    kernel = KernelConfig(sandbox=True, allow_network=a.allow_network) if a.sandbox else None
    return Agent(model, env.tools(), sampling=sampling, kernel_config=kernel, **merged)


def format_iteration(iteration: int, total: int, r: dict[str, Any]) -> str:
    """One line per iteration: reward, success, length and where the time went."""
    return "  ".join(
        [
            f"iter {iteration}/{total}",
            f"v{r['policy_version']}",
            f"reward {r['reward_mean']:.3f}±{r['reward_std']:.3f}",
            f"success {r['success_rate']:.2f}",
            f"steps {r['steps_mean']:.1f}",
            f"loss {r.get('update/loss', 0.0):+.4f}",
            f"rollout {r['time/rollout_s']:.1f}s",
            f"train {r['time/train_s']:.1f}s",
            f"publish {r['time/publish_s']:.1f}s",
        ]
    )


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RLConfig:
    """The resolved config saved in a run folder, with `overrides` (e.g. ``loop.iterations``) applied."""
    path = RunFolder(run_dir).config_path
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); nothing to resume")
    config = load_config(path, overrides, cls=RLConfig)
    return config.model_copy(update={"run_dir": Path(run_dir)})


def rl(config: RLConfig, *, resume: bool = False, console: Console | None = None) -> RLResult:
    """Run `nbagent-train rl` from Python (blocking)."""
    run = RLRun(config, resume=resume, console=console)
    return anyio.run(run.run)


def reward_trend(records: Sequence[dict[str, Any]], window: int) -> tuple[float, float]:
    """Mean training reward of the first and of the last `window` iterations."""
    if not records:
        raise TrainError("no iterations recorded yet")
    rewards = [float(r["reward_mean"]) for r in sorted(records, key=lambda r: int(r["iteration"]))]
    window = max(1, min(window, len(rewards) // 2 or 1))
    return statistics.fmean(rewards[:window]), statistics.fmean(rewards[-window:])


def register_commands(app: typer.Typer) -> None:
    """Add `rl` and `eval` to `nbagent-train` (called by `nbagent_train.cli`)."""
    from nbagent_train.cli.rl import register

    register(app)
