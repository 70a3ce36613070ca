"""Python types for JSON schemas: how an MCP tool's ``inputSchema`` becomes a signature kernel code reads.

Primitive types map to their Python names, arrays to ``list[...]``, ``enum`` and ``const`` to ``Literal``,
unions (``anyOf``, ``oneOf``, a list of types) to ``X | Y``, maps to ``dict[str, X]``, and objects with
properties to pydantic models, which the prompt shows as ``TypedDict`` classes (kernel code passes dicts).
Anything else is ``Any``: the server validates what it receives.
"""

from __future__ import annotations

import keyword
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

_PRIMITIVES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}
_MODEL_ATTRIBUTES = frozenset(dir(BaseModel))

# One model per name and shape in the process, so that two tools (or servers) sharing a type share the
# class, and two different types never share a name in one prompt.
_models: dict[str, type[BaseModel]] = {}
_names: set[str] = set()
_lock = threading.Lock()


def identifier(text: str, taken: Iterable[str] = ()) -> str:
    """`text` made a Python identifier (``get-time`` -> ``get_time``, ``from`` -> ``from_``), distinct
    from those `taken` (``json`` -> ``json_``, then ``json_2``...)."""
    name = re.sub(r"\W+", "_", text).strip("_") or "value"
    if name[0].isdigit():
        name = f"n{name}"
    used = set(taken)
    unique, number = name, 2
    if keyword.iskeyword(unique) or unique in used:
        unique = f"{name}_"
    while keyword.iskeyword(unique) or unique in used:
        unique, number = f"{name}_{number}", number + 1
    return unique


def class_name(text: str) -> str:
    """`text` as a class name: ``day of week`` and ``day_of_week`` -> ``DayOfWeek``."""
    return "".join(part[:1].upper() + part[1:] for part in identifier(text).split("_"))


def to_json(value: Any) -> Any:
    """A validated argument as JSON for the server: models dumped by alias, unset fields left out."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


class SchemaTypes:
    """The Python types of one JSON schema document (``$ref`` resolves against `root`)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self._expanding: list[str] = []

    def annotation(self, schema: Any, name: str) -> Any:
        """The type of the values `schema` accepts; an object becomes a model named after its title or
        else `name`."""
        if not isinstance(schema, Mapping):
            return Any
        if "$ref" in schema:
            return self._reference(str(schema["$ref"]), name)
        if "const" in schema:
            return _literal([schema["const"]])
        if "enum" in schema:
            return _literal(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return _union(self.annotation(option, name) for option in schema[key])
        if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            return self.annotation(schema["allOf"][0], name)
        kind = schema.get("type")
        if isinstance(kind, list):
            return _union(self.annotation({**schema, "type": item}, name) for item in kind)
        if kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        if kind == "array":
            return list[self.annotation(schema.get("items"), name)]  # type: ignore[misc]
        if kind == "object" or "properties" in schema:
            if schema.get("properties"):
                return self._model(schema, name)
            extra = schema.get("additionalProperties")
            return dict[str, self.annotation(extra, name) if isinstance(extra, Mapping) else Any]  # type: ignore[misc]
        return Any

    def fields(self, schema: Mapping[str, Any], taken: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
        """Python name -> (annotation, `Field`) for the properties of an object schema, each aliased to
        its JSON name. A property that is not required gets its schema default, or ``None``."""
        required = set(schema.get("required") or ())
        names = list(taken)
        fields: dict[str, tuple[Any, Any]] = {}
        for key, sub in (schema.get("properties") or {}).items():
            name = identifier(key, names)
            names.append(name)
            sub = sub if isinstance(sub, Mapping) else {}
            annotation = self.annotation(sub, key)
            default = ... if key in required else sub.get("default")
            if default is None:
                annotation = _union([annotation, type(None)])
            description = sub.get("description")
            fields[name] = (annotation, Field(default, alias=key, description=description))
        return fields

    def _reference(self, ref: str, name: str) -> Any:
        path = ref.removeprefix("#/").split("/") if ref.startswith("#/") else None
        target: Any = self._root
        for part in path or ():
            target = target.get(part) if isinstance(target, Mapping) else None
        if path is None or target is None or ref in self._expanding:
            return dict[str, Any] if ref in self._expanding else Any  # recursive or external: a plain value
        self._expanding.append(ref)
        try:
            return self.annotation(target, path[-1])
        finally:
            self._expanding.pop()

    def _model(self, schema: Mapping[str, Any], name: str) -> type[BaseModel]:
        title, description = schema.get("title"), schema.get("description")
        base = class_name(title if isinstance(title, str) and title.strip() else name)
        closed = schema.get("additionalProperties") is False
        extra: Literal["allow", "forbid"] = "forbid" if closed else "allow"
        fields: dict[str, Any] = self.fields(schema, _MODEL_ATTRIBUTES)
        shape = repr([base, description, extra, [(key, repr(value)) for key, value in fields.items()]])
        with _lock:
            if shape not in _models:
                unique, number = base, 2
                while unique in _names:
                    unique, number = f"{base}{number}", number + 1
                _names.add(unique)
                _models[shape] = create_model(
                    unique,
                    __config__=ConfigDict(extra=extra, validate_by_name=True, protected_namespaces=()),
                    __doc__=description if isinstance(description, str) else None,
                    __module__=__name__,
                    **fields,
                )
            return _models[shape]


def _literal(values: Iterable[Any]) -> Any:
    allowed = tuple(value for value in values if value is None or isinstance(value, str | int | float | bool))
    return Literal[allowed] if allowed else Any


def _union(annotations: Iterable[Any]) -> Any:
    unique = list(dict.fromkeys(annotations))
    if Any in unique:
        return Any
    return unique[0] if len(unique) == 1 else Union[tuple(unique)]  # noqa: UP007
