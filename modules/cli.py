"""The command line: ``immersivedepth mode=<name> key=value ...`` (console script) and
``python core_exp_runner.py ...`` (checkout) run this same :func:`main`.

The mode's function is looked up in ``MODES`` and called with the composed Hydra config; its return value is the
process exit code. Errors a user can act on (:class:`modules.errors.UserError`, a missing extra among them) print one
line and exit 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable

import hydra
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers
from .errors import UserError
from .extras import MissingExtraError, available, missing_message

__all__ = ["MODES", "main", "mode_function", "run_mode", "user_error_in", "missing_extras", "check_config"]

#: mode name -> "module:function" (imported on use so that one mode's heavy imports do not slow the others)
MODES: dict[str, str] = {
    "predict": "modules.modes.predict:run",
    "equirect": "modules.modes.equirect:run",
    "single_view": "modules.modes.single_view:run",
    "voxel": "modules.modes.voxel:run",
    "render_dense": "modules.modes.render_dense:run",
    "eval": "modules.modes.eval:run",
    "video": "modules.modes.video:run",
}

log = logging.getLogger("immersivedepth")


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError that caused ``exc``, if any (Hydra's instantiate wraps errors raised by constructors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def mode_function(name: str) -> Callable[[DictConfig], int]:
    if name not in MODES:
        raise UserError(f"unknown mode {name!r}; known modes: {', '.join(sorted(MODES))}")
    module, func = MODES[name].split(":")
    return getattr(importlib.import_module(module), func)


def _assimp_found(executable) -> bool:
    from .export.mesh_io import AssimpError, find_assimp

    try:
        find_assimp(executable)
        return True
    except AssimpError:
        return False


def missing_extras(cfg: DictConfig) -> list[str]:
    """One line per optional package the composed config ``cfg`` needs and cannot import (naming its extra)."""
    needs: list[tuple[str, str]] = []
    mode = cfg.mode.name
    dense = cfg.export.get("dense") if "export" in cfg else None
    if mode in ("render_dense", "single_view") and dense is not None:
        formats = set(dense.files.formats or [])
        if "glb" in formats:
            needs.append(("pygltflib", f"mode={mode} with export.dense.files.formats containing glb"))
        if "obj" in formats and "obj" in set(dense.files.get("verify") or []) and not _assimp_found(
                dense.files.get("assimp_executable")):
            needs.append(("cmeel_assimp", f"mode={mode} with export.dense.files.verify containing obj"))
        if dense.mesh.get("decimate_faces") is not None or dense.mesh.get("poisson"):
            needs.append(("open3d", f"mode={mode} with export.dense.mesh.decimate_faces or poisson"))
        if dense.point_cloud.get("enabled"):
            needs.append(("open3d", f"mode={mode} with export.dense.point_cloud.enabled"))
        if dense.previews.get("enabled"):
            needs.append(("pyvista", f"mode={mode} with export.dense.previews.enabled"))
    runtime = cfg.get("runtime")
    executor = runtime.get("executor") if runtime is not None else None
    if executor is not None and str(executor.get("_target_", "")).startswith("modules.runtime.ray"):
        needs.append(("ray", "runtime=ray"))
    if mode == "eval" and cfg.mode.get("gt_format") == "exr":
        needs.append(("OpenEXR", "mode=eval with mode.gt_format=exr"))
    seen, out = set(), []
    for module, feature in needs:
        if module in seen or (available(module) if module != "cmeel_assimp" else False):
            continue
        seen.add(module)
        out.append(missing_message(feature, module))
    return out


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`MissingExtraError` listing every missing extra the config needs, before a run starts."""
    missing = missing_extras(cfg)
    if missing:
        raise MissingExtraError("; ".join(missing))


def run_mode(cfg: DictConfig) -> int:
    """Run the mode ``cfg.mode.name`` on a composed config; the exit code (2 after a UserError, logged)."""
    try:
        check_config(cfg)
        return int(mode_function(cfg.mode.name)(cfg) or 0)
    except Exception as exc:
        cause = user_error_in(exc)
        if cause is None:
            raise
        log.error("%s", cause)
        return 2


register_resolvers()

#: exit codes of the jobs this process ran (one, or several under --multirun)
_exit_codes: list[int] = []


def _task(cfg: DictConfig) -> int:
    code = run_mode(cfg)
    _exit_codes.append(code)
    return code


def main() -> None:
    """Parse ``sys.argv`` as Hydra does, run the job(s), exit with the largest exit code."""
    _exit_codes.clear()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(_task)()
    sys.exit(max(_exit_codes, default=0 if _info_only() else 1))


def _info_only() -> bool:
    """Hydra answered without running a job (--help, --hydra-help, --cfg, --info, --shell-completion)."""
    return any(a in ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")
               or a.startswith(("--cfg=", "--info=")) for a in sys.argv[1:])
