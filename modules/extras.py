"""Optional features and the pip extras that install them.

The core install (``pip install immersivedepth``) runs ``mode=predict``: distance, confidence, previews and a point
cloud. Everything else needs an extra; :func:`require` imports a module of one or stops with one line naming the
extra (a :class:`MissingExtraError`, a UserError: the runner prints it and exits 2).
:func:`modules.cli.check_config` finds the extras a composed config needs before anything runs, so a long job never
fails at its last step.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

__all__ = ["EXTRAS", "MissingExtraError", "require", "available", "missing_message"]

#: importable module -> (extra, pip requirement name)
EXTRAS: dict[str, tuple[str, str]] = {
    "open3d": ("mesh", "open3d"),
    "pygltflib": ("mesh", "pygltflib"),
    "cmeel_assimp": ("mesh", "cmeel-assimp"),
    "pyvista": ("previews", "pyvista"),
    "ray": ("ray", "ray"),
    "OpenEXR": ("eval", "OpenEXR"),
    "fsspec": ("remote", "fsspec"),
}


class MissingExtraError(UserError):
    """An optional feature was asked for and its extra is not installed."""


def missing_message(feature: str, module: str) -> str:
    """``<feature> needs <package>, which is not installed: pip install 'immersivedepth[<extra>]'``."""
    extra, dist = EXTRAS[module]
    return f"{feature} needs {dist}, which is not installed: pip install 'immersivedepth[{extra}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`) or raise :class:`MissingExtraError` naming its extra."""
    if module not in EXTRAS:
        raise KeyError(f"{module!r} is not an optional dependency; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(missing_message(feature, module)) from None


def available(module: str) -> bool:
    """Whether an optional module imports."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
