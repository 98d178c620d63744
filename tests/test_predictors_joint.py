"""Joint predictor: robust alignment, agreement, combination; Hydra instantiation of the three predictor configs."""

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from modules.geo_predictors.base import DepthPredictor
from modules.geo_predictors.depth_anything import DepthAnythingV2Predictor
from modules.geo_predictors.depth_pro import DepthProPredictor
from modules.geo_predictors.joint import JointPredictor, agreement, robust_scale_shift, weighted_scale_shift
from modules.geo_predictors.midas import MidasPredictor
from modules.geo_predictors.tiny_configs import tiny_predictor_kwargs

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class FixedPredictor(DepthPredictor):
    """Returns a given disparity (tests the fusion without networks)."""

    def __init__(self, disparity):
        self.disparity = disparity
        self.panoramas = []

    @property
    def device(self):
        return torch.device("cpu")

    def predict(self, images, cameras=None):
        return self.disparity.clone()

    def begin_panorama(self, image_path, erp_hw):
        self.panoramas.append((image_path, erp_hw))

    def describe(self):
        return {"name": "fixed", "licence": "test"}


def _maps(seed=0, b=3, h=24, w=20):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, generator=g) * 4 + 1, g


def test_weighted_least_squares_is_exact_on_affine_data():
    x, _ = _maps()
    s_true, t_true = torch.tensor([2.0, 0.5, 3.0]), torch.tensor([1.0, -2.0, 0.25])
    y = s_true[:, None, None] * x + t_true[:, None, None]
    s, t = weighted_scale_shift(x.flatten(1), y.flatten(1), torch.ones_like(x.flatten(1)))
    torch.testing.assert_close(s, s_true)
    torch.testing.assert_close(t, t_true, atol=1e-5, rtol=1e-5)
    # constant source: no scale, the shift is the target's mean
    s, t = weighted_scale_shift(torch.ones(1, 10), torch.arange(10.0)[None], torch.ones(1, 10))
    assert s.item() == 0 and t.item() == pytest.approx(4.5)


def test_robust_fit_ignores_outliers_that_break_least_squares():
    x, g = _maps(1)
    s_true, t_true = torch.tensor([2.0, 0.5, 3.0]), torch.tensor([1.0, -2.0, 0.25])
    y = s_true[:, None, None] * x + t_true[:, None, None] + 0.01 * torch.randn(x.shape, generator=g)
    outliers = torch.rand(x.shape, generator=g) < 0.2
    y_bad = torch.where(outliers, y + 30.0, y)
    s_ols, _ = robust_scale_shift(x, y_bad, iterations=0)
    assert (s_ols - s_true).abs().max() > 0.3
    for loss, threshold, iterations, tol in (("tukey", 4.685, 5, 0.01), ("huber", 1.345, 30, 0.05)):
        s_rob, t_rob = robust_scale_shift(x, y_bad, iterations=iterations, loss=loss, threshold=threshold)
        torch.testing.assert_close(s_rob, s_true, atol=tol, rtol=0)
        torch.testing.assert_close(t_rob, t_true, atol=4 * tol, rtol=0)
    # pixels marked invalid are not used at all
    s_mask, _ = robust_scale_shift(x, y_bad, valid=~outliers, iterations=0)
    torch.testing.assert_close(s_mask, s_true, atol=0.01, rtol=0)


