"""The run context handed to tools that ask for it.

A tool whose first parameter is annotated ``RunContext[MyDeps]`` receives the context of the run that
called it: the application's dependencies (clients, state, secrets that stay in the host) and where the
call comes from. The parameter is hidden from the tool's schema, its stub and its kernel signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

DepsT = TypeVar("DepsT")


@dataclass
class RunContext(Generic[DepsT]):
    """What a tool call knows about the run it belongs to.

    Attributes:
        deps: The application's dependencies, passed by whoever runs the agent (``agent.run(..., deps=...)``).
        task_id: The id of the task being worked on, when there is one.
        metadata: Free-form details the caller wants tools to see (episode id, step index, ...).
    """

    deps: DepsT
    task_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
