"""Typed options of the config groups that have no constructor of their own: ``dataset``, ``runtime``, ``batch``,
``video``, ``paths`` and each ``mode`` (a ``_target_`` stage's typed options are its constructor's signature).

Each dataclass mirrors its yaml file key for key (``tests/test_config_defaults.py`` holds the keys and the defaults
equal, so there is one default per key); a field's ``metadata`` may carry its rule (:func:`opt`: allowed values,
bounds, a word on what it means). :mod:`modules.validation` checks a composed config against these (types and
rules) before any work; :func:`modules.config.options_from` builds them from a config node (unknown keys are errors).

Base layer (docs/architecture.md): no imports from the stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Rule", "opt", "GROUP_OPTIONS", "MODE_OPTIONS", "DatasetOptions", "RuntimeOptions", "RayRuntimeOptions",
           "BatchOptions", "FingerprintOptions", "VideoOptions", "PathsOptions"]


@dataclass(frozen=True)
class Rule:
    """What values a key may take besides its type: ``choices``, bounds (``ge``/``gt``/``le``/``lt``), a note."""

    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` (already of the right type; None passes) obeys the rule, else what is allowed."""
        if value is None:
            return None
        if self.choices is not None:
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(v not in self.choices for v in values):
                return f"allowed: {', '.join(map(str, self.choices))}"
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if ok else f"allowed: {self.describe()}"

    def describe(self) -> str:
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        parts = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if v is not None]
        return " and ".join(parts) + (f" ({self.note})" if self.note else "")


def opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with a :class:`Rule` in its metadata (``choices=(...)``, ``ge=0``, ``note=...``)."""
    meta = {"rule": Rule(**rule)} if rule else {}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------------ dataset, paths


@dataclass(frozen=True)
class DatasetOptions:
    """configs/dataset/default.yaml"""

    image_path: str | None = None  # the yaml's default is an interpolation (example_data/living_room.png)
    min_height: int = opt(32, ge=1, note="pixels")
    #: the size guard (modules/dataset/size_guard.py)
    max_memory_gb: float | None = opt(None, gt=0, note="GB; null: 75 % of this machine's memory")
    max_height: int | None = opt(None, ge=1, note="pixels; null: never downscale")


@dataclass(frozen=True)
class PathsOptions:
    """configs/paths/default.yaml (interpolations: no default of their own)"""

    root_dir: str | None = None
    checkpoint_dir: str | None = None
    output_root: str = "outputs"
    output_dir: str | None = None


# ------------------------------------------------------------------------------------------------ runtime


@dataclass(frozen=True)
class RuntimeOptions:
    """configs/runtime/local.yaml (``device`` is also checked for availability by modules/validation.py)"""

    device: str = "auto"
    precision: str = opt("fp32", choices=("fp32", "fp16", "bf16"))
    #: torch.compile the networks (the predictors read it as their ``compile``)
    compile: bool = False
    num_threads: int | None = opt(None, ge=1)
    prefetch: int = opt(1, ge=0)
    #: the executor, a ``_target_`` node (checked as a stage)
    executor: dict = opt(factory=dict)


@dataclass(frozen=True)
class RayRuntimeOptions(RuntimeOptions):
    """configs/runtime/ray.yaml (on top of local.yaml)"""

    address: str | None = None
    local_num_cpus: int | None = opt(None, ge=1)
    num_workers: int | None = opt(None, ge=1)
    num_cpus_per_worker: float = opt(1, gt=0)
    num_gpus_per_worker: float | None = opt(None, ge=0)
    max_retries: int = opt(2, ge=0)
    max_worker_restarts: int = opt(3, ge=0)
    task_timeout_s: float | None = opt(1800, gt=0)
    start_timeout_s: float = opt(600, gt=0)
    progress_interval_s: float = opt(30, gt=0)
    ship_inputs: bool | str = opt("auto", choices=("auto", True, False))
    ship_max_mb: float = opt(64, ge=0)
    io_on_cpu_nodes: bool | str = opt("auto", choices=("auto", False))
    io_num_cpus: float = opt(1, gt=0)
    runtime_env: dict | None = None


# ------------------------------------------------------------------------------------------------ batch


@dataclass(frozen=True)
class FingerprintOptions:
    sections: list[str] = opt(factory=lambda: ["mode", "projection", "predictor", "alignment", "fusion",
                                               "refinement", "scale", "export"])
    ignore_keys: list[str] = opt(factory=lambda: ["device", "checkpoint_dir", "allow_download", "batch_size"])
    input: str = opt("stat", choices=("stat", "content"))


@dataclass(frozen=True)
class BatchOptions:
    """configs/batch/default.yaml"""

    output_dir: str | None = None  # an interpolation (the run folder)
    skip_existing: bool = False
    fail_fast: bool = False
    recursive: bool = True
    extensions: list[str] = opt(factory=lambda: [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"])
    list_suffixes: list[str] = opt(factory=lambda: [".txt", ".lst"])
    fingerprint: FingerprintOptions = opt(factory=FingerprintOptions)
    progress: bool = True
    table_max_rows: int = opt(100, ge=0)


# ------------------------------------------------------------------------------------------------ video


@dataclass(frozen=True)
class VideoFrames:
    start: int = opt(0, ge=0)
    end: int | None = opt(None, ge=0)
    target_fps: float | None = opt(None, gt=0)
    stride: int = opt(1, ge=1)
    image_fps: float = opt(30.0, gt=0)
    extensions: list[str] = opt(factory=lambda: [".png", ".jpg", ".jpeg"])


@dataclass(frozen=True)
class VideoConsistency:
    enabled: bool = True
    align_height: int = opt(64, ge=8)
    window: int = opt(3, ge=1)
    anchor_frames: float = opt(300, gt=0)
    min_inlier_fraction: float = opt(0.5, ge=0, le=1)
    static_threshold: float = opt(0.1, gt=0)
    far_ratio: float = opt(1000.0, gt=1)
    flicker_height: int = opt(256, ge=8)
    iterations: int = opt(20, ge=1)
    cauchy_k: float = opt(2.5, gt=0)
    min_cauchy: float = opt(0.005, gt=0)


@dataclass(frozen=True)
class VideoOutput:
    video: bool = True
    video_name: str = "depth.mp4"
    fourcc: str = "mp4v"
    fps: float | None = opt(None, gt=0)
    colormap: str = "turbo"
    percentiles: list[float] = opt(factory=lambda: [2, 98], ge=0, le=100)
    png: bool = True
    pointcloud_every: int | None = opt(None, ge=1)
    mesh_every: int | None = opt(None, ge=1)


@dataclass(frozen=True)
class VideoOptions:
    """configs/video/default.yaml"""

    frames: VideoFrames = opt(factory=VideoFrames)
    output_dir: str | None = None  # an interpolation (the run folder)
    resume: bool = True
    progress: bool = True
    consistency: VideoConsistency = opt(factory=VideoConsistency)
    output: VideoOutput = opt(factory=VideoOutput)


# ------------------------------------------------------------------------------------------------ modes


@dataclass(frozen=True)
class PredictMode:
    """configs/mode/predict.yaml"""

    name: str = "predict"


@dataclass(frozen=True)
class VideoMode:
    """configs/mode/video.yaml"""

    name: str = "video"


@dataclass(frozen=True)
class EquirectMode:
    """configs/mode/equirect.yaml"""

    name: str = "equirect"
    pad_fraction: float = opt(0.125, ge=0, lt=0.5, note="of the width, on each side")
    fill_iterations: int = opt(512, ge=0)


@dataclass(frozen=True)
class RenderDenseMode:
    """configs/mode/render_dense.yaml"""

    name: str = "render_dense"
    run_dir: str | None = None


@dataclass(frozen=True)
class Camera:
    fx: float | None = opt(None, gt=0, note="pixels")
    fy: float | None = opt(None, gt=0, note="pixels")
    cx: float | None = None
    cy: float | None = None
    opencv_pixel_centres: bool = False
    hfov_deg: float | None = opt(None, gt=0, lt=180)
    use_exif: bool = True
    default_hfov_deg: float = opt(60.0, gt=0, lt=180)


@dataclass(frozen=True)
class SingleViewMode:
    """configs/mode/single_view.yaml"""

    name: str = "single_view"
    fill_iterations: int = opt(512, ge=0)
    camera: Camera = opt(factory=Camera)


#: MagicaVoxel's limit per axis (modules/export/voxel.VOX_MAX_DIM; a test holds them equal)
VOX_MAX_DIM = 256


@dataclass(frozen=True)
class VoxelMode:
    """configs/mode/voxel.yaml"""

    name: str = "voxel"
    run_dir: str | None = None
    stride: int = opt(1, ge=1)
    resolution: int = opt(128, ge=1, le=VOX_MAX_DIM, note=f"voxels along the longest side; .vox holds at most "
                                                          f"{VOX_MAX_DIM} per axis")
    min_points: int = opt(1, ge=1)
    bounds: list[list[float]] | None = None
    bounds_quantile: float = opt(0.0, ge=0, lt=0.5)
    palette_method: str = opt("median_cut", choices=("median_cut", "max_coverage", "fast_octree"))
    default_colour: list[float] = opt(factory=lambda: [0.8, 0.8, 0.8], ge=0, le=1)


@dataclass(frozen=True)
class EvalNaming:
    rgb_extensions: list[str] = opt(factory=lambda: [".png", ".jpg", ".jpeg"])
    gt_extensions: list[str] = opt(factory=lambda: [".png", ".npy", ".exr"])
    gt_suffix: str = "_depth"
    rgb_suffix: str = "_rgb"
    rgb_dirname: str = "rgb"
    gt_dirname: str = "depth"
    scene_rgb_stem: str = "rgb"
    scene_gt_stems: list[str] = opt(factory=lambda: ["distance", "depth"])


@dataclass(frozen=True)
class EvalMode:
    """configs/mode/eval.yaml (``pipeline`` is a ``_target_`` node, checked as one)"""

    name: str = "eval"
    dataset: str | None = None
    pipeline: dict = opt(factory=dict)
    gt_format: str = opt("npy", choices=("stanford2d3d", "matterport3d", "structured3d", "npy", "exr"))
    gt_quantity: str | None = opt(None, choices=("distance", "depth"))
    alignment: str = opt("median", choices=("none", "median", "affine_disparity"))
    lat_band: list[float] | None = opt(None, ge=-90, le=90)
    weighting: str = opt("uniform", choices=("uniform", "solid_angle"))
    depth_range: list[float] | None = opt(None, ge=0)
    delta_base: float = opt(1.25, gt=1)
    naming: EvalNaming = opt(factory=EvalNaming)


#: config group -> its options dataclass (``runtime`` by its executor: see :func:`runtime_options`)
GROUP_OPTIONS: dict[str, type] = {
    "dataset": DatasetOptions,
    "paths": PathsOptions,
    "batch": BatchOptions,
    "video": VideoOptions,
}

#: mode name -> its options dataclass
MODE_OPTIONS: dict[str, type] = {
    "predict": PredictMode,
    "equirect": EquirectMode,
    "single_view": SingleViewMode,
    "voxel": VoxelMode,
    "render_dense": RenderDenseMode,
    "eval": EvalMode,
    "video": VideoMode,
}


def runtime_options(ray: bool) -> type:
    """The runtime group's options class: Ray's (``runtime=ray``) or the local one."""
    return RayRuntimeOptions if ray else RuntimeOptions
