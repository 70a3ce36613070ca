"""`MCPServer`: the tools of an MCP server as host tools that kernel code calls as typed Python functions.

At start the server's tools are listed and each becomes an ordinary `Tool` whose function has a real
signature built from the tool's ``inputSchema`` (`nbagent.tools.json_schema`) and a docstring from its
description, so its stub, validation and schema are those of any tool. Kernel code calls it through the
tool bridge; the host holds the MCP session (`MCPConnection`), so the kernel has neither an MCP client nor
credentials. Structured results come back as Python values, text as ``str``, images and audio as displays
in the cell; an error result raises in the kernel.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import urllib.parse
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import httpx2
from mcp import StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp_types import Tool as ToolSpec

from nbagent.errors import ConfigError, ToolDefinitionError
from nbagent.tools.docstrings import parse_docstring
from nbagent.tools.json_schema import SchemaTypes, identifier, to_json
from nbagent.tools.mcp_connection import MCPConnection, MCPServerError, TransportFactory
from nbagent.tools.results import ToolReturn
from nbagent.tools.tool import Tool, ToolFunction

__all__ = ["MCPServer", "MCPServerError", "MCPToolError", "mcp_servers", "mcp_tools"]

log = logging.getLogger("nbagent.tools.mcp")

_STDERR_TAIL = 2048
_NOT_A_PREFIX = ("", "mcp", "server")
_LAUNCHER = re.compile(r"(python[\d.]*|uvx?|npx|node|bunx?|deno|pipx|docker)(\.exe)?")


class MCPToolError(Exception):
    """The MCP server answered a call with an error result (``isError``); kernel code gets a ToolError."""


class MCPServer:
    """An MCP server whose tools kernel code calls as Python functions; build it with `stdio` or `http`.

    The server starts on the first use of `tools` (or `start()`), which lists its tools. One session serves
    every episode whose agent has these tools (a whole pool in `collect`; build the server in the agent
    factory for Ray). A server that stops is started again once, on the next call; each call has a limit
    of `timeout_s`. `close()` (or leaving a ``with`` block, or the end of the process) ends it.

    Args:
        name: The server's name in messages.
        transport: Opens a fresh MCP transport for each start (an async context manager of the server's
            read and write streams, such as ``mcp.client.stdio.stdio_client(...)``).
        prefix: Put before every tool name (``prefix_toolname``); `mcp_tools` also uses it for names that
            two servers share.
        timeout_s: Limit for one tool call.
        start_timeout_s: Limit for starting the server and listing its tools.
        last_words: What the server last said about itself (for error messages).
    """

    def __init__(
        self,
        name: str,
        transport: TransportFactory,
        *,
        prefix: str | None = None,
        timeout_s: float = 30.0,
        start_timeout_s: float = 30.0,
        last_words: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self._connection = MCPConnection(
            name,
            transport,
            last_words=last_words or (lambda: ""),
            start_timeout_s=start_timeout_s,
            call_timeout_s=timeout_s,
        )
        self._close = weakref.finalize(self, self._connection.close)
        self._lock = threading.Lock()
        self._tools: list[Tool] | None = None

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str | None = None,
        prefix: str | None = None,
        timeout_s: float = 30.0,
        start_timeout_s: float = 30.0,
    ) -> MCPServer:
        """A server run as `command` with `args`, spoken to over its stdin and stdout.

        It gets a minimal environment (``PATH``, ``HOME``...) plus `env`. Its stderr goes to a temporary
        file whose last line is quoted when it fails. `name` defaults to the command's file name, or for
        a launcher (``python``, ``uvx``, ``npx``...) to that of its first argument that is not an option.
        A bare command not on ``PATH`` is looked for beside this Python (a venv's scripts, not activated).
        """
        beside = Path(sys.executable).parent / command
        if os.sep not in command and shutil.which(command) is None and beside.is_file():
            command = str(beside)
        parameters = StdioServerParameters(command=command, args=list(args), env=dict(env or {}), cwd=cwd)
        stderr = tempfile.TemporaryFile("a+", encoding="utf-8", errors="replace")  # noqa: SIM115

        def transport() -> Transport:
            return stdio_client(parameters, errlog=stderr)

        server = cls(
            name or _default_name(command, args),
            transport,
            prefix=prefix,
            timeout_s=timeout_s,
            start_timeout_s=start_timeout_s,
            last_words=lambda: _last_line(stderr),
        )
        weakref.finalize(server, stderr.close)
        return server

    @classmethod
    def http(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        prefix: str | None = None,
        timeout_s: float = 30.0,
        start_timeout_s: float = 30.0,
    ) -> MCPServer:
        """A server at `url`, spoken to over streamable HTTP with `headers` on every request (e.g.
        ``{"Authorization": "Bearer ..."}``). `name` defaults to the URL's host and port."""
        refused = [""]

        async def note(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                refused[0] = f"HTTP {response.status_code} {response.reason_phrase}"

        @asynccontextmanager
        async def transport() -> AsyncIterator[Any]:
            async with (
                httpx2.AsyncClient(
                    headers=dict(headers or {}),
                    timeout=httpx2.Timeout(30.0, read=300.0),
                    event_hooks={"response": [note]},
                ) as client,
                streamable_http_client(url, http_client=client) as streams,
            ):
                yield streams

        return cls(
            name or urllib.parse.urlsplit(url).netloc or url,
            transport,
            prefix=prefix,
            timeout_s=timeout_s,
            start_timeout_s=start_timeout_s,
            last_words=lambda: refused[0],
        )

    def start(self) -> MCPServer:
        """Start the server and build its tools, unless done already; `MCPServerError` if it fails."""
        with self._lock:
            if self._tools is None:
                self._tools = self._build(self._connection.start())
        return self

    @property
    def tools(self) -> list[Tool]:
        """The server's tools (starting it first)."""
        self.start()
        return list(self._tools or ())

    def close(self) -> None:
        """Stop the server; its tools raise `MCPServerError` afterwards."""
        self._close()

    def __enter__(self) -> MCPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools)

    def __repr__(self) -> str:
        return f"MCPServer({self.name!r})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(
            f"{self!r} holds a live session and cannot be sent to another process; build the MCPServer "
            "in the agent factory that each worker calls"
        )

    # ---------------------------------------------------------------------------------------------
    # Tools
    # ---------------------------------------------------------------------------------------------

    def _build(self, specs: Sequence[ToolSpec]) -> list[Tool]:
        tools: list[Tool] = []
        for spec in specs:
            name = identifier(
                f"{self.prefix}_{spec.name}" if self.prefix else spec.name, [t.name for t in tools]
            )
            try:
                tools.append(Tool(self._function(spec, name)))
            except ToolDefinitionError as exc:
                log.warning("MCP server %r: tool %r left out: %s", self.name, spec.name, exc)
        return tools

    def _function(self, spec: ToolSpec, name: str) -> ToolFunction:
        """A function with the tool's signature and docstring that calls it on the server."""
        fields = SchemaTypes(spec.input_schema).fields(spec.input_schema)
        ordered = sorted(fields.items(), key=lambda item: not item[1][1].is_required())  # required first
        params = [
            inspect.Parameter(
                key,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if info.is_required() else info.default,
                annotation=annotation,
            )
            for key, (annotation, info) in ordered
        ]
        wire = {key: info.alias or key for key, (_, info) in fields.items()}
        unsent = {key for key, (_, info) in fields.items() if not info.is_required() and info.default is None}
        returns, unwrap = _return_type(spec.output_schema, name)
        signature = inspect.Signature(params, return_annotation=ToolReturn[returns])  # type: ignore[valid-type]
        server, structured = self, spec.output_schema is not None  # the tools keep their server open

        async def call(*args: Any, **kwargs: Any) -> ToolReturn[Any]:
            bound = signature.bind(*args, **kwargs)
            arguments = {
                wire[key]: to_json(value)
                for key, value in bound.arguments.items()
                if value is not None or key not in unsent
            }
            result = await server._connection.call(spec.name, arguments)
            return _tool_return(result, structured=structured, unwrap=unwrap)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = _docstring(spec.description, {key: info.description for key, (_, info) in ordered})
        call.__signature__ = signature  # type: ignore[attr-defined]
        call.__annotations__ = {param.name: param.annotation for param in params}
        call.__annotations__["return"] = signature.return_annotation
        return call


