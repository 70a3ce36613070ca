"""`Tool`: a typed host function that kernel code can call, and the `@tool` decorator that builds one.

The function's signature and docstring give everything else: a pydantic model of the parameters (which
validates and coerces arguments and yields the JSON schema), a Python stub for the prompt, and the
signature the kernel-side stub copies.
"""

from __future__ import annotations

import copy
import functools
import inspect
import keyword
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, overload

import anyio.to_thread
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    ValidationError,
    create_model,
)
from pydantic.errors import PydanticUserError
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from nbagent.errors import (
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolResultError,
)
from nbagent.tools.docstrings import parse_docstring
from nbagent.tools.render import format_annotation, format_default, render_type, structured_types
from nbagent.tools.results import returned_type, to_tool_value
from nbagent.tools.run_context import RunContext

ToolFunction = Callable[..., Any]

_INDENT = "    "
_WRAP_AT = 100
_REPR_LIMIT = 80


class _ToolJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema without the titles it derives from field names (they repeat the names)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class Tool:
    """A typed function the model can call from kernel code.

    Build one with `@tool` (or `Tool(function)`). Attributes:

    - `name`: what kernel code calls it by (a Python identifier).
    - `description`: the first paragraph of the docstring, or the `description` given.
    - `parameters_schema`: JSON schema of the parameters (per-parameter descriptions from the docstring).
    - `signature`: the function's signature with resolved annotations, minus a leading `RunContext`.
    - `docstring`: the docstring shown in the stub.
    - `takes_ctx`: whether the function's first parameter receives the `RunContext`.
    - `is_async`: whether the function is a coroutine function (awaited rather than run in a thread).
    - `run_in_thread`: whether a sync function runs in a worker thread, keeping the event loop free.
    """

    def __init__(
        self,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        run_in_thread: bool = True,
    ) -> None:
        self.function = function
        self.name = name if name is not None else getattr(function, "__name__", "")
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ToolDefinitionError(
                f"{self.name or function!r} is not a valid tool name: kernel code calls tools as Python "
                "functions, so pass a Python identifier with @tool(name=...)"
            )
        self.is_async = inspect.iscoroutinefunction(function) or (
            not inspect.isroutine(function) and inspect.iscoroutinefunction(type(function).__call__)
        )
        self.run_in_thread = run_in_thread
        full_signature, hints = self._resolve_signature()
        params = list(full_signature.parameters.values())
        self.takes_ctx = bool(params) and _is_run_context(hints.get(params[0].name))
        if self.takes_ctx:
            params = params[1:]
        self._check_parameters(params, hints)
        self.signature = full_signature.replace(
            parameters=[param.replace(annotation=hints[param.name]) for param in params],
            return_annotation=returned_type(hints["return"]),
        )
        doc = parse_docstring(inspect.getdoc(function))
        self.description = description if description is not None else doc.summary
        if description is None:
            self.docstring = inspect.cleandoc(inspect.getdoc(function) or "")
        else:
            self.docstring = "\n\n".join(part for part in (description.strip(), doc.rest) if part)
        self._arguments = self._arguments_model(doc.params)
        try:
            schema = self._arguments.model_json_schema(by_alias=True, schema_generator=_ToolJsonSchema)
            annotations = [param.annotation for param in self.signature.parameters.values()]
            self.structured_types = structured_types([*annotations, self.signature.return_annotation])
            self._stub = self._render_def()
        except (PydanticUserError, NameError, TypeError) as exc:
            raise ToolDefinitionError(f"tool {self.name!r} cannot describe its types: {exc}") from exc
        schema.pop("title", None)
        self.parameters_schema: dict[str, Any] = schema

    # ---------------------------------------------------------------------------------------------
    # Definition
    # ---------------------------------------------------------------------------------------------

    def _resolve_signature(self) -> tuple[inspect.Signature, dict[str, Any]]:
        try:
            signature = inspect.signature(self.function)
        except (TypeError, ValueError) as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: cannot read the function's signature ({exc})"
            ) from exc
        target: Any = self.function
        if not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target):
            target = target.__call__
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except (NameError, TypeError) as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: cannot resolve its type hints ({exc}); define the types it uses at "
                "module level and import them where the function is defined"
            ) from exc
        if "return" not in hints:
            raise ToolDefinitionError(
                f"tool {self.name!r} has no return annotation; annotate what it returns (e.g. -> str, "
                "-> None): it is shown to the model in the tool's stub"
            )
        return signature, hints

    def _check_parameters(self, params: list[inspect.Parameter], hints: dict[str, Any]) -> None:
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
                raise ToolDefinitionError(
                    f"tool {self.name!r} takes {stars}{param.name}; tools need named parameters with types "
                    "(use a list[...] or dict[str, ...] parameter instead)"
                )
            if param.name not in hints:
                advice = (
                    "decorate the bound method instead: tool(instance.method)"
                    if param.name in ("self", "cls")
                    else f"annotate it, e.g. {param.name}: str"
                )
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} has no type annotation; {advice}"
                )
            if _is_run_context(hints[param.name]):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: the RunContext parameter {param.name!r} must be the first parameter"
                )

    def _arguments_model(self, descriptions: Mapping[str, str]) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for index, param in enumerate(self.signature.parameters.values()):
            default = ... if param.default is param.empty else param.default
            described = param.name in descriptions and not _described_by_annotation(param.annotation)
            field = (
                Field(default, alias=param.name, description=descriptions[param.name])
                if described
                else Field(default, alias=param.name)
            )
            fields[f"p{index}"] = (param.annotation, field)
        try:
            return create_model(
                f"{self.name}_arguments",
                __config__=ConfigDict(extra="forbid"),
                **fields,
            )
        except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: pydantic cannot validate its parameter types ({exc}); use "
                "JSON-friendly types (str, int, float, bool, list, dict, Literal, enums, pydantic models, "
                "dataclasses)"
            ) from exc

    # ---------------------------------------------------------------------------------------------
    # Rendering
    # ---------------------------------------------------------------------------------------------

    def render_signature(self) -> str:
        """The parameter list and return type as Python: ``(city: str, limit: int = 10) -> list[str]``.

        Enums are shown as the `Literal` of their values, and their defaults as values, because that is
        what kernel code passes. Long signatures put one parameter per line.
        """
        parts: list[str] = []
        params = list(self.signature.parameters.values())
        for index, param in enumerate(params):
            if param.kind is param.KEYWORD_ONLY and (
                index == 0 or params[index - 1].kind is not param.KEYWORD_ONLY
            ):
                parts.append("*")
            text = f"{param.name}: {format_annotation(param.annotation)}"
            if param.default is not param.empty:
                text += f" = {format_default(param.default)}"
            parts.append(text)
            is_last_positional_only = param.kind is param.POSITIONAL_ONLY and (
                index + 1 == len(params) or params[index + 1].kind is not param.POSITIONAL_ONLY
            )
            if is_last_positional_only:
                parts.append("/")
        returns = f" -> {format_annotation(self.signature.return_annotation)}"
        one_line = f"({', '.join(parts)}){returns}"
        if len(self.name) + len(one_line) + 5 <= _WRAP_AT or not parts:
            return one_line
        return "(\n" + "".join(f"{_INDENT}{part},\n" for part in parts) + ")" + returns

    def _render_def(self) -> str:
        lines = [f"def {self.name}{self.render_signature()}:"]
        if self.docstring:
            lines.append(_indent(_quote_docstring(self.docstring)))
        lines.append(f"{_INDENT}...")
        return "\n".join(lines)

    def render_stub(self, *, include_types: bool = True) -> str:
        """What the model sees of this tool: a Python ``def`` with its docstring and ``...`` as body.

        With `include_types`, the pydantic models, dataclasses and TypedDicts the tool takes or returns
        are rendered first as ``TypedDict`` classes (kernel code passes and receives them as dicts).
        """
        blocks = [render_type(cls) for cls in self.structured_types] if include_types else []
        return "\n\n".join([*blocks, self._stub])

    # ---------------------------------------------------------------------------------------------
    # Calling
    # ---------------------------------------------------------------------------------------------

    def validate(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> inspect.BoundArguments:
        """Bind arguments to the signature and validate (and coerce) them with pydantic.

        Raises `ToolArgumentError`, in the style of Python's `TypeError`, for a wrong number of arguments,
        an unknown keyword or a value of the wrong type. Defaults are applied.
        """
        try:
            bound = self.signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            raise ToolArgumentError(f"{self.name}() {exc}") from None
        try:
            validated = self._arguments.model_validate(dict(bound.arguments))
        except ValidationError as exc:
            raise ToolArgumentError(self._describe_invalid(exc, bound.arguments)) from None
        for index, param in enumerate(self.signature.parameters):
            bound.arguments[param] = getattr(validated, f"p{index}")
        return bound

    def _describe_invalid(self, exc: ValidationError, given: Mapping[str, Any]) -> str:
        details: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            name, *inner = error["loc"]
            where = ".".join(str(part) for part in inner)
            details.setdefault(str(name), []).append(f"{where}: {error['msg']}" if where else error["msg"])
        problems = []
        for name, messages in details.items():
            expected = format_annotation(self.signature.parameters[name].annotation)
            value = given[name]
            shown = repr(value)
            if len(shown) > _REPR_LIMIT:
                shown = shown[: _REPR_LIMIT - 3] + "..."
            got = f"{type(value).__name__} {shown}"
            problems.append(f"argument {name!r} must be {expected}, got {got} ({'; '.join(messages)})")
        if len(problems) == 1:
            return f"{self.name}() {problems[0]}"
        return f"{self.name}() got {len(problems)} invalid arguments:\n" + "\n".join(
            f"- {p}" for p in problems
        )

    async def invoke(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        ctx: RunContext[Any] | None = None,
    ) -> Any:
        """Validate the arguments, call the function and return its result as a JSON value (a `ToolReturn`
        stays one, its value made JSON).

        Raises `ToolArgumentError` before calling when the arguments do not fit, `ToolExecutionError` when
        the function raises (its `ToolError`s pass through unchanged), and `ToolResultError` when the
        result is not JSON-serializable. A sync function runs in a worker thread unless `run_in_thread`
        is off (when the call is cancelled, the thread is left to finish on its own); an async one is
        awaited.
        """
        if self.takes_ctx and ctx is None:
            raise ToolError(
                f"tool {self.name!r} takes a RunContext but none was given; pass ctx=RunContext(deps=...) "
                "(the agent and ToolBridge pass theirs)"
            )
        bound = self.validate(args, kwargs)
        call_args = [ctx, *bound.args] if self.takes_ctx else list(bound.args)
        try:
            if self.is_async:
                result = await self.function(*call_args, **bound.kwargs)
            elif self.run_in_thread:
                # On cancellation (a cell timeout) stop waiting; a stuck function cannot hold the run.
                result = await anyio.to_thread.run_sync(
                    functools.partial(self.function, *call_args, **bound.kwargs), abandon_on_cancel=True
                )
            else:
                result = self.function(*call_args, **bound.kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolExecutionError(self.name, type(exc).__name__, str(exc)) from exc
        try:
            return to_tool_value(result)
        except ToolResultError as exc:
            raise ToolResultError(
                f"tool {self.name!r} returned a value that cannot be sent as JSON: {exc}"
            ) from None

    def bound_to(self, function: ToolFunction) -> Tool:
        """This tool calling `function` instead, which must have the same signature, name and docstring.

        Nothing is inspected again, so it is cheap: for callbacks made per episode (closures)."""
        clone = copy.copy(self)
        clone.function = function
        return clone

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (no validation, no conversion)."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, function={self.function!r})"


def _is_run_context(annotation: Any) -> bool:
    return annotation is RunContext or typing.get_origin(annotation) is RunContext


def _described_by_annotation(annotation: Any) -> bool:
    """True for ``Annotated[T, Field(description=...)]``: that description wins over the docstring's."""
    metadata = typing.get_args(annotation)[1:] if typing.get_origin(annotation) is Annotated else ()
    return any(isinstance(item, FieldInfo) and item.description for item in metadata)


def _quote_docstring(text: str) -> str:
    """`text` as a triple-quoted Python string literal whose value is exactly `text`."""
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if body.endswith('"'):
        body = body[:-1] + '\\"'
    return f'"""{body}\n"""' if "\n" in body else f'"""{body}"""'


def _indent(text: str) -> str:
    return "\n".join(f"{_INDENT}{line}" if line else "" for line in text.splitlines())


@overload
def tool(function: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, run_in_thread: bool = True
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    function: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    run_in_thread: bool = True,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Make a typed function (sync or async) into a `Tool`: ``@tool`` or ``@tool(name=..., description=...)``.

    Every parameter and the return value need type annotations. A first parameter annotated
    ``RunContext[Deps]`` receives the run's context and is hidden from the model. Parameter descriptions
    come from the docstring (Google, NumPy or Sphinx style); its first paragraph is the description.
    Set `run_in_thread=False` for a fast sync function that may run on the event loop.
    """

    def build(fn: ToolFunction) -> Tool:
        return Tool(fn, name=name, description=description, run_in_thread=run_in_thread)

    return build(function) if function is not None else build
