"""Shared machinery of the transformers-based depth predictors (MiDaS v3.1, Depth Anything V2, Depth Pro).

Size (over the ~450-line guide): the one loading path every family shares (config from the variant table, weights
resolution, state-dict conversion, precision, batching); the families themselves are short subclasses.

One model is built once per predictor (in ``__init__``), put on its device and kept there. ``predict`` takes all
faces at once ([B, 3, h, w] float RGB in [0, 1], any device), runs them through the network in chunks of
``batch_size`` under ``torch.inference_mode`` (weights and input in the run's dtype: fp32/fp16/bf16), and returns
disparity [B, h, w] float32 on the images' device, resized back to the face size: relative for MiDaS / Depth
Anything V2 / Depth Pro's canonical inverse depth, ``1 / metres`` for the Depth Anything V2 metric variants. Metric
predictors (``is_metric``) also give metric depth through ``predict_metric_depth`` (Depth Pro from the focal length
of the cameras passed in).

Each family module (``midas.py``, ``depth_anything.py``) holds the one variant table of that family: Hugging Face id,
upstream file, licence, input size, resize rule, normalisation and the architecture used to build the model when
the weights come as an upstream file (or are random, for tests and benchmarks).

Weights (see :mod:`.weights`): a Hugging Face directory is loaded with ``from_pretrained``; an upstream file is
renamed to Hub names (:mod:`.checkpoint_conversion`) and loaded through ``from_pretrained(state_dict=...)``; every
model parameter must be present in the file, or loading fails. Random weights only with ``allow_random_weights``,
seeded by ``random_seed`` and recorded in ``describe()``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import Tensor

from ..device import resolve_device
from ..geometry.tangent import TangentCameras
from .base import DepthPredictor, MetricView
from .checkpoint_conversion import (
    detect_upstream_kind,
    is_hf_state_dict,
    upstream_architecture,
    upstream_to_hf,
)
from .errors import CheckpointFormatError, PredictorConfigError
from .preprocessing import RESIZE_METHODS, network_input_size, prepare_network_input, resize_prediction
from .weights import ResolvedWeights, WeightsSpec, load_state_dict_file, resolve_weights

__all__ = ["HFDepthPredictor", "NetworkVariant", "PRECISIONS", "to_plain"]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class NetworkVariant:
    """One row of a family's variant table.

    ``architecture`` holds the transformers config values of the full-size model (top level, plus the backbone's
    under ``"backbone_config"``); ``upstream_kind`` names the key mapping for the upstream file.
    """

    hf_id: str
    upstream_file: str
    upstream_url: str
    upstream_kind: str
    licence: str
    input_size: int
    keep_aspect_ratio: bool
    resize_method: str
    multiple_of: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    architecture: Mapping[str, Any] = field(default_factory=dict)
    #: metric variants: the square view's full field of view (degrees) in which the network sees a scene the way it
    #: was trained (see :mod:`.metric`); ``None`` for relative-disparity variants
    metric_view_fov_deg: float | None = None
    #: download size of the Hugging Face weights (README and ``download_checkpoints --list``)
    download_size: str = ""

    def __post_init__(self) -> None:
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {self.resize_method!r}")

    @property
    def is_metric(self) -> bool:
        """Whether the network outputs metric depth (metres) rather than relative disparity."""
        return self.metric_view_fov_deg is not None


def to_plain(obj: Any) -> Any:
    """Mappings/sequences (e.g. OmegaConf containers from Hydra) -> plain dicts/lists, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [to_plain(v) for v in obj]
    return obj


def _deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_override_keys(config_cls: type, overrides: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(config_cls)} | {"_attn_implementation"}
    default = config_cls()
    unknown = sorted(k for k in overrides if k not in known and not hasattr(default, k))
    if unknown:
        raise PredictorConfigError(f"model_overrides{where}: unknown key(s) {unknown} for {config_cls.__name__}")


