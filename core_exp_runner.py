"""ImmersiveDepth entry point: ``python core_exp_runner.py mode=<name> key=value ...``.

The mode's function is looked up in ``MODES`` and called with the composed Hydra config; its return value is the
process exit code.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable

import hydra
from omegaconf import DictConfig

from modules.config import register_resolvers
from modules.errors import UserError

#: mode name -> "module:function" (imported on use so that one mode's heavy imports do not slow the others)
MODES: dict[str, str] = {
    "predict": "modules.modes.predict:run",
    "equirect": "modules.modes.equirect:run",
    "single_view": "modules.modes.single_view:run",
    "voxel": "modules.modes.voxel:run",
    "render_dense": "modules.modes.render_dense:run",
    "eval": "modules.modes.eval:run",
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


register_resolvers()

#: exit codes of the jobs this process ran (one, or several under --multirun)
_exit_codes: list[int] = []


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> int:
    try:
        code = int(mode_function(cfg.mode.name)(cfg) or 0)
    except Exception as exc:
        cause = user_error_in(exc)
        if cause is None:
            raise
        log.error("%s", cause)
        code = 2
    _exit_codes.append(code)
    return code


if __name__ == "__main__":
    main()
    sys.exit(max(_exit_codes, default=1))
