"""Global alignment against ground truth: exact recovery of per-face affine errors, and a clear win over the naive
per-face baseline when the errors are not affine."""

import numpy as np
import pytest
import torch

from modules.fusion.alignment import GlobalAffineAlignment, PerFaceMedianAlignment, overlap_pairs
from modules.fusion.blending import Blender, fill_holes
from modules.fusion.faces import AlignedFaces, FacePredictions
from modules.geo_predictors.synthetic import SyntheticPredictor
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import erp_face_samples
from modules.pipeline import PanoramaPipeline
from test_geometry_tangent import default_padding_factor

PADDING = default_padding_factor()  # the shipped default: the numbers below are what users get
AFFINE = dict(scale_range=[0.5, 2.0], shift_range=[-0.2, 0.2], seed=0)
WARPED = dict(AFFINE, warp_amplitude=0.1, noise_std=0.02)


def abs_rel_delta1(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """After one global median scale."""
    pred = pred * np.median(gt / pred)
    ratio = np.maximum(pred / gt, gt / pred)
    return float(np.mean(np.abs(pred - gt) / gt)), float(np.mean(ratio < 1.25))


def run_pipeline(room_scene, corruption, alignment, face_size=128):
    from modules.dataset.io import load_panorama

    pipe = PanoramaPipeline(IcosahedronProjection(0, face_size, PADDING), SyntheticPredictor(None, corruption), alignment, Blender())
    return pipe.run(load_panorama(room_scene), str(room_scene))


def truth(room_scene):
    return np.load(room_scene.with_name("distance.npy"))


def test_affine_errors_are_recovered(room_scene):
    result = run_pipeline(room_scene, AFFINE, GlobalAffineAlignment())
    abs_rel, delta1 = abs_rel_delta1(result.distance.numpy(), truth(room_scene))
    assert abs_rel <= 0.005
    assert delta1 >= 0.999
    assert result.distance.median().item() == pytest.approx(1.0, rel=1e-3)  # relative output has median 1
    assert not result.info["alignment"]["dropped_faces"]


def naive_baseline(room_scene, corruption) -> np.ndarray:
    """Each face scaled independently to the truth's median over that face, then averaged (no joint solve)."""
    cams = IcosahedronProjection(0, 128, PADDING).cameras()
    p = SyntheticPredictor(None, corruption)
    p.begin_panorama(str(room_scene), (256, 512))
    disp = p.predict(torch.zeros(20, 3, 128, 128), cams)
    true_disp = SyntheticPredictor(None, dict(scale_range=[1, 1], shift_range=[0, 0]))
    true_disp.begin_panorama(str(room_scene), (256, 512))
    t = true_disp.true_disparity(cams)
    scale = torch.stack([t[f].median() / disp[f].median() for f in range(20)])
    pred = FacePredictions(disp, torch.ones_like(disp), cams)
    ones = torch.ones(20, dtype=torch.bool)
    aligned = AlignedFaces.from_affine(pred, scale, torch.zeros(20), ones, {})
    distance, _ = Blender().blend(aligned, 256, 512)
    return distance.numpy()


def test_joint_alignment_beats_the_naive_baseline_on_warped_noisy_faces(room_scene):
    gt = truth(room_scene)
    ours, _ = abs_rel_delta1(run_pipeline(room_scene, WARPED, GlobalAffineAlignment()).distance.numpy(), gt)
    naive, _ = abs_rel_delta1(naive_baseline(room_scene, WARPED), gt)
    # the naive baseline even knows each face's true median; the joint solve must still clearly beat it
    assert ours < 0.8 * naive, (ours, naive)


def test_per_face_median_alignment_leaves_affine_errors(room_scene):
    """The naive method really is naive: it cannot undo per-face shifts (the contrast to the joint solve)."""
    result = run_pipeline(room_scene, AFFINE, PerFaceMedianAlignment())
    abs_rel, _ = abs_rel_delta1(result.distance.numpy(), truth(room_scene))
    assert abs_rel > 0.02


def test_a_face_with_inverted_disparity_is_dropped_or_outvoted(room_scene):
    """Non-positive results are handled: a face whose prediction is nonsense must not spoil the panorama."""
    cams = IcosahedronProjection(0, 96, PADDING).cameras()
    p = SyntheticPredictor(None, AFFINE)
    p.begin_panorama(str(room_scene), (256, 512))
    disp = p.predict(torch.zeros(20, 3, 96, 96), cams)
    disp[5] = -disp[5]  # a broken face: negative disparity everywhere
    pred = FacePredictions(disp, torch.ones_like(disp), cams)
    aligned = GlobalAffineAlignment().align(pred)
    assert 5 in aligned.info["dropped_faces"] or not aligned.valid[5].any()
    distance, conf = Blender().blend(aligned, 256, 512)
    assert torch.isfinite(distance).all() and (distance > 0).all()
    abs_rel, _ = abs_rel_delta1(distance.numpy(), truth(room_scene))
    assert abs_rel < 0.01


def test_overlap_pairs_are_all_pairs_of_faces_on_a_pixel():
    cams = IcosahedronProjection(0, 16, 1.3).cameras()
    s = erp_face_samples(cams, 16, 32).sorted_by_pixel()
    a, b = overlap_pairs(s)
    assert (s.erp_index[a] == s.erp_index[b]).all() and (a < b).all()
    k = s.coverage().flatten()
    assert len(a) == int((k * (k - 1) // 2).sum())
    with pytest.raises(ValueError, match="sorted by pixel"):
        overlap_pairs(erp_face_samples(cams, 16, 32))  # face-major order is refused, not silently mis-paired


def test_confidence_is_low_where_faces_disagree(room_scene):
    good = run_pipeline(room_scene, AFFINE, GlobalAffineAlignment())
    bad = run_pipeline(room_scene, WARPED, PerFaceMedianAlignment())
    assert good.confidence.mean() > 0.9
    assert bad.confidence.mean() < good.confidence.mean() - 0.2
    assert (good.confidence >= 0).all() and (good.confidence <= 1).all()


def test_fill_holes_fills_from_neighbours_across_the_seam():
    values = torch.arange(8.0).repeat(4, 1)
    valid = torch.ones(4, 8, dtype=torch.bool)
    valid[:, 0] = False
    out = fill_holes(values, valid)
    assert torch.allclose(out[:, 0], torch.full((4,), (1.0 + 7.0) / 2))  # mean of both neighbours, wrapping


@pytest.mark.parametrize("noise_floor", [0.0, 0.1])
def test_faces_without_data_neither_hold_the_gauge_nor_collapse_the_others(room_scene, noise_floor):
    """Faces whose every pixel is masked (all sky, say) have no overlap sample: they stay out of the gauge (mean
    scale 1). In it, they would take the whole scale while the faces with data fell to the trivial all-zero fit."""
    cams = IcosahedronProjection(0, 64, PADDING).cameras()
    p = SyntheticPredictor(None, dict(WARPED, noise_std=0.05))
    p.begin_panorama(str(room_scene), (256, 512))
    disp = p.predict(torch.zeros(20, 3, 64, 64), cams)
    conf = torch.ones_like(disp)
    empty = [0, 1, 5, 6, 10, 16]  # faces with no usable pixel
    conf[empty] = 0
    scale, shift, keep, report = GlobalAffineAlignment(noise_floor=noise_floor).solve(FacePredictions(disp, conf, cams))
    data = torch.ones(20, dtype=torch.bool)
    data[empty] = False
    true = SyntheticPredictor(None, dict(scale_range=[1, 1], shift_range=[0, 0]))
    true.begin_panorama(str(room_scene), (256, 512))
    t = true.true_disparity(cams)
    aligned = scale[:, None, None] * disp.double() + shift[:, None, None]
    ratio = torch.stack([(t[f].double() / aligned[f]).median() for f in range(20)])
    # the faces with data agree on one common scale (within the warp and noise), none collapsed or was dropped
    assert bool(keep[data].all()) and not report["dropped_faces"]
    spread = ratio[data].max() / ratio[data].min()
    assert float(spread) < 1.3, ratio[data]
    # the faces without data take the median map of the others
    assert torch.allclose(scale[~data], scale[data].median().expand(len(empty)))
