"""The real network classes (tiny configs, random weights) run through the whole tangent pipeline.

Random weights say nothing about depth quality: these tests check plumbing (shapes, batching, the joint fusion, the
alignment and blending on network output, meta.json recording the random weights), never accuracy.
"""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from modules.dataset.io import load_panorama
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs
from modules.export.outputs import write_panorama_outputs
from modules.pipeline import build_pipeline


def tiny(predictor: str, variant: str) -> dict:
    return {**tiny_predictor_kwargs(predictor, variant), "variant": variant}


@pytest.mark.parametrize(
    "predictor, nested",
    [
        ("midas_v31", {"": tiny("midas_v31", "swin2_tiny_256")}),
        ("depth_anything_v2", {"": tiny("depth_anything_v2", "small")}),
        ("joint", {"midas": tiny("midas_v31", "beit_large_512"), "depth_anything": tiny("depth_anything_v2", "large")}),
    ],
)
def test_tiny_networks_through_the_pipeline(compose_cfg, tiny_scene, tmp_path, one_cpu_thread, predictor, nested):
    cfg = compose_cfg([f"predictor={predictor}", f"paths.output_dir={tmp_path}", "projection.face_size=48",
                       "predictor.batch_size=7" if predictor != "joint" else "predictor.midas.batch_size=7"])
    for key, values in nested.items():
        node = cfg.predictor if not key else cfg.predictor[key]
        for k, v in values.items():
            OmegaConf.update(node, k, v, force_add=True, merge=False)
    rgb = load_panorama(tiny_scene)
    pipeline = build_pipeline(cfg)
    result = pipeline.run(rgb, str(tiny_scene))
    assert result.distance.shape == (64, 128) and torch.isfinite(result.distance).all()
    assert (result.distance > 0).all() and (result.confidence >= 0).all() and (result.confidence <= 1).all()
    assert result.timings["network"] > 0
    assert result.info["refinement"]["applied"]  # random-network garbage must not break the refinement
    meta = write_panorama_outputs(tmp_path, rgb, result, cfg, str(tiny_scene),
                                  {"predictor": pipeline.predictor.describe()})
    text = json.dumps(json.loads((tmp_path / "meta.json").read_text()))
    assert "allow_random_weights" in text and "true" in text.lower()  # random weights are never silent
    assert np.load(tmp_path / "distance.npy").shape == (64, 128)
    assert meta["timings"]["network"] > 0
