"""Running many panoramas: output staging and resume markers, fingerprints, and the local and Ray executors."""

from ..errors import UserError

EXECUTORS = ("local", "ray")


def select_executor(kind: str):
    """The executor function of ``runtime.kind`` (imported on demand: Ray only when asked for)."""
    if kind == "local":
        from .local import run_local

        return run_local
    if kind == "ray":
        from .ray_executor import run_ray

        return run_ray
    raise UserError(f"runtime.kind={kind!r} is not one of {EXECUTORS}")
