"""The size guard: a panorama's peak memory estimated from its header, before anything is decoded.

A run's peak memory grows with the panorama's pixel count (full-size ERP maps in blending, refinement, scale, the
writers; mode=render_dense's mesh of one vertex per pixel) on top of a fixed part (interpreter, torch, the models, the
tangent faces, whose size does not depend on the panorama's). :func:`check_size` reads the image size from the file
header (Pillow's lazy open: nothing is decoded), estimates the peak for the mode and stages of the config
(:func:`estimate_peak_gb`) and

* returns the height to decode at: the panorama's own, or ``dataset.max_height`` when it is taller (the reader then
  downscales while decoding, :func:`modules.dataset.io.load_panorama`);
* or raises :class:`SizeError` (a :class:`~modules.dataset.io.InputError`: exit 2 for one image, "failed" in a batch)
  naming the file, its size, the estimate, the budget and the ``dataset.max_height`` that fits the budget.

Budget (``dataset.max_memory_gb``): null means 75 % of this machine's memory (physical RAM, or the container's cgroup
limit when that is lower): the estimate answers "can this job finish here at all", so the budget follows the
machine, not the momentary free memory (the same input is accepted or refused the same way on every run on one
machine), and the 25 % left covers the OS, the page cache and the model's error (below). Several workers on one
machine (``runtime=ray``) each hold a panorama: give them ``dataset.max_memory_gb`` = memory / workers.

Pillow's decompression-bomb limit (a warning above 89 Mpx, an error above 179 Mpx) is switched off by
:mod:`modules.dataset.io`: this guard replaces it with a limit that depends on what the run will do with the image.

Calibration (how the coefficients were measured; update them here when a stage's memory changes)
---------------------------------------------------------------------------------------------
``peak_gb = base_gb + bytes_per_pixel * H * W / 1e9 + bytes_per_face_pixel * F * S^2 / 1e9
+ bytes_per_blend_pixel * Hb * Wb / 1e9`` with H x W the processed panorama, F the tangent faces (icosahedron level
0: 20, cubemap: 6, times ``projection.rotations``, or ``outdoor_rotations`` if larger), S ``projection.face_size``,
and Hb x Wb the panorama at the height the faces are blended at (``fusion.blender.max_height``: min(H, 1024) by
default). Measured with ``python tools/bench_memory.py --mode <mode> --heights ...``: max RSS (``/usr/bin/time -v``) of
``core_exp_runner.py mode=<mode> predictor=synthetic`` in a fresh process, default config otherwise, on the 2-core
CPU VM (torch 2.13 CPU); the coefficients are the least-squares fit over the sizes (``base_gb`` net of the face term
at S = 512, F S^2 = 5.2 M); ``bytes_per_face_pixel`` from face_size 256 / 512 / 768 at 1024x512 (1.29 / 1.61 /
2.22 GB: 81-89 bytes per face pixel). The measurements are in README.md ("Memory and large panoramas") and beside
each model. The synthetic predictor stands in for a network: a real network adds its weights and activations to
the fixed part (MiDaS BEiT-L 512 + Depth Anything V2-L: about 2.5 GB more, weights only) but nothing per panorama
pixel, and holds a float32 ground-truth map (4 bytes/pixel) a network does not; on CUDA most of the per-pixel
memory is on the GPU instead of in RSS. Over the measured sizes the predict model is within 0.15 GB (512x256 to
8192x4096). The peak is the largest of several stages, so the linear model is a fit, not a law: after a stage's
memory changes (e.g. stages running at the resolution they need, #16), rerun the benchmark at four or more sizes
on both sides of ``fusion.blender.max_height`` and replace the numbers below (render_dense and voxel are predict's
model plus their excess, measured before the blending cap).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .io import InputError, read_image_size

__all__ = ["MemoryModel", "MODELS", "SizeDecision", "SizeError", "check_size", "check_settings", "estimate_peak_gb",
           "memory_budget_gb", "machine_memory_gb", "fitting_height", "model_for"]

#: the budget, as a fraction of the machine's memory, when ``dataset.max_memory_gb`` is null
AUTO_BUDGET_FRACTION = 0.75
#: a suggested max_height is rounded down to a multiple of this
HEIGHT_STEP = 64
#: the suggested max_height fits this share of the budget: the rest covers the model's error (README: within 0.15 GB
#: of every measurement; 5 % of an 8 GB budget is 0.4 GB)
SUGGESTION_SHARE = 0.95


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of one run of a mode: ``base_gb + bytes_per_pixel * H * W + bytes_per_face_pixel * F * S^2
    + bytes_per_blend_pixel * Hb * Wb`` with Hb = min(H, ``fusion.blender.max_height``) the height the faces are
    blended at (Wb = W Hb / H)."""

    base_gb: float
    bytes_per_pixel: float
    bytes_per_face_pixel: float = 0.0
    bytes_per_blend_pixel: float = 0.0


