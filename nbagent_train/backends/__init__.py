"""Trainer backends: the engines behind `TrainerBackend`. Importing this package does not import torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from nbagent_train.backends.base import ExportResult, TrainerBackend
from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import BackendError

BackendFactory = Callable[[TrainConfig], TrainerBackend]

_BACKENDS: dict[str, str | BackendFactory] = {"trl": "nbagent_train.backends.trl:TRLBackend"}


def register_backend(name: str, factory: str | BackendFactory) -> None:
    """Make `config.backend == name` use `factory` (a callable taking the config, or "module:attr")."""
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(config: TrainConfig) -> TrainerBackend:
    """Instantiate the backend named by `config.backend` (not yet set up: call `setup()`)."""
    entry = _BACKENDS.get(config.backend)
    if entry is None:
        raise BackendError(
            f"backend: unknown trainer backend {config.backend!r}; "
            f"available: {', '.join(available_backends())}"
        )
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            raise BackendError(
                f"backend {config.backend!r} needs {exc.name}; install the training extra: "
                "pip install 'nbagent[train]'"
            ) from exc
    assert callable(entry)
    return entry(config)


__all__ = [
    "BackendFactory",
    "ExportResult",
    "TrainerBackend",
    "available_backends",
    "create_backend",
    "register_backend",
]
