"""Running many panoramas: output staging and resume markers, fingerprints, and the local and Ray executors."""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from ..errors import UserError


def executor_name(rt: DictConfig) -> str:
    """``local`` / ``ray``: the name of the executor ``runtime.executor`` builds (its function ``run_<name>``), as
    summary.json's ``executor.runtime`` reports it before the executor has said anything itself."""
    target = str((rt.get("executor") or {}).get("_target_", ""))
    return target.rpartition(".")[2].removeprefix("run_") or "unknown"


def build_executor(rt: DictConfig) -> Callable:
    """The executor ``runtime.executor`` names: a ``_target_`` (``run_local`` in runtime=local, ``run_ray`` in
    runtime=ray) built with ``hydra.utils.instantiate`` as a partial; its module (and so Ray) is imported only here.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    spec = rt.get("executor")
    if not isinstance(spec, DictConfig) or "_target_" not in spec:
        raise UserError("runtime.executor must name an executor (_target_): choose runtime=local or runtime=ray")
    try:
        executor = instantiate(spec, _partial_=True)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"runtime.executor._target_={spec._target_!r} cannot be built: {cause}") from exc
    if not callable(executor):
        raise UserError(f"runtime.executor._target_={spec._target_!r} is not a function")
    return executor
