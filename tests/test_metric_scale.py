"""Metric scale from a metric network (scale.method=network / auto): the estimator, the synthetic metric mode
through the whole pipeline, the auto fallbacks and what meta.json records."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from modules.dataset.io import load_panorama
from modules.errors import UserError
from modules.fusion.metric_scale import MetricScaleError, metric_view_cameras, network_scale
from modules.geo_predictors.synthetic import MetricErrorConfig
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs
from modules.geo_predictors.weights import WeightsNotFoundError
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import erp_to_faces, face_cos_to_axis
from modules.export.outputs import write_panorama_outputs
from modules.pipeline import build_pipeline
from modules.fusion.scale import MetricViews, Scale

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _views(fov_deg=50.0, size=32):
    axes = IcosahedronProjection(level=0, face_size=size, padding_factor=1.0).cameras("cpu", torch.float32)
    return metric_view_cameras(axes.R_world_from_face, fov_deg, size)


def _true_view_depth(distance, cams):
    """Exact z-depth of every view pixel from an ERP distance map (the metric network's ideal output)."""
    dist = erp_to_faces(distance[None, None], cams, mode="nearest", antialias=False)[0, :, 0]
    return dist * face_cos_to_axis(cams)


@pytest.fixture(scope="module")
def room():
    from modules.dataset.synthetic_scene import make_room, render_erp

    _, distance = render_erp(make_room(3), 64)
    return torch.from_numpy(distance).float()


def test_metric_view_cameras():
    cams = _views(60.0, 16)
    assert cams.num_faces == 20 and cams.size == 16
    assert torch.allclose(cams.tan_half_fov, torch.full((20,), math.tan(math.radians(30.0))))
    with pytest.raises(ValueError):
        metric_view_cameras(cams.R_world_from_face, 180.0, 16)


def test_exact_metric_depth_gives_the_exact_factor(room):
    cams = _views()
    unknown = 0.137  # the relative map's arbitrary scale
    factor, info = network_scale(room * unknown, _true_view_depth(room, cams), cams)
    assert factor == pytest.approx(1 / unknown, rel=1e-4)
    assert info["method"] == "network" and info["units"] == "metres" and info["views_used"] == 20
    assert info["per_view_spread_log"] < 1e-4


def test_robust_median_ignores_wrong_views_and_saturated_pixels(room):
    cams = _views()
    depth = _true_view_depth(room, cams)
    errors = MetricErrorConfig(scale_range=(0.9, 1.11), noise_std=0.05, outlier_views=2, outlier_factor=3.0, seed=2)
    factor, info = network_scale(room, errors.apply(depth), cams)
    assert factor == pytest.approx(1.0, rel=0.05)
    # a naive mean of the per-view estimates is pulled off by the two fooled views
    naive = float(np.mean([f for f in info["per_view_factor"]]))
    assert abs(naive - 1.0) > 0.15
    # with fewer than half the views fooled the median stays inside the honest views' range, however wrong the rest
    for outliers in (4, 9):
        errors = MetricErrorConfig(scale_range=(0.9, 1.11), outlier_views=outliers, outlier_factor=10.0, seed=2)
        factors = errors.factors(20)
        honest = factors[factors < 2.0]
        factor, _ = network_scale(room, errors.apply(depth), cams)
        assert float(honest.min()) - 1e-3 <= factor <= float(honest.max()) + 1e-3
    # a sigmoid head saturates at max_depth: those pixels say "far", not how far, and are left out
    cap = float(depth.quantile(0.3))  # most pixels of most views are beyond the network's range
    capped = depth.clamp(max=cap)
    biased, _ = network_scale(room, capped, cams)
    unbiased, info = network_scale(room, capped, cams, max_depth=cap, saturation=0.99, min_valid_fraction=0.05)
    assert biased < 0.95 and unbiased == pytest.approx(1.0, rel=1e-3)


def test_no_usable_view_is_a_clear_error(room):
    cams = _views()
    with pytest.raises(MetricScaleError, match="none of the 20 metric views"):
        network_scale(room, torch.full((20, 32, 32), float("nan")), cams)
    with pytest.raises(ValueError, match="views"):
        network_scale(room, torch.ones(19, 32, 32), cams)


def apply_scale(distance, options, metric=None, note=None):
    """The scale stage built from ``options`` and run as the pipelines do: (scaled map, meta.json info)."""
    out, result = Scale(**options)(distance, metric=metric, metric_note=note)
    return out, result.info


def test_apply_scale_methods_and_auto_order(room):
    cams = _views()
    metric = MetricViews(_true_view_depth(room, cams) * 2.0, cams, None, {"name": "test"})
    d = room * 0.3
    out, info = apply_scale(d, {"method": "auto"}, metric)
    assert info["method"] == "network" and info["method_requested"] == "auto"
    assert float((out / (room * 2.0)).median()) == pytest.approx(1.0, rel=1e-3)
    assert info["network"] == {"name": "test"}
    _, info = apply_scale(d, {"method": "auto", "factor": 3.0}, None, "no metric network")
    assert info["method"] == "factor" and info["metric_network_unavailable"] == "no metric network"
    out, info = apply_scale(d, {"method": "auto"}, None)
    assert info["method"] == "median" and info["units"] == "relative"
    assert float(out.median()) == pytest.approx(1.0, rel=1e-3)
    out, info = apply_scale(d, {"method": "relative", "factor": 3.0}, metric)
    assert info["units"] == "relative"
    _, info = apply_scale(d, {"method": "factor", "factor": 3.0}, metric)  # an explicit method wins over auto
    assert info["method"] == "factor" and info["method_requested"] == "factor"
    with pytest.raises(UserError, match="needs a metric predictor.*depth_pro"):
        apply_scale(d, {"method": "network"}, None)
    with pytest.raises(UserError, match="needs scale.camera_height"):
        apply_scale(d, {"method": "camera_height"}, None)
    with pytest.raises(UserError, match="one of"):
        apply_scale(d, {"method": "guess"}, None)
    with pytest.raises(UserError, match="not both"):
        apply_scale(d, {"camera_height": 1.5, "factor": 2.0}, None)


def _synthetic_metric_cfg(compose_cfg, tmp_path, seed, extra=()):
    metric = "{scale_range: [0.9, 1.11], noise_std: 0.05, outlier_views: 2, outlier_factor: 2.5, " \
             f"view_fov_deg: 50, view_size: 48, seed: {seed}}}"
    return compose_cfg(["predictor=synthetic", f"paths.output_dir={tmp_path}", "projection.face_size=64",
                        f"predictor.corruption.seed={seed}", f"predictor.metric={metric}", *extra])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_scale_recovers_the_true_scale_through_the_pipeline(compose_cfg, room_scene, tmp_path, seed):
    """The synthetic predictor's relative faces (per-face scale 0.5-2 and shift +-0.2, the default corruption) give
    the shape; its metric mode (true metric depth x per-view error, log-uniform 0.9-1.11, 5 % pixel noise, 2 of 20
    views off by 2.5x) gives the scale. The output must be in metres within 5 %."""
    cfg = _synthetic_metric_cfg(compose_cfg, tmp_path, seed, ["scale.method=network"])
    rgb = load_panorama(room_scene)
    result = build_pipeline(cfg).run(rgb, str(room_scene))
    truth = torch.from_numpy(np.load(room_scene.with_name("distance.npy")))
    ratio = float((result.distance / truth).median())
    assert ratio == pytest.approx(1.0, abs=0.05), ratio
    info = result.info["scale"]
    assert info["method"] == "network" and info["units"] == "metres" and info["views_used"] >= 18
    # without the metric network the same run is relative (median 1), far from metres
    cfg = _synthetic_metric_cfg(compose_cfg, tmp_path, seed, ["scale.method=relative"])
    relative = build_pipeline(cfg).run(rgb, str(room_scene))
    assert abs(float((relative.distance / truth).median()) - 1.0) > 0.2


def test_auto_prefers_the_metric_network_and_meta_json_says_so(compose_cfg, tiny_scene, tmp_path):
    cfg = _synthetic_metric_cfg(compose_cfg, tmp_path, 0, ["scale.camera_height=1.4"])
    rgb = load_panorama(tiny_scene)
    pipeline = build_pipeline(cfg)
    result = pipeline.run(rgb, str(tiny_scene))
    meta = write_panorama_outputs(tmp_path, rgb, result, cfg, str(tiny_scene),
                                  {"predictor": pipeline.predictor.describe()})
    saved = json.loads((tmp_path / "meta.json").read_text())
    assert saved["scale"]["method"] == "network" and saved["scale"]["method_requested"] == "auto"
    assert saved["predictor"]["metric"]["scale_range"] == [0.9, 1.11]
    assert meta["scale"]["views"] == 20


def _tiny(node, predictor, variant):
    for key, value in {**tiny_predictor_kwargs(predictor, variant), "variant": variant}.items():
        OmegaConf.update(node, key, value, force_add=True, merge=False)


def test_auto_without_metric_weights_falls_back_and_network_names_the_download(compose_cfg, tiny_scene, tmp_path,
                                                                               monkeypatch):
    """predictor=joint_metric whose metric member (Depth Pro) has no weights on this machine: auto runs without it
    (never downloading), records why and falls back to the camera height; scale.method=network fails clearly."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = ["predictor=joint_metric", f"paths.output_dir={tmp_path}", f"paths.checkpoint_dir={tmp_path / 'ckpt'}",
                 "projection.face_size=48", "refinement=none"]
    cfg = compose_cfg(overrides + ["scale.factor=2.0"])
    _tiny(cfg.predictor.midas, "midas_v31", "swin2_tiny_256")
    _tiny(cfg.predictor.depth_anything, "depth_anything_v2", "small")
    pipeline = build_pipeline(cfg)
    assert pipeline.predictor.metric is None
    note = pipeline.predictor.metric_unavailable
    assert "Depth Pro weights for variant 'default' not found" in note
    assert "python -m tools.download_checkpoints --predictor depth_pro --variant default" in note
    result = pipeline.run(load_panorama(tiny_scene), str(tiny_scene))
    info = result.info["scale"]
    assert info["method"] == "factor" and info["metric_network_unavailable"] == note
    assert pipeline.predictor.describe()["metric"] == {"unavailable": note}

    cfg = compose_cfg(overrides + ["scale.method=network"])
    _tiny(cfg.predictor.midas, "midas_v31", "swin2_tiny_256")
    _tiny(cfg.predictor.depth_anything, "depth_anything_v2", "small")
    with pytest.raises(Exception) as err:  # Hydra wraps the constructor's WeightsNotFoundError
        build_pipeline(cfg)
    chain = [err.value, err.value.__cause__, getattr(err.value.__cause__, "__cause__", None)]
    assert any(isinstance(e, WeightsNotFoundError) for e in chain) or "tools.download_checkpoints" in str(err.value)
    assert "--predictor depth_pro" in str(err.value)


def test_equirect_baseline_takes_the_network_scale_too(compose_cfg, tiny_scene, tmp_path):
    cfg = _synthetic_metric_cfg(compose_cfg, tmp_path, 0, ["mode=equirect", "scale.method=network",
                                                           "predictor.corruption.scale_range=[1,1]",
                                                           "predictor.corruption.shift_range=[0,0]"])
    from modules.pipeline import build_equirect

    result = build_equirect(cfg, pad_fraction=cfg.mode.pad_fraction, fill_iterations=cfg.mode.fill_iterations).run(load_panorama(tiny_scene), str(tiny_scene))
    truth = torch.from_numpy(np.load(tiny_scene.with_name("distance.npy")))
    info = result.info["scale"]
    assert info["method"] == "network" and info["views"] == 20
    # uncorrupted inverse distance as the shape: the metric views' scale puts it in metres
    assert float((result.distance / truth).median()) == pytest.approx(1.0, abs=0.05)