def mcp_servers(
    commands: Sequence[str] = (), urls: Sequence[str] = (), headers: Mapping[str, str] | None = None
) -> list[MCPServer]:
    """The servers that settings name, not started yet: one `MCPServer.stdio` per ``"COMMAND ARGS"`` (split
    as a shell would), then one `MCPServer.http` per URL, each sent `headers`."""
    servers: list[MCPServer] = []
    for line in commands:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"MCP server command {line!r}: {exc}; check its quotes") from None
        if not words:
            raise ConfigError("an MCP server command is empty; write it as 'COMMAND ARGS'")
        servers.append(MCPServer.stdio(words[0], words[1:]))
    return servers + [MCPServer.http(url, headers) for url in urls]


def mcp_tools(*servers: MCPServer) -> list[Tool]:
    """The tools of all `servers`, in order; a name that two of them share gets each server's prefix (its
    `prefix`, else its name without "mcp" and "server": ``mcp-server-git`` -> ``git_``)."""
    counts = Counter(tool.name for server in servers for tool in server.tools)
    tools: list[Tool] = []
    for server in servers:
        words = [
            word for word in re.split(r"[\W_]+", server.name.lower()) if word not in ("", "mcp", "server")
        ]
        prefix = server.prefix or identifier("_".join(words) or server.name)
        tools.extend(
            Tool(tool.function, name=f"{prefix}_{tool.name}") if counts[tool.name] > 1 else tool
            for tool in server.tools
        )
    return tools


