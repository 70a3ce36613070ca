"""Models: anything that turns chat messages into a recorded `ModelCall`."""

from nbagent.models.base import ChatMessage, Model, ModelError
from nbagent.models.inprocess import TransformersModel
from nbagent.models.litellm import LiteLLMModel
from nbagent.models.local import default_local_model, ensure_smollm2
from nbagent.models.openai import OpenAIModel
from nbagent.models.retry import RetryPolicy
from nbagent.models.testing import FunctionModel, ScriptedModel

__all__ = [
    "ChatMessage",
    "FunctionModel",
    "LiteLLMModel",
    "Model",
    "ModelError",
    "OpenAIModel",
    "RetryPolicy",
    "ScriptedModel",
    "TransformersModel",
    "default_local_model",
    "ensure_smollm2",
]
