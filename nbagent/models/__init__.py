"""Models: anything that turns chat messages into a recorded `ModelCall`."""

from nbagent.models.base import ChatMessage, Model, ModelError
from nbagent.models.local import ensure_smollm2

__all__ = ["ChatMessage", "Model", "ModelError", "ensure_smollm2"]
