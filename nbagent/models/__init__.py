"""Models: anything that turns chat messages into a recorded `ModelCall`."""

from nbagent.models.base import ChatMessage, Model, ModelError
from nbagent.models.local import ensure_smollm2
from nbagent.models.openai import OpenAIModel
from nbagent.models.retry import RetryPolicy
from nbagent.models.testing import FunctionModel, ScriptedModel

__all__ = [
    "ChatMessage",
    "FunctionModel",
    "Model",
    "ModelError",
    "OpenAIModel",
    "RetryPolicy",
    "ScriptedModel",
    "ensure_smollm2",
]
