"""Serving the policy: the vLLM server the trainer launches, samples from and publishes weights to."""

from nbagent_train.serving.errors import PolicyServerError
from nbagent_train.serving.policy_server import PolicyServer

__all__ = ["PolicyServer", "PolicyServerError"]
