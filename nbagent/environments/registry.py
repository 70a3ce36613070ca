"""Finding environments by name: the in-process registry, installed entry points, importable modules."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from typing import Any, TypeAlias, overload

from nbagent.environments.base import Environment
from nbagent.errors import ConfigError

ENTRY_POINT_GROUP = "nbagent.environments"


class EnvironmentNotFoundError(ConfigError):
    """No environment is known under the requested name."""


EnvironmentFactory: TypeAlias = Callable[..., Environment]

_REGISTRY: dict[str, EnvironmentFactory] = {}


@overload
def register_environment(
    name: str, factory: EnvironmentFactory, *, replace: bool = False
) -> EnvironmentFactory: ...


@overload
def register_environment(
    name: str, factory: None = None, *, replace: bool = False
) -> Callable[[EnvironmentFactory], EnvironmentFactory]: ...


def register_environment(
    name: str, factory: EnvironmentFactory | None = None, *, replace: bool = False
) -> EnvironmentFactory | Callable[[EnvironmentFactory], EnvironmentFactory]:
    """Register `factory` (called with the keyword arguments of `load_environment`) under `name`.

    Use it directly, ``register_environment("mine", make_mine)``, or as a decorator,
    ``@register_environment("mine")``. Registering a taken name raises `ConfigError` unless ``replace``.
    """

    def add(fn: EnvironmentFactory) -> EnvironmentFactory:
        if not replace and name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ConfigError(
                f"an environment named {name!r} is already registered; pass replace=True to override it"
            )
        _REGISTRY[name] = fn
        return fn

    if factory is None:
        return add
    return add(factory)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_environments() -> list[str]:
    """Names `load_environment` knows: registered ones and installed entry points."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def _factory_for(name: str) -> EnvironmentFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry_points = _entry_points()
    if name in entry_points:
        loaded: EnvironmentFactory = entry_points[name].load()
        return loaded
    module_name, _, attr = name.partition(":")
    explicit = "." in name or ":" in name
    if re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", name) and (
        explicit or importlib.util.find_spec(module_name) is not None
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EnvironmentNotFoundError(
                f"environment {name!r}: cannot import module {module_name!r} ({exc})"
            ) from exc
        fn = getattr(module, attr or "load_environment", None)
        if not callable(fn):
            raise EnvironmentNotFoundError(
                f"environment {name!r}: module {module_name!r} has no callable {attr or 'load_environment'!r}"
            )
        return fn  # type: ignore[no-any-return]
    known = ", ".join(available_environments()) or "(none)"
    raise EnvironmentNotFoundError(
        f"unknown environment {name!r}. Available: {known}. Register one with "
        f"nbagent.register_environment, install a package with an entry point in the "
        f"{ENTRY_POINT_GROUP!r} group, or pass 'module.path' (or 'module.path:function') of a "
        "module with a load_environment function."
    )


def load_environment(name: str, **kwargs: Any) -> Environment:
    """Build the environment called `name` with `kwargs`.

    Looks in the registry, then the ``nbagent.environments`` entry points, then imports `name` as
    ``module.path`` or ``module.path:function``. Raises `EnvironmentNotFoundError` listing what exists.
    """
    env = _factory_for(name)(**kwargs)
    if not isinstance(env, Environment):
        raise ConfigError(
            f"environment factory for {name!r} returned {type(env).__name__}, which lacks the Environment "
            "interface (name, tasks, tools, kernel_config, agent_overrides, async score)"
        )
    return env
