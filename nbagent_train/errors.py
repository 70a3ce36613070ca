"""Exceptions raised by the trainer. Each message says what went wrong and what to do next."""

from __future__ import annotations

from nbagent.errors import ConfigError, NBAgentError


class TrainError(NBAgentError):
    """Base class of the errors nbagent_train raises on purpose."""


class TrainConfigError(TrainError, ConfigError):
    """A training setting is invalid; the message names the field."""


class SampleBuildError(TrainError):
    """Trajectories could not be turned into training samples (missing ids, rewards, tokenizer...)."""


class CheckpointError(TrainError):
    """A checkpoint could not be written, found or restored."""


class BackendError(TrainError):
    """A trainer backend is unknown or failed to set up."""
