"""Error models of the synthetic predictor that stand for real networks (#12), and the outdoor / corridor scenes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from modules.dataset.synthetic_scene import cast, make_scene, render_erp
from modules.geo_predictors.synthetic import SyntheticPredictor
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import face_rays

IDENTITY = dict(scale_range=[1, 1], shift_range=[0, 0], warp_amplitude=0.0, noise_std=0.0)


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    folder = tmp_path_factory.mktemp("street")
    rgb, distance = render_erp(make_scene("outdoor", 0), 64)
    np.save(folder / "distance.npy", distance)
    return folder / "distance.npy"


def predict(gt, cams, **corruption):
    p = SyntheticPredictor(str(gt), dict(IDENTITY, **corruption))
    return p.predict(torch.zeros(cams.num_faces, 3, cams.size, cams.size), cams).double(), p


def test_curve_is_monotone_per_face_and_not_affine(room_scene):
    cams = IcosahedronProjection(0, 48).cameras()
    gt = room_scene.with_name("distance.npy")
    curved, p = predict(gt, cams, curve_strength=1.0, seed=2)
    true = p.true_disparity(cams).double()
    nonaffine = []
    for f in range(cams.num_faces):
        order = torch.argsort(true[f].flatten())
        assert bool((torch.diff(curved[f].flatten()[order]) >= -1e-9).all())  # monotone in the true disparity
        A = torch.stack((true[f].flatten(), torch.ones_like(true[f].flatten())), 1)
        fit = A @ torch.linalg.lstsq(A, curved[f].flatten()[:, None]).solution
        nonaffine.append(float((fit[:, 0] - curved[f].flatten()).abs().max() / curved[f].max()))
    assert max(nonaffine) > 0.02  # some faces are clearly bent
    plain, _ = predict(gt, cams, seed=2)
    assert torch.allclose(plain, true, rtol=1e-6)  # curve_strength 0: the truth


def test_additive_noise_is_relative_to_the_face_range(room_scene):
    cams = IcosahedronProjection(0, 64).cameras()
    gt = room_scene.with_name("distance.npy")
    clean, _ = predict(gt, cams)
    noisy, _ = predict(gt, cams, additive_noise=0.02)
    for f in range(cams.num_faces):
        c = clean[f].flatten()
        spread = torch.quantile(c, 0.98) - torch.quantile(c, 0.02)
        assert float((noisy[f] - clean[f]).std() / spread) == pytest.approx(0.02, rel=0.15)


def test_edge_blur_smooths_depth_edges_only(room_scene):
    cams = IcosahedronProjection(0, 64).cameras()
    gt = room_scene.with_name("distance.npy")
    clean, _ = predict(gt, cams)
    blurred, _ = predict(gt, cams, edge_blur=0.03)
    jump = lambda x: (x[:, :, 1:] - x[:, :, :-1]).abs() / x[:, :, 1:]
    assert float(jump(blurred).max()) < 0.6 * float(jump(clean).max())
    assert float(((blurred - clean).abs() / clean).median()) < 0.01  # smooth surfaces hardly change


def test_sky_predicts_zero_and_the_outdoor_truth_is_inf(street):
    cams = IcosahedronProjection(0, 32).cameras()
    distance = np.load(street)
    assert np.isposinf(distance).mean() == pytest.approx(0.37, abs=0.1)
    finite = distance[np.isfinite(distance)]
    assert finite.min() > 1.0 and finite.max() < 160.0
    pred, p = predict(street, cams, scale_range=[0.5, 2], shift_range=[-0.2, 0.2], infinity_distance=1000.0, seed=1)
    sky = p.true_disparity(cams) == 0
    assert bool(sky.any()) and bool((pred[sky] == 0).all())
    follow, _ = predict(street, cams, scale_range=[0.5, 2], shift_range=[-0.2, 0.2], seed=1)
    assert float(follow[sky].abs().max()) > 0  # null: the sky takes the face's shift


def test_low_information_faces_get_a_strong_warp(street):
    cams = IcosahedronProjection(0, 32).cameras()
    plain, p = predict(street, cams)
    warped, _ = predict(street, cams, low_info_sky=0.5, low_info_warp=0.3)
    true = p.true_disparity(cams).double()
    changed = [bool((warped[f] != plain[f]).any()) for f in range(20)]
    sky = [float((true[f, 8:24, 8:24] == 0).double().mean()) for f in range(20)]
    assert any(changed) and not all(changed)
    assert changed == [s >= 0.5 for s in sky]
    assert float((warped / plain.clamp_min(1e-12) - 1)[plain > 0].abs().max()) <= 0.3 + 1e-6


def test_new_models_are_seeded_and_leave_the_old_draws_alone(room_scene):
    cams = IcosahedronProjection(0, 32).cameras()
    gt = room_scene.with_name("distance.npy")
    old = dict(scale_range=[0.5, 2], shift_range=[-0.2, 0.2], warp_amplitude=0.1, seed=5)
    base, _ = predict(gt, cams, **old)
    again, _ = predict(gt, cams, **old, infinity_distance=1e6, low_info_sky=0.99, low_info_warp=0.3)
    assert torch.equal(base, again)
    combined = dict(old, curve_strength=1.0, edge_blur=0.01, additive_noise=0.01)
    a, _ = predict(gt, cams, **combined)
    b, _ = predict(gt, cams, **combined)
    c, _ = predict(gt, cams, **dict(combined, seed=6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_corridor_is_long_and_outdoor_has_far_buildings():
    d, _ = cast(make_scene("corridor", 0), face_rays(IcosahedronProjection(0, 16).cameras().to(dtype=torch.float64)).reshape(-1, 3).numpy())
    assert d.max() > 8.0 and np.isfinite(d).all()
    _, street = render_erp(make_scene("outdoor", 1), 64)
    finite = street[np.isfinite(street)]
    assert (finite > 20).mean() > 0.05 and (finite < 5).mean() > 0.2
    with pytest.raises(ValueError, match="scene kind"):
        make_scene("cave", 0)


def test_cli_writes_an_outdoor_scene(tmp_path):
    from modules.config import PROJECT_ROOT

    out = tmp_path / "street"
    subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "make_synthetic_scene.py"), "--out", str(out), "--kind",
                    "outdoor", "--height", "32"], check=True, cwd=PROJECT_ROOT, env={"PYTHONPATH": str(PROJECT_ROOT)},
                   capture_output=True)
    distance = np.load(out / "distance.npy")
    meta = json.loads((out / "scene.json").read_text())
    assert distance.shape == (32, 64) and np.isposinf(distance).any()
    assert meta["kind"] == "outdoor" and 0.2 < meta["sky_fraction"] < 0.6
