"""Metric predictors: the Depth Anything V2 metric variants and Depth Pro (tiny configs of the real transformers
classes, random weights: these check the metric plumbing and loading, never depth quality)."""

import math

import pytest
import torch

from modules.geo_predictors.checkpoint_conversion import hf_to_upstream
from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS, DepthAnythingV2Predictor
from modules.geo_predictors.depth_pro import DEPTH_PRO_VARIANTS, DepthProPredictor
from modules.geo_predictors.errors import CheckpointFormatError, PredictorConfigError, WeightsNotFoundError
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs
from modules.geometry.tangent import TangentCameras

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

METRIC_VARIANTS = [f"metric_{scene}_{size}" for scene in ("indoor", "outdoor") for size in ("small", "base", "large")]


def cameras(n, fov_deg, size):
    return TangentCameras(torch.eye(3).expand(n, 3, 3), torch.full((n,), math.tan(math.radians(fov_deg) / 2)), size)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))


def test_metric_variant_table():
    for name in METRIC_VARIANTS:
        v = DEPTH_ANYTHING_V2_VARIANTS[name]
        scene, size = name.split("_")[1:]
        hub = {"indoor": "Indoor", "outdoor": "Outdoor"}[scene]
        assert v.hf_id == f"depth-anything/Depth-Anything-V2-Metric-{hub}-{size.capitalize()}-hf"
        assert v.is_metric and v.architecture["depth_estimation_type"] == "metric"
        assert v.architecture["max_depth"] == {"indoor": 20, "outdoor": 80}[scene]
        assert v.metric_view_fov_deg == {"indoor": 46.8, "outdoor": 29.0}[scene]
        assert v.upstream_file.startswith(f"depth_anything_v2_metric_{ {'indoor': 'hypersim', 'outdoor': 'vkitti'}[scene]}")
        assert v.licence.startswith("Apache-2.0" if size == "small" else "CC-BY-NC-4.0")
        # same backbone as the relative variant of that size
        assert v.architecture["backbone_config"] == DEPTH_ANYTHING_V2_VARIANTS[size].architecture["backbone_config"]
    assert not DEPTH_ANYTHING_V2_VARIANTS["large"].is_metric
    dp = DEPTH_PRO_VARIANTS["default"]
    assert dp.hf_id == "apple/DepthPro-hf" and dp.is_metric and dp.licence.startswith("apple-amlr")


@pytest.mark.parametrize("variant", ["metric_indoor_small", "metric_outdoor_large"])
def test_depth_anything_metric_gives_metres_and_disparity_is_its_inverse(variant, images):
    p = DepthAnythingV2Predictor(variant=variant, **tiny_predictor_kwargs("depth_anything_v2", variant))
    depth = p.predict_metric_depth(images)
    max_depth = DEPTH_ANYTHING_V2_VARIANTS[variant].architecture["max_depth"]
    assert depth.shape == (3, 40, 40) and bool((depth >= 0).all()) and bool((depth <= max_depth).all())
    assert torch.allclose(p.predict(images), 1.0 / depth.clamp_min(1e-3))
    assert p.is_metric and p.metric_source() is p
    view = p.metric_view()
    assert view.max_depth == max_depth and view.size == 56
    assert view.fov_deg == DEPTH_ANYTHING_V2_VARIANTS[variant].metric_view_fov_deg
    meta = p.describe()
    assert meta["metric"] is True and meta["metric_view"] == {"fov_deg": view.fov_deg, "size": 56}


def test_relative_variants_are_not_metric(images):
    p = DepthAnythingV2Predictor(variant="small", **tiny_predictor_kwargs("depth_anything_v2", "small"))
    assert not p.is_metric and p.metric_source() is None and p.describe()["metric"] is False
    with pytest.raises(NotImplementedError):
        p.predict_metric_depth(images)
    with pytest.raises(PredictorConfigError, match="metric variants only"):
        DepthAnythingV2Predictor(variant="small", metric_view_fov_deg=40.0,
                                 **tiny_predictor_kwargs("depth_anything_v2", "small"))


