"""Serving the policy: the vLLM server the trainer launches, samples from and publishes weights to."""

from nbagent_train.serving.vllm import PolicyServer, PolicyServerError

__all__ = ["PolicyServer", "PolicyServerError"]
