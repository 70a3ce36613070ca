"""The agent: think, write code, run it in a real kernel, read the output, repeat.

`Agent` holds the settings of its episodes and runs them (`nbagent.agent.episode` is the loop). Each step
builds the context (`nbagent.agent.history`), calls the model, parses the reply into an action
(`nbagent.agent.actions`), runs the code in the episode's kernel through the tool bridge, and renders the
cell's outputs as the next observation. The episode ends when kernel code calls
``submit_final_answer(...)`` with a valid answer, or at a limit: `max_steps`, the episode's wall-clock
time, the context's token budget, `max_format_errors` unusable replies in a row, a model error, or
cancellation. Whatever ends it, the result holds the full `Trajectory` of the steps done so far.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic

import anyio
from pydantic import BeforeValidator
from typing_extensions import TypeVar

from nbagent.agent.actions import ActionFormat, ActionParser, get_parser
from nbagent.agent.episode import Episode, episode_tool
from nbagent.agent.history import ContextPolicy, Turn, summary_request
from nbagent.agent.notepad import SYNC_TOOL_NAME
from nbagent.agent.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    EMPTY_OUTPUT_NOTE,
    RESTART_NOTE,
    SUMMARIZE_SYSTEM_PROMPT,
    TASK_TEMPLATE,
    PromptContext,
    SystemPromptTemplate,
    answer_instructions,
    render_system_prompt,
)
from nbagent.errors import ConfigError, ToolDefinitionError
from nbagent.models.base import Model
from nbagent.tools import Tool, Toolset
from nbagent.trajectory import (
    DEFAULT_MAX_TOKENS,
    CellResult,
    SamplingSettings,
    Step,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
)

if TYPE_CHECKING:
    from nbagent.kernel import Kernel, KernelConfig

DepsT = TypeVar("DepsT", default=None)
OutputT = TypeVar("OutputT", default=str)

StepCallback = Callable[[Step], Awaitable[None] | None]

SUBMIT_TOOL_NAME = "submit_final_answer"
RESERVED_NAMES = frozenset({SUBMIT_TOOL_NAME, SYNC_TOOL_NAME, "notepad"})


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

    def __init__(self, episode: Episode) -> None:
        self._episode = episode
        self._steps = episode.steps_generator()
        self._result: RunResult[OutputT] | None = None

    @property
    def result(self) -> RunResult[OutputT] | None:
        trajectory = self._episode.trajectory
        if self._result is None and trajectory is not None:
            self._result = RunResult(answer=self._episode.answer, trajectory=trajectory)
        return self._result

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
        system_prompt: A template (see `nbagent.agent.prompts`) or a callable; L0's sections by default.
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
        return episode_tool(submit_final_answer, answer_type)

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

    def render_observation(self, cell: CellResult) -> str:
        """The user message that reports `cell` to the model: its rendered outputs, notes and reminder."""
        from nbagent.kernel import render_cell

        text = render_cell(cell, budget_chars=self.observation_chars)
        if cell.state_lost and cell.ok and cell.note:  # render_cell shows notes of failed cells only
            text = f"[kernel restarted] {cell.note}\n{text}"
        if not text.strip():
            text = EMPTY_OUTPUT_NOTE
        if cell.state_lost:
            text += f"\n{RESTART_NOTE}"
        observation = self.parser.observation(text)
        return f"{observation}\n{self.reminder}" if self.reminder else observation

    async def summarize(self, task: str, turns: Sequence[Turn], previous: str | None) -> str:
        """A summary of dropped `turns` of the episode on `task` (the ``"summarize"`` context policy)."""
        request = summary_request(
            TASK_TEMPLATE.format(task=task), turns, previous, max_chars=8 * self.summary_max_tokens
        )
        messages = [
            {"role": "system", "content": SUMMARIZE_SYSTEM_PROMPT},
            {"role": "user", "content": request},
        ]
        settings = SamplingSettings(temperature=self.sampling.temperature, max_tokens=self.summary_max_tokens)
        try:
            call = await self.model.complete(messages, settings)
        except Exception as exc:  # a failed summary must not end the episode: say so in its place
            return f"(no summary: the model call failed with {type(exc).__name__}: {exc})"
        return call.completion

    # ----------------------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------------------

    def iter(
        self, task: str | TaskSpec, *, deps: DepsT | None = None, kernel: Kernel | None = None
    ) -> AgentRun[OutputT]:
        """Run an episode step by step: ``async for step in agent.iter(task)``; see `AgentRun`."""
        spec = task if isinstance(task, TaskSpec) else TaskSpec(id=uuid.uuid4().hex[:12], prompt=task)
        return AgentRun(Episode(self, spec, deps, kernel))

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
