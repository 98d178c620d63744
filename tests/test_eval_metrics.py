"""Metrics against values worked out by hand on tiny arrays (masks, each alignment, ERP options)."""

import math

import pytest
import torch

from modules.evaluation.metrics import (
    METRIC_NAMES,
    EvaluationError,
    align_affine_disparity,
    align_median,
    compute_metrics,
    erp_latitude_mask,
    fit_affine_disparity,
    weighted_median,
)

# gt  = [1, 2, 4, 10], pred = [1.5, 2, 7.6, 12]
# errors |p - g| = [0.5, 0, 3.6, 2]; ratios max(p/g, g/p) = [1.5, 1, 1.9, 1.2]
GT = torch.tensor([[1.0, 2.0], [4.0, 10.0]])
PRED = torch.tensor([[1.5, 2.0], [7.6, 12.0]])
HAND = {
    "abs_rel": (0.5 / 1 + 0 + 3.6 / 4 + 2 / 10) / 4,  # 0.4
    "sq_rel": (0.25 / 1 + 0 + 12.96 / 4 + 4 / 10) / 4,  # 0.9725
    "mae": (0.5 + 0 + 3.6 + 2) / 4,  # 1.525
    "rmse": math.sqrt((0.25 + 0 + 12.96 + 4) / 4),
    "rmse_log": math.sqrt((math.log(1.5) ** 2 + 0 + math.log(1.9) ** 2 + math.log(1.2) ** 2) / 4),
    "delta1": 2 / 4,  # ratios 1, 1.2 < 1.25
    "delta2": 3 / 4,  # + 1.5 < 1.5625
    "delta3": 4 / 4,  # + 1.9 < 1.953125
}


def _assert_close(metrics, expected):
    # inputs are float32 (7.6 is not exact there), metrics are computed in float64
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def test_all_metrics_match_hand_values():
    m = compute_metrics(PRED, GT)
    assert set(METRIC_NAMES) <= set(m)
    _assert_close(m, HAND)
    assert HAND["abs_rel"] == pytest.approx(0.4) and HAND["sq_rel"] == pytest.approx(0.9725)
    assert m["n_valid"] == 4 and m["scale"] == 1.0 and m["shift"] == 0.0


def test_invalid_pixels_and_mask_are_excluded():
    # junk columns: gt = 0, NaN prediction, inf prediction, inf gt, masked out, gt outside depth_range
    inf, nan = float("inf"), float("nan")
    gt = torch.tensor([[1.0, 2.0, 0.0, 5.0, 3.0, 50.0], [4.0, 10.0, 7.0, inf, 3.0, 60.0]])
    pred = torch.tensor([[1.5, 2.0, 1.0, inf, 100.0, 1.0], [7.6, 12.0, nan, 2.0, 100.0, 1.0]])
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[:, 4] = False
    m = compute_metrics(pred, gt, mask=mask, depth_range=(0.5, 20.0))
    _assert_close(m, HAND)
    assert m["n_valid"] == 4


def test_non_positive_prediction_is_invalid():
    gt = torch.tensor([[1.0, 2.0, 4.0, 10.0, 3.0]])
    pred = torch.tensor([[1.5, 2.0, 7.6, 12.0, -1.0]])
    _assert_close(compute_metrics(pred, gt), HAND)


def test_median_alignment_by_hand():
    # gt = [1, 2, 4], pred = [3, 6, 10]: medians 2 and 6 -> scale 1/3 -> aligned [1, 2, 10/3]
    gt = torch.tensor([[1.0, 2.0, 4.0]])
    pred = torch.tensor([[3.0, 6.0, 10.0]])
    m = compute_metrics(pred, gt, alignment="median")
    assert m["scale"] == pytest.approx(1 / 3)
    assert m["abs_rel"] == pytest.approx((2 / 3 / 4) / 3)  # only the last pixel is off, by 2/3
    assert m["mae"] == pytest.approx((2 / 3) / 3)
    assert m["delta1"] == pytest.approx(1.0)  # 4 / (10/3) = 1.2 < 1.25


def test_median_alignment_ignores_masked_pixels():
    gt = torch.tensor([[1.0, 2.0, 4.0, 1.0]])
    pred = torch.tensor([[3.0, 6.0, 10.0, 1000.0]])
    mask = torch.tensor([[True, True, True, False]])
    aligned, scale = align_median(pred.double(), gt.double(), mask)
    assert float(scale) == pytest.approx(1 / 3)
    assert aligned[0, :3].tolist() == pytest.approx([1.0, 2.0, 10 / 3])


