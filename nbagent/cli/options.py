"""What the `nbagent` commands share: exit codes, one-line errors, and the model and agent flags.

The model and agent flags of `run`, `collect` and `eval` are declared once, as the fields of `AgentFlags`
(each typed with its option below). A command takes them as one keyword-only parameter typed `AgentFlags`
(or a subclass with other defaults) and is wrapped in `with_flag_groups`, which shows typer one option
per field in that parameter's place and calls the command with them parsed into one instance.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer
from rich.console import Console
from rich.text import Text

from nbagent.errors import ConfigError, NBAgentError
from nbagent.trajectory import DEFAULT_MAX_TOKENS

if TYPE_CHECKING:
    from nbagent.kernel import KernelConfig
    from nbagent.models.base import Model
    from nbagent.models.selection import ModelChoice

EXIT_ANSWERED = 0
EXIT_ERROR = 1
EXIT_NO_ANSWER = 3
EXIT_INTERRUPTED = 130

DEFAULT_CELL_TIMEOUT = 60.0
ENDPOINT_EPISODE_TIMEOUT = 240.0
"""L0's wall-clock limit per episode."""
LOCAL_EPISODE_TIMEOUT = 900.0
"""An in-process model on a CPU is slow: allow it more time."""
LOCAL_FORMAT = "markdown"
LOCAL_PREFILL = "```python\n"
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
# The model and agent flags
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
    typer.Option(
        "--tool",
        metavar="MODULE:FUNCTION",
        help="A host tool as module:function (repeatable).",
        show_default=False,
    ),
]
MCPOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mcp",
        metavar="'COMMAND ARGS'",
        help="An MCP server to run over stdio, as 'COMMAND ARGS' (repeatable): its tools become Python "
        "functions in the kernel.",
        show_default=False,
    ),
]
MCPUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mcp-url",
        metavar="URL",
        help="An MCP server over streamable HTTP, by URL (repeatable).",
        show_default=False,
    ),
]
MCPHeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mcp-header",
        metavar="'NAME: VALUE'",
        help="'Name: value' sent to every --mcp-url server (repeatable), e.g. 'Authorization: Bearer ...'.",
        show_default=False,
    ),
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


_SETTING_OF_FLAG = {
    "cell_timeout": "cell_timeout_s",
    "episode_timeout": "episode_timeout_s",
    "temperature": "sampling",
    "max_tokens": "sampling",
}
"""The `Agent` keyword argument each flag sets, where the names differ."""


