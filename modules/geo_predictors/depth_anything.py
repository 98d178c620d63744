"""Depth Anything V2 relative-disparity predictor (``predictor=depth_anything_v2``) on transformers'
``DepthAnythingForDepthEstimation``.

The variant table below is the one place that says, per variant, the Hugging Face id, the upstream release file,
the licence, the network input size and resize rule, the normalisation and the architecture. Values follow the
upstream ``depth_anything_v2/dpt.py`` ``image2tensor``: 518 px target, aspect ratio kept with the ``lower_bound``
rule (both sides at least 518), sides multiples of the 14-pixel patch, ImageNet mean/std, bicubic resize. The
output is relative disparity (larger = nearer), resized back to the face size bilinearly with
``align_corners=True`` as upstream does.

Licences: Small Apache-2.0; Base and Large CC-BY-NC-4.0 (non-commercial use only).
"""

from __future__ import annotations

from typing import Any

from .hf_predictor import HFDepthPredictor, NetworkVariant

__all__ = ["DEPTH_ANYTHING_V2_VARIANTS", "DepthAnythingV2Predictor"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
) -> NetworkVariant:
    upstream_file = f"depth_anything_v2_vit{letter}.pth"
    return NetworkVariant(
        hf_id=f"depth-anything/Depth-Anything-V2-{hf_name}-hf",
        upstream_file=upstream_file,
        upstream_url=f"https://huggingface.co/depth-anything/Depth-Anything-V2-{hf_name}/resolve/main/{upstream_file}",
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
            "depth_estimation_type": "relative",
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
    )


#: Depth Anything V2 variants: the one table (see module header).
DEPTH_ANYTHING_V2_VARIANTS: dict[str, NetworkVariant] = {
    "small": _variant("s", "Small", "Apache-2.0", 384, 12, 6, (3, 6, 9, 12), (48, 96, 192, 384), 64),
    "base": _variant("b", "Base", "CC-BY-NC-4.0", 768, 12, 12, (3, 6, 9, 12), (96, 192, 384, 768), 128),
    "large": _variant("l", "Large", "CC-BY-NC-4.0", 1024, 24, 16, (5, 12, 18, 24), (256, 512, 1024, 1024), 256),
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
    output_align_corners = True

    def __init__(self, variant: str = "large", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)

    @classmethod
    def _config_class(cls) -> type:
        from transformers import DepthAnythingConfig

        return DepthAnythingConfig

    @classmethod
    def _model_class(cls) -> type:
        from transformers import DepthAnythingForDepthEstimation

        return DepthAnythingForDepthEstimation

    @classmethod
    def _config_dict(cls, variant: NetworkVariant) -> dict[str, Any]:
        return {"model_type": "depth_anything", **variant.architecture}

    @classmethod
    def _config_architecture(cls, config: Any, kind: str) -> dict[str, object]:
        backbone = config.backbone_config
        return {"hidden_size": int(backbone.hidden_size), "num_layers": int(backbone.num_hidden_layers)}
