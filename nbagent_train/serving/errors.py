"""The error of the serving package."""

from __future__ import annotations

from nbagent_train.errors import TrainError


class PolicyServerError(TrainError):
    """The vLLM server could not be started, reached or updated; the message says why and where the log is."""
