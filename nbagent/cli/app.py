"""The `nbagent` command line: `run` a question, `show` and `export` recorded trajectories.

Other commands register themselves: every module ``nbagent.cli_<name>`` is imported when the app is
built and, if it defines ``register(app: typer.Typer) -> None``, that is called. Such modules reuse the
option types below (``BaseUrlOption``, ``ModelOption``, ...) and `resolve_model` / `agent_settings`, so
every command takes the same model and agent flags.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
from rich.syntax import Syntax
from rich.text import Text

from nbagent.errors import ConfigError, NBAgentError
from nbagent.output_files import check_output_file, check_output_folder
from nbagent.trajectory import DEFAULT_MAX_TOKENS, CorruptTrajectoryError, Step, Termination, Trajectory

if TYPE_CHECKING:
    from nbagent.agent.agent import Agent, RunResult
    from nbagent.models.base import Model

EXIT_ANSWERED = 0
EXIT_ERROR = 1
EXIT_NO_ANSWER = 3
EXIT_INTERRUPTED = 130

LOCAL_FORMAT = "markdown"
LOCAL_PREFILL = "```python\n"
ENDPOINT_EPISODE_TIMEOUT = 240.0
"""L0's wall-clock limit per episode."""
LOCAL_EPISODE_TIMEOUT = 900.0
"""An in-process model on a CPU is slow: allow it more time."""
LOCAL_MAX_TOKENS = 200
LOCAL_OBSERVATION_CHARS = 1500
"""A tiny CPU model gains nothing from long tracebacks, and every prompt token costs it time."""
LOCAL_TEMPERATURE = 0.3
LOCAL_REMINDER = "Does this answer the task? Then submit it now with submit_final_answer(answer)."
"""Defaults for the embedded SmolLM2-135M. Prefilled with ```` ```python\\n ````, a fenced block is the
format it reliably answers with code (see MEASUREMENTS.md); without a reminder after each output it
never calls submit_final_answer, and at temperature 0.3 its code is right more often than at 0.7 or 1."""


class FormatChoice(StrEnum):
    xml = "xml"
    markdown = "markdown"


class ExportFormat(StrEnum):
    openai = "openai"
    sharegpt = "sharegpt"
    ipynb = "ipynb"


# --------------------------------------------------------------------------------------------------
# Errors: one line on stderr
# --------------------------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """Print ``error: MESSAGE`` as one line on stderr and exit with `EXIT_ERROR`."""
    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="red"), soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """`fail` with the message of an `NBAgentError` raised inside (a bad setting, path or locked output)."""
    try:
        yield
    except NBAgentError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------------------------------
# Shared options (reused by other commands' modules)
# --------------------------------------------------------------------------------------------------

BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar=["NBAGENT_BASE_URL", "OPENAI_BASE_URL"],
        help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1). Without one, the embedded "
        "local model runs in-process.",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="NBAGENT_MODEL",
        help="Model name at the endpoint (default: the only model it serves).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=["NBAGENT_API_KEY", "OPENAI_API_KEY"],
        help="API key for the endpoint.",
        show_default=False,
        show_envvar=False,
    ),
]
LocalModelOption = Annotated[
    Path | None,
    typer.Option(
        "--local-model",
        help="A Hugging Face model folder, or a LoRA adapter folder (run on its base), to run in-process "
        "instead of the embedded agent.",
    ),
]
MaxStepsOption = Annotated[int, typer.Option("--max-steps", min=1, help="Model calls per episode.")]
TemperatureOption = Annotated[
    float | None,
    typer.Option(
        "--temperature", help=f"Sampling temperature (default: the model's; local: {LOCAL_TEMPERATURE})."
    ),
]
MaxTokensOption = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        min=1,
        help=f"Tokens per reply (default {DEFAULT_MAX_TOKENS}, L0's; local: {LOCAL_MAX_TOKENS}).",
        show_default=False,
    ),
]
DEFAULT_CELL_TIMEOUT = 60.0
CellTimeoutOption = Annotated[float, typer.Option("--cell-timeout", help="Seconds per cell.")]
EpisodeTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--episode-timeout",
        help=f"Seconds per episode (default {ENDPOINT_EPISODE_TIMEOUT:g}; local: {LOCAL_EPISODE_TIMEOUT:g}).",
        show_default=False,
    ),
]
FormatOption = Annotated[
    FormatChoice | None,
    typer.Option(
        "--format",
        help=f"Action format: xml (L0's <think>/<code>) or markdown (```python). "
        f"Default: xml with an endpoint, {LOCAL_FORMAT} with the local model.",
        show_default=False,
    ),
]
PrefillOption = Annotated[
    str | None,
    typer.Option(
        "--prefill",
        help="Text the model's reply starts with (\\n and \\t are read as newline and tab). "
        "Default: none with an endpoint, '```python\\n' with the local model; '' for none.",
        show_default=False,
    ),
]
ToolOption = Annotated[
    list[str] | None,
    typer.Option("--tool", help="A host tool as module:function (repeatable).", show_default=False),
]
SandboxOption = Annotated[
    bool,
    typer.Option(
        "--sandbox/--no-sandbox",
        help="Run kernels in a bubblewrap sandbox: read-only system, private /tmp, no network.",
    ),
]
AllowNetworkOption = Annotated[
    bool,
    typer.Option("--allow-network", help="Give the sandboxed kernel the network (tools need none)."),
]


