"""Seamless stitching against ground truth: deformable (grid) alignment, gradient-domain refinement, rotations."""

import numpy as np
import pytest
import torch

from modules.dataset.io import load_panorama
from modules.evaluation.stitching import face_border_edges, seam_score
from modules.geometry.projections import IcosahedronProjection
from modules.pipeline import build_pipeline

AFFINE = ["predictor.corruption.scale_range=[0.5,2.0]", "predictor.corruption.shift_range=[-0.2,0.2]",
          "predictor.corruption.warp_amplitude=0", "predictor.corruption.noise_std=0"]
WARPED = ["predictor.corruption.scale_range=[0.5,2.0]", "predictor.corruption.shift_range=[-0.2,0.2]",
          "predictor.corruption.warp_amplitude=0.1", "predictor.corruption.noise_std=0.02"]
BASE = ["predictor=synthetic", "projection.face_size=128"]
GRADIENT = ["refinement=gradient", "refinement.height=256"]


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    pred = pred * np.median(gt / pred)
    return float(np.mean(np.abs(pred - gt) / gt))


@pytest.fixture(scope="module")
def results(room_scene):
    """Run each method once on the 512x256 room; {name: (distance, pipeline)}."""
    from conftest import compose

    runs = {
        "grid_affine_only": ["alignment=grid", *GRADIENT, *AFFINE],
        "naive": ["alignment=median", "refinement=none", *WARPED],
        "grid": ["alignment=grid", "refinement=none", *WARPED],
        "grid_refined": ["alignment=grid", *GRADIENT, *WARPED],
        "grid_refined_rot2": ["alignment=grid", *GRADIENT, "projection.rotations=2", *WARPED],
    }
    rgb = load_panorama(room_scene)
    out = {}
    for name, overrides in runs.items():
        cfg = compose([*BASE, *overrides, "paths.output_dir=/tmp/unused"])
        pipeline = build_pipeline(cfg)
        out[name] = (pipeline.run(rgb, str(room_scene)), pipeline)
    return out


def truth(room_scene) -> np.ndarray:
    return np.load(room_scene.with_name("distance.npy"))


def test_affine_only_errors_are_undone_by_the_grid(results, room_scene):
    assert abs_rel(results["grid_affine_only"][0].distance.numpy(), truth(room_scene)) <= 0.005


def test_warped_noisy_faces_are_stitched_three_times_better_than_naive(results, room_scene):
    gt = truth(room_scene)
    ours = abs_rel(results["grid_refined"][0].distance.numpy(), gt)
    naive = abs_rel(results["naive"][0].distance.numpy(), gt)
    assert ours <= 0.03
    assert ours * 3 <= naive, (ours, naive)


def test_refinement_leaves_no_visible_seam(results, room_scene):
    gt = torch.from_numpy(truth(room_scene))
    result, pipeline = results["grid_refined"]
    cams = pipeline.cameras()
    refined = seam_score(result.distance, gt, cams)
    unrefined = seam_score(results["grid"][0].distance, gt, cams)
    assert refined <= 1.2
    assert refined < unrefined  # the refinement is what removes the remaining seams
    assert result.info["refinement"]["converged"]


def test_rotated_copies_improve_the_result(results, room_scene):
    gt = truth(room_scene)
    one = abs_rel(results["grid_refined"][0].distance.numpy(), gt)
    two = abs_rel(results["grid_refined_rot2"][0].distance.numpy(), gt)
    assert results["grid_refined_rot2"][1].cameras().num_faces == 40
    assert two < one


def test_seam_score_is_one_for_the_truth_and_high_for_a_step_at_a_border():
    cams = IcosahedronProjection(0, 32).cameras()
    H, W = 64, 128
    gt = torch.ones(H, W) + torch.linspace(0, 1, W)[None]
    assert seam_score(gt, gt, cams) == pytest.approx(1.0)
    across_x, _ = face_border_edges(cams, H, W)
    # a map that jumps by 10 % across every border edge of the faces
    stepped = gt.clone()
    inside = torch.zeros(H, W, dtype=torch.bool)
    from modules.geometry.tangent import erp_face_samples

    s = erp_face_samples(cams, H, W)
    inside.view(-1)[s.erp_index[s.face_index == 0]] = True
    stepped[inside] *= 1.1
    assert seam_score(stepped, gt, cams) > 1.5
