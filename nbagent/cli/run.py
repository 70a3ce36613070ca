"""`nbagent run`: answer one question, printing each step as it finishes, and save the episode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
from rich.syntax import Syntax
from rich.text import Text

from nbagent.cli.options import (
    EXIT_ANSWERED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO_ANSWER,
    AgentFlags,
    fail,
    one_line_errors,
    with_flag_groups,
)
from nbagent.output_files import check_output_file
from nbagent.trajectory import Step, Termination, Trajectory

if TYPE_CHECKING:
    from nbagent.agent import Agent, RunResult


class StepPrinter:
    """Prints steps with rich: reasoning, code, output (or the format error)."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose

    def step(self, step: Step) -> None:
        call, action = step.model_call, step.action
        title = f"Step {step.index + 1}"
        if self.verbose:
            usage = call.usage
            tokens = f", {usage.prompt_tokens}+{usage.completion_tokens} tokens" if usage else ""
            title += f"  ({call.latency_s:.1f} s{tokens}, finish: {call.finish_reason})"
        self.console.print(Rule(title, style="cyan"))
        for event in step.context_events:
            dropped = ", ".join(str(i + 1) for i in event.dropped_steps)
            self.console.print(Text(f"[context {event.kind}: steps {dropped} dropped]", style="yellow"))
        if action.kind == "format_error":
            raw = (call.prefill or "") + call.completion
            self.console.print(Panel(Text(raw), title="reply (not runnable)", border_style="red"))
            self.console.print(Text(f"format error: {action.error}", style="red"))
            return
        if action.think:
            self.console.print(Text(action.think, style="italic dim"))
        self.console.print(Syntax(action.code or "", "python", theme="ansi_dark", background_color="default"))
        cell = step.cell
        if cell is None:
            self.console.print(Panel(Text(step.observation), title="output (not run)", border_style="red"))
            return
        from nbagent.kernel import render_cell

        shown = render_cell(cell, budget_chars=4000 if self.verbose else 1200) or "(no output)"
        style = "green" if cell.ok else "red"
        self.console.print(Panel(Text(shown), title=f"output ({cell.status.value})", border_style=style))
        if self.verbose:
            for tool_call in cell.tool_calls:
                outcome = f"error: {tool_call.error}" if tool_call.error else repr(tool_call.result)[:200]
                self.console.print(
                    Text(f"  tool {tool_call.name}{tuple(tool_call.args)} -> {outcome}", style="dim")
                )

    def summary(self, trajectory: Trajectory) -> None:
        if trajectory.termination is Termination.SUBMITTED:
            answer = trajectory.final_answer
            shown = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
            self.console.print(Panel(Text(shown, style="bold"), title="answer", border_style="green"))
        else:
            detail = trajectory.termination_detail or trajectory.error  # files from before the detail
            reason = f"No answer ({trajectory.termination})."
            self.console.print(Text(f"{reason} {detail}" if detail else reason, style="red"))
        self.console.print(
            Text(f"{len(trajectory.steps)} steps in {trajectory.wall_s:.1f} s", style="dim"),
        )

    def trajectory(self, trajectory: Trajectory) -> None:
        self.console.print(Markdown(f"**Task** ({trajectory.task.id}): {trajectory.task.prompt}"))
        if self.verbose and trajectory.system_prompt:
            self.console.print(
                Panel(Text(trajectory.system_prompt), title="system prompt", border_style="dim")
            )
        for step in trajectory.steps:
            self.step(step)
        self.summary(trajectory)


def _default_paths(stamp: str) -> tuple[Path, Path]:
    return Path("runs") / f"{stamp}.ipynb", Path("runs") / "trajectories.jsonl"


