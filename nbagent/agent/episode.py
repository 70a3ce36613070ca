"""One episode of an `Agent`: the state machine from kernel set-up to the finished `Trajectory`.

Each step builds the context, calls the model (a call a limit cuts is kept as `UnfinishedCall`), runs the
parsed code in the kernel through the tool bridge and yields the `Step`. The agent's settings are read
through `EpisodeAgent`, so this module does not import `nbagent.agent.agent`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from nbagent.agent import notepad
from nbagent.agent.actions import ActionParser
from nbagent.agent.history import ContextBudgetExceeded, ContextBuilder, ContextPolicy, Turn, token_counter
from nbagent.agent.notepad import Notepad, kernel_setup_code, render_notepad
from nbagent.agent.prompts import FORMAT_ERROR_NOTE, LAST_STEP_NOTE, REPEAT_NOTE, TASK_TEMPLATE
from nbagent.errors import KernelError, NBAgentError, ToolError
from nbagent.models.base import ChatMessage, Model
from nbagent.models.chat_tokenizer import with_prefill
from nbagent.tools import RunContext, Tool, Toolset
from nbagent.tools.results import to_json_value
from nbagent.trajectory import (
    CellResult,
    CellStatus,
    ContextEvent,
    ModelCall,
    SamplingSettings,
    Step,
    TaskSpec,
    Termination,
    Trajectory,
    UnfinishedCall,
)

if TYPE_CHECKING:
    from nbagent.kernel import Kernel, KernelConfig
    from nbagent.tools.bridge import ToolBridge

_VERSIONED_PACKAGES = ("nbagent", "pydantic", "jupyter_client", "ipykernel", "openai", "anyio")
_EPISODE_TOOLS: dict[tuple[str, Any], Tool] = {}


class AgentRunError(NBAgentError):
    """The episode could not be set up (kernel start or tool set-up failed)."""


def episode_tool(function: Callable[..., Any], key: Any) -> Tool:
    """`Tool(function)` for a closure made per episode: its signature (which `key` determines) is
    inspected once, later closures reuse that definition (`Tool.bound_to`)."""
    name = function.__name__
    template = _EPISODE_TOOLS.get((name, key))
    if template is None:
        template = _EPISODE_TOOLS[(name, key)] = Tool(function, run_in_thread=False)
    return template.bound_to(function)


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


class EpisodeAgent(Protocol):
    """What an episode reads from its agent (see `nbagent.agent.agent.Agent` for their meaning)."""

    model: Model
    toolset: Toolset
    parser: ActionParser
    prefill: str | None
    kernel_config: KernelConfig | None
    max_steps: int
    max_format_errors: int
    episode_timeout_s: float | None
    cell_timeout_s: float
    context_budget_tokens: int | None
    context_policy: ContextPolicy
    notepad_chars: int

    def settings(self) -> SamplingSettings: ...
    def submit_tool(self, on_submit: Callable[[Any], None]) -> Tool: ...
    def render_system_prompt(self) -> str: ...
    def render_observation(self, cell: CellResult) -> str: ...
    async def summarize(self, task: str, turns: Sequence[Turn], previous: str | None) -> str: ...


@dataclass
class Episode:
    """The mutable state of one episode; `steps_generator` is the loop, `trajectory` is set at its end."""

    agent: EpisodeAgent
    task: TaskSpec
    deps: Any
    kernel: Kernel | None
    trajectory_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    steps: list[Step] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    notepad_state: dict[str, Any] = field(default_factory=dict)
    answer: Any = None
    submitted: bool = False
    trajectory: Trajectory | None = None
    system_prompt: str = ""
    task_message: str = ""
    kernel_generation: int | None = None
    """The kernel generation the notepad and tool stubs were set up for."""
    timings: dict[str, float] = field(default_factory=lambda: {"setup_s": 0.0, "model_s": 0.0, "cell_s": 0.0})
    in_flight: _CallInFlight | None = None
    """The model call being awaited, if one is."""
    unfinished_call: UnfinishedCall | None = None
    """The model call a limit cut, once one did."""

    def _on_submit(self, answer: Any) -> None:
        self.answer = answer
        self.submitted = True

    def _notepad_tool(self) -> Tool:
        def nbagent_notepad_sync(state: dict[str, Any]) -> None:
            Notepad(state)  # raises on a malformed state
            self.notepad_state = state

        nbagent_notepad_sync.__doc__ = "Internal: the kernel's notepad reports its new contents."
        return episode_tool(nbagent_notepad_sync, None)

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
            await bridge.install(kernel, then=code)  # which ensures the stubs' module
        except (ToolError, KernelError) as exc:
            raise AgentRunError(f"Setting up the tools and the notepad in the kernel failed: {exc}") from exc
        self.kernel_generation = kernel.generation
        return revived

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
                summarize=functools.partial(agent.summarize, self.task.prompt),
            )
            bridge = self._bridge()
            kernel = self.kernel
            if kernel is None:
                from nbagent.kernel import Kernel

                kernel = owned = Kernel(agent.kernel_config)
                await kernel.start()
            await self._ensure_set_up(kernel, bridge)
            self.timings["setup_s"] = time.monotonic() - started
            self.task_message = TASK_TEMPLATE.format(task=self.task.prompt)
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
                        self.system_prompt, self.task_message, self.turns, notepad, note
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
                observation = agent.render_observation(cell)
                if any(step.action.code == action.code for step in self.steps[-1:]):
                    observation += f"\n{REPEAT_NOTE}"
        self.turns.append(Turn(index=index, assistant=text, observation=observation))
        step = Step(
            index=index,
            model_call=call,
            assistant_text=text,
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
        """Set `trajectory`; `detail` explains the termination (by default: `error`, or the step count)."""
        agent = self.agent
        if detail is None and termination is Termination.SUBMITTED:
            detail = f"An answer was submitted in step {len(self.steps)}."
        elif detail is None and termination is Termination.MAX_STEPS:
            detail = f"The step limit ({_count(agent.max_steps, 'step')}) was reached without an answer."
        final = to_json_value(self.answer, "final answer")
        self.timings["total_s"] = wall_s
        self.trajectory = Trajectory(
            id=self.trajectory_id,
            task=self.task,
            model=agent.model.info.model_copy(update={"sampling": agent.settings()}),
            system_prompt=self.system_prompt,
            task_message=self.task_message,
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
