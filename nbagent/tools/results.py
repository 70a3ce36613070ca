"""Turn what a tool returns into a JSON value that can travel back to kernel code."""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from nbagent.errors import ToolResultError

_HINT = (
    "return JSON types (dict with str keys, list, str, int, float, bool, None), "
    "pydantic models or dataclasses, and convert other values first (e.g. str(x), list(x), x.tolist())"
)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ToolReturn(Generic[T]):
    """A tool's value and what to show in the notebook cell that called it.

    Kernel code receives `value`; before the call returns, each of `displays` (a MIME bundle such as
    ``{"image/png": <base64>}``) is shown in the cell with ``IPython.display.display(bundle, raw=True)``,
    so it lands in the cell's outputs (and the trajectory) like any display. Annotate the tool
    ``-> ToolReturn[X]``: its stub shows ``-> X``.
    """

    value: T
    displays: Sequence[Mapping[str, str]] = ()


def returned_type(annotation: Any) -> Any:
    """What kernel code receives from a function annotated `annotation`: ``X`` for ``ToolReturn[X]``."""
    if annotation is ToolReturn:
        return Any
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is ToolReturn else annotation


def to_tool_value(result: Any) -> Any:
    """`result` as a JSON value (`to_json_value`); a `ToolReturn` stays one, with its value made JSON."""
    if isinstance(result, ToolReturn):
        return ToolReturn(to_json_value(result.value), tuple(dict(bundle) for bundle in result.displays))
    return to_json_value(result)


def to_json_value(value: Any, path: str = "result") -> Any:
    """A copy of `value` made of JSON types only.

    Pydantic models are dumped in JSON mode, dataclasses become dicts, tuples become lists and enum members
    their values. Anything else that is not a JSON type raises `ToolResultError` naming its type and where
    it was found (``result['rows'][3]``).
    """
    return _convert(value, path, set())


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _convert(value: Any, path: str, parents: set[int]) -> Any:
    if isinstance(value, enum.Enum):
        return _convert(value.value, path, parents)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except PydanticSerializationError as exc:
            raise ToolResultError(
                f"{path} is a {_type_name(value)} that pydantic cannot dump: {exc}"
            ) from None
    if id(value) in parents:
        raise ToolResultError(f"{path} contains itself (a circular reference); return a tree of values")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items: dict[str, Any] = {
            field.name: getattr(value, field.name) for field in dataclasses.fields(value)
        }
        return _convert(items, path, parents)
    if isinstance(value, dict):
        parents.add(id(value))
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ToolResultError(
                    f"{path} has the key {key!r} of type {_type_name(key)}; JSON object keys must be "
                    "strings: convert the keys with str()"
                )
            out[key] = _convert(item, f"{path}[{key!r}]", parents)
        parents.discard(id(value))
        return out
    if isinstance(value, list | tuple):
        parents.add(id(value))
        converted = [_convert(item, f"{path}[{index}]", parents) for index, item in enumerate(value)]
        parents.discard(id(value))
        return converted
    raise ToolResultError(f"{path} is a {_type_name(value)}, which is not JSON-serializable; {_HINT}")
