"""Depth Anything V2 predictor (``predictor=depth_anything_v2``) on transformers' ``DepthAnythingForDepthEstimation``:
relative disparity (``small``, ``base``, ``large``) and metric depth (``metric_{indoor,outdoor}_{small,base,large}``).

The variant table below is the one place that says, per variant, the Hugging Face id, the upstream release file,
the licence, the network input size and resize rule, the normalisation and the architecture. Values follow the
upstream ``depth_anything_v2/dpt.py`` ``image2tensor``: 518 px target, aspect ratio kept with the ``lower_bound``
rule (both sides at least 518), sides multiples of the 14-pixel patch, ImageNet mean/std, bicubic resize. The
output is relative disparity (larger = nearer), resized back to the face size bilinearly with
``align_corners=True`` as upstream does.

Metric variants (upstream ``metric_depth/``): the same network fine-tuned on Hypersim (indoor, ``max_depth`` 20 m) or
Virtual KITTI 2 (outdoor, 80 m) with a sigmoid head times ``max_depth``: the output is depth in metres (resized back
the same way); ``predict`` returns ``1 / depth``. They learned the metric scale through their training camera, so the
scale is measured on views matched to its focal length (``metric_view_fov_deg``, see :mod:`.metric`).

Licences: Small Apache-2.0; Base and Large CC-BY-NC-4.0 (non-commercial use only); metric Base/Large see below.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .errors import CheckpointFormatError
from .hf_predictor import HFDepthPredictor, NetworkVariant

__all__ = ["DEPTH_ANYTHING_V2_VARIANTS", "DepthAnythingV2Predictor"]

_MIN_DEPTH_M = 1e-3  # depth floor before inverting a metric prediction (the sigmoid head can return 0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


#: metric training sets: (Hub name part, upstream name part, max depth in metres, square view FOV in degrees).
#: The view FOV gives the views the focal length, in network pixels, of the training camera after the lower-bound
#: resize to 518: Hypersim 1024x768 at 60 deg horizontal FOV (f = 886.8 px -> 598.1 px at 518 rows) -> 46.8 deg;
#: Virtual KITTI 2 1242x375 with f = 725.0 px (-> 1001.5 px at 518 rows) -> 29.0 deg.
_METRIC = {
    "indoor": ("Indoor", "Hypersim", "hypersim", 20, 46.8),
    "outdoor": ("Outdoor", "VKITTI", "vkitti", 80, 29.0),
}


def _variant(
    letter: str,
    hf_name: str,
    licence: str,
    hidden: int,
    layers: int,
    heads: int,
    out_indices: tuple[int, ...],
    neck: tuple[int, ...],
    fusion: int,
    size: str,
    metric: str | None = None,
) -> NetworkVariant:
    upstream_file = f"depth_anything_v2_vit{letter}.pth"
    hf_id = f"depth-anything/Depth-Anything-V2-{hf_name}-hf"
    upstream_repo = f"depth-anything/Depth-Anything-V2-{hf_name}"
    head: dict[str, Any] = {"depth_estimation_type": "relative"}
    view_fov = None
    if metric is not None:
        hub_part, up_part, up_file_part, max_depth, view_fov = _METRIC[metric]
        hf_id = f"depth-anything/Depth-Anything-V2-Metric-{hub_part}-{hf_name}-hf"
        upstream_repo = f"depth-anything/Depth-Anything-V2-Metric-{up_part}-{hf_name}"
        upstream_file = f"depth_anything_v2_metric_{up_file_part}_vit{letter}.pth"
        head = {"depth_estimation_type": "metric", "max_depth": max_depth}
    return NetworkVariant(
        hf_id=hf_id,
        upstream_file=upstream_file,
        upstream_url=f"https://huggingface.co/{upstream_repo}/resolve/main/{upstream_file}",
        upstream_kind="depth_anything_v2",
        licence=licence,
        input_size=518,
        keep_aspect_ratio=True,
        resize_method="lower_bound",
        multiple_of=14,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        architecture={
            "patch_size": 14,
            "reassemble_hidden_size": hidden,
            "neck_hidden_sizes": list(neck),
            "fusion_hidden_size": fusion,
            "head_hidden_size": 32,
            **head,
            "backbone_config": {
                "model_type": "dinov2",
                "image_size": 518,
                "patch_size": 14,
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "mlp_ratio": 4,
                # upstream intermediate_layer_idx (0-based blocks) + 1, each through the final norm
                "out_indices": list(out_indices),
                "apply_layernorm": True,
                "reshape_hidden_states": False,
            },
        },
        metric_view_fov_deg=view_fov,
        download_size=size,
    )


_SMALL = ("s", "Small", 384, 12, 6, (3, 6, 9, 12), (48, 96, 192, 384), 64, "99 MB")
_BASE = ("b", "Base", 768, 12, 12, (3, 6, 9, 12), (96, 192, 384, 768), 128, "390 MB")
_LARGE = ("l", "Large", 1024, 24, 16, (5, 12, 18, 24), (256, 512, 1024, 1024), 256, "1.34 GB")
# Base/Large metric weights: the DA-V2 repository licenses its Base/Large models CC-BY-NC-4.0, while the Hub cards of
# some metric files (Hypersim-Base/-Large, VKITTI-Large, Metric-Outdoor-Large-hf) say Apache-2.0 and the other -hf
# cards carry no licence; we record the stricter reading (README, "Weights and licences").
_NC_METRIC = "CC-BY-NC-4.0 (stricter reading; see README)"


def _row(arch: tuple, licence: str, metric: str | None = None) -> NetworkVariant:
    letter, name, hidden, layers, heads, out_indices, neck, fusion, size = arch
    return _variant(letter, name, licence, hidden, layers, heads, out_indices, neck, fusion, size, metric)


#: Depth Anything V2 variants: the one table (see module header).
DEPTH_ANYTHING_V2_VARIANTS: dict[str, NetworkVariant] = {
    "small": _row(_SMALL, "Apache-2.0"),
    "base": _row(_BASE, "CC-BY-NC-4.0"),
    "large": _row(_LARGE, "CC-BY-NC-4.0"),
    "metric_indoor_small": _row(_SMALL, "Apache-2.0", "indoor"),
    "metric_indoor_base": _row(_BASE, _NC_METRIC, "indoor"),
    "metric_indoor_large": _row(_LARGE, _NC_METRIC, "indoor"),
    "metric_outdoor_small": _row(_SMALL, "Apache-2.0", "outdoor"),
    "metric_outdoor_base": _row(_BASE, _NC_METRIC, "outdoor"),
    "metric_outdoor_large": _row(_LARGE, _NC_METRIC, "outdoor"),
}


class DepthAnythingV2Predictor(HFDepthPredictor):
    """Depth Anything V2 (DPT head on DINOv2); constructor arguments in :class:`HFDepthPredictor`.

    Default variant ``large``.
    """

    family = "Depth Anything V2"
    predictor_name = "depth_anything_v2"
    model_type = "depth_anything"
    variants = DEPTH_ANYTHING_V2_VARIANTS
    input_interpolation = "bicubic"
    output_interpolation = "bilinear"
    config_class_name = "DepthAnythingConfig"
    model_class_name = "DepthAnythingForDepthEstimation"
    output_align_corners = True

    def __init__(self, variant: str = "large", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)

    @classmethod
    def _config_architecture(cls, config: Any, kind: str) -> dict[str, object]:
        backbone = config.backbone_config
        return {"hidden_size": int(backbone.hidden_size), "num_layers": int(backbone.num_hidden_layers)}

    def _check_backbone_type(self, config: Any, where: str) -> None:
        super()._check_backbone_type(config, where)
        expected = self.variant.architecture.get("depth_estimation_type", "relative")
        actual = getattr(config, "depth_estimation_type", "relative")
        if actual != expected:
            raise CheckpointFormatError(
                f"{where} holds a {actual} Depth Anything model, but variant '{self.variant_name}' is {expected}; "
                "pick the variant that matches the weights"
            )

    # metric variants: the head's sigmoid x max_depth gives metres; disparity = 1 / depth
    def _output_to_disparity(self, output: Tensor) -> Tensor:
        if not self.variant.is_metric:
            return output
        return 1.0 / output.clamp_min(_MIN_DEPTH_M)

    def _output_to_metric_depth(self, output: Tensor, tan_half_fov: Tensor | None) -> Tensor:
        return output