def test_min_scale_keeps_depth_order():
    x, _ = _maps(2)
    s, t = robust_scale_shift(x, -x, iterations=2, min_scale=0.0)
    assert (s >= 0).all()
    s_free, _ = robust_scale_shift(x, -x, iterations=2, min_scale=None)
    torch.testing.assert_close(s_free, -torch.ones(3))
    # an exact fit stays exact over many rounds (sigma = 0 keeps the weights)
    y = 2 * x + 1
    y[:, 0, 0] += 50
    s, t = robust_scale_shift(x, y, iterations=50, loss="huber", threshold=1.345)
    torch.testing.assert_close(s, torch.full((3,), 2.0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="loss"):
        robust_scale_shift(x, y, loss="cauchy")


def test_agreement_values():
    ref = torch.full((1, 2, 2), 2.0)
    assert torch.equal(agreement(ref.clone(), ref, 0.1), torch.ones(1, 2, 2))
    # |a - d| = 0.2 = sigma * median|d| (0.1 * 2) -> exp(-1/2)
    val = agreement(ref + 0.2, ref, 0.1)
    torch.testing.assert_close(val, torch.full((1, 2, 2), float(torch.exp(torch.tensor(-0.5)))))
    nan = ref.clone()
    nan[0, 0, 0] = float("nan")
    assert agreement(nan, ref, 0.1)[0, 0, 0] == 0
    with pytest.raises(ValueError):
        agreement(ref, ref, 0.0)


def test_joint_aligns_midas_to_depth_anything_and_gates_by_agreement():
    d, g = _maps(3)
    m = (d - 0.5) / 2.0  # MiDaS = an affine copy of Depth Anything...
    m[:, :4, :4] += 5.0  # ...except a patch where the networks disagree
    joint = JointPredictor(
        FixedPredictor(m),
        FixedPredictor(d),
        midas_weight=0.5,
        depth_anything_weight=0.5,
        agreement_sigma=0.05,
        agreement_gating=1.0,
    )
    disp, conf = joint.predict_with_confidence(torch.zeros(3, 3, 24, 20))
    torch.testing.assert_close(joint.last_alignment["scale"], torch.full((3,), 2.0), atol=1e-3, rtol=0)
    # where they agree: the fused map is Depth Anything's; confidence ~ 1
    torch.testing.assert_close(disp[:, 8:, 8:], d[:, 8:, 8:], atol=1e-3, rtol=0)
    assert conf[:, 8:, 8:].min() > 0.99
    # where they disagree: low confidence, and Depth Anything decides
    assert conf[:, :4, :4].max() < 1e-3
    torch.testing.assert_close(disp[:, :4, :4], d[:, :4, :4], atol=1e-2, rtol=0)
    assert torch.equal(joint.predict(torch.zeros(3, 3, 24, 20)), disp)
    empty, empty_conf = joint.fuse(torch.zeros(0, 24, 20), torch.zeros(0, 24, 20))
    assert empty.shape == empty_conf.shape == (0, 24, 20)


def test_joint_without_gating_is_the_weighted_mean():
    d, _ = _maps(4)
    m = (d - 0.5) / 2.0
    m[:, 0, 0] += 1.0
    joint = JointPredictor(
        FixedPredictor(m),
        FixedPredictor(d),
        midas_weight=0.25,
        depth_anything_weight=0.75,
        robust_iterations=3,
        agreement_gating=0.0,
    )
    disp = joint.predict(torch.zeros(3, 3, 24, 20))
    aligned = joint.last_alignment["scale"][:, None, None] * m + joint.last_alignment["shift"][:, None, None]
    torch.testing.assert_close(disp, 0.25 * aligned + 0.75 * d)


def test_joint_forwards_panorama_and_describes_both():
    d, _ = _maps(5)
    a, b = FixedPredictor(d), FixedPredictor(d)
    joint = JointPredictor(a, b)
    joint.begin_panorama("pano.png", (64, 128))
    assert a.panoramas == b.panoramas == [("pano.png", (64, 128))]
    meta = joint.describe()
    assert meta["midas"]["name"] == "fixed" and meta["agreement_sigma"] == 0.1 and meta["licence"] == "test"
    with pytest.raises(ValueError):
        JointPredictor(a, b, midas_weight=0.0, depth_anything_weight=0.0)
    with pytest.raises(TypeError):
        JointPredictor(a, "not a predictor")


# ----------------------------------------------------------------------------------------------- Hydra configs
@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    """The repository's predictor group beside a minimal primary config giving runtime.* and paths.*."""
    root = tmp_path_factory.mktemp("configs")
    shutil.copytree(CONFIGS / "predictor", root / "predictor")
    ckpt = tmp_path_factory.mktemp("pre_checkpoints")
    (root / "config.yaml").write_text(
        "defaults:\n  - predictor: joint\n  - _self_\n"
        f"runtime: {{device: cpu, precision: fp32, compile: false}}\npaths: {{checkpoint_dir: {ckpt}}}\n"
    )
    return root


def _compose(config_dir, overrides):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=overrides)


