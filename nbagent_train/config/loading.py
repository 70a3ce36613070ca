"""Recipes into configs: a YAML file, dotted overrides on top, then one validation.

A bad value or an unknown name raises `TrainConfigError` naming the field (``loss.clip_low``) and where it
came from (the file, the command-line flags); an unknown name gets a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import TrainConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"{dotted}: `{part}` is a value, not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.kl_coef=0.001"`` -> ``("loss.kl_coef", 0.001)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(f"--set {text!r}: write it as section.field=value, e.g. loss.kl_coef=0.001")
    return key.strip(), yaml.safe_load(raw)


def _field_names(cls: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Valid field names at `path` inside `cls` (for "did you mean" hints)."""
    current: Any = cls
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _describe(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        name = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _field_names(cls, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else f" (known: {', '.join(known)})"
            lines.append(f"{name}: unknown field{hint}")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{name}: {err['msg']}{shown}")
    return f"invalid training config from {source}:\n  " + "\n  ".join(lines)


def build_config(
    data: dict[str, Any],
    *,
    cls: type[ConfigT] = TrainConfig,  # type: ignore[assignment]
    source: str = "arguments",
) -> ConfigT:
    """Validate a nested dict into `cls`, turning validation errors into one `TrainConfigError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise TrainConfigError(_describe(exc, cls, source)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML recipe (not yet validated)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    cls: type[ConfigT] = TrainConfig,  # type: ignore[assignment]
) -> ConfigT:
    """Read a YAML recipe (optional), apply dotted overrides, validate.

    >>> cfg = load_config(None, {"advantage.estimator": "rloo", "lora.rank": 8})
    >>> cfg.advantage.estimator, cfg.lora.rank
    ('rloo', 8)
    """
    data = read_config_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    source = f"{path} and command-line flags" if path is not None else "command-line flags"
    return build_config(data, cls=cls, source=source)


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (round-trips through `load_config`)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
