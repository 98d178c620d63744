"""The real network classes (tiny configs, random weights) run through the whole tangent pipeline.

Random weights say nothing about depth quality: these tests check plumbing (shapes, batching, the joint fusion, the
alignment and blending on network output, meta.json recording the random weights), never accuracy.
"""

import json
import math

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


def run_tiny(cfg, nested: dict, scene):
    """Put the tiny configs ``nested`` (sub-predictor key -> constructor kwargs; "" for the predictor itself) into
    ``cfg.predictor``, build the pipeline and run it on ``scene``; returns the pipeline, the panorama and the result."""
    for key, values in nested.items():
        node = cfg.predictor if not key else cfg.predictor[key]
        for k, v in values.items():
            OmegaConf.update(node, k, v, force_add=True, merge=False)
    pipeline, rgb = build_pipeline(cfg), load_panorama(scene)
    return pipeline, rgb, pipeline.run(rgb, str(scene))


@pytest.mark.parametrize(
    "predictor, nested",
    [
        ("midas_v31", {"": tiny("midas_v31", "swin2_tiny_256")}),
        ("depth_anything_v2", {"": tiny("depth_anything_v2", "small")}),
        ("joint", {"midas": tiny("midas_v31", "beit_large_512"), "depth_anything": tiny("depth_anything_v2", "large")}),
    ],
)
def test_tiny_networks_through_the_pipeline(compose_cfg, tiny_scene, tmp_path, one_cpu_thread, predictor, nested):
    # random weights: their output is no scene, so the sky detector is off (it flags most of it as sky)
    cfg = compose_cfg([f"predictor={predictor}", f"paths.output_dir={tmp_path}", "projection.face_size=48",
                       "fusion.sky.enabled=false", "refinement=gradient",
                       "predictor.batch_size=7" if predictor != "joint" else "predictor.midas.batch_size=7"])
    pipeline, rgb, result = run_tiny(cfg, nested, tiny_scene)
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


@pytest.mark.parametrize(
    "predictor, nested",
    [
        ("depth_anything_v2", {"": tiny("depth_anything_v2", "metric_indoor_small")}),
        ("joint_metric", {"midas": tiny("midas_v31", "swin2_tiny_256"), "depth_anything": tiny("depth_anything_v2", "small"),
                          "metric": tiny("depth_pro", "default")}),
        ("joint_metric", {"midas": tiny("midas_v31", "swin2_tiny_256"), "depth_anything": tiny("depth_anything_v2", "small"),
                          "metric": tiny("depth_anything_v2", "metric_outdoor_base")}),
    ],
)
def test_tiny_metric_networks_give_the_scale_through_the_pipeline(compose_cfg, tiny_scene, tmp_path, one_cpu_thread,
                                                                  predictor, nested):
    """scale.method=network with each metric class as the scale source (random weights: the factor is meaningless,
    the plumbing is not): the metric views are predicted, the factor is finite and meta.json says where it came
    from and that the weights were random."""
    extra = ["predictor@predictor.metric=depth_anything_v2"] if nested.get("metric", {}).get("variant", "").startswith(
        "metric_") else []
    cfg = compose_cfg([f"predictor={predictor}", f"paths.output_dir={tmp_path}", "projection.face_size=48",
                       "scale.method=network", "fusion.sky.enabled=false", *extra])
    pipeline, rgb, result = run_tiny(cfg, nested, tiny_scene)
    info = result.info["scale"]
    assert info["method"] == "network" and info["units"] == "metres" and info["views_used"] >= 1
    assert math.isfinite(info["factor"]) and info["factor"] > 0
    assert info["network"]["random_weights"] is True
    assert torch.isfinite(result.distance).all()
    write_panorama_outputs(tmp_path, rgb, result, cfg, str(tiny_scene), {"predictor": pipeline.predictor.describe()})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["scale"]["method"] == "network" and meta["predictor"]["random_weights"] is True


def test_tiny_depth_pro_alone_runs_the_pipeline(compose_cfg, tiny_scene, tmp_path, one_cpu_thread):
    """Depth Pro as the only network: its canonical inverse depth is the shape (relative scale here)."""
    cfg = compose_cfg(["predictor=depth_pro", f"paths.output_dir={tmp_path}", "projection.face_size=48", "fusion.sky.enabled=false",
                       "scale.method=relative"])
    for k, v in tiny("depth_pro", "default").items():
        OmegaConf.update(cfg.predictor, k, v, force_add=True, merge=False)
    pipeline = build_pipeline(cfg)
    result = pipeline.run(load_panorama(tiny_scene), str(tiny_scene))
    assert result.distance.shape == (64, 128) and torch.isfinite(result.distance).all()
    assert result.info["scale"]["units"] == "relative" and result.timings["network"] > 0
    assert pipeline.predictor.describe()["name"] == "depth_pro"
