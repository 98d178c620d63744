"""Config helpers shared by the runner, the modes and the tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

__all__ = ["PROJECT_ROOT", "register_resolvers", "to_container", "options_from"]

T = TypeVar("T")

#: the repository root (the folder holding core_exp_runner.py and configs/)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    """``${project_root:}`` -> absolute path of the repository, so paths work from any working directory."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def to_container(cfg: DictConfig) -> Any:
    """Resolved plain-python copy of a config (for meta.json)."""
    return OmegaConf.to_container(cfg, resolve=True)


def options_from(cls: type[T], value: Any) -> T:
    """Build a typed options dataclass from None (its defaults), an instance, or a mapping (plain or a Hydra config
    node) with known keys only: an unknown key is an error, so no config key goes unread."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping of options, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    kwargs = {
        k: (tuple(v or ()) if isinstance(getattr(defaults, k), tuple) else v) for k, v in value.items()
    }  # lists (or null) for tuple fields, e.g. from a Hydra config
    return cls(**kwargs)


register_resolvers()