@dataclass
class ModelChoice:
    """The model a command will use, and what the user should be told about it."""

    model: Model
    description: str
    local: bool
    context_tokens: int | None = None
    """The model's context length, when known (vLLM's `max_model_len`, a local model's config)."""


def _endpoint_models(base_url: str, api_key: str | None) -> dict[str, int | None]:
    """The models an OpenAI-compatible endpoint serves, with their context length where it says
    (vLLM does); `ConfigError` when the endpoint cannot be reached or is not such an API."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise ConfigError(f"Cannot reach the endpoint {base_url} ({type(exc).__name__}: {exc}).") from exc
    if response.status_code in (401, 403):
        raise ConfigError(f"The endpoint {base_url} refused the API key (HTTP {response.status_code}).")
    if response.status_code >= 400:
        raise ConfigError(
            f"GET {url} answered HTTP {response.status_code}: is this an OpenAI-compatible API?"
        )
    try:
        items = response.json()["data"]
        return {str(item["id"]): item.get("max_model_len") for item in items}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"GET {url} did not return an OpenAI model list.") from exc


def _folder_context_tokens(folder: Path) -> int | None:
    """`max_position_embeddings` from a Hugging Face model folder's config, if it has one."""
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def resolve_model(
    base_url: str | None, model: str | None, api_key: str | None, local_model: Path | None
) -> ModelChoice:
    """The endpoint model when a base URL is configured, else the embedded (or given) local model.

    The endpoint is checked first: unreachable, or not serving `model`, raises `ConfigError` with a
    one-line reason.
    """
    if base_url:
        served = _endpoint_models(base_url, api_key)
        if model is None:
            if len(served) != 1:
                listed = ", ".join(list(served)[:10]) or "none"
                raise ConfigError(
                    f"{base_url} serves {len(served)} models ({listed}): choose one with --model."
                )
            model = next(iter(served))
        elif served and model not in served:
            listed = ", ".join(list(served)[:10])
            raise ConfigError(f"{base_url} does not serve the model {model!r}; it serves: {listed}.")
        from nbagent.models.openai import OpenAIModel

        return ModelChoice(
            OpenAIModel(model, base_url=base_url, api_key=api_key),
            f"{model} at {base_url}",
            local=False,
            context_tokens=served.get(model),
        )
    from nbagent.models.local import adapter_base, default_local_model, ensure_smollm2
    from nbagent.models.local import local_model as load_local_model

    if local_model is not None:
        if not local_model.is_dir():
            raise ConfigError(
                f"--local-model {local_model} is not a folder (expected a Hugging Face model folder or a "
                "LoRA adapter folder)."
            )
        is_adapter = (local_model / "adapter_config.json").is_file()
        return ModelChoice(
            load_local_model(local_model),
            f"local model {local_model} (in-process{', an adapter on its base' if is_adapter else ''})",
            local=True,
            context_tokens=_folder_context_tokens(adapter_base(local_model) if is_adapter else local_model),
        )
    return ModelChoice(
        default_local_model(),
        "embedded agent, SmolLM2-135M-Instruct with nbagent's trained adapter (in-process, CPU)",
        local=True,
        context_tokens=_folder_context_tokens(ensure_smollm2()),
    )