def _make_tiny(node, predictor, variant):
    tiny = tiny_predictor_kwargs(predictor, variant)
    for key in ("weights", "model_overrides", "input_size", "allow_random_weights", "allow_download"):
        OmegaConf.update(node, key, tiny[key], merge=False)


def test_single_predictor_configs_instantiate(config_dir):
    cfg = _compose(config_dir, ["predictor=midas_v31", "predictor.variant=swin2_tiny_256"])
    assert cfg.predictor.precision == "fp32" and cfg.predictor.batch_size == 4
    _make_tiny(cfg.predictor, "midas_v31", "swin2_tiny_256")
    midas = instantiate(cfg.predictor)
    assert isinstance(midas, MidasPredictor) and midas.variant_name == "swin2_tiny_256"

    cfg = _compose(config_dir, ["predictor=depth_anything_v2"])
    assert cfg.predictor.variant == "large"
    _make_tiny(cfg.predictor, "depth_anything_v2", "large")
    da = instantiate(cfg.predictor)
    assert isinstance(da, DepthAnythingV2Predictor) and da.describe()["licence"] == "CC-BY-NC-4.0"
    assert da.predict(torch.rand(2, 3, 30, 30)).shape == (2, 30, 30)


def test_joint_config_instantiates_and_predicts_end_to_end(config_dir):
    cfg = _compose(config_dir, ["predictor.depth_anything.variant=small", "predictor.agreement_sigma=0.2"])
    assert cfg.predictor.midas.variant == "beit_large_512"  # default MiDaS of the joint predictor
    assert cfg.predictor.midas.checkpoint_dir == cfg.paths.checkpoint_dir
    _make_tiny(cfg.predictor.midas, "midas_v31", "beit_large_512")
    _make_tiny(cfg.predictor.depth_anything, "depth_anything_v2", "small")
    joint = instantiate(cfg.predictor)
    assert isinstance(joint, JointPredictor) and joint.agreement_sigma == 0.2
    assert isinstance(joint.midas, MidasPredictor) and isinstance(joint.depth_anything, DepthAnythingV2Predictor)
    faces = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    disp, conf = joint.predict_with_confidence(faces)
    assert disp.shape == conf.shape == (4, 32, 32) and disp.dtype == torch.float32
    assert torch.isfinite(disp).all() and ((conf >= 0) & (conf <= 1)).all()
    meta = joint.describe()
    assert meta["allow_random_weights"] is True and meta["random_weights"] is True
    assert meta["midas"]["variant"] == "beit_large_512" and meta["depth_anything"]["licence"] == "Apache-2.0"


def test_every_config_key_is_a_constructor_argument(config_dir):
    import inspect

    for name, cls in (
        ("midas_v31", MidasPredictor),
        ("depth_anything_v2", DepthAnythingV2Predictor),
        ("joint", JointPredictor),
        ("depth_pro", DepthProPredictor),
    ):
        cfg = OmegaConf.load(CONFIGS / "predictor" / f"{name}.yaml")
        params = set(inspect.signature(cls.__init__).parameters) | set(
            inspect.signature(cls.__mro__[1].__init__).parameters
        )
        keys = {k for k in cfg if k not in ("_target_", "defaults")}
        assert keys <= params, f"{name}.yaml keys not read by {cls.__name__}: {keys - params}"
