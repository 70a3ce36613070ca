"""The online RL loop: serve the policy with vLLM, collect grouped episodes, train, publish, repeat.

One iteration (`RLRun`):

1. **collect** B tasks x K samples with nbagent's collector (`nbagent.rollout.collect`, the code path
   of ``nbagent collect``) against the policy server; every episode records the policy version it was
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

import os
import random
import shutil
import time
from typing import TYPE_CHECKING, Any

import anyio

from nbagent.output_files import OutputLock, check_output_folder
from nbagent_train.config.loading import dump_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import CheckpointError, TrainConfigError
from nbagent_train.rl.record import IterationRecord, RLResult, RunLog
from nbagent_train.rl.schedule import (
    Batch,
    TaskSchedule,
    load_batch,
    mark_ready,
    select_fresh,
    wait_for_batch,
)
from nbagent_train.runs.folder import CONFIG_FILE, RunFolder, RunState, checkpoint_iteration, default_run_dir

if TYPE_CHECKING:
    from rich.console import Console

    from nbagent.agent import Agent
    from nbagent.environments import Environment
    from nbagent_train.backends import TrainerBackend
    from nbagent_train.serving.endpoint import PolicyEndpoint


def _launched_as_main() -> bool:
    """True unless this process is a non-zero rank of a distributed launch (accelerate / torchrun)."""
    return os.environ.get("RANK", "0") == "0"


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
        self.main = _launched_as_main()
        """The one decision of which process serves, collects, logs and publishes."""
        self._published: dict[int, anyio.Event] = {}
        self._collecting = anyio.Lock()
        self._records: list[IterationRecord] = []
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
        from nbagent.environments import load_environment

        return load_environment(self.config.env.name, **self.config.env.kwargs)

    def make_agent(self, env: Environment, endpoint: PolicyEndpoint) -> Agent[Any, Any]:
        """The agent episodes run with: the recipe's settings over the environment's wishes."""
        from nbagent_train.rl.agent import build_agent

        return build_agent(self.config, env, endpoint)

    async def _open_endpoint(self, backend: TrainerBackend) -> PolicyEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        from nbagent_train.serving.endpoint import open_endpoint

        return await open_endpoint(
            self.config, self.config.resolved_model(), self.folder.server_log, lora=backend.is_lora
        )

    # -- resume ----------------------------------------------------------------------------------------

    def _restore(self, backend: TrainerBackend) -> int:
        """Load the newest checkpoint (when resuming) and set aside later records; return its iteration."""
        if not self.resume:
            return 0
        self.state = self.folder.read_state()
        checkpoints = self.folder.checkpoints()
        restored = checkpoint_iteration(checkpoints[-1]) if checkpoints else 0
        counts: dict[str, int] = {}
        if self.main:
            counts = self.folder.supersede(after=restored, keep_version=restored)
        backend.barrier()  # no process reads a batch before the main one has set the old ones aside
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
        if not self.main:
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
                        batch = await wait_for_batch(self.folder, iteration)
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
        from nbagent.rollout import collect

        cfg = self.config
        path = self.folder.trajectories(iteration)
        async with self._collecting:
            version = self.version
            agent = self.make_agent(env, endpoint)
            t0 = time.perf_counter()
            try:
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
            finally:
                await agent.model.aclose()
            elapsed = time.perf_counter() - t0
        batch = load_batch(self.folder, iteration, version, elapsed, summary.written)
        mark_ready(self.folder, batch)
        return batch

    async def _train_and_publish(
        self, batch: Batch, backend: TrainerBackend, endpoint: PolicyEndpoint | None, log: RunLog | None
    ) -> IterationRecord:
        from nbagent_train.objective.advantages import compute_advantages
        from nbagent_train.objective.samples import build_samples
        from nbagent_train.runs.episodes import episode_metrics
        from nbagent_train.runs.plots import plot_metrics

        cfg = self.config
        fresh, stale = select_fresh(batch.trajectories, self.version, cfg.loop.staleness)
        record = IterationRecord(
            iteration=batch.iteration,
            policy_version=batch.version,
            staleness=self.version - batch.version,
            stale_dropped=stale,
            episodes_collected=batch.written,
            episodes=episode_metrics(
                fresh, success_key=cfg.env.success_key, success_threshold=cfg.env.success_threshold
            ),
        )
        record.times.rollout_s = batch.rollout_s
        unscored = [t for t in fresh if t.reward is None]
        if unscored and self.main:
            reason = unscored[0].metadata.get("score_error", "no reward recorded")
            self.console.print(
                f"[yellow]iteration {batch.iteration}: {len(unscored)} episode(s) could not be scored "
                f"(first: {reason}); samples.missing_reward={cfg.samples.missing_reward}[/]"
            )
        sample_set = build_samples(fresh, cfg.samples, backend.tokenizer)
        rng = random.Random(f"{cfg.run.seed}:{batch.iteration}")
        adv = compute_advantages(sample_set.samples, sample_set.episodes, cfg.advantage, rng)
        record.advantage = {k: v for k, v in adv.stats.items() if not k.startswith("reward")}
        record.samples = len(adv.samples)
        t0 = time.perf_counter()
        if adv.samples:
            record.update = await anyio.to_thread.run_sync(backend.step, adv.samples)
        elif self.main:
            self.console.print(
                f"[yellow]iteration {batch.iteration}: nothing to train on ({adv.groups_dropped} of "
                f"{adv.groups} groups dropped, {stale} stale episodes); the weights are unchanged[/]"
            )
        record.times.train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        export = backend.export(self.folder.adapter(batch.iteration))
        if endpoint is not None:
            async with self._collecting:  # between batches: every batch is sampled from one version
                await endpoint.publish(export)
        self.version = batch.iteration
        self._event(self.version).set()
        record.times.publish_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        final = batch.iteration == cfg.loop.iterations
        self.state.wall_s = self._wall_before + (time.perf_counter() - self._started)
        if batch.iteration % cfg.loop.checkpoint_every == 0 or final:
            path = self.folder.checkpoint(batch.iteration)
            backend.save(path, {"iteration": batch.iteration, "wall_s": self.state.wall_s})
            self.state.checkpoint = str(path.relative_to(self.folder.root))
        record.times.checkpoint_s = time.perf_counter() - t0
        record.times.iteration_s = time.perf_counter() - self._last_end
        record.wall_s = self.state.wall_s
        self._last_end = time.perf_counter()
        self.state.iterations_done = batch.iteration
        self.state.policy_version = self.version
        self._records.append(record)
        if log is None:  # not the main process
            return record
        self._prune()
        log.log(record)
        self.folder.write_state(self.state)
        if batch.iteration % cfg.loop.plot_every == 0 or final:
            plot_metrics(self.folder.root)
        self.console.print(record.summary_line(cfg.loop.iterations))
        return record

    def _prune(self) -> None:
        """Keep the newest `loop.keep_adapters` adapters and `run.keep_checkpoints` checkpoints."""
        folder = self.folder.adapter(0).parent
        adapters = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("v"))
        for old in adapters[: -self.config.loop.keep_adapters]:
            shutil.rmtree(old, ignore_errors=True)
        for old in self.folder.checkpoints()[: -self.config.run.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def rl(config: RLConfig, *, resume: bool = False, console: Console | None = None) -> RLResult:
    """Run `nbagent-train rl` from Python (blocking)."""
    run = RLRun(config, resume=resume, console=console)
    return anyio.run(run.run)