def load_tool(spec: str) -> Any:
    """The callable named by ``module:function`` (a `Tool` or a typed function)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter(f"{spec!r}: write a tool as module:function, e.g. mytools:lookup.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"{spec!r}: cannot import {module_name} ({exc}).") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise typer.BadParameter(f"{spec!r}: {module_name} has no attribute {attr!r}.") from None


def agent_settings(
    choice: ModelChoice,
    *,
    max_steps: int,
    temperature: float | None,
    max_tokens: int | None,
    cell_timeout: float,
    episode_timeout: float | None,
    action_format: FormatChoice | None,
    prefill: str | None,
    tools: list[str] | None,
    sandbox: bool,
    allow_network: bool,
) -> dict[str, Any]:
    """Keyword arguments for `Agent` from the shared flags, with the local model's defaults applied.

    When the model's context length is known, the context budget is that length minus the reply's
    `max_tokens` (the ``hard`` policy then drops old steps instead of overflowing the model)."""
    from nbagent.kernel import KernelConfig
    from nbagent.trajectory import SamplingSettings

    if allow_network and not sandbox:
        raise ConfigError(
            "--allow-network applies to the sandbox only (an unsandboxed kernel has the network): "
            "add --sandbox, or drop --allow-network."
        )
    if action_format is None:
        action_format = FormatChoice(LOCAL_FORMAT) if choice.local else FormatChoice.xml
    if prefill is None:
        prefill = LOCAL_PREFILL if choice.local and action_format is FormatChoice.markdown else ""
    if episode_timeout is None:
        episode_timeout = LOCAL_EPISODE_TIMEOUT if choice.local else ENDPOINT_EPISODE_TIMEOUT
    if choice.local:
        max_tokens = LOCAL_MAX_TOKENS if max_tokens is None else max_tokens
        temperature = LOCAL_TEMPERATURE if temperature is None else temperature
    budget = None
    if choice.context_tokens is not None:  # leave room for the reply
        budget = max(256, choice.context_tokens - (max_tokens or DEFAULT_MAX_TOKENS))
    settings: dict[str, Any] = {
        "tools": [load_tool(spec) for spec in tools or []],
        "max_steps": max_steps,
        "episode_timeout_s": episode_timeout,
        "cell_timeout_s": cell_timeout,
        "action_format": action_format.value,
        "prefill": prefill.replace("\\n", "\n").replace("\\t", "\t") or None,
        "sampling": SamplingSettings(temperature=temperature, max_tokens=max_tokens),
        "kernel_config": KernelConfig(sandbox=True, allow_network=allow_network) if sandbox else None,
        "reminder": LOCAL_REMINDER if choice.local else None,
        "context_budget_tokens": budget,
    }
    if choice.local:
        settings["observation_chars"] = LOCAL_OBSERVATION_CHARS
    return settings


def local_agent_settings(
    model: Model, folder: Path, *, max_steps: int = 10, sandbox: bool = False
) -> dict[str, Any]:
    """The `Agent` keyword arguments `nbagent run` gives an in-process model from `folder`, with every
    other flag at its default: what the embedded agent is trained and measured with."""
    choice = ModelChoice(
        model, f"local model {folder}", local=True, context_tokens=_folder_context_tokens(folder)
    )
    return agent_settings(
        choice,
        max_steps=max_steps,
        temperature=None,
        max_tokens=None,
        cell_timeout=DEFAULT_CELL_TIMEOUT,
        episode_timeout=None,
        action_format=None,
        prefill=None,
        tools=None,
        sandbox=sandbox,
        allow_network=False,
    )


# --------------------------------------------------------------------------------------------------
# Printing steps
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------

app = typer.Typer(
    name="nbagent",
    help="Notebook agents that act by writing Python in a real Jupyter kernel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _default_paths(stamp: str) -> tuple[Path, Path]:
    return Path("runs") / f"{stamp}.ipynb", Path("runs") / "trajectories.jsonl"


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The task or question.", show_default=False)],
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    local_model: LocalModelOption = None,
    max_steps: MaxStepsOption = 10,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    cell_timeout: CellTimeoutOption = DEFAULT_CELL_TIMEOUT,
    episode_timeout: EpisodeTimeoutOption = None,
    action_format: FormatOption = None,
    prefill: PrefillOption = None,
    tool: ToolOption = None,
    sandbox: SandboxOption = False,
    allow_network: AllowNetworkOption = False,
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
        choice = resolve_model(base_url, model, api_key, local_model)
        settings = agent_settings(
            choice,
            max_steps=max_steps,
            temperature=temperature,
            max_tokens=max_tokens,
            cell_timeout=cell_timeout,
            episode_timeout=episode_timeout,
            action_format=action_format,
            prefill=prefill,
            tools=tool,
            sandbox=sandbox,
            allow_network=allow_network,
        )
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
    from nbagent.agent.agent import Agent

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


def _read_selected(path: Path, index: int | None, skip_corrupt: bool) -> list[Trajectory]:
    """The trajectories of `path` (or the one at `index`); a corrupt line `fail`s naming it and
    ``--skip-corrupt``, unless that was given."""
    from nbagent.trajectory import read_trajectories

    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist.")
    try:
        trajectories = list(read_trajectories(path, on_error="skip" if skip_corrupt else "raise"))
    except CorruptTrajectoryError as exc:
        fail(
            f"{exc.path}:{exc.line_no}: corrupt trajectory record ({exc.reason}); "
            "pass --skip-corrupt to skip bad lines, or repair or delete that line."
        )
    if index is None:
        return trajectories
    if not -len(trajectories) <= index < len(trajectories):
        raise typer.BadParameter(f"--index {index}: {path} holds {len(trajectories)} trajectories.")
    return [trajectories[index]]


PathArgument = Annotated[Path, typer.Argument(help="A trajectory JSONL file.", show_default=False)]
IndexOption = Annotated[
    int | None, typer.Option("--index", "-i", help="Only the trajectory at this position (0 first, -1 last).")
]
SkipCorruptOption = Annotated[
    bool,
    typer.Option(
        "--skip-corrupt", help="Skip lines that are not trajectory records instead of stopping at the first."
    ),
]


@app.command()
def show(
    path: PathArgument,
    index: IndexOption = None,
    skip_corrupt: SkipCorruptOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the system prompt.")] = False,
) -> None:
    """Pretty-print the trajectories of a JSONL file."""
    printer = StepPrinter(Console(highlight=False), verbose=verbose)
    for traj in _read_selected(path, index, skip_corrupt):
        printer.trajectory(traj)


@app.command()
def export(
    path: PathArgument,
    export_format: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file (JSONL for openai/sharegpt), or folder for ipynb. Default: stdout.",
        ),
    ] = None,
    index: IndexOption = None,
    skip_corrupt: SkipCorruptOption = False,
) -> None:
    """Export trajectories as OpenAI chat messages, ShareGPT conversations or notebooks."""
    from nbagent.trajectory.export import to_notebook, to_openai_messages, to_sharegpt

    notebooks = export_format is ExportFormat.ipynb
    with one_line_errors():
        if notebooks:
            check_output_folder(out or Path("."), "the notebooks")
        elif out is not None:
            check_output_file(out, "the export")
    trajectories = _read_selected(path, index, skip_corrupt)
    if notebooks:
        folder = out or Path(".")
        for traj in trajectories:
            target = folder / f"{traj.id}.ipynb"
            to_notebook(traj, target)
            typer.echo(str(target))
        return
    lines = [
        json.dumps(
            {"id": traj.id, "messages": to_openai_messages(traj)}
            if export_format is ExportFormat.openai
            else to_sharegpt(traj),
            ensure_ascii=False,
        )
        for traj in trajectories
    ]
    if out is None:
        for line in lines:
            typer.echo(line)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        typer.echo(f"{len(lines)} trajectories written to {out}", err=True)


# --------------------------------------------------------------------------------------------------
# Command modules of other parts, and the entry point
# --------------------------------------------------------------------------------------------------

_loaded = False


def load_command_modules() -> typer.Typer:
    """Add the commands defined outside this module (`collect`, `eval`) to the app; return the app."""
    global _loaded
    if not _loaded:
        _loaded = True
        from nbagent.cli.collect import register

        register(app)
    return app


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars between steps
    load_command_modules()
    app(prog_name="nbagent")


if __name__ == "__main__":
    main()
