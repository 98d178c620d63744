"""Config helpers shared by the runner, the modes and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["PROJECT_ROOT", "register_resolvers", "to_container"]

#: the repository root (the folder holding core_exp_runner.py and configs/)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    """``${project_root:}`` -> absolute path of the repository, so paths work from any working directory."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def to_container(cfg: DictConfig) -> Any:
    """Resolved plain-python copy of a config (for meta.json)."""
    return OmegaConf.to_container(cfg, resolve=True)


register_resolvers()
