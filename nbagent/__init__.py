"""nbagent: notebook agents that act by writing Python in a real Jupyter kernel.

The public names below are imported on first use, so ``import nbagent`` stays light (no kernel client,
openai client, torch or litellm until something needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nbagent.trajectory import (
    CellResult,
    CellStatus,
    Reward,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
    read_trajectories,
)

if TYPE_CHECKING:
    from nbagent.agent import Agent, RunResult
    from nbagent.environments import (
        BaseEnvironment,
        Environment,
        SimpleEnvironment,
        available_environments,
        load_environment,
        register_environment,
    )
    from nbagent.kernel import Kernel, KernelConfig, KernelPool, render_cell
    from nbagent.models import (
        FunctionModel,
        LiteLLMModel,
        Model,
        ModelError,
        OpenAIModel,
        ScriptedModel,
        TransformersModel,
    )
    from nbagent.rollout import collect
    from nbagent.tools import RunContext, Tool, ToolBridge, Toolset, tool
    from nbagent.trajectory.export import to_notebook, to_openai_messages

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Agent": "nbagent.agent",
    "RunResult": "nbagent.agent",
    "BaseEnvironment": "nbagent.environments",
    "Environment": "nbagent.environments",
    "SimpleEnvironment": "nbagent.environments",
    "available_environments": "nbagent.environments",
    "load_environment": "nbagent.environments",
    "register_environment": "nbagent.environments",
    "to_notebook": "nbagent.trajectory.export",
    "to_openai_messages": "nbagent.trajectory.export",
    "Kernel": "nbagent.kernel",
    "KernelConfig": "nbagent.kernel",
    "KernelPool": "nbagent.kernel",
    "render_cell": "nbagent.kernel",
    "FunctionModel": "nbagent.models",
    "LiteLLMModel": "nbagent.models",
    "Model": "nbagent.models",
    "ModelError": "nbagent.models",
    "OpenAIModel": "nbagent.models",
    "ScriptedModel": "nbagent.models",
    "TransformersModel": "nbagent.models",
    "collect": "nbagent.rollout",
    "RunContext": "nbagent.tools",
    "Tool": "nbagent.tools",
    "ToolBridge": "nbagent.tools",
    "Toolset": "nbagent.tools",
    "tool": "nbagent.tools",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Agent",
    "BaseEnvironment",
    "CellResult",
    "CellStatus",
    "Environment",
    "FunctionModel",
    "Kernel",
    "KernelConfig",
    "KernelPool",
    "LiteLLMModel",
    "Model",
    "ModelError",
    "OpenAIModel",
    "Reward",
    "RunContext",
    "RunResult",
    "ScriptedModel",
    "SimpleEnvironment",
    "TaskSpec",
    "Termination",
    "Tool",
    "ToolBridge",
    "Toolset",
    "Trajectory",
    "TrajectoryWriter",
    "TransformersModel",
    "__version__",
    "available_environments",
    "collect",
    "load_environment",
    "read_trajectories",
    "register_environment",
    "render_cell",
    "to_notebook",
    "to_openai_messages",
    "tool",
]