def test_metric_weights_load_from_hub_directory_and_upstream_file(tmp_path, images):
    kwargs = tiny_predictor_kwargs("depth_anything_v2", "metric_indoor_small")
    src = DepthAnythingV2Predictor(variant="metric_indoor_small", **kwargs)
    src.model.save_pretrained(tmp_path / "hf")
    want = src.predict_metric_depth(images)
    loaded = dict(kwargs, weights=str(tmp_path / "hf"), allow_random_weights=False)
    assert torch.allclose(DepthAnythingV2Predictor(variant="metric_indoor_small", **loaded).predict_metric_depth(images),
                          want, atol=1e-6)
    # the upstream metric release files use the relative files' key names: the same mapping applies
    from safetensors.torch import load_file

    torch.save(hf_to_upstream(load_file(tmp_path / "hf" / "model.safetensors"), "depth_anything_v2"), tmp_path / "up.pth")
    up = dict(kwargs, weights=str(tmp_path / "up.pth"), allow_random_weights=False)
    assert torch.allclose(DepthAnythingV2Predictor(variant="metric_indoor_small", **up).predict_metric_depth(images),
                          want, atol=1e-6)
    # relative weights are refused by a metric variant (and the other way round)
    with pytest.raises(CheckpointFormatError, match="metric"):
        DepthAnythingV2Predictor(variant="small", **dict(loaded, **{"model_overrides": kwargs["model_overrides"]}))


def test_depth_pro_uses_the_known_focal_length(images):
    p = DepthProPredictor(**tiny_predictor_kwargs("depth_pro", "default"))
    assert p.model.fov_model is None  # the focal length is known: the FOV network is not built
    canonical = p.predict(images)
    narrow = p.predict_metric_depth(images, cameras(3, 40.0, 40))
    wide = p.predict_metric_depth(images, cameras(3, 90.0, 40))
    # depth = 1 / (c W / f) = 1 / (2 c tan(fov / 2)), clamped as transformers' post-processing does
    assert torch.allclose(narrow, 1.0 / (canonical * 2 * math.tan(math.radians(20))).clamp(1e-4, 1e4))
    ok = (canonical > 1e-2) & (canonical < 1e2)
    assert bool(ok.any())
    ratio = (narrow / wide)[ok]
    assert torch.allclose(ratio, torch.full_like(ratio, math.tan(math.radians(45)) / math.tan(math.radians(20))),
                          rtol=1e-4)
    with pytest.raises(ValueError, match="focal length"):
        p.predict_metric_depth(images)
    assert p.metric_view().fov_deg == 60.0 and p.metric_view().max_depth is None
    assert "known" in p.describe()["focal_length"]


def test_depth_pro_hub_directory_with_fov_weights_loads_without_them(tmp_path, images):
    """apple/DepthPro-hf holds the FOV network too; it is skipped on load and the depth is unchanged."""
    from transformers import DepthProForDepthEstimation

    kwargs = tiny_predictor_kwargs("depth_pro", "default")
    src = DepthProPredictor(**kwargs)
    config = src.model.config
    config.use_fov_model = True
    full = DepthProForDepthEstimation(config)
    full.load_state_dict(src.model.state_dict(), strict=False)
    full.save_pretrained(tmp_path / "hf")
    assert any(k.startswith("fov_model.") for k in full.state_dict())
    loaded = DepthProPredictor(**dict(kwargs, weights=str(tmp_path / "hf"), allow_random_weights=False))
    assert loaded.model.fov_model is None
    cams = cameras(3, 60.0, 40)
    assert torch.allclose(loaded.predict_metric_depth(images, cams), src.predict_metric_depth(images, cams), atol=1e-6)


@pytest.mark.parametrize("cls, variant, command", [
    (DepthProPredictor, "default", "--predictor depth_pro --variant default"),
    (DepthAnythingV2Predictor, "metric_outdoor_large", "--predictor depth_anything_v2 --variant metric_outdoor_large"),
])
def test_missing_weights_name_the_download_command(tmp_path, monkeypatch, cls, variant, command):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        cls(variant=variant, checkpoint_dir=str(tmp_path), device="cpu")
    text = str(err.value)
    assert f"python -m tools.download_checkpoints {command}" in text and "HF_HUB_OFFLINE" in text
    if cls is DepthProPredictor:
        assert "upstream" not in text  # only the Hugging Face format is supported
    else:
        assert "depth_anything_v2_metric_vkitti_vitl.pth" in text


def test_download_tool_knows_the_new_variants():
    from tools.download_checkpoints import selected

    assert selected("depth_pro", None) == [("depth_pro", "default")]
    assert ("depth_pro", "default") in selected("joint_metric", None)
    assert selected("depth_anything_v2", ["metric_indoor_base"]) == [("depth_anything_v2", "metric_indoor_base")]
    assert len([v for p, v in selected("all", None) if v.startswith("metric_")]) == 6
    with pytest.raises(SystemExit):
        selected("depth_anything_v2", ["metric_kitchen_small"])
