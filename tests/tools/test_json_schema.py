"""JSON schemas to Python types: what an MCP tool's inputSchema becomes in its signature."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from nbagent.tools.json_schema import SchemaTypes, class_name, identifier, to_json
from nbagent.tools.render import format_annotation, render_type


def spelled(schema: Any) -> str:
    return format_annotation(SchemaTypes({}).annotation(schema, "value"))


@pytest.mark.parametrize(
    ("schema", "python"),
    [
        ({"type": "string"}, "str"),
        ({"type": "integer"}, "int"),
        ({"type": "number"}, "float"),
        ({"type": "boolean"}, "bool"),
        ({"type": "null"}, "None"),
        ({"type": ["string", "null"]}, "str | None"),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "int | str"),
        ({"oneOf": [{"type": "integer"}, {}]}, "Any"),
        ({"enum": ["a", "b"]}, "Literal['a', 'b']"),
        ({"const": 3}, "Literal[3]"),
        ({"type": "array", "items": {"type": "integer"}}, "list[int]"),
        ({"type": "array"}, "list[Any]"),
        ({"type": "object"}, "dict[str, Any]"),
        ({"type": "object", "additionalProperties": {"type": "number"}}, "dict[str, float]"),
        ({"allOf": [{"type": "string"}]}, "str"),
        ({"$ref": "https://example.com/elsewhere"}, "Any"),
        ({}, "Any"),
        (True, "Any"),
    ],
)
def test_schemas_render_as_python_hints(schema: Any, python: str) -> None:
    assert spelled(schema) == python


def test_objects_become_models_shown_as_typed_dicts() -> None:
    root = {
        "$defs": {
            "Node": {
                "type": "object",
                "description": "A tree node.",
                "properties": {
                    "name": {"type": "string", "description": "Its label."},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "weight": {"type": "number", "default": 1.5},
                    "class": {"type": "string"},
                    "json": {"type": "boolean"},
                },
                "required": ["name"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
    }
    node = SchemaTypes(root).annotation(root["properties"]["root"], "root")
    assert render_type(node) == (
        "class Node(TypedDict):\n"
        '    """A tree node."""\n'
        "    name: str  # Its label.\n"
        "    children: list[dict[str, Any]] | None = None\n"
        "    weight: float = 1.5\n"
        "    class_: str | None = None\n"
        "    json_: bool | None = None"
    )
    # keys that are not identifiers (or that pydantic reserves) keep their JSON name on the wire
    value = node.model_validate({"name": "a", "class": "leaf", "json_": True})
    assert to_json([value]) == [{"name": "a", "class": "leaf", "json": True}]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        node.model_validate({"name": "a", "colour": "red"})
    # the same shape is the same class; another shape under the same name gets a new name
    assert SchemaTypes(root).annotation(root["properties"]["root"], "root") is node
    other = SchemaTypes({}).annotation({"title": "Node", "type": "object", "properties": {"id": {}}}, "x")
    assert issubclass(other, BaseModel)
    assert other.__name__ == "Node2"


def test_fields_of_an_object_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "from": {"type": "string"},
            "max-count": {"type": "integer", "default": 10},
            "since": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["from"],
    }
    fields = SchemaTypes(schema).fields(schema)
    assert {
        name: (format_annotation(annotation), info.alias) for name, (annotation, info) in fields.items()
    } == {
        "from_": ("str", "from"),
        "max_count": ("int", "max-count"),
        "since": ("str | None", "since"),
    }
    assert [info.default for _, info in fields.values()][1:] == [10, None]


def test_names() -> None:
    assert identifier("get-current.time") == "get_current_time"
    assert identifier("3d") == "n3d"
    assert identifier("lambda") == "lambda_"
    assert identifier("a b", ["a_b", "a_b_"]) == "a_b_2"
    assert class_name("get_current_time_result") == "GetCurrentTimeResult"
    assert class_name("Day Of Week") == "DayOfWeek"
    assert class_name("TimeResult") == "TimeResult"
