"""The Python API: one call for a distance map, one call for a whole mode.

    from modules.api import estimate_depth
    result = estimate_depth("panorama.png")                      # the configs' defaults (predictor=joint)
    result.distance, result.confidence                           # numpy float32 [H, W]
    result.meta["scale"]                                         # what a run's meta.json holds (minus files)
    estimate_depth(rgb_array, predictor="synthetic", **{"predictor.gt_distance": "distance.npy"})

:func:`estimate_depth` takes a path, a numpy ``[H, W, 3]`` array (uint8, or float in [0, 1]) or a torch tensor
(``[3, H, W]`` or ``[H, W, 3]``, uint8 or float in [0, 1]) of an equirectangular panorama (W = 2 H), and Hydra-style
overrides as keyword arguments (``predictor="synthetic"``, ``**{"alignment.huber_delta": 0.1}``, values of any plain
type). Models are built once per process and reused by every later call with the same resolved predictor config
(:data:`PREDICTORS`); calls are serialised (one pipeline run at a time per process).

:func:`run` runs a mode exactly as ``immersivedepth mode=...`` does and writes its files into ``output_dir`` (the
command line's run folder), with an optional ``progress(stage, fraction)`` callback.

Errors: bad input or configuration raise :class:`modules.errors.UserError` (a missing extra:
:class:`modules.extras.MissingExtraError`) with a message naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from .cli import check_config, mode_function, user_error_in
from .config import CONFIG_DIR, register_resolvers, to_container
from .errors import UserError
from .predictor_cache import PredictorCache, reuse_predictors

__all__ = ["Result", "RunResult", "estimate_depth", "run", "compose", "override_strings", "to_panorama", "PREDICTORS"]

log = logging.getLogger(__name__)

#: the models this process keeps (keyed by resolved predictor config; the two most recently used)
PREDICTORS = PredictorCache(max_entries=2)
_LOCK = threading.RLock()
#: modes estimate_depth runs in memory (the others write files: use run())
_IN_MEMORY_MODES = ("predict", "equirect")


@dataclass
class Result:
    """One panorama's output.

    Attributes:
        distance: [H, W] float32 distance along each pixel's ray (relative with median 1, or metric when
            ``scale.camera_height`` / ``scale.factor`` is set: ``meta["scale"]["units"]`` says which).
        confidence: [H, W] float32 in [0, 1].
        meta: what meta.json would hold: input size, scale, alignment, per-stage timings, predictor, config.
    """

    distance: np.ndarray
    confidence: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """What :func:`run` did: the exit code the command line would return, the run folder, and its summary.

    Attributes:
        exit_code: 0 ok; 2 a user error (``error`` holds its message); other codes as the mode returns them
            (a batch whose inputs failed: ``error`` joins their reasons from summary.json).
        output_dir: the run folder (the command line's ``hydra.run.dir``).
        summary: the run folder's summary.json (batch / predict) or summary of eval, when the mode wrote one.
        meta: the run folder's meta.json, when the mode wrote one.
        error: the user error's message, or None.
    """

    exit_code: int
    output_dir: Path
    summary: dict | None = None
    meta: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# ------------------------------------------------------------------------------------------------ overrides


def _hydra_value(value: Any) -> str:
    """A python value as a Hydra override value (strings quoted unless they are plain words or paths)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if value and all(c.isalnum() or c in "_-./" for c in value) and value.lower() not in ("null", "true", "false"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    raise TypeError(f"cannot pass a {type(value).__name__} as a config override: {value!r}")


def override_strings(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """``{"predictor": "synthetic", "projection.face_size": 64}`` -> ``["predictor=synthetic",
    "projection.face_size=64"]``; a list of ``key=value`` strings passes through unchanged."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={_hydra_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise TypeError("overrides: pass a dict or a list of 'key=value' strings, not one string")
    return [str(o) for o in overrides]


def compose(overrides: Mapping[str, Any] | Iterable[str] | None = None, output_dir: str | os.PathLike | None = None
            ) -> DictConfig:
    """The config the command line would run with these overrides, ``paths.output_dir`` set to ``output_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    out = "null" if output_dir is None else _hydra_value(str(Path(output_dir).absolute()))
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="immersivedepth"):
            return hydra_compose(config_name="config", overrides=[*override_strings(overrides),
                                                                  f"paths.output_dir={out}"])
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"bad config override: {exc}") from exc


# ------------------------------------------------------------------------------------------------ images


def to_panorama(image: Any, min_height: int = 32, max_height: int | None = None) -> tuple[torch.Tensor, str | None]:
    """A path, numpy array or torch tensor -> ([3, H, W] float32 RGB in [0, 1], the path or None); a file taller
    than ``max_height`` is downscaled to it while decoding.

    Raises:
        UserError: unreadable file, wrong shape or dtype, values outside [0, 1], not W = 2 H, too small.
    """
    from .dataset.io import load_panorama

    if isinstance(image, (str, os.PathLike)):
        path = str(Path(image).absolute())
        return load_panorama(path, min_height=min_height, max_height=max_height), path
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.array(image))  # a copy: the caller keeps its array
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
    else:
        raise UserError(f"image must be a path, a numpy array or a torch tensor, not {type(image).__name__}")
    if t.dim() != 3 or 3 not in (t.shape[0], t.shape[-1]):
        raise UserError(f"image array must be [H, W, 3] (or a tensor [3, H, W]), got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and not (t.shape[0] == 3 and isinstance(image, torch.Tensor)):
        t = t.permute(2, 0, 1)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
            raise UserError("a float image must hold finite values in [0, 1] (divide 8-bit values by 255)")
    else:
        raise UserError(f"image dtype must be uint8 or float, got {t.dtype}")
    _, H, W = t.shape
    if W != 2 * H:
        raise UserError(f"image is {W}x{H} pixels; an equirectangular panorama must be exactly twice as wide as high")
    if H < min_height:
        raise UserError(f"image is only {H} pixels high; at least {min_height} are needed")
    return t.contiguous(), None


# ------------------------------------------------------------------------------------------------ estimate_depth


def _pipeline(cfg: DictConfig):
    from .device import configure_runtime
    from .pipeline import build_equirect, build_pipeline

    configure_runtime(cfg)
    predictor = PREDICTORS.get(cfg.predictor, cfg.scale.get("method"))
    if cfg.mode.name == "equirect":
        return build_equirect(cfg, predictor, pad_fraction=cfg.mode.pad_fraction,
                              fill_iterations=cfg.mode.fill_iterations)
    return build_pipeline(cfg, predictor)


def estimate_depth(image: Any, **overrides: Any) -> Result:
    """Distance and confidence of one equirectangular panorama.

    Args:
        image: a file path, a numpy [H, W, 3] array (uint8, or float in [0, 1]) or a torch tensor ([3, H, W] or
            [H, W, 3]); W = 2 H.
        **overrides: Hydra overrides (``predictor="synthetic"``, ``**{"predictor.gt_distance": path}``);
            ``mode`` may be ``predict`` (the tangent pipeline, default) or ``equirect`` (one-pass baseline).
    Returns:
        :class:`Result` with numpy float32 [H, W] distance and confidence and the meta dictionary.
    """
    cfg = compose(overrides)
    if cfg.mode.name not in _IN_MEMORY_MODES:
        raise UserError(f"estimate_depth runs mode predict or equirect, not {cfg.mode.name!r}: use "
                        "modules.api.run(mode=...) for modes that write files")
    check_config(cfg)
    max_height = None
    if isinstance(image, (str, os.PathLike)):  # the size guard, from the file header (as every run's reader)
        from .dataset.size_guard import check_size

        max_height = check_size(cfg, image).target_height
    rgb, path = to_panorama(image, min_height=int(cfg.dataset.min_height), max_height=max_height)
    with _LOCK:
        pipeline = _pipeline(cfg)
        out = pipeline.run(rgb, path)
    network = out.timings.get("network", 0.0)
    stages = {k: v for k, v in out.timings.items() if k != "network"}
    meta = {
        "input": {"image_path": path, "height": int(rgb.shape[1]), "width": int(rgb.shape[2])},
        "scale": out.info.get("scale"),
        "alignment": out.info.get("alignment"),
        "predictor": pipeline.predictor.describe(),
        "method": cfg.mode.name if cfg.mode.name == "equirect" else "tangent",
        "timings": {"network": network, "non_network": stages, "non_network_total": sum(stages.values())},
        "machine": {"torch": torch.__version__, "device": str(pipeline.device)},
        "config": to_container(cfg),
    }
    meta = json.loads(json.dumps(meta, default=_jsonable))  # plain python, as meta.json holds it
    return Result(
        distance=out.distance.detach().cpu().numpy().astype(np.float32, copy=False),
        confidence=out.confidence.detach().cpu().numpy().astype(np.float32, copy=False),
        meta=meta,
    )


def _jsonable(value: Any):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


# ------------------------------------------------------------------------------------------------ run


def run(
    mode: str = "predict",
    image_path: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run a mode as ``immersivedepth mode=<mode> dataset.image_path=<image_path> <overrides>`` does, writing its
    files into ``output_dir`` (the command line's run folder; created).

    Args:
        mode: predict | equirect | single_view | voxel | render_dense | eval.
        image_path: ``dataset.image_path`` (a panorama, folder, glob or list for predict); None keeps the config's.
        output_dir: the run folder (required).
        overrides: more Hydra overrides (dict or ``key=value`` strings).
        progress: optional ``callable(stage, fraction)``: each pipeline stage's end (fraction of that panorama's
            stages; ``runtime=ray`` workers do not report), then ``("done", 1.0)``.
    Returns:
        :class:`RunResult` (exit code as the command line's, ``error`` for a user error instead of raising it).
    """
    from .pipeline import PROGRESS

    if output_dir is None:
        raise UserError("run() needs output_dir (the run folder its files go into)")
    out = Path(output_dir).absolute()
    items = [f"mode={_hydra_value(mode)}"]
    if image_path is not None:
        items.append(f"dataset.image_path={_hydra_value(str(Path(image_path).absolute()))}")
    items += override_strings(overrides)
    try:
        cfg = compose(items, output_dir=out)
        check_config(cfg)
        out.mkdir(parents=True, exist_ok=True)
        token = PROGRESS.set(progress)
        try:
            with _LOCK, reuse_predictors(PREDICTORS):
                code = int(mode_function(cfg.mode.name)(cfg) or 0)
        finally:
            PROGRESS.reset(token)
    except Exception as exc:
        cause = user_error_in(exc)
        if cause is None:
            raise
        log.error("%s", cause)
        return RunResult(2, out, error=str(cause))
    if progress is not None:
        progress("done", 1.0)
    summary = _read_json(out / "summary.json")
    # a batch run reports an unusable input in summary.json (not as an exception): its reason is the error
    reasons = [p["reason"] for p in (summary or {}).get("panoramas", []) if p.get("status") == "failed" and p.get("reason")]
    return RunResult(code, out, error="; ".join(reasons) if code != 0 and reasons else None, summary=summary,
                     meta=_read_json(out / "meta.json"))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
