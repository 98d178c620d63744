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
from .validation import missing_extras, validate_config

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


def check_config(cfg: DictConfig) -> None:
    """Raise a UserError listing every problem of the composed config (:func:`modules.validation.validate_config`:
    types, ranges, exclusive options, device, extras, weights), before a run starts."""
    validate_config(cfg)


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
#: jobs that started (a job that raised a bug has started but recorded no code)
_started: list[bool] = []

#: exit codes (README, "Exit codes"): every job fine, some inputs failed, the job cannot start (bad config, key
#: typo, missing weights or extra, unusable single input), interrupted
EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR = 0, 1, 2


def _task(cfg: DictConfig) -> int:
    _started.append(True)
    code = run_mode(cfg)
    _exit_codes.append(code)
    return code


def main() -> None:
    """Parse ``sys.argv`` as Hydra does, run the job(s), exit with the largest exit code.

    Hydra reports a config it cannot compose (an unknown key, a missing option of a group, bad override syntax) and
    exits 1 before any job starts; that is a config error here: exit 2. ``--help``, ``--cfg``, ``--info`` exit 0.
    """
    _exit_codes.clear()
    _started.clear()
    try:
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(_task)()
    except SystemExit as exc:
        if exc.code not in (0, None) and not _started:
            sys.exit(EXIT_USER_ERROR)
        raise
    sys.exit(max(_exit_codes, default=EXIT_OK if _info_only() else EXIT_SOME_FAILED))


def _info_only() -> bool:
    """Hydra answered without running a job (--help, --hydra-help, --cfg, --info, --shell-completion)."""
    return any(a in ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")
               or a.startswith(("--cfg=", "--info=")) for a in sys.argv[1:])