@dataclass(frozen=True)
class AgentFlags:
    """The model and agent flags of `run`, `collect` and `eval` (same names as their options), with
    `run`'s defaults; a subclass may redeclare a field to give another command other defaults."""

    base_url: BaseUrlOption = None
    model: ModelOption = None
    api_key: ApiKeyOption = None
    local_model: LocalModelOption = None
    max_steps: MaxStepsOption = 10
    temperature: TemperatureOption = None
    max_tokens: MaxTokensOption = None
    cell_timeout: CellTimeoutOption = DEFAULT_CELL_TIMEOUT
    episode_timeout: EpisodeTimeoutOption = None
    action_format: FormatOption = None
    prefill: PrefillOption = None
    tool: ToolOption = None
    mcp: MCPOption = None
    mcp_url: MCPUrlOption = None
    mcp_header: MCPHeaderOption = None
    sandbox: SandboxOption = False
    allow_network: AllowNetworkOption = False

    def model_choice(self) -> ModelChoice:
        """The endpoint's model or the local one (`resolve_model`); `ConfigError` with a one-line reason."""
        from nbagent.models.selection import resolve_model

        return resolve_model(self.base_url, self.model, self.api_key, self.local_model)

    def chosen(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The `Agent` keyword arguments of `settings` (from `agent_settings`) that a flag set away from its
        default: they win over an environment's `agent_overrides` (`agent_for_environment`'s ``chosen``)."""
        defaults = {f.name: f.default for f in fields(self)}
        changed = {name for name, default in defaults.items() if getattr(self, name) != default}
        keys = {name: _SETTING_OF_FLAG.get(name, name) for name in changed}
        return {key: settings[key] for key in keys.values() if key in settings}

    def kernel_config(self, **fields: Any) -> KernelConfig:
        """The kernel set-up the flags ask for, with other `KernelConfig` `fields` (limits, workspace);
        `ConfigError` for --allow-network without --sandbox."""
        from nbagent.kernel import KernelConfig

        if self.allow_network and not self.sandbox:
            raise ConfigError(
                "--allow-network applies to the sandbox only (an unsandboxed kernel has the network): "
                "add --sandbox, or drop --allow-network."
            )
        return KernelConfig(sandbox=self.sandbox, allow_network=self.allow_network, **fields)

    def agent_settings(self, choice: ModelChoice) -> dict[str, Any]:
        """Keyword arguments for `Agent`, with the local model's defaults applied where a flag is unset.

        When the model's context length is known, the context budget is that length minus the reply's
        `max_tokens` (the ``hard`` policy then drops old steps instead of overflowing the model)."""
        from nbagent.trajectory import SamplingSettings

        kernel_config = self.kernel_config()
        action_format = self.action_format
        if action_format is None:
            action_format = FormatChoice(LOCAL_FORMAT) if choice.local else FormatChoice.xml
        prefill = self.prefill
        if prefill is None:
            prefill = LOCAL_PREFILL if choice.local and action_format is FormatChoice.markdown else ""
        episode_timeout = self.episode_timeout
        if episode_timeout is None:
            episode_timeout = LOCAL_EPISODE_TIMEOUT if choice.local else ENDPOINT_EPISODE_TIMEOUT
        max_tokens, temperature = self.max_tokens, self.temperature
        if choice.local:
            max_tokens = LOCAL_MAX_TOKENS if max_tokens is None else max_tokens
            temperature = LOCAL_TEMPERATURE if temperature is None else temperature
        budget = None
        if choice.context_tokens is not None:  # leave room for the reply
            budget = max(256, choice.context_tokens - (max_tokens or DEFAULT_MAX_TOKENS))
        settings: dict[str, Any] = {
            "tools": load_tools(self.tool, self.mcp, self.mcp_url, self.mcp_header),
            "max_steps": self.max_steps,
            "episode_timeout_s": episode_timeout,
            "cell_timeout_s": self.cell_timeout,
            "action_format": action_format.value,
            "prefill": prefill.replace("\\n", "\n").replace("\\t", "\t") or None,
            "sampling": SamplingSettings(temperature=temperature, max_tokens=max_tokens),
            "kernel_config": kernel_config if self.sandbox else None,
            "reminder": LOCAL_REMINDER if choice.local else None,
            "context_budget_tokens": budget,
        }
        if choice.local:
            settings["observation_chars"] = LOCAL_OBSERVATION_CHARS
        return settings


def with_flag_groups(command: Callable[..., None]) -> Callable[..., None]:
    """`command` as typer should see it: each keyword-only parameter typed with a dataclass of options
    (`AgentFlags`, ...) is replaced, where it stands, by one option per field with the field's default;
    the command is called with those options parsed into one instance of that dataclass."""
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, list[inspect.Parameter]] = {}
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if parameter.kind is parameter.KEYWORD_ONLY and isinstance(group, type) and is_dataclass(group):
            hints = get_type_hints(group, include_extras=True)
            groups[parameter.name] = [
                inspect.Parameter(f.name, parameter.kind, default=f.default, annotation=hints[f.name])
                for f in fields(group)
            ]
    parameters = [q for p in signature.parameters.values() for q in groups.get(p.name, [p])]

    @functools.wraps(command)
    def parsed(**values: Any) -> None:
        for name, options in groups.items():
            group = signature.parameters[name].annotation
            values[name] = group(**{option.name: values.pop(option.name) for option in options})
        command(**values)

    parsed.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return parsed


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


def load_tools(
    tools: list[str] | None, mcp: list[str] | None, mcp_urls: list[str] | None, headers: list[str] | None
) -> list[Any]:
    """The host tools the flags name: ``--tool`` callables, then the tools of every ``--mcp`` and
    ``--mcp-url`` server (started here; `MCPServerError` names a server that does not answer)."""
    loaded = [load_tool(spec) for spec in tools or []]
    if not mcp and not mcp_urls:
        return loaded
    from nbagent.tools.mcp import mcp_servers, mcp_tools

    return [*loaded, *mcp_tools(*mcp_servers(mcp or [], mcp_urls or [], dict(map(_header, headers or []))))]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise typer.BadParameter(f"--mcp-header {text!r}: write it as 'Name: value'.")
    return name.strip(), value.strip()


def local_agent_settings(
    model: Model, folder: Path, *, max_steps: int = 10, sandbox: bool = False
) -> dict[str, Any]:
    """The `Agent` keyword arguments `nbagent run` gives an in-process model from `folder`, with every
    other flag at its default: what the embedded agent is trained and measured with."""
    from nbagent.models.selection import ModelChoice, folder_context_tokens

    choice = ModelChoice(
        model, f"local model {folder}", local=True, context_tokens=folder_context_tokens(folder)
    )
    return AgentFlags(max_steps=max_steps, sandbox=sandbox).agent_settings(choice)