class HFDepthPredictor(DepthPredictor):
    """Base of the MiDaS v3.1 and Depth Anything V2 predictors (module header).

    Args:
        variant: a key of the family's variant table.
        weights: ``None`` (the variant's default), a Hugging Face id, a model directory or a state-dict file.
        checkpoint_dir: the ``pre_checkpoints/`` directory searched for weights and used for downloads.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``.
        precision: ``fp32`` | ``fp16`` | ``bf16``; the weights are loaded in it (``from_pretrained(dtype=...)``) and
            the network input cast to it (bf16 also on CPU;
            fp16 on CPU falls back to fp32 with a warning).
        batch_size: faces per forward pass, or ``auto``: on a GPU the most that fit in 80 % of its free memory (one
            image is probed for its peak memory, at most 64), on the CPU 4.
        compile: ``torch.compile`` the network (first batches slower while it compiles; GPU runs of many panoramas).
        allow_download: fetch missing weights from the Hugging Face Hub when online.
        allow_random_weights: build a random model when no weights are found (benchmarks and tests only).
        random_seed: seed of that random initialisation.
        model_overrides: values merged into the transformers config (``backbone_config:`` for the backbone), e.g. a
            tiny architecture for tests. Keys are checked against the config classes.
        input_size: network target size in pixels; ``None`` -> the variant's.
        antialias: ``F.interpolate``'s antialias for the input resize. It low-passes when shrinking, and for bicubic
            it also switches to PIL's kernel (a = -0.5 instead of -0.75), so it changes enlarged images too; true
            is what the PIL-backed transformers processors do.
        metric_view_fov_deg: metric variants only: full field of view (degrees) of the square views the metric scale
            is measured on (:mod:`.metric`); ``None`` -> the variant's (matched to its training camera).
        metric_view_size: metric variants only: pixels per side of those views; ``None`` -> ``input_size``.
    """

    family: ClassVar[str]
    predictor_name: ClassVar[str]
    model_type: ClassVar[str]
    variants: ClassVar[Mapping[str, NetworkVariant]]
    input_interpolation: ClassVar[str] = "bicubic"
    output_interpolation: ClassVar[str]
    output_align_corners: ClassVar[bool | None]

    def __init__(
        self,
        variant: str,
        weights: str | None = None,
        checkpoint_dir: str = "pre_checkpoints",
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int | str = 4,
        allow_download: bool = True,
        allow_random_weights: bool = False,
        random_seed: int = 0,
        model_overrides: Mapping[str, Any] | None = None,
        input_size: int | None = None,
        antialias: bool = True,
        metric_view_fov_deg: float | None = None,
        metric_view_size: int | None = None,
        compile: bool = False,
    ) -> None:
        if variant not in self.variants:
            raise PredictorConfigError(
                f"{self.family}: unknown variant {variant!r}; choose one of {sorted(self.variants)}"
            )
        if precision not in PRECISIONS:
            raise PredictorConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if batch_size != "auto" and (isinstance(batch_size, str) or int(batch_size) < 1):
            raise PredictorConfigError(f"batch_size must be >= 1 or auto, got {batch_size!r}")
        if input_size is not None and int(input_size) < 1:
            raise PredictorConfigError(f"input_size must be positive, got {input_size}")
        self.variant_name = variant
        self.variant = self.variants[variant]
        self.batch_size: int | str = batch_size if batch_size == "auto" else int(batch_size)
        self._auto_batch: dict[tuple[int, int], int] = {}
        self.compile = bool(compile)
        self.precision = precision
        self.allow_random_weights = bool(allow_random_weights)
        self.random_seed = int(random_seed)
        self.model_overrides = to_plain(model_overrides or {})
        self.input_size = int(input_size) if input_size is not None else self.variant.input_size
        self.antialias = bool(antialias)
        self._device = resolve_device(device)
        self._autocast_dtype = self._effective_autocast_dtype()
        if not self.variant.is_metric and (metric_view_fov_deg is not None or metric_view_size is not None):
            raise PredictorConfigError(
                f"{self.family}: metric_view_fov_deg / metric_view_size apply to metric variants only, and "
                f"'{variant}' is relative"
            )
        self.metric_view_fov_deg = float(
            metric_view_fov_deg if metric_view_fov_deg is not None else (self.variant.metric_view_fov_deg or 0.0)
        )
        self.metric_view_size = int(metric_view_size) if metric_view_size is not None else self.input_size
        if self.variant.is_metric and not (0.0 < self.metric_view_fov_deg < 170.0 and self.metric_view_size >= 8):
            raise PredictorConfigError(
                f"{self.family}: need 0 < metric_view_fov_deg < 170 and metric_view_size >= 8, got "
                f"{self.metric_view_fov_deg}, {self.metric_view_size}"
            )

        spec = WeightsSpec(
            predictor=self.predictor_name,
            variant=variant,
            family=self.family,
            hf_id=self.variant.hf_id,
            upstream_file=self.variant.upstream_file,
            upstream_url=self.variant.upstream_url,
        )
        self.resolved_weights: ResolvedWeights = resolve_weights(
            spec, weights, checkpoint_dir, bool(allow_download), self.allow_random_weights
        )
        model = self._load_model(self.resolved_weights)
        model.eval().requires_grad_(False)
        # weights in the run's dtype (no fp32 copy plus autocast): half the memory and no casts per layer
        self.model = model.to(self._device, self.dtype)
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the DPT head's convolutions: fixed shapes per batch size
        self._network = torch.compile(self.model) if self.compile else self.model

    # ------------------------------------------------------------------ family hooks
    #: transformers class names of the family (config and model), e.g. "DPTConfig", "DPTForDepthEstimation"
    config_class_name: ClassVar[str] = ""
    model_class_name: ClassVar[str] = ""

    @classmethod
    def _config_class(cls) -> type:
        import transformers

        return getattr(transformers, cls.config_class_name)

    @classmethod
    def _model_class(cls) -> type:
        import transformers

        return getattr(transformers, cls.model_class_name)

    @classmethod
    def _config_dict(cls, variant: NetworkVariant) -> dict[str, Any]:
        """transformers config values of a variant (``backbone_config`` nested, with its ``model_type``)."""
        return {"model_type": cls.model_type, **variant.architecture}

    @classmethod
    def _config_architecture(cls, config: Any, kind: str) -> dict[str, object]:
        """The same summary :func:`upstream_architecture` gives for a file, from a config."""
        raise NotImplementedError

    # ------------------------------------------------------------------ model building
    @property
    def device(self) -> torch.device:
        return self._device

    def _build_config(self, base: Mapping[str, Any]) -> Any:
        from transformers import CONFIG_MAPPING

        overrides = self.model_overrides
        config_cls = self._config_class()
        _check_override_keys(config_cls, {k: v for k, v in overrides.items() if k != "backbone_config"}, "")
        merged = _deep_merge(base, overrides)
        backbone = merged.get("backbone_config")
        if isinstance(overrides.get("backbone_config"), Mapping) and isinstance(backbone, Mapping):
            backbone_type = backbone.get("model_type")
            if backbone_type not in CONFIG_MAPPING:
                raise PredictorConfigError(f"model_overrides.backbone_config: unknown model_type {backbone_type!r}")
            _check_override_keys(CONFIG_MAPPING[backbone_type], overrides["backbone_config"], ".backbone_config")
        return config_cls.from_dict(merged)

    def _check_backbone_type(self, config: Any, where: str) -> None:
        expected = self._config_dict(self.variant).get("backbone_config", {}).get("model_type")
        actual = getattr(getattr(config, "backbone_config", None), "model_type", None)
        if getattr(config, "model_type", None) != self.model_type or (expected and actual != expected):
            raise CheckpointFormatError(
                f"{where} holds a {getattr(config, 'model_type', '?')}/{actual} model, but {self.family} variant "
                f"'{self.variant_name}' is {self.model_type}/{expected}; pick the variant that matches the weights"
            )

    def _from_pretrained(self, where: str, source: Any, **kwargs: Any) -> tuple[torch.nn.Module, Mapping[str, Any]]:
        """``from_pretrained`` in the run's dtype with its loading report; shape mismatches become a clear error."""
        try:
            return self._model_class().from_pretrained(source, dtype=self.dtype, output_loading_info=True, **kwargs)
        except RuntimeError as err:
            if "mismatched" not in str(err):
                raise
            raise CheckpointFormatError(
                f"{where} does not fit {self.family} variant '{self.variant_name}': some parameters have other shapes "
                f"(transformers' load report above lists them); pick the variant that matches the weights"
            ) from err

    def _from_state_dict(self, config: Any, state_dict: dict[str, Tensor], where: str) -> torch.nn.Module:
        model, info = self._from_pretrained(where, None, config=config, state_dict=state_dict)
        self._check_loading_info(info, where, strict_unexpected=True)
        return model

    def _check_loading_info(self, info: Mapping[str, Any], where: str, strict_unexpected: bool) -> None:
        missing = sorted(info.get("missing_keys") or [])
        unexpected = sorted(info.get("unexpected_keys") or [])
        mismatched = list(info.get("mismatched_keys") or [])
        if missing or mismatched or (strict_unexpected and unexpected):
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
            if mismatched:
                parts.append(f"{len(mismatched)} with wrong shapes (e.g. {mismatched[0]})")
            if strict_unexpected and unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
            raise CheckpointFormatError(
                f"{where} does not fit {self.family} variant '{self.variant_name}': parameters {'; '.join(parts)}"
            )
        if unexpected:
            log.warning("%s: ignoring %d unused entries (e.g. %s)", where, len(unexpected), unexpected[0])

    def _load_model(self, resolved: ResolvedWeights) -> torch.nn.Module:
        if resolved.source == "random":
            config = self._build_config(self._config_dict(self.variant))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.random_seed)
                return self._model_class()(config)
        if resolved.source == "hf_dir":
            where = str(resolved.path)
            base = self._config_class().from_pretrained(resolved.path, local_files_only=True)
            config = self._build_config(base.to_dict()) if self.model_overrides else base
            self._check_backbone_type(config, where)
            model, info = self._from_pretrained(where, resolved.path, config=config, local_files_only=True)
            self._check_loading_info(info, where, strict_unexpected=False)
            return model
        return self._load_state_dict_file(resolved)

    def _load_state_dict_file(self, resolved: ResolvedWeights) -> torch.nn.Module:
        where = str(resolved.path)
        state_dict = load_state_dict_file(resolved.path)
        config = self._build_config(self._config_dict(self.variant))
        if is_hf_state_dict(state_dict):
            return self._from_state_dict(config, state_dict, where)
        kind = detect_upstream_kind(state_dict, source=where)
        if kind != self.variant.upstream_kind:
            raise CheckpointFormatError(
                f"{where} is a {kind} checkpoint, but {self.family} variant '{self.variant_name}' needs "
                f"{self.variant.upstream_kind} ({self.variant.upstream_file}); pick the variant that matches the file"
            )
        found = upstream_architecture(state_dict, kind)
        expected = self._config_architecture(config, kind)
        if found != expected:
            raise CheckpointFormatError(
                f"{where} holds a backbone of {found}, but {self.family} variant '{self.variant_name}' expects "
                f"{expected}; pick the variant that matches the file"
            )
        return self._from_state_dict(config, upstream_to_hf(state_dict, kind, source=where), where)

    # ------------------------------------------------------------------ inference
    def _effective_autocast_dtype(self) -> torch.dtype | None:
        dtype = PRECISIONS[self.precision]
        if dtype == torch.float32:
            return None
        if self._device.type == "cpu" and dtype == torch.float16:
            log.warning("%s: fp16 is not used on the CPU; running in fp32", self.family)
            return None
        return dtype

    @property
    def effective_precision(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self._autocast_dtype]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights and the network input (the effective precision)."""
        return self._autocast_dtype or torch.float32

    def attention(self) -> dict[str, str]:
        """The attention implementation of each part of the model that has one (transformers picks SDPA where the
        architecture has it: the BEiT and DINOv2 backbones; Swin V2 has only eager attention)."""
        out = {}
        for name, module in [("model", self.model), *self.model.named_children()]:
            impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
            if impl and (name == "model" or getattr(module, "config", None) is not self.model.config):
                out[name] = impl
        return out

    def batch_size_for(self, net_hw: tuple[int, int]) -> int:
        """Faces per forward pass at network input ``net_hw`` (``batch_size: auto`` resolved once per size)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        if net_hw not in self._auto_batch:
            self._auto_batch[net_hw] = self._probe_batch_size(net_hw)
        return self._auto_batch[net_hw]

    def _probe_batch_size(self, net_hw: tuple[int, int], cpu_batch: int = 4, cap: int = 64) -> int:
        """CUDA: the peak memory of one image through the network, measured, against 80 % of the free memory."""
        if self._device.type != "cuda":
            return cpu_batch
        torch.cuda.synchronize(self._device)
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self._device)
        base = torch.cuda.memory_allocated(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        with torch.inference_mode():
            self.model(pixel_values=torch.zeros(1, 3, *net_hw, device=self._device, dtype=self.dtype))
        per_image = max(torch.cuda.max_memory_allocated(self._device) - base, 1)
        batch = int(max(1, min(cap, 0.8 * free // per_image)))
        log.info("%s: batch_size auto -> %d (%.0f MB per image, %.1f GB free)", self.family, batch,
                 per_image / 2**20, free / 2**30)
        return batch

    def network_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Network input (H, W) for images of ``image_hw`` under this variant's resize rule."""
        v = self.variant
        return network_input_size(
            image_hw, (self.input_size, self.input_size), v.keep_aspect_ratio, v.multiple_of, v.resize_method
        )

    def _network_output(self, images: Tensor) -> Tensor:
        """The network's raw output per image, resized back to the image size.

        Args:
            images: [B, 3, h, w] float RGB in [0, 1], any device.
        Returns:
            [B, h, w] float32 on ``images.device``: relative disparity, metric depth (Depth Anything V2 metric
            variants) or canonical inverse depth (Depth Pro), as the family's output is.
        """
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{self.family}: images must be a [B, 3, h, w] tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"{self.family}: images must be float RGB in [0, 1], got dtype {images.dtype}")
        batch, _, height, width = images.shape
        if batch == 0:
            return torch.empty(0, height, width, dtype=torch.float32, device=images.device)
        net_hw = self.network_size((height, width))
        v = self.variant
        chunks = []
        step = self.batch_size_for(net_hw)
        with torch.inference_mode():
            for start in range(0, batch, step):
                chunk = images[start : start + step].to(self._device, torch.float32, non_blocking=True)
                x = prepare_network_input(chunk, net_hw, v.mean, v.std, self.input_interpolation, self.antialias)
                pred = self._network(pixel_values=x.to(self.dtype)).predicted_depth
                pred = resize_prediction(
                    pred.float(), (height, width), self.output_interpolation, self.output_align_corners
                )
                chunks.append(pred.to(images.device))
        # concatenating outside inference mode gives an ordinary tensor that later stages may use freely
        return torch.cat(chunks, dim=0)

    def _output_to_disparity(self, output: Tensor) -> Tensor:
        """Raw network output [B, h, w] -> disparity (larger = nearer); relative families return it as it is."""
        return output

    def _output_to_metric_depth(self, output: Tensor, tan_half_fov: Tensor | None) -> Tensor:
        """Raw network output [B, h, w] -> metric depth in metres; only metric families implement it."""
        raise NotImplementedError

    def predict(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        """Disparity of each image (relative; for metric variants ``1 / depth`` in 1/metres).

        Args:
            images: [B, 3, h, w] float RGB in [0, 1], any device.
            cameras: ignored (networks see only pixels).
        Returns:
            [B, h, w] float32 disparity on ``images.device``.
        """
        return self._output_to_disparity(self._network_output(images))

    @property
    def is_metric(self) -> bool:
        return self.variant.is_metric

    def metric_view(self) -> MetricView:
        if not self.is_metric:
            return super().metric_view()
        config = self.model.config
        # a sigmoid head (Depth Anything V2 metric) cannot exceed max_depth; Depth Pro's output is unbounded
        max_depth = config.max_depth if getattr(config, "depth_estimation_type", None) == "metric" else None
        return MetricView(self.metric_view_fov_deg, self.metric_view_size, max_depth)

    def predict_metric_depth(self, images: Tensor, cameras: TangentCameras | None = None) -> Tensor:
        """Metric depth (metres, z in each image's camera) of each image.

        Args:
            images: [B, 3, h, w] float RGB in [0, 1], any device.
            cameras: the images' pinhole cameras (square images, ``tan_half_fov`` per image); Depth Pro needs the
                focal length they give, Depth Anything V2 metric variants ignore them.
        Returns:
            [B, h, w] float32 metres on ``images.device``.
        """
        if not self.is_metric:
            return super().predict_metric_depth(images, cameras)
        tan_half_fov = None if cameras is None else cameras.tan_half_fov.to(images.device, torch.float32)
        if tan_half_fov is not None and tan_half_fov.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {tan_half_fov.shape[0]} cameras")
        return self._output_to_metric_depth(self._network_output(images), tan_half_fov)

    # ------------------------------------------------------------------ meta.json
    def describe(self) -> dict[str, Any]:
        v = self.variant
        out: dict[str, Any] = {
            "name": self.predictor_name,
            "class": type(self).__name__,
            "family": self.family,
            "variant": self.variant_name,
            "weights": self.resolved_weights.origin,
            "weights_source": self.resolved_weights.source,
            "weights_path": str(self.resolved_weights.path) if self.resolved_weights.path else None,
            "hf_id": self.resolved_weights.repo_id or v.hf_id,
            "licence": v.licence,
            "input_size": self.input_size,
            "keep_aspect_ratio": v.keep_aspect_ratio,
            "resize_method": v.resize_method,
            "multiple_of": v.multiple_of,
            "normalization": {"mean": list(v.mean), "std": list(v.std)},
            "input_interpolation": self.input_interpolation,
            "output_interpolation": self.output_interpolation,
            "antialias": self.antialias,
            "device": str(self._device),
            "precision": self.precision,
            "precision_effective": self.effective_precision,
            "batch_size": self.batch_size,
            "compile": self.compile,
            "attention": self.attention(),
            "random_weights": self.resolved_weights.source == "random",
            "metric": v.is_metric,
        }
        if v.is_metric:
            out["metric_view"] = {"fov_deg": self.metric_view_fov_deg, "size": self.metric_view_size}
        if self.allow_random_weights:
            out["allow_random_weights"] = True
        if self.resolved_weights.source == "random":
            out["random_seed"] = self.random_seed
        if self.model_overrides:
            out["model_overrides"] = copy.deepcopy(self.model_overrides)
        return out
