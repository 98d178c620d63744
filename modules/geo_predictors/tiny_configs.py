"""Tiny architectures of the real network classes, for tests and smoke runs without weights.

Each entry keeps the structure of its variant family (same transformers classes, same four DPT scales, the same
kind of backbone hooks; Depth Pro's three encoders and three image scales) at a few thousand parameters, so the whole loading, conversion and inference path runs in
well under a second on a CPU. Random weights only: outputs mean nothing as depth.

    MidasPredictor(variant="beit_large_512", **tiny_predictor_kwargs("midas_v31", "beit_large_512"))

or, in Hydra: ``predictor.midas.model_overrides=...`` with :func:`tiny_model_overrides`, plus ``input_size``,
``weights: random`` and ``allow_random_weights: true``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["tiny_model_overrides", "tiny_predictor_kwargs"]

_BEIT = {
    "neck_hidden_sizes": [8, 16, 32, 32],
    "fusion_hidden_size": 16,
    "backbone_config": {
        "image_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
}
_SWIN2 = {
    "neck_hidden_sizes": [8, 16, 32, 64],
    "fusion_hidden_size": 16,
    "backbone_config": {
        "image_size": 64,
        "embed_dim": 8,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 1, 2, 2],
        "window_size": 4,
        "pretrained_window_sizes": [0, 0, 0, 0],
    },
}


def _dino(hidden: int, layers: int, out_indices: list[int], neck: list[int]) -> dict[str, Any]:
    return {
        "reassemble_hidden_size": hidden,
        "neck_hidden_sizes": neck,
        "fusion_hidden_size": 16,
        "backbone_config": {
            "image_size": 56,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "out_indices": out_indices,
        },
    }


_DINO_TINY = {"image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
# Depth Pro: 32-px patches of the 128-px input at scales 1/4, 1/2, 1 (as 384-px patches of 1536 px)
_DEPTH_PRO = {
    "fusion_hidden_size": 16,
    "patch_size": 32,
    "intermediate_hook_ids": [1, 0],
    "intermediate_feature_dims": [8, 8],
    "scaled_images_feature_dims": [16, 16, 8],
    "image_model_config": dict(_DINO_TINY),
    "patch_model_config": dict(_DINO_TINY),
    "fov_model_config": dict(_DINO_TINY),
}

# per (predictor, variant family): (model_overrides, input_size)
_TINY: dict[tuple[str, str], tuple[dict[str, Any], int]] = {
    ("midas_v31", "beit"): (_BEIT, 64),
    ("midas_v31", "swin2"): (_SWIN2, 64),
    # ViT-S/B take blocks 3, 6, 9, 12 of 12 -> 1..4 of 4; ViT-L takes 5, 12, 18, 24 of 24 -> 2, 4, 6, 8 of 8
    ("depth_anything_v2", "small"): (_dino(24, 4, [1, 2, 3, 4], [6, 12, 24, 24]), 56),
    ("depth_anything_v2", "base"): (_dino(32, 4, [1, 2, 3, 4], [8, 16, 32, 32]), 56),
    ("depth_anything_v2", "large"): (_dino(40, 8, [2, 4, 6, 8], [8, 16, 40, 40]), 56),
    ("depth_pro", "default"): (_DEPTH_PRO, 128),
}


def _key(predictor: str, variant: str) -> tuple[str, str]:
    if predictor == "midas_v31":
        family = variant.split("_", 1)[0]
    elif predictor == "depth_anything_v2":
        family = variant.rsplit("_", 1)[-1]  # metric_indoor_small -> small: the same backbone
    else:
        family = variant
    if (predictor, family) not in _TINY:
        raise ValueError(f"no tiny configuration for {predictor}/{variant}")
    return predictor, family


def tiny_model_overrides(predictor: str, variant: str) -> dict[str, Any]:
    """``model_overrides`` giving a tiny model of ``predictor``'s ``variant`` (a fresh copy)."""
    return copy.deepcopy(_TINY[_key(predictor, variant)][0])


def tiny_predictor_kwargs(predictor: str, variant: str) -> dict[str, Any]:
    """Constructor keyword arguments for a tiny random-weight predictor on the CPU (``weights: random``: nothing is
    searched or downloaded)."""
    overrides, size = _TINY[_key(predictor, variant)]
    return {
        "weights": "random",
        "model_overrides": copy.deepcopy(overrides),
        "input_size": size,
        "allow_random_weights": True,
        "allow_download": False,
        "device": "cpu",
    }
