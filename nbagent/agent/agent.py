"""The agent loop: think, write code, run it in a real kernel, read the output, repeat.

Each step builds the context (`nbagent.context`), calls the model, parses the reply into an action
(`nbagent.actions`), runs the code in the episode's kernel through the tool bridge, and renders the
cell's outputs as the next observation. The episode ends when kernel code calls
``submit_final_answer(...)`` with a valid answer, or at a limit: `max_steps`, the episode's wall-clock
time, the context's token budget, `max_format_errors` unusable replies in a row, a model error, or
cancellation. Whatever ends it, the result holds the full `Trajectory` of the steps done so far.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib.metadata
import inspect
import platform
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic

import anyio
from pydantic import BeforeValidator
from typing_extensions import TypeVar

from nbagent.agent import notepad
from nbagent.agent.actions import ActionFormat, ActionParser, get_parser
from nbagent.agent.history import (
    ContextBudgetExceeded,
    ContextBuilder,
    ContextPolicy,
    Turn,
    summary_request,
    token_counter,
)
from nbagent.agent.notepad import SYNC_TOOL_NAME, Notepad, kernel_setup_code, render_notepad
from nbagent.agent.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    EMPTY_OUTPUT_NOTE,
    FORMAT_ERROR_NOTE,
    LAST_STEP_NOTE,
    REPEAT_NOTE,
    RESTART_NOTE,
    SUMMARIZE_SYSTEM_PROMPT,
    TASK_TEMPLATE,
    PromptContext,
    SystemPromptTemplate,
    answer_instructions,
    render_system_prompt,
)
from nbagent.errors import ConfigError, KernelError, NBAgentError, ToolDefinitionError, ToolError
from nbagent.models.base import ChatMessage, Model
from nbagent.models.chat_tokenizer import with_prefill
from nbagent.tools import RunContext, Tool, Toolset
from nbagent.tools.results import to_json_value
from nbagent.trajectory import (
    DEFAULT_MAX_TOKENS,
    CellResult,
    CellStatus,
    ContextEvent,
    ModelCall,
    SamplingSettings,
    Step,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
    UnfinishedCall,
)

if TYPE_CHECKING:
    from nbagent.kernel import Kernel, KernelConfig
    from nbagent.tools.bridge import ToolBridge

DepsT = TypeVar("DepsT", default=None)
OutputT = TypeVar("OutputT", default=str)

StepCallback = Callable[[Step], Awaitable[None] | None]

SUBMIT_TOOL_NAME = "submit_final_answer"
RESERVED_NAMES = frozenset({SUBMIT_TOOL_NAME, SYNC_TOOL_NAME, "notepad"})
_VERSIONED_PACKAGES = ("nbagent", "pydantic", "jupyter_client", "ipykernel", "openai", "anyio")


_EPISODE_TOOLS: dict[tuple[str, Any], Tool] = {}


def _episode_tool(function: Callable[..., Any], key: Any) -> Tool:
    """`Tool(function)` for a closure made per episode: its signature (which `key` determines) is
    inspected once, later closures reuse that definition (`Tool.bound_to`)."""
    name = function.__name__
    template = _EPISODE_TOOLS.get((name, key))
    if template is None:
        template = _EPISODE_TOOLS[(name, key)] = Tool(function, run_in_thread=False)
    return template.bound_to(function)


class AgentRunError(NBAgentError):
    """The episode could not be set up (kernel start or tool set-up failed)."""


def _number_to_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


TextAnswer = Annotated[str, BeforeValidator(_number_to_text)]
"""A text answer; numbers are accepted and turned into text (``submit_final_answer(391)``)."""


@dataclass
class RunResult(Generic[OutputT]):
    """What an episode produced: the answer (None when none was submitted) and the whole trajectory."""

    answer: OutputT | None
    trajectory: Trajectory

    @property
    def termination(self) -> Termination:
        return self.trajectory.termination

    @property
    def termination_detail(self) -> str | None:
        return self.trajectory.termination_detail

    @property
    def error(self) -> str | None:
        return self.trajectory.error

    @property
    def steps(self) -> list[Step]:
        return self.trajectory.steps

    def save_notebook(self, path: str | Path) -> Path:
        """Write the episode as a Jupyter notebook (see `nbagent.trajectory.export.to_notebook`)."""
        from nbagent.trajectory.export import to_notebook

        to_notebook(self.trajectory, path)
        return Path(path)

    def save_trajectory(self, path: str | Path) -> Path:
        """Append the trajectory as one JSON line to `path`."""
        with TrajectoryWriter(path) as writer:
            writer.write(self.trajectory)
        return Path(path)


class AgentRun(Generic[OutputT]):
    """One episode in progress: iterate it for its steps; `result` is set once it has ended.

    Use ``async with agent.iter(task) as run: async for step in run: ...`` to make sure the kernel is
    shut down even when you stop early; a plain ``async for`` also works and cleans up when exhausted.
    On cancellation the result (termination ``cancelled``) is set before the cancellation propagates.
    """

    def __init__(self, episode: _Episode[Any, OutputT]) -> None:
        self._episode = episode
        self._steps = episode.steps_generator()

    @property
    def result(self) -> RunResult[OutputT] | None:
        return self._episode.result

    def __aiter__(self) -> AgentRun[OutputT]:
        return self

    async def __anext__(self) -> Step:
        return await self._steps.__anext__()

    async def aclose(self) -> None:
        """Stop the episode (if still running) and release its kernel."""
        await self._steps.aclose()

    async def __aenter__(self) -> AgentRun[OutputT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Agent(Generic[DepsT, OutputT]):
    """An agent that solves tasks by writing Python in a real Jupyter kernel (L0's NB-Agent).

    Args:
        model: Any `nbagent.models.Model` (OpenAI-compatible endpoint, local transformers, test doubles).
        tools: Host functions (`@tool` or plain typed callables) that kernel code can call.
        system_prompt: A template (see `nbagent.prompts`) or a callable; L0's sections by default.
        instructions: Extra text for the ``{instructions}`` placeholder (rules of an application).
        output_type: Type of the final answer: `str` (numbers are accepted and converted) or a pydantic
            model, a dataclass or any type pydantic validates.
        max_steps: Model calls per episode, format errors included.
        episode_timeout_s: Wall-clock limit of an episode (None: no limit).
        cell_timeout_s: Limit per cell; a cell past it is interrupted and reported as a timeout.
        context_budget_tokens: Prompt budget per model call (None: unlimited).
        context_policy: What to do over budget: ``"hard"``, ``"summarize"`` or ``"none"``.
        action_format: ``"xml"`` (L0's ``<think>``/``<code>``), ``"markdown"`` or an `ActionParser`.
        prefill: Text the assistant turn starts with (e.g. ``"<think>"`` or ``"```python\\n"``).
        sampling: Sampling settings; the parser's stop sequences are added to them, and replies are
            limited to `DEFAULT_MAX_TOKENS` (3,072, L0's budget) unless they set `max_tokens`.
        kernel_config: How the agent's own kernels start (ignored when a kernel is passed to `run`).
        deps_type: The type of the `deps` given to `run`, for type checkers and readers.
        max_format_errors: Unusable replies in a row that end the episode (termination ``format``).
        observation_chars: Character budget of one rendered cell output.
        notepad_chars: Character budget of the notepad rendering.
        summary_max_tokens: Token limit of a summary written by the ``"summarize"`` policy.
        reminder: A line added after every cell's output, e.g. how to submit (small models need it).
    """

    def __init__(
        self,
        model: Model,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        *,
        system_prompt: SystemPromptTemplate | None = None,
        instructions: str = "",
        output_type: type[OutputT] = str,  # type: ignore[assignment]
        max_steps: int = 10,
        episode_timeout_s: float | None = 240.0,
        cell_timeout_s: float = 60.0,
        context_budget_tokens: int | None = None,
        context_policy: ContextPolicy = "hard",
        action_format: ActionFormat | ActionParser = "xml",
        prefill: str | None = None,
        sampling: SamplingSettings | None = None,
        kernel_config: KernelConfig | None = None,
        deps_type: type[DepsT] | None = None,
        max_format_errors: int = 3,
        observation_chars: int = 4000,
        notepad_chars: int = 4000,
        summary_max_tokens: int = 400,
        reminder: str | None = None,
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}.")
        if max_format_errors < 1:
            raise ConfigError(f"max_format_errors must be at least 1, got {max_format_errors}.")
        self.model = model
        self.toolset = Toolset(tools)
        taken = RESERVED_NAMES.intersection(self.toolset.names)
        if taken:
            raise ToolDefinitionError(
                f"The tool name(s) {sorted(taken)} are reserved by the agent; "
                "rename yours with @tool(name=...)."
            )
        self.system_prompt: SystemPromptTemplate = system_prompt or DEFAULT_SYSTEM_PROMPT
        self.instructions = instructions
        self.output_type = output_type
        self.max_steps = max_steps
        self.episode_timeout_s = episode_timeout_s
        self.cell_timeout_s = cell_timeout_s
        self.context_budget_tokens = context_budget_tokens
        self.context_policy: ContextPolicy = context_policy
        self.parser = get_parser(action_format)
        self.prefill = prefill
        self.sampling = sampling or SamplingSettings()
        self.kernel_config = kernel_config
        self.deps_type = deps_type
        self.max_format_errors = max_format_errors
        self.observation_chars = observation_chars
        self.notepad_chars = notepad_chars
        self.summary_max_tokens = summary_max_tokens
        self.reminder = reminder
        # fail now, not in the first episode, on a bad template or an output type pydantic cannot describe
        self.render_system_prompt()

    # ----------------------------------------------------------------------------------------------
    # Configuration helpers
    # ----------------------------------------------------------------------------------------------

    def with_model(self, model: Model) -> Agent[DepsT, OutputT]:
        """A copy of this agent that uses `model`."""
        clone = copy.copy(self)
        clone.model = model
        return clone

    def settings(self) -> SamplingSettings:
        """The sampling settings sent with each step: the agent's, plus the parser's stop sequences and
        `DEFAULT_MAX_TOKENS` when they set no `max_tokens`."""
        stop = list(self.sampling.stop or [])
        stop.extend(s for s in self.parser.stop if s not in stop)
        max_tokens = self.sampling.max_tokens or DEFAULT_MAX_TOKENS
        return self.sampling.model_copy(update={"stop": stop or None, "max_tokens": max_tokens})

    def submit_tool(self, on_submit: Callable[[Any], None]) -> Tool:
        """The `submit_final_answer` tool for the output type; it passes the valid answer to `on_submit`."""
        answer_type: Any = TextAnswer if self.output_type is str else self.output_type

        def submit_final_answer(answer: Any) -> str:
            on_submit(answer)
            return "Answer submitted."

        submit_final_answer.__annotations__ = {"answer": answer_type, "return": str}
        submit_final_answer.__doc__ = "Submit the final answer to the task. This ends the task."
        return _episode_tool(submit_final_answer, answer_type)

    def render_system_prompt(self) -> str:
        """The system prompt of an episode, with the tools (and `submit_final_answer`) as Python stubs."""
        stubs = Toolset.merge(self.toolset, [self.submit_tool(lambda _: None)]).render_stubs()
        ctx = PromptContext(
            tools=stubs,
            step_format=self.parser.instructions,
            answer=answer_instructions(self.output_type),
            max_steps=self.max_steps,
            instructions=self.instructions,
        )
        return render_system_prompt(self.system_prompt, ctx)

    # ----------------------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------------------

    def iter(
        self, task: str | TaskSpec, *, deps: DepsT | None = None, kernel: Kernel | None = None
    ) -> AgentRun[OutputT]:
        """Run an episode step by step: ``async for step in agent.iter(task)``; see `AgentRun`."""
        spec = task if isinstance(task, TaskSpec) else TaskSpec(id=uuid.uuid4().hex[:12], prompt=task)
        return AgentRun(_Episode(self, spec, deps, kernel))

    async def run(
        self,
        task: str | TaskSpec,
        *,
        deps: DepsT | None = None,
        kernel: Kernel | None = None,
        on_step: StepCallback | None = None,
    ) -> RunResult[OutputT]:
        """Run one episode to its end and return its `RunResult`.

        `deps` reaches tools that take a ``RunContext`` (as ``ctx.deps``). With `kernel` (e.g. leased from
        a `KernelPool`) the episode uses that kernel and leaves it running; otherwise it starts its own
        and shuts it down. `on_step` (sync or async) is called with each finished step.
        """
        async with self.iter(task, deps=deps, kernel=kernel) as agent_run:
            async for step in agent_run:
                if on_step is not None:
                    outcome = on_step(step)
                    if inspect.isawaitable(outcome):
                        await outcome
        assert agent_run.result is not None
        return agent_run.result

    def run_sync(
        self,
        task: str | TaskSpec,
        *,
        deps: DepsT | None = None,
        on_step: StepCallback | None = None,
    ) -> RunResult[OutputT]:
        """`run` for synchronous code (not inside a running event loop: there, ``await agent.run``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(functools.partial(self.run, task, deps=deps, on_step=on_step))
        raise RuntimeError(
            "Agent.run_sync() was called inside a running event loop (e.g. in Jupyter or async code); "
            "use `await agent.run(...)` there."
        )


@functools.cache
def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape an episode, for the trajectory."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class _Episode(Generic[DepsT, OutputT]):
    """The mutable state of one episode; `steps_generator` is the loop."""

    agent: Agent[DepsT, OutputT]
    task: TaskSpec
    deps: DepsT | None
    kernel: Kernel | None
    trajectory_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    steps: list[Step] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    notepad_state: dict[str, Any] = field(default_factory=dict)
    answer: Any = None
    submitted: bool = False
    result: RunResult[OutputT] | None = None
    system_prompt: str = ""
    kernel_generation: int | None = None
    """The kernel generation the notepad and tool stubs were set up for."""
    timings: dict[str, float] = field(default_factory=lambda: {"setup_s": 0.0, "model_s": 0.0, "cell_s": 0.0})
    in_flight: _CallInFlight | None = None
    """The model call being awaited, if one is."""
    unfinished_call: UnfinishedCall | None = None
    """The model call a limit cut, once one did."""

    # ------------------------------------------------------------------------------------------
    # Host tools of the episode
    # ------------------------------------------------------------------------------------------

    def _on_submit(self, answer: Any) -> None:
        self.answer = answer
        self.submitted = True

    def _notepad_tool(self) -> Tool:
        def nbagent_notepad_sync(state: dict[str, Any]) -> None:
            Notepad(state)  # raises on a malformed state
            self.notepad_state = state

        nbagent_notepad_sync.__doc__ = "Internal: the kernel's notepad reports its new contents."
        return _episode_tool(nbagent_notepad_sync, None)

    def _bridge(self) -> ToolBridge:
        from nbagent.tools.bridge import ToolBridge

        toolset = Toolset.merge(
            self.agent.toolset, [self.agent.submit_tool(self._on_submit), self._notepad_tool()]
        )
        ctx = RunContext(deps=self.deps, task_id=self.task.id, metadata={"trajectory_id": self.trajectory_id})
        return ToolBridge(toolset, ctx)

    async def _ensure_set_up(self, kernel: Kernel, bridge: ToolBridge) -> str | None:
        """Make sure the kernel runs and holds the tool stubs and the notepad (restored from the host's
        copy), re-creating them after a restart. Returns the kernel's note if it had to be revived."""
        revived = await kernel.ensure_running()
        if self.kernel_generation == kernel.generation:
            return revived
        code = kernel_setup_code(self.notepad_state, reserved=[*bridge.toolset.names, "notepad"])
        try:
            await kernel.ensure_module(notepad.KERNEL_MODULE, notepad.kernel_source())
            await bridge.install(kernel, then=code)
        except (ToolError, KernelError) as exc:
            raise AgentRunError(f"Setting up the tools and the notepad in the kernel failed: {exc}") from exc
        self.kernel_generation = kernel.generation
        return revived

    # ------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------

    async def _summarize(self, turns: Sequence[Turn], previous: str | None) -> str:
        agent = self.agent
        request = summary_request(
            TASK_TEMPLATE.format(task=self.task.prompt),
            turns,
            previous,
            max_chars=8 * agent.summary_max_tokens,
        )
        messages = [
            {"role": "system", "content": SUMMARIZE_SYSTEM_PROMPT},
            {"role": "user", "content": request},
        ]
        settings = SamplingSettings(
            temperature=agent.sampling.temperature, max_tokens=agent.summary_max_tokens
        )
        try:
            call = await agent.model.complete(messages, settings)
        except Exception as exc:  # a failed summary must not end the episode: say so in its place
            return f"(no summary: the model call failed with {type(exc).__name__}: {exc})"
        return call.completion

    def _observation(self, cell: CellResult) -> str:
        from nbagent.kernel import render_cell

        text = render_cell(cell, budget_chars=self.agent.observation_chars)
        if cell.state_lost and cell.ok and cell.note:  # render_cell shows notes of failed cells only
            text = f"[kernel restarted] {cell.note}\n{text}"
        if not text.strip():
            text = EMPTY_OUTPUT_NOTE
        if cell.state_lost:
            text += f"\n{RESTART_NOTE}"
        observation = self.agent.parser.observation(text)
        return f"{observation}\n{self.agent.reminder}" if self.agent.reminder else observation

    async def steps_generator(self) -> AsyncGenerator[Step, None]:
        agent = self.agent
        started_wall, started = time.time(), time.monotonic()
        deadline = None if agent.episode_timeout_s is None else started + agent.episode_timeout_s
        termination = Termination.ERROR
        error: str | None = None
        detail: str | None = None
        owned: Kernel | None = None
        try:
            self.system_prompt = agent.render_system_prompt()
            builder = ContextBuilder(
                policy=agent.context_policy,
                budget_tokens=agent.context_budget_tokens,
                count=token_counter(agent.model),
                summarize=self._summarize,
            )
            bridge = self._bridge()
            kernel = self.kernel
            if kernel is None:
                from nbagent.kernel import Kernel

                kernel = owned = Kernel(agent.kernel_config)
                await kernel.start()
            await self._ensure_set_up(kernel, bridge)
            self.timings["setup_s"] = time.monotonic() - started
            task_text = TASK_TEMPLATE.format(task=self.task.prompt)
            settings = agent.settings()
            format_errors = 0
            termination = Termination.MAX_STEPS
            for index in range(agent.max_steps):
                if deadline is not None and time.monotonic() >= deadline:
                    termination = Termination.TIMEOUT
                    detail = f"The {self._timeout()} was reached after {_count(index, 'step')}."
                    break
                notepad = render_notepad(self.notepad_state, agent.notepad_chars)
                note = LAST_STEP_NOTE if index == agent.max_steps - 1 and index > 0 else ""
                try:
                    messages, events = await builder.build(
                        self.system_prompt, task_text, self.turns, notepad, note
                    )
                except ContextBudgetExceeded as exc:
                    termination, error = Termination.TOKEN_BUDGET, str(exc)
                    break
                call = await self._call_model(index, messages, settings, deadline)
                if call is None:
                    termination = Termination.TIMEOUT
                    timeout = self._timeout()
                    detail = self._cut_call(
                        f"{timeout} reached", f"The {timeout} was reached", settings.max_tokens
                    )
                    break
                step, timed_out = await self._act(index, call, events, notepad, kernel, bridge, deadline)
                format_errors = format_errors + 1 if step.action.kind == "format_error" else 0
                self.steps.append(step)
                yield step
                if self.submitted:
                    termination = Termination.SUBMITTED
                    break
                if timed_out:
                    termination = Termination.TIMEOUT
                    when = "while" if step.cell else "before"
                    detail = f"The {self._timeout()} was reached {when} the code of step {index + 1} ran."
                    break
                if format_errors >= agent.max_format_errors:
                    termination = Termination.FORMAT
                    error = (
                        f"{format_errors} replies in a row had no usable action; last: {step.action.error}"
                    )
                    break
        except _ModelCallFailed as exc:
            termination, error = Termination.ERROR, str(exc)
        except NBAgentError as exc:
            termination, error = Termination.ERROR, f"{type(exc).__name__}: {exc}"
        except (anyio.get_cancelled_exc_class(), GeneratorExit):
            termination, error = Termination.CANCELLED, "The episode was cancelled."
            if self.in_flight is not None:
                detail = self._cut_call("episode cancelled", "The episode was cancelled", None)
            raise
        except Exception as exc:
            termination, error = Termination.ERROR, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if owned is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                    await owned.shutdown()
            self._finish(termination, error, detail, started_wall, time.monotonic() - started)

    def _timeout(self) -> str:
        return f"episode timeout of {self.agent.episode_timeout_s:g} s"

    def _cut_call(self, reason: str, event: str, max_tokens: int | None) -> str:
        """Record the model call in flight as cut by `reason`; the sentence saying so starts with `event`."""
        assert self.in_flight is not None
        cut = self.unfinished_call = self.in_flight.cut(f"{reason} during the model call")
        detail = (
            f"{event} during model call {cut.step_index + 1}, which had run {cut.ran_s:.1f} s without a reply"
        )
        if max_tokens is not None:
            detail += f" (replies may be up to {max_tokens:,} tokens)"
        return detail + "."

    async def _call_model(
        self, index: int, messages: list[ChatMessage], settings: SamplingSettings, deadline: float | None
    ) -> ModelCall | None:
        """The model's reply, or None when the episode's time ran out while waiting for it (the call in
        flight stays in `in_flight`, as it does when the episode is cancelled)."""
        agent = self.agent
        t0 = time.monotonic()
        remaining = None if deadline is None else max(0.0, deadline - t0)
        prefill = agent.prefill or None
        self.in_flight = _CallInFlight(index, with_prefill(messages, prefill), prefill, time.time(), t0)
        with anyio.move_on_after(remaining):
            try:
                call = await agent.model.complete(messages, settings, prefill=agent.prefill)
            except Exception as exc:
                self.in_flight = None
                raise _ModelCallFailed(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self.timings["model_s"] += time.monotonic() - t0
            self.in_flight = None
            return call
        return None

    async def _act(
        self,
        index: int,
        call: ModelCall,
        events: list[ContextEvent],
        notepad: str,
        kernel: Kernel,
        bridge: ToolBridge,
        deadline: float | None,
    ) -> tuple[Step, bool]:
        """Parse the reply, run its code, and record the step; also whether the episode's time ran out."""
        agent = self.agent
        truncated = call.finish_reason == "length"
        text = agent.parser.close((agent.prefill or "") + call.completion, truncated=truncated)
        action = agent.parser.parse(text, truncated=truncated)
        cell: CellResult | None = None
        timed_out = False
        if action.kind == "format_error":
            observation = FORMAT_ERROR_NOTE.format(error=action.error)
        else:
            assert action.code is not None
            timeout = agent.cell_timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                observation, timed_out = "(not run: the episode's time ran out)", True
            else:
                t0 = time.monotonic()
                revived = await self._ensure_set_up(kernel, bridge)
                cell = await bridge.run_cell(kernel, action.code, timeout)
                if revived:
                    cell.state_lost = True
                    cell.note = f"{revived} {cell.note}" if cell.note else revived
                self.timings["cell_s"] += time.monotonic() - t0
                timed_out = timeout < agent.cell_timeout_s and cell.status is CellStatus.TIMEOUT
                observation = self._observation(cell)
                if any(step.action.code == action.code for step in self.steps[-1:]):
                    observation += f"\n{REPEAT_NOTE}"
        self.turns.append(Turn(index=index, assistant=text, observation=observation))
        step = Step(
            index=index,
            model_call=call,
            action=action,
            cell=cell,
            observation=observation,
            context_events=events,
            notepad=notepad or None,
        )
        return step, timed_out

    def _finish(
        self,
        termination: Termination,
        error: str | None,
        detail: str | None,
        started_wall: float,
        wall_s: float,
    ) -> None:
        """Set the result; `detail` explains the termination (by default: `error`, or the step count)."""
        agent = self.agent
        answer = self.answer if self.submitted else None
        if detail is None and termination is Termination.SUBMITTED:
            detail = f"An answer was submitted in step {len(self.steps)}."
        elif detail is None and termination is Termination.MAX_STEPS:
            detail = f"The step limit ({_count(agent.max_steps, 'step')}) was reached without an answer."
        final = to_json_value(answer, "final answer")
        self.timings["total_s"] = wall_s
        trajectory = Trajectory(
            id=self.trajectory_id,
            task=self.task,
            model=agent.model.info.model_copy(update={"sampling": agent.settings()}),
            system_prompt=self.system_prompt,
            steps=self.steps,
            final_answer=final,
            termination=termination,
            termination_detail=detail or error,
            error=error,
            unfinished_call=self.unfinished_call,
            started_at=started_wall,
            wall_s=wall_s,
            versions=dict(package_versions()),
            metadata={"action_format": agent.parser.name, "timings": self.timings},
        )
        self.result = RunResult(answer=answer, trajectory=trajectory)


class _ModelCallFailed(Exception):
    """Internal: the model call raised; carries the message for the trajectory."""


@dataclass(frozen=True)
class _CallInFlight:
    """A model call being awaited: what was sent, and when."""

    step_index: int
    messages: list[ChatMessage]
    prefill: str | None
    started_at: float
    """Unix time."""
    started: float
    """`time.monotonic()`."""

    def cut(self, reason: str) -> UnfinishedCall:
        return UnfinishedCall(
            step_index=self.step_index,
            messages=self.messages,
            prefill=self.prefill,
            started_at=self.started_at,
            ran_s=time.monotonic() - self.started,
            reason=reason,
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
