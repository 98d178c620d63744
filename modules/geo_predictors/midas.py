"""MiDaS v3.1 relative-disparity predictor (``predictor=midas_v31``) on transformers' ``DPTForDepthEstimation``.

The variant table below is the one place that says, per variant, the Hugging Face id, the upstream release file,
the licence, the network input size and resize rule, the normalisation and the architecture. Values follow the
upstream ``midas/model_loader.py``: input in [0, 1] normalised with mean = std = 0.5; BEiT keeps the aspect ratio
(``minimal`` resize: scale as little as possible, sides multiples of 32 - BEiT's relative position bias is
interpolated for any grid, as in MiDaS v3.1); SwinV2 uses a fixed square input (its windows need it). The output
is disparity (larger = nearer), resized back to the face size with bicubic interpolation as upstream ``run.py`` does.

Licence of all MiDaS v3.1 weights: MIT.
"""

from __future__ import annotations

from typing import Any

from .hf_predictor import HFDepthPredictor, NetworkVariant

__all__ = ["MIDAS_VARIANTS", "MidasPredictor"]

_RELEASE = "https://github.com/isl-org/MiDaS/releases/download/v3_1/"
_HALF = (0.5, 0.5, 0.5)


def _beit(
    image_size: int, hidden: int, layers: int, heads: int, mlp: int, hooks: tuple[int, ...], neck: tuple[int, ...]
) -> dict[str, Any]:
    return {
        "neck_hidden_sizes": list(neck),
        "backbone_config": {
            "model_type": "beit",
            "image_size": image_size,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": mlp,
            "use_relative_position_bias": True,
            "reshape_hidden_states": False,
            # upstream hooks are 0-based block indices; stage k is the output of block k-1
            "out_features": [f"stage{h + 1}" for h in hooks],
        },
    }


def _swin2(
    image_size: int,
    embed: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int,
    pretrained_windows: tuple[int, ...],
    neck: tuple[int, ...],
) -> dict[str, Any]:
    return {
        "neck_hidden_sizes": list(neck),
        "backbone_config": {
            "model_type": "swinv2",
            "image_size": image_size,
            "embed_dim": embed,
            "depths": list(depths),
            "num_heads": list(heads),
            "window_size": window,
            "pretrained_window_sizes": list(pretrained_windows),
            # the last block of each stage, before downsampling (upstream hooks [1, 1, 17, 1] / [1, 1, 5, 1])
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
    }


def _variant(name: str, hf_id: str, kind: str, size: int, keep_aspect: bool, arch: dict[str, Any]) -> NetworkVariant:
    return NetworkVariant(
        hf_id=hf_id,
        upstream_file=f"dpt_{name}.pt",
        upstream_url=f"{_RELEASE}dpt_{name}.pt",
        upstream_kind=kind,
        licence="MIT",
        input_size=size,
        keep_aspect_ratio=keep_aspect,
        resize_method="minimal",
        multiple_of=32,
        mean=_HALF,
        std=_HALF,
        architecture=arch,
    )


#: MiDaS v3.1 variants: the one table (see module header).
MIDAS_VARIANTS: dict[str, NetworkVariant] = {
    "beit_large_512": _variant(
        "beit_large_512",
        "Intel/dpt-beit-large-512",
        "midas_beit",
        512,
        True,
        _beit(512, 1024, 24, 16, 4096, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    ),
    "beit_large_384": _variant(
        "beit_large_384",
        "Intel/dpt-beit-large-384",
        "midas_beit",
        384,
        True,
        _beit(384, 1024, 24, 16, 4096, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    ),
    "beit_base_384": _variant(
        "beit_base_384",
        "Intel/dpt-beit-base-384",
        "midas_beit",
        384,
        True,
        _beit(384, 768, 12, 12, 3072, (2, 5, 8, 11), (96, 192, 384, 768)),
    ),
    "swin2_large_384": _variant(
        "swin2_large_384",
        "Intel/dpt-swinv2-large-384",
        "midas_swin2",
        384,
        False,
        _swin2(384, 192, (2, 2, 18, 2), (6, 12, 24, 48), 24, (12, 12, 12, 6), (192, 384, 768, 1536)),
    ),
    "swin2_base_384": _variant(
        "swin2_base_384",
        "Intel/dpt-swinv2-base-384",
        "midas_swin2",
        384,
        False,
        _swin2(384, 128, (2, 2, 18, 2), (4, 8, 16, 32), 24, (12, 12, 12, 6), (128, 256, 512, 1024)),
    ),
    "swin2_tiny_256": _variant(
        "swin2_tiny_256",
        "Intel/dpt-swinv2-tiny-256",
        "midas_swin2",
        256,
        False,
        _swin2(256, 96, (2, 2, 6, 2), (3, 6, 12, 24), 16, (0, 0, 0, 0), (96, 192, 384, 768)),
    ),
}


class MidasPredictor(HFDepthPredictor):
    """MiDaS v3.1 (DPT with BEiT or SwinV2 backbone); constructor arguments in :class:`HFDepthPredictor`.

    Default variant ``beit_large_512`` (the most accurate MiDaS v3.1 model).
    """

    family = "MiDaS v3.1"
    predictor_name = "midas_v31"
    model_type = "dpt"
    variants = MIDAS_VARIANTS
    input_interpolation = "bicubic"
    output_interpolation = "bicubic"
    config_class_name = "DPTConfig"
    model_class_name = "DPTForDepthEstimation"
    output_align_corners = False

    def __init__(self, variant: str = "beit_large_512", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)

    @classmethod
    def _config_architecture(cls, config: Any, kind: str) -> dict[str, object]:
        backbone = config.backbone_config
        if kind == "midas_swin2":
            return {"embed_dim": int(backbone.embed_dim), "depths": [int(d) for d in backbone.depths]}
        return {"hidden_size": int(backbone.hidden_size), "num_layers": int(backbone.num_hidden_layers)}
