"""Optional features and the pip extras that install them.

The core install (``pip install immersivedepth``) runs ``mode=predict``: distance, confidence, previews and a point
cloud. Everything else needs an extra; :func:`require` imports a module of one or stops with one line naming the
extra (a :class:`MissingExtraError`, a UserError: the runner prints it and exits 2). :func:`check_config` finds the
extras a composed config will need before anything runs, so a long job never fails at its last step.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

__all__ = ["EXTRAS", "MissingExtraError", "require", "missing_extras", "check_config"]

#: importable module -> (extra, pip requirement name)
EXTRAS: dict[str, tuple[str, str]] = {
    "open3d": ("mesh", "open3d"),
    "pygltflib": ("mesh", "pygltflib"),
    "cmeel_assimp": ("mesh", "cmeel-assimp"),
    "pyvista": ("previews", "pyvista"),
    "ray": ("ray", "ray"),
    "OpenEXR": ("eval", "OpenEXR"),
}


class MissingExtraError(UserError):
    """An optional feature was asked for and its extra is not installed."""


def _message(feature: str, module: str) -> str:
    extra, dist = EXTRAS[module]
    return f"{feature} needs {dist}, which is not installed: pip install 'immersivedepth[{extra}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`) or raise :class:`MissingExtraError` naming its extra."""
    if module not in EXTRAS:
        raise KeyError(f"{module!r} is not an optional dependency; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(_message(feature, module)) from None


def _assimp_found(executable) -> bool:
    from .export.mesh_io import AssimpError, find_assimp

    try:
        find_assimp(executable)
        return True
    except AssimpError:
        return False


def _available(module: str) -> bool:
    if module == "cmeel_assimp":  # a command-line tool, not an importable module
        return _assimp_found(None)
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def missing_extras(cfg) -> list[str]:
    """One message per optional module the config ``cfg`` (a composed DictConfig) needs and cannot import."""
    needs: list[tuple[str, str]] = []
    mode = cfg.mode.name
    dense = cfg.export.get("dense") if "export" in cfg else None
    if mode in ("render_dense", "single_view") and dense is not None:
        formats = set(dense.files.formats or [])
        if "glb" in formats:
            needs.append(("pygltflib", f"mode={mode} with export.dense.files.formats containing glb"))
        if "fbx" in formats and not _assimp_found(dense.files.get("assimp_executable")):
            needs.append(("cmeel_assimp", f"mode={mode} with export.dense.files.formats containing fbx"))
        mesh = dense.mesh
        if mesh.get("decimate_faces") is not None or mesh.get("poisson"):
            needs.append(("open3d", f"mode={mode} with export.dense.mesh.decimate_faces or poisson"))
        if dense.point_cloud.get("enabled"):
            needs.append(("open3d", f"mode={mode} with export.dense.point_cloud.enabled"))
        if dense.previews.get("enabled"):
            needs.append(("pyvista", f"mode={mode} with export.dense.previews.enabled"))
    runtime = cfg.get("runtime")
    if runtime is not None and runtime.get("kind") == "ray":
        needs.append(("ray", "runtime=ray"))
    if mode == "eval" and cfg.mode.get("gt_format") == "exr":
        needs.append(("OpenEXR", "mode=eval with mode.gt_format=exr"))
    seen, out = set(), []
    for module, feature in needs:
        if module not in seen and not _available(module):
            seen.add(module)
            out.append(_message(feature, module))
    return out


def check_config(cfg) -> None:
    """Raise :class:`MissingExtraError` (first missing extra; all of them listed) before a run starts."""
    missing = missing_extras(cfg)
    if missing:
        raise MissingExtraError("; ".join(missing))