#: per mode (and eval's pipelines); calibration in the module docstring, measurements in README.md
MODELS: dict[str, MemoryModel] = {
    # blending capped at fusion.blender.max_height=1024 (#16): 2048x1024 / 2896x1448 / 4096x2048 / 8192x4096:
    # 2.77 2.92 3.56 6.51 GB; before the cap (blend at full size) 512x256 / 1024x512 / 1536x768: 1.17 1.61 2.23;
    # face_size 256 / 512 / 768 at 1024x512: 1.29 1.61 2.22
    "predict": MemoryModel(base_gb=0.72, bytes_per_pixel=118.0, bytes_per_face_pixel=85.0, bytes_per_blend_pixel=650.0),
    # no tangent faces; the synthetic predictor renders the whole padded panorama (a network resizes it):
    # 1024x512 / 2048x1024 / 2896x1448: 0.42 0.77 1.03 GB
    "equirect": MemoryModel(base_gb=0.37, bytes_per_pixel=164.0),
    # the predict pipeline, then a mesh of one vertex per pixel and its files (export.dense defaults): predict's
    # model + 604 bytes/pixel, its excess over predict measured before the blending cap (512x256 / 1024x512 /
    # 2048x1024 / 2896x1448: 1.03 1.74 3.23 6.05 GB, 1200 bytes/pixel in all)
    "render_dense": MemoryModel(base_gb=0.72, bytes_per_pixel=722.0, bytes_per_face_pixel=85.0,
                                bytes_per_blend_pixel=650.0),
    # the predict pipeline, then the points of every mode.stride-th pixel and the grid: predict's + 50 bytes/pixel
    # (1024x512 / 2896x1448: 1.73 4.10 GB before the cap)
    "voxel": MemoryModel(base_gb=0.72, bytes_per_pixel=168.0, bytes_per_face_pixel=85.0, bytes_per_blend_pixel=650.0),
    # a photo, not measured: no faces (equirect's fixed part), render_dense's per-pixel mesh and files
    "single_view": MemoryModel(base_gb=0.37, bytes_per_pixel=1200.0),
}


class SizeError(InputError):
    """A panorama too large for the memory budget; the message names the file, its size, the estimate, the budget
    and the options that make it fit."""


@dataclass(frozen=True)
class SizeDecision:
    """What :func:`check_size` decided for one file.

    Attributes:
        width, height: the file's size (from its header).
        target_height: the height to decode at (``height``, or ``dataset.max_height`` when the file is taller).
        estimate_gb: estimated peak memory at ``target_height``.
        budget_gb: the budget it was compared with.
    """

    width: int
    height: int
    target_height: int
    estimate_gb: float
    budget_gb: float

    @property
    def downscaled(self) -> bool:
        return self.target_height < self.height

    def describe(self) -> dict:
        """meta.json's record of the decision (input.size_guard)."""
        return {"file_width": self.width, "file_height": self.height, "processed_height": self.target_height,
                "downscaled": self.downscaled, "estimate_gb": round(self.estimate_gb, 2),
                "budget_gb": round(self.budget_gb, 2)}


def model_for(cfg: DictConfig, mode: str | None = None) -> MemoryModel:
    """The memory model of ``mode`` (default ``cfg.mode.name``); eval uses the one of its ``mode.pipeline``."""
    mode = mode or str(cfg.mode.name)
    if mode == "eval":
        target = str(cfg.mode.get("pipeline", {}).get("_target_", ""))
        mode = "equirect" if target.endswith("build_equirect") else "predict"
    return MODELS.get(mode, MODELS["predict"])


def _face_pixels(cfg: DictConfig) -> int:
    """F * S^2 of the configured projection (0 without one)."""
    p = cfg.get("projection")
    if p is None:
        return 0
    size = int(p.get("face_size", 512))
    # the outdoor pass (sky found) runs projection.outdoor_rotations copies: the guard plans for it
    rotations = max(int(p.get("rotations", 1)), int(p.get("outdoor_rotations", 1)))
    target = str(p.get("_target_", ""))
    faces = 6 if "Cubemap" in target else 20 * 4 ** int(p.get("level", 0))
    return faces * rotations * size * size


def _blend_pixels(cfg: DictConfig, height: int, width: int) -> float:
    """Hb * Wb: the panorama's pixels at the height the blender works at (``fusion.blender.max_height``)."""
    fusion = cfg.get("fusion")
    blender = fusion.get("blender") if fusion is not None else None
    cap = blender.get("max_height") if blender is not None else None
    if cap is None or height <= int(cap) or height <= 0:
        return float(height * width)
    return float(int(cap)) * width * int(cap) / height