def test_affine_disparity_exact_recovery():
    gt = torch.tensor([[1.0, 2.0], [4.0, 5.0]])
    pred_disp = 2.0 / gt + 3.0  # a relative disparity: scale 2, shift 3
    m = compute_metrics(pred_disp, gt, alignment="affine_disparity", pred_kind="disparity")
    assert m["scale"] == pytest.approx(0.5) and m["shift"] == pytest.approx(-1.5)
    for name in ("abs_rel", "sq_rel", "mae", "rmse", "rmse_log"):
        assert m[name] == pytest.approx(0.0, abs=1e-6)  # float32 inputs
    assert m["delta1"] == 1.0
    # the same through a depth prediction (1 / disparity)
    m_depth = compute_metrics(1.0 / pred_disp, gt, alignment="affine_disparity")
    assert m_depth["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_affine_disparity_least_squares_by_hand():
    # pred disparity [1, 2, 3], gt disparity [1, 2, 2] (gt depth [1, .5, .5]):
    # slope = cov / var = 1 / 2, shift = 5/3 - 1/2 * 2 = 2/3 -> aligned disparity [7/6, 5/3, 13/6]
    gt = torch.tensor([[1.0, 0.5, 0.5]])
    pred_disp = torch.tensor([[1.0, 2.0, 3.0]])
    s, t = fit_affine_disparity(pred_disp.flatten().double(), 1.0 / gt.flatten().double())
    assert float(s) == pytest.approx(0.5) and float(t) == pytest.approx(2 / 3)
    m = compute_metrics(pred_disp, gt, alignment="affine_disparity", pred_kind="disparity")
    aligned = [6 / 7, 3 / 5, 6 / 13]
    expected_abs_rel = (abs(aligned[0] - 1) / 1 + abs(aligned[1] - 0.5) / 0.5 + abs(aligned[2] - 0.5) / 0.5) / 3
    assert m["abs_rel"] == pytest.approx(expected_abs_rel)
    assert m["mae"] == pytest.approx((1 / 7 + 0.1 + 1 / 26) / 3)


def test_affine_disparity_caps_far_pixels():
    # a fit that sends a disparity below 1 / depth_cap gives depth_cap there
    gt = torch.tensor([[1.0, 2.0, 4.0]]).double()
    pred_disp = torch.tensor([[1.0, 0.5, -5.0]]).double()  # the last pixel is not used for the fit
    fit = torch.tensor([[True, True, False]])
    aligned, s, t = align_affine_disparity(pred_disp, gt, fit, depth_cap=8.0)
    assert float(s) == pytest.approx(1.0) and float(t) == pytest.approx(0.0, abs=1e-12)
    assert aligned.flatten().tolist() == pytest.approx([1.0, 2.0, 8.0])


def test_solid_angle_weighting_by_hand():
    # H = 4 rows at latitudes +-67.5, +-22.5 deg; row solid angles are proportional to
    # sin(90) - sin(45), sin(45) - sin(0), ... = [1 - r, r, r, 1 - r] with r = sqrt(2) / 2, summing to 2.
    gt = torch.ones(4, 8)
    pred = torch.ones(4, 8)
    pred[0] = 2.0  # abs rel error 1 in the top row only
    uniform = compute_metrics(pred, gt)
    weighted = compute_metrics(pred, gt, weighting="solid_angle")
    assert uniform["abs_rel"] == pytest.approx(0.25)
    assert weighted["abs_rel"] == pytest.approx((1 - math.sqrt(2) / 2) / 2)
    assert weighted["delta1"] == pytest.approx(1 - (1 - math.sqrt(2) / 2) / 2)


def test_lat_band_keeps_only_the_band():
    gt = torch.ones(4, 8)
    pred = torch.ones(4, 8)
    pred[0] = 2.0
    m = compute_metrics(pred, gt, lat_band=(-30.0, 30.0))
    assert m["n_valid"] == 16 and m["abs_rel"] == 0.0
    band = erp_latitude_mask(4, 8, (0.0, 90.0))
    assert band[:2].all() and not band[2:].any()


def test_weighted_median():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert float(weighted_median(values)) == 2.0
    assert float(weighted_median(values, torch.tensor([1.0, 1.0, 1.0, 5.0]))) == 10.0


def test_errors_are_clear():
    with pytest.raises(EvaluationError, match="shapes differ"):
        compute_metrics(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(EvaluationError, match="no valid pixel"):
        compute_metrics(torch.ones(2, 2), torch.zeros(2, 2))
    with pytest.raises(EvaluationError, match="no valid pixel"):
        compute_metrics(torch.ones(2, 2), torch.ones(2, 2), mask=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(EvaluationError, match="unknown alignment"):
        compute_metrics(torch.ones(2, 2), torch.ones(2, 2), alignment="mean")
    with pytest.raises(EvaluationError, match="affine_disparity"):
        compute_metrics(torch.ones(2, 2), torch.ones(2, 2), pred_kind="disparity")
    with pytest.raises(EvaluationError, match="constant"):
        compute_metrics(torch.ones(2, 2), torch.rand(2, 2) + 1, alignment="affine_disparity")
