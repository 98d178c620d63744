"""Depth Pro metric-depth predictor (``predictor=depth_pro``) on transformers' ``DepthProForDepthEstimation``.

The variant table below is the one place that says the Hugging Face id, licence, input size, resize rule,
normalisation and architecture. Values follow transformers' ``DepthProImageProcessor`` (the ``apple/DepthPro-hf``
``preprocessor_config.json``): a fixed 1536 x 1536 input, bilinear resize without antialiasing, mean = std = 0.5.
That processor normalises first and resizes second; bilinear interpolation is a weighted mean with weights summing
to one, so the two orders agree up to float rounding (``tests/test_predictors_processors.py``).

The network outputs *canonical inverse depth* ``c`` at 1536 x 1536; transformers' ``post_process_depth_estimation``
turns it into metres as ``depth = 1 / (c * W / f)`` with the image width ``W`` and the focal length ``f`` in the same
pixels. Depth Pro normally estimates ``f`` with its field-of-view network; on tangent faces and metric views the
focal length is known exactly (``W / f = 2 tan(half FOV)``), so it is passed in and the FOV network is not built
(``use_fov_model: false``; its weights in the checkpoint are skipped). As in the processor, ``c`` is resized back to
the image (bilinear) before inverting and the depth is clamped to [1e-4, 1e4] m. ``predict`` returns ``c`` itself
as a relative disparity (its scale depends on the unknown focal length of a photo).

Weights: ``apple/DepthPro-hf`` only. The original ``apple/DepthPro`` ``depth_pro.pt`` has no key mapping here
(convert it with transformers' ``convert_depth_pro_weights_to_hf.py``). Licence: Apple Machine Learning Research
Model licence (``apple-amlr``: research use, no commercial use).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .errors import CheckpointFormatError, PredictorConfigError
from .hf_predictor import HFDepthPredictor, NetworkVariant, _check_override_keys, _deep_merge

__all__ = ["DEPTH_PRO_VARIANTS", "DepthProPredictor", "canonical_inverse_depth_to_metres"]

_DEPTH_CLAMP_M = (1e-4, 1e4)  # the processor's clamp of the canonical inverse depth before inverting


def _dinov2_l16_384() -> dict[str, Any]:
    """The ViT-L/16 at 384 px (DINOv2 weights) that Depth Pro uses for its patch, image and FOV encoders."""
    return {
        "model_type": "dinov2",
        "image_size": 384,
        "patch_size": 16,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "mlp_ratio": 4,
        "layerscale_value": 1.0,
        "layer_norm_eps": 1e-6,
        "use_swiglu_ffn": False,
        "qkv_bias": True,
    }


#: Depth Pro variants: the one table (see module header).
DEPTH_PRO_VARIANTS: dict[str, NetworkVariant] = {
    "default": NetworkVariant(
        hf_id="apple/DepthPro-hf",
        upstream_file="",
        upstream_url="",
        upstream_kind="",
        licence="apple-amlr (research only, non-commercial)",
        input_size=1536,
        keep_aspect_ratio=False,
        resize_method="minimal",
        multiple_of=1,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        architecture={
            "fusion_hidden_size": 256,
            "patch_size": 384,
            "intermediate_hook_ids": [11, 5],
            "intermediate_feature_dims": [256, 256],
            "scaled_images_ratios": [0.25, 0.5, 1],
            "scaled_images_overlap_ratios": [0.0, 0.5, 0.25],
            "scaled_images_feature_dims": [1024, 1024, 512],
            "merge_padding_value": 3,
            "use_batch_norm_in_fusion_residual": False,
            "use_bias_in_fusion_residual": True,
            "use_fov_model": False,
            "num_fov_head_layers": 2,
            "image_model_config": _dinov2_l16_384(),
            "patch_model_config": _dinov2_l16_384(),
            "fov_model_config": _dinov2_l16_384(),
        },
        # trained on many cameras, and told the focal length here: a usual photo's field of view
        metric_view_fov_deg=60.0,
        download_size="1.9 GB",
    ),
}

_SUB_CONFIGS = ("image_model_config", "patch_model_config", "fov_model_config")


class DepthProPredictor(HFDepthPredictor):
    """Depth Pro (multi-scale DINOv2 ViT-L encoders, DPT-like fusion); constructor arguments in
    :class:`HFDepthPredictor`. Only variant ``default``."""

    family = "Depth Pro"
    predictor_name = "depth_pro"
    model_type = "depth_pro"
    variants = DEPTH_PRO_VARIANTS
    input_interpolation = "bilinear"
    output_interpolation = "bilinear"
    config_class_name = "DepthProConfig"
    model_class_name = "DepthProForDepthEstimation"
    output_align_corners = False

    def __init__(self, variant: str = "default", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)

    @classmethod
    def _config_architecture(cls, config: Any, kind: str) -> dict[str, object]:
        return {"hidden_size": int(config.patch_model_config.hidden_size)}

    def _build_config(self, base: Any) -> Any:
        overrides = dict(self.model_overrides)
        unknown = sorted(k for k in overrides if k in _SUB_CONFIGS and not isinstance(overrides[k], dict))
        if unknown:
            raise PredictorConfigError(f"model_overrides: {unknown} must be mappings of dinov2 config values")
        # the three encoder configs are merged like a backbone_config
        top = {k: v for k, v in overrides.items() if k not in _SUB_CONFIGS}
        _check_override_keys(self._config_class(), top, "")
        from transformers import Dinov2Config

        for key in _SUB_CONFIGS:
            if key in overrides:
                _check_override_keys(Dinov2Config, overrides[key], f".{key}")
        merged = _deep_merge(base, overrides)
        merged["use_fov_model"] = False
        return self._config_class().from_dict(merged)

    def _check_backbone_type(self, config: Any, where: str) -> None:
        if getattr(config, "model_type", None) != self.model_type:
            raise CheckpointFormatError(
                f"{where} holds a {getattr(config, 'model_type', '?')} model, but {self.family} needs depth_pro"
            )

    def _from_pretrained(self, where: str, source: Any, **kwargs: Any):
        # the focal length is known: the FOV network is not built (its checkpoint weights are skipped)
        if kwargs.get("config") is not None:
            kwargs["config"].use_fov_model = False
        return super()._from_pretrained(where, source, **kwargs)

    def _output_to_metric_depth(self, output: Tensor, tan_half_fov: Tensor | None) -> Tensor:
        if tan_half_fov is None:
            raise ValueError(
                "Depth Pro metric depth needs the images' cameras (their focal length); none were given"
            )
        return canonical_inverse_depth_to_metres(output, tan_half_fov)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "focal_length": "known (from the face / view cameras); FOV network not used"}


def canonical_inverse_depth_to_metres(canonical: Tensor, tan_half_fov: Tensor) -> Tensor:
    """Depth Pro's post-processing with a known focal length.

    Args:
        canonical: [B, h, w] canonical inverse depth (network output resized to the image).
        tan_half_fov: [B] tangent of each image's horizontal half field of view.
    Returns:
        [B, h, w] depth in metres.
    """
    return 1.0 / (canonical * (2.0 * tan_half_fov).to(canonical).view(-1, 1, 1)).clamp(*_DEPTH_CLAMP_M)