def estimate_peak_gb(cfg: DictConfig, height: int, width: int, mode: str | None = None) -> float:
    """Estimated peak memory in GB (1e9 bytes) of running ``mode`` on an ``height`` x ``width`` image."""
    m = model_for(cfg, mode)
    return m.base_gb + (m.bytes_per_pixel * height * width + m.bytes_per_face_pixel * _face_pixels(cfg)
                        + m.bytes_per_blend_pixel * _blend_pixels(cfg, height, width)) / 1e9


def _cgroup_limit_bytes() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def machine_memory_gb() -> float:
    """Physical memory of this machine in GB, or the container's cgroup limit when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 10**9  # unknown (not POSIX): a typical workstation
    limit = _cgroup_limit_bytes()
    return min(total, limit) / 1e9 if limit else total / 1e9


def memory_budget_gb(cfg: DictConfig) -> float:
    """``dataset.max_memory_gb``, or :data:`AUTO_BUDGET_FRACTION` of :func:`machine_memory_gb` when null."""
    value = cfg.dataset.get("max_memory_gb")
    if value is None:
        return AUTO_BUDGET_FRACTION * machine_memory_gb()
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or math.isinf(value):
        from ..errors import UserError

        raise UserError(f"dataset.max_memory_gb={cfg.dataset.get('max_memory_gb')!r} must be a positive number of "
                        "GB (or null: 75 % of this machine's memory)")
    return value


def fitting_height(cfg: DictConfig, budget_gb: float, aspect: float = 2.0, mode: str | None = None) -> int:
    """The largest height (a multiple of :data:`HEIGHT_STEP`, W = aspect x H) whose estimate fits ``budget_gb``;
    0 when not even the smallest does (the estimate grows with the height: a binary search)."""

    def fits(steps: int) -> bool:
        h = steps * HEIGHT_STEP
        return estimate_peak_gb(cfg, h, round(aspect * h), mode) <= budget_gb

    lo, hi = 0, 1 << 12  # up to 262144 rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo * HEIGHT_STEP


def _max_height(cfg: DictConfig) -> int | None:
    value = cfg.dataset.get("max_height")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < int(cfg.dataset.get("min_height", 1)):
        from ..errors import UserError

        raise UserError(f"dataset.max_height={value!r} must be null or a whole number of pixels >= "
                        f"dataset.min_height ({cfg.dataset.get('min_height')})")
    return int(value)


def check_settings(cfg: DictConfig) -> None:
    """Raise a UserError naming ``dataset.max_memory_gb`` / ``dataset.max_height`` when either is unusable (for the
    config validation and the runners, before any input is read)."""
    memory_budget_gb(cfg)
    _max_height(cfg)


def check_size(cfg: DictConfig, path: str | os.PathLike, mode: str | None = None,
               size: tuple[int, int] | None = None) -> SizeDecision:
    """Decide from the header of ``path`` whether (and at which height) the run can process it.

    Args:
        cfg: the run's config (``dataset.max_memory_gb``, ``dataset.max_height``, ``mode``, ``projection``).
        mode: the mode whose memory model applies (default ``cfg.mode.name``).
        size: (width, height) when already known (no header read).
    Raises:
        InputError: the file cannot be opened as an image (missing, empty, not an image).
        SizeError: the estimate at the height it would be processed at exceeds the budget.
        UserError: a bad ``dataset.max_memory_gb`` / ``dataset.max_height``.
    """
    width, height = size if size is not None else read_image_size(path)
    budget = memory_budget_gb(cfg)
    max_height = _max_height(cfg)
    target = min(height, max_height) if max_height is not None else height
    target_width = round(width * target / height) if height else width
    estimate = estimate_peak_gb(cfg, target, target_width, mode)
    decision = SizeDecision(width, height, target, estimate, budget)
    if estimate <= budget:
        return decision
    mode_name = mode or str(cfg.mode.name)
    fit = fitting_height(cfg, SUGGESTION_SHARE * budget, width / height if height else 2.0, mode)
    what = f"is {width}x{height} pixels" + (f" (processed at height {target}: dataset.max_height)"
                                             if target < height else "")
    if fit >= int(cfg.dataset.get("min_height", 32)):
        fix = (f"set dataset.max_height={fit} to downscale it while decoding (estimate "
               f"{estimate_peak_gb(cfg, fit, round(fit * width / height), mode):.1f} GB), or raise "
               f"dataset.max_memory_gb if this machine has more memory")
    else:
        fix = "raise dataset.max_memory_gb (the fixed part alone does not fit the budget)"
    raise SizeError(path, f"{what}; mode={mode_name} would need about {estimate:.1f} GB of memory, over the budget "
                          f"dataset.max_memory_gb={budget:.1f} GB; {fix}")