@with_flag_groups
def run(
    question: Annotated[str, typer.Argument(help="The task or question.", show_default=False)],
    *,
    flags: AgentFlags,
    notebook: Annotated[
        Path | None,
        typer.Option("--notebook", help="Save the episode as a notebook (default runs/<time>.ipynb)."),
    ] = None,
    trajectory: Annotated[
        Path | None,
        typer.Option(
            "--trajectory",
            "--save",
            help="Append the trajectory JSON line (default runs/trajectories.jsonl).",
        ),
    ] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Save nothing unless a path is given.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout (steps go to stderr).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show prompts, timings, tool calls.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the answer.")] = False,
) -> None:
    """Answer QUESTION with an agent that writes and runs Python, showing each step."""
    console = Console(stderr=json_output, highlight=False)
    if not no_save:
        default_nb, default_traj = _default_paths(time.strftime("%Y%m%d-%H%M%S"))
        notebook = notebook or default_nb
        trajectory = trajectory or default_traj
    with one_line_errors():
        if trajectory is not None:
            check_output_file(trajectory, "the trajectory")
        if notebook is not None:
            check_output_file(notebook, "the notebook")
        choice = flags.model_choice()
        settings = flags.agent_settings(choice)
    if choice.local:
        console.print(
            Text(
                f"No endpoint configured (--base-url, NBAGENT_BASE_URL or OPENAI_BASE_URL): using the "
                f"{choice.description}. It is tiny: trained for questions that a few lines of Python "
                "answer; point --base-url at a larger model for anything else.",
                style="yellow",
            )
        )
    else:
        console.print(Text(f"Model: {choice.description}", style="dim"))
    from nbagent.agent import Agent

    agent: Agent[None, str] = Agent(choice.model, **settings)
    printer = StepPrinter(console, verbose=verbose)
    if verbose:
        console.print(Panel(Text(agent.render_system_prompt()), title="system prompt", border_style="dim"))
    outcome = _run_episode(agent, question, None if quiet else printer.step, notebook, trajectory)
    result = outcome.result
    if result is None:  # interrupted before anything could be recorded
        console.print(Text("Interrupted.", style="red"))
        raise typer.Exit(EXIT_INTERRUPTED)
    traj = result.trajectory
    if quiet:
        if result.termination is Termination.SUBMITTED:
            console.print(
                str(traj.final_answer)
                if isinstance(traj.final_answer, str)
                else json.dumps(traj.final_answer)
            )
        else:
            console.print(
                Text(f"no answer ({traj.termination}): {traj.error or ''}".rstrip(": "), style="red")
            )
    else:
        printer.summary(traj)
        for label, path in outcome.saved.items():
            console.print(Text(f"{label}: {path}", style="dim"), soft_wrap=True)
    if json_output:
        payload = {
            "answer": traj.final_answer,
            "termination": str(traj.termination),
            "termination_detail": traj.termination_detail,
            "error": traj.error,
            "steps": len(traj.steps),
            "notebook": str(outcome.saved["notebook"]) if "notebook" in outcome.saved else None,
            "trajectory": str(outcome.saved["trajectory"]) if "trajectory" in outcome.saved else None,
        }
        typer.echo(json.dumps(payload, ensure_ascii=False))
    if outcome.unsaved:
        fail(outcome.save_failure())
    raise typer.Exit(_exit_code(result, outcome.interrupted))


@dataclass
class _Outcome:
    result: RunResult[str] | None = None
    saved: dict[str, Path] = field(default_factory=dict)
    """The outputs written ("trajectory", "notebook"), with their paths."""
    unsaved: list[str] = field(default_factory=list)
    """The outputs that could not be written: ``the notebook to PATH (why)``."""
    interrupted: bool = False

    def save(self, result: RunResult[str], trajectory: Path | None, notebook: Path | None) -> None:
        """Write the trajectory first, then the notebook; a failure to write one is recorded, and never
        keeps the other from being written."""
        for label, path, save in (
            ("trajectory", trajectory, result.save_trajectory),
            ("notebook", notebook, result.save_notebook),
        ):
            if path is None:
                continue
            try:
                self.saved[label] = save(path)
            except OSError as exc:
                self.unsaved.append(f"the {label} to {path} ({exc.strerror or exc})")

    def save_failure(self) -> str:
        """One line: what could not be written, and what was."""
        kept = "".join(f"; the {label} was saved to {path}" for label, path in self.saved.items())
        return f"could not write {' or '.join(self.unsaved)}{kept}."


def _run_episode(
    agent: Agent[None, str],
    question: str,
    on_step: Callable[[Step], None] | None,
    notebook: Path | None,
    trajectory: Path | None,
) -> _Outcome:
    """Run the episode and save what it produced, also when interrupted with Ctrl-C."""
    import anyio

    outcome = _Outcome()

    async def go() -> None:
        agent_run = agent.iter(question)
        try:
            async with agent_run:
                async for step in agent_run:
                    if on_step is not None:
                        on_step(step)
        finally:
            with anyio.CancelScope(shield=True):
                await agent.model.aclose()
            outcome.result = agent_run.result
            if outcome.result is not None:
                outcome.save(outcome.result, trajectory, notebook)

    try:
        anyio.run(go)
    except KeyboardInterrupt:
        outcome.interrupted = True
    return outcome


def _exit_code(result: RunResult[str], interrupted: bool) -> int:
    if interrupted or result.termination is Termination.CANCELLED:
        return EXIT_INTERRUPTED
    if result.termination is Termination.SUBMITTED:
        return EXIT_ANSWERED
    if result.termination is Termination.ERROR:
        return EXIT_ERROR
    return EXIT_NO_ANSWER
