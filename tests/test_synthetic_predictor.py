"""The ground-truth-backed predictor: exact truth with identity settings, the advertised corruption, determinism."""

import numpy as np
import pytest
import torch

from modules.dataset.synthetic_scene import cast, make_room
from modules.geo_predictors.synthetic import GroundTruthError, SyntheticPredictor
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import face_cos_to_axis, face_rays

IDENTITY = dict(scale_range=[1, 1], shift_range=[0, 0], warp_amplitude=0.0, noise_std=0.0)


def faces_for(cams):
    return torch.zeros(cams.num_faces, 3, cams.size, cams.size)


def test_identity_returns_the_true_disparity(room_scene):
    cams = IcosahedronProjection(0, 64).cameras()
    p = SyntheticPredictor(None, IDENTITY)
    p.begin_panorama(str(room_scene), (256, 512))
    disp = p.predict(faces_for(cams), cams)
    assert disp.shape == (20, 64, 64) and disp.dtype == torch.float32
    assert torch.equal(disp, p.true_disparity(cams).float())
    # the truth is 1 / planar depth: compare with analytic ray casting of the same room at the face pixels
    rays = face_rays(cams.to(dtype=torch.float64)).reshape(-1, 3).numpy()
    distance, _ = cast(make_room(0), rays)
    planar = distance.reshape(20, 64, 64) * face_cos_to_axis(cams.to(dtype=torch.float64)).numpy()
    rel = np.abs(disp.numpy() * planar - 1.0)
    assert np.median(rel) < 1e-3  # away from occlusion edges, only the ERP resampling error remains
    assert np.mean(rel < 0.01) > 0.97


def test_corruption_stays_in_the_configured_ranges(room_scene):
    cams = IcosahedronProjection(0, 48).cameras()
    corr = dict(scale_range=[0.5, 2.0], shift_range=[-0.2, 0.2], seed=3)
    p = SyntheticPredictor(str(room_scene.with_name("distance.npy")), corr)
    true = p.true_disparity(cams).double()
    disp = p.predict(faces_for(cams), cams).double()
    scales, shifts = [], []
    for f in range(20):
        A = torch.stack((true[f].flatten(), torch.ones(48 * 48, dtype=torch.float64)), 1)
        s, t = torch.linalg.lstsq(A, disp[f].flatten()[:, None]).solution.flatten()
        scales.append(float(s))
        shifts.append(float(t / true[f].median()))
    assert min(scales) >= 0.5 - 1e-6 and max(scales) <= 2.0 + 1e-6
    assert min(shifts) >= -0.2 - 1e-6 and max(shifts) <= 0.2 + 1e-6
    assert np.std(np.log(scales)) > 0.2  # the faces really differ


def test_warp_and_noise_have_the_configured_size(room_scene):
    cams = IcosahedronProjection(0, 64).cameras()
    gt = str(room_scene.with_name("distance.npy"))
    true = SyntheticPredictor(gt, IDENTITY).predict(faces_for(cams), cams)
    warped = SyntheticPredictor(gt, dict(IDENTITY, warp_amplitude=0.1)).predict(faces_for(cams), cams)
    ratio = warped / true
    assert (ratio - 1).abs().max() <= 0.1 + 1e-5 and (ratio - 1).abs().max() > 0.05
    noisy = SyntheticPredictor(gt, dict(IDENTITY, noise_std=0.02)).predict(faces_for(cams), cams)
    assert (noisy / true - 1).std().item() == pytest.approx(0.02, rel=0.05)


def test_deterministic_for_a_seed(room_scene):
    cams = IcosahedronProjection(0, 32).cameras()
    gt = str(room_scene.with_name("distance.npy"))
    corr = dict(scale_range=[0.5, 2], shift_range=[-0.2, 0.2], warp_amplitude=0.1, noise_std=0.02, seed=7)
    a = SyntheticPredictor(gt, corr).predict(faces_for(cams), cams)
    b = SyntheticPredictor(gt, corr).predict(faces_for(cams), cams)
    c = SyntheticPredictor(gt, dict(corr, seed=8)).predict(faces_for(cams), cams)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ground_truth_of_the_wrong_shape_is_refused(room_scene):
    p = SyntheticPredictor(str(room_scene.with_name("distance.npy")), IDENTITY)
    with pytest.raises(GroundTruthError, match=r"distance.npy.*\(256, 512\).*\(128, 256\)"):
        p.begin_panorama(None, (128, 256))


def test_bad_ground_truth_files_are_refused(tmp_path):
    bad = tmp_path / "distance.npy"
    np.save(bad, np.zeros((4, 8, 3), dtype=np.float32))
    with pytest.raises(GroundTruthError, match="float \\[H, W\\]"):
        SyntheticPredictor(str(bad))
    np.save(bad, -np.ones((4, 8), dtype=np.float32))
    with pytest.raises(GroundTruthError, match="non-positive"):
        SyntheticPredictor(str(bad))
    with pytest.raises(GroundTruthError, match="not found"):
        SyntheticPredictor(str(tmp_path / "missing.npy"))
    p = SyntheticPredictor(None)
    with pytest.raises(GroundTruthError, match="not found"):
        p.begin_panorama(str(tmp_path / "elsewhere" / "rgb.png"), (4, 8))
