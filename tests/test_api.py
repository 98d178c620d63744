"""The Python API: estimate_depth on paths, arrays and tensors, models reused across calls; run() like the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from modules import api
from modules.errors import UserError

FAST = {"projection.face_size": 64, "predictor.corruption.warp_amplitude": 0, "predictor.corruption.noise_std": 0}


def abs_rel(pred, gt):
    pred = pred * np.median(gt / pred)
    return float(np.mean(np.abs(pred - gt) / gt))


def test_estimate_depth_from_a_path(tiny_scene):
    res = api.estimate_depth(tiny_scene, predictor="synthetic", **FAST)
    gt = np.load(tiny_scene.with_name("distance.npy"))
    assert res.distance.dtype == np.float32 and res.confidence.dtype == np.float32
    assert res.distance.shape == res.confidence.shape == gt.shape
    assert abs_rel(res.distance, gt) < 0.01
    assert res.meta["input"]["image_path"] == str(tiny_scene) and res.meta["scale"]["units"] == "relative"
    assert res.meta["config"]["projection"]["face_size"] == 64
    json.dumps(res.meta)  # plain python


def test_arrays_and_tensors_give_the_path_result_and_models_are_reused(tiny_scene):
    gt_path = str(tiny_scene.with_name("distance.npy"))
    overrides = {"predictor": "synthetic", "predictor.gt_distance": gt_path, **FAST}
    api.PREDICTORS.clear()
    builds = api.PREDICTORS.builds
    ref = api.estimate_depth(tiny_scene, **overrides)
    rgb8 = np.array(Image.open(tiny_scene).convert("RGB"))
    for image in (rgb8, rgb8.astype(np.float32) / 255, torch.from_numpy(rgb8).permute(2, 0, 1).float() / 255,
                  torch.from_numpy(rgb8)):
        res = api.estimate_depth(image, **overrides)
        np.testing.assert_allclose(res.distance, ref.distance, rtol=1e-5)
        assert res.meta["input"]["image_path"] is None
    assert api.PREDICTORS.builds == builds + 1  # one model for five calls with the same predictor config
    api.estimate_depth(rgb8, **{**overrides, "predictor.corruption.seed": 3})
    assert api.PREDICTORS.builds == builds + 2  # another config, another model


@pytest.mark.parametrize("image, message", [
    (np.zeros((32, 48, 3), np.uint8), "twice as wide"),
    (np.zeros((32, 64), np.uint8), "must be \\[H, W, 3\\]"),
    (np.full((32, 64, 3), 2.0, np.float32), "in \\[0, 1\\]"),
    (np.zeros((32, 64, 3), np.int64), "dtype"),
    ("/nonexistent/pano.png", "pano.png.*not found"),
])
def test_bad_images_are_clear_errors(image, message):
    with pytest.raises(UserError, match=message):
        api.estimate_depth(image, predictor="synthetic")


def test_bad_overrides_are_clear_errors(tiny_scene):
    with pytest.raises(UserError, match="nope"):
        api.estimate_depth(tiny_scene, predictor="nope")
    with pytest.raises(UserError, match="run\\(mode=...\\)"):
        api.estimate_depth(tiny_scene, mode="voxel")


def test_override_values_are_quoted_for_hydra():
    assert api.override_strings({"a": 1, "b": 0.5, "c": None, "d": True, "e": [1, 2], "f": "x y", "g": "/p/q.png"}) == [
        "a=1", "b=0.5", "c=null", "d=true", "e=[1,2]", "f='x y'", "g=/p/q.png"]


def test_run_writes_what_the_cli_writes_and_reports_progress(tiny_scene, tmp_path):
    stages = []
    res = api.run("predict", image_path=tiny_scene, output_dir=tmp_path / "run",
                  overrides={"predictor": "synthetic", **FAST}, progress=lambda s, f: stages.append((s, f)))
    assert res.ok and res.error is None and res.output_dir == tmp_path / "run"
    names = {p.name for p in res.output_dir.iterdir()}
    assert {"distance.npy", "distance.png", "distance_preview.png", "confidence.npy", "pointcloud.ply",
            "meta.json"} <= names
    assert res.meta["complete"] and res.summary["succeeded"] == 1
    assert [s for s, _ in stages] == ["projection", "network", "alignment", "blending", "refinement", "scale", "done"]
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    bad = api.run("predict", image_path=tmp_path / "missing.png", output_dir=tmp_path / "bad",
                  overrides={"predictor": "synthetic"})
    assert bad.exit_code != 0