def _return_type(schema: Mapping[str, Any] | None, name: str) -> tuple[Any, bool]:
    """What a call returns (`str` without an output schema), and whether the structured value is the
    ``{"result": ...}`` wrapper that servers put around values that are not objects."""
    if schema is None:
        return str, False
    properties = schema.get("properties")
    unwrap = isinstance(properties, Mapping) and list(properties) == ["result"]
    inner = properties["result"] if unwrap and isinstance(properties, Mapping) else schema
    return SchemaTypes(schema).annotation(inner, f"{name}_result"), unwrap


def _docstring(description: str | None, params: Mapping[str, str | None]) -> str:
    """The tool's description, with an ``Args:`` section from the parameters' descriptions unless it has
    one."""
    text = inspect.cleandoc(description or "")
    described = {key: " ".join(value.split()) for key, value in params.items() if value}
    if not described or parse_docstring(text).params:
        return text
    section = "Args:\n" + "\n".join(f"    {key}: {value}" for key, value in described.items())
    return f"{text}\n\n{section}" if text else section


def _tool_return(result: CallToolResult, *, structured: bool, unwrap: bool) -> ToolReturn[Any]:
    """The value kernel code receives, and the images, audio and binary resources to display."""
    texts: list[str] = []
    displays: list[dict[str, str]] = []
    for block in result.content:
        if isinstance(block, TextContent):
            texts.append(block.text)
        elif isinstance(block, ImageContent | AudioContent):
            displays.append({block.mime_type: block.data})
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            if isinstance(resource, TextResourceContents):
                texts.append(resource.text)
            else:
                displays.append({resource.mime_type or "application/octet-stream": resource.blob})
        elif isinstance(block, ResourceLink):
            texts.append(f"{block.name}: {block.uri}")
    text = "\n".join(texts)
    if result.is_error:
        raise MCPToolError(text or "the server gave no message")
    value: Any = text
    if structured and result.structured_content is not None:
        value = result.structured_content
        if unwrap and isinstance(value, dict) and "result" in value:
            value = value["result"]
    return ToolReturn(value, displays)


def _default_name(command: str, args: Sequence[str]) -> str:
    """The server's name from its command: ``mcp-server-time`` for ``/path/mcp-server-time`` and for
    ``uvx mcp-server-time``."""
    name = Path(command).name
    if _LAUNCHER.fullmatch(name):
        name = next((Path(arg).stem for arg in args if not arg.startswith("-") and arg != "run"), name)
    return name


def _last_line(log: IO[str]) -> str:
    """The last line the server wrote to its stderr file, as ``stderr: ...``."""
    size = os.fstat(log.fileno()).st_size
    tail = os.pread(log.fileno(), _STDERR_TAIL, max(0, size - _STDERR_TAIL)).decode("utf-8", "replace")
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return f"stderr: {lines[-1][:200]}" if lines else ""
