"""Config helpers shared by the runner, the API, the modes and the tests.

Two layouts: a source checkout (``configs/`` and ``core_exp_runner.py`` beside ``modules/``) and an installed wheel
(the configs inside the package as ``modules/configs``). :data:`CONFIG_DIR` is the one in use. ``${project_root:}``
(``paths.root_dir``: where ``pre_checkpoints/`` and ``example_data/`` are looked up) is the checkout's root, or the
working directory for an installed package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

__all__ = ["PROJECT_ROOT", "CONFIG_DIR", "IS_CHECKOUT", "register_resolvers", "project_root", "to_container", "options_from"]

T = TypeVar("T")

#: the repository root (the folder holding core_exp_runner.py and configs/); in an installed package the folder
#: holding ``modules/`` (site-packages), which has no configs/ of its own
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: running from a source checkout (or an editable install of one)
IS_CHECKOUT = (PROJECT_ROOT / "configs" / "config.yaml").is_file()
#: the config folder Hydra composes from
CONFIG_DIR = PROJECT_ROOT / "configs" if IS_CHECKOUT else Path(__file__).resolve().parent / "configs"


def project_root() -> Path:
    """The checkout's root, or the working directory for an installed package."""
    return PROJECT_ROOT if IS_CHECKOUT else Path.cwd()


def register_resolvers() -> None:
    """``${project_root:}`` -> :func:`project_root` as an absolute path, so paths work from any working directory."""
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root().absolute()), replace=True)


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
