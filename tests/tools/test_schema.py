"""JSON schemas built from signatures and docstrings, checked against hand-written expectations."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from nbagent.errors import ToolDefinitionError
from nbagent.tools import RunContext, Tool, tool


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Point(BaseModel):
    """A point on the map."""

    lat: float
    lon: float = Field(0.0, description="Longitude in degrees.")


@dataclasses.dataclass
class Window:
    start: int
    end: int = 10


def test_scalars_and_defaults() -> None:
    @tool
    def lookup(city: str, limit: int = 3, ratio: float = 0.5, exact: bool = False) -> str:
        """Look a city up."""
        return city

    assert lookup.name == "lookup"
    assert lookup.description == "Look a city up."
    assert lookup.parameters_schema == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "limit": {"type": "integer", "default": 3},
            "ratio": {"type": "number", "default": 0.5},
            "exact": {"type": "boolean", "default": False},
        },
        "required": ["city"],
        "additionalProperties": False,
    }


def test_optional_list_dict_and_docstring_descriptions() -> None:
    @tool
    def tag(ids: list[int], labels: dict[str, float] | None = None, note: Optional[str] = None) -> None:  # noqa: UP045
        """Tag some rows.

        Args:
            ids: Row ids to tag.
            labels: Label -> weight.
        """

    assert tag.parameters_schema == {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}, "description": "Row ids to tag."},
            "labels": {
                "anyOf": [{"type": "object", "additionalProperties": {"type": "number"}}, {"type": "null"}],
                "default": None,
                "description": "Label -> weight.",
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["ids"],
        "additionalProperties": False,
    }


def test_literal_and_enum() -> None:
    @tool
    def convert(value: float, unit: Unit = Unit.CELSIUS, mode: Literal["round", "floor"] = "round") -> float:
        """Convert a temperature."""
        return value

    assert convert.parameters_schema == {
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "unit": {"$ref": "#/$defs/Unit", "default": "celsius"},
            "mode": {"enum": ["round", "floor"], "type": "string", "default": "round"},
        },
        "required": ["value"],
        "additionalProperties": False,
        "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "title": "Unit", "type": "string"}},
    }


def test_pydantic_model_and_dataclass_parameters() -> None:
    @tool
    def near(point: Point, window: Window) -> list[Point]:
        """Points near a point.

        Args:
            point: Where to look.
        """
        return [point]

    assert near.parameters_schema == {
        "type": "object",
        "properties": {
            "point": {"$ref": "#/$defs/Point", "description": "Where to look."},
            "window": {"$ref": "#/$defs/Window"},
        },
        "required": ["point", "window"],
        "additionalProperties": False,
        "$defs": {
            "Point": {
                "description": "A point on the map.",
                "properties": {
                    "lat": {"type": "number"},
                    "lon": {"type": "number", "default": 0.0, "description": "Longitude in degrees."},
                },
                "required": ["lat"],
                "title": "Point",
                "type": "object",
            },
            "Window": {
                "properties": {"start": {"type": "integer"}, "end": {"type": "integer", "default": 10}},
                "required": ["start"],
                "additionalProperties": False,
                "title": "Window",
                "type": "object",
            },
        },
    }


def test_annotated_field_constraints_and_description_win_over_docstring() -> None:
    @tool
    def top(k: Annotated[int, Field(ge=1, le=50, description="How many.")] = 5) -> list[str]:
        """Top results.

        Args:
            k: Overridden by the Field description.
        """
        return []

    assert top.parameters_schema["properties"] == {
        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5, "description": "How many."}
    }


def test_no_parameters_and_names_that_shadow_pydantic_attributes() -> None:
    @tool
    def now() -> str:
        """The time."""
        return "noon"

    @tool
    def shadow(json: str, schema: int, model_config: bool, _private: str = "x") -> str:
        """Parameter names pydantic models reserve still work."""
        return json

    assert now.parameters_schema == {"type": "object", "properties": {}, "additionalProperties": False}
    assert shadow.parameters_schema["properties"] == {
        "json": {"type": "string"},
        "schema": {"type": "integer"},
        "model_config": {"type": "boolean"},
        "_private": {"type": "string", "default": "x"},
    }
    assert shadow.parameters_schema["required"] == ["json", "schema", "model_config"]


def test_run_context_is_hidden_and_signature_keeps_annotations() -> None:
    @tool
    def fetch(ctx: RunContext[dict[str, str]], key: str, *, fresh: bool = False) -> str:
        """Fetch a key."""
        return ctx.deps[key]

    assert fetch.takes_ctx
    assert list(fetch.parameters_schema["properties"]) == ["key", "fresh"]
    assert list(fetch.signature.parameters) == ["key", "fresh"]
    assert fetch.signature.parameters["key"].annotation is str
    assert fetch.signature.parameters["fresh"].kind is fetch.signature.parameters["fresh"].KEYWORD_ONLY
    assert fetch.signature.return_annotation is str


def test_name_and_description_overrides() -> None:
    @tool(name="web_search", description="Search the web.")
    def search_impl(query: str) -> list[str]:
        """Internal summary.

        Args:
            query: What to search for.
        """
        return []

    assert search_impl.name == "web_search"
    assert search_impl.description == "Search the web."
    assert search_impl.docstring == "Search the web.\n\nArgs:\n    query: What to search for."
    assert search_impl.parameters_schema["properties"]["query"]["description"] == "What to search for."


def _missing_param_annotation(city, limit: int = 3) -> str:  # type: ignore[no-untyped-def]
    return str(city)


def _missing_return(city: str):  # type: ignore[no-untyped-def]
    return city


def _star_args(*names: str) -> str:
    return ",".join(names)


def _star_kwargs(**options: int) -> str:
    return str(options)


def _ctx_not_first(city: str, ctx: RunContext[None]) -> str:
    return city


def _unresolvable(city: UndefinedType) -> str:  # type: ignore[name-defined]  # noqa: F821
    return "x"


class _NotValidatable:
    pass


def _arbitrary_type(thing: _NotValidatable) -> str:
    return "x"


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (_missing_param_annotation, "parameter 'city' has no type annotation; annotate it"),
        (_missing_return, "has no return annotation"),
        (_star_args, "takes *names"),
        (_star_kwargs, "takes **options"),
        (_ctx_not_first, "the RunContext parameter 'ctx' must be the first parameter"),
        (_unresolvable, "cannot resolve its type hints (name 'UndefinedType' is not defined)"),
        (_arbitrary_type, "pydantic cannot validate its parameter types"),
        (lambda x: x, "'<lambda>' is not a valid tool name"),
    ],
)
def test_definition_errors_name_the_problem(function: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError) as info:
        Tool(function)
    assert message in str(info.value)


def test_invalid_explicit_name() -> None:
    with pytest.raises(ToolDefinitionError, match="'class' is not a valid tool name"):
        tool(name="class")(_star_args)


def test_unbound_method_asks_for_the_bound_one() -> None:
    class Service:
        def lookup(self, city: str) -> str:
            return city

    with pytest.raises(
        ToolDefinitionError, match=r"decorate the bound method instead: tool\(instance.method\)"
    ):
        Tool(Service.lookup)
    bound = Tool(Service().lookup)
    assert list(bound.parameters_schema["properties"]) == ["city"]
