"""Gradient-domain refinement (modules/fusion/refinement.py): exact recovery of known fields, longitude wrap-around,
cut edges, poles, deflation of cut-off parts, errors and the Hydra configs."""

from __future__ import annotations


import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from modules.config import PROJECT_ROOT
from modules.errors import UserError
from modules.fusion.refinement import (
    GradientRefinement,
    NoRefinement,
    RefinementConfigError,
    apply_refinement_operator,
    connected_components,
    refine_log_distance,
    refinement_energy,
    solve_refinement,
    sphere_metric_weights,
)
from modules.geometry.spherical import erp_directions, erp_lonlat_grid

F64 = torch.float64


def smooth_field(height: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    """A log-distance smooth on the sphere (a quadratic form of the ray direction): continuous through the seam
    and the poles. Returns [H, 2H]."""
    g = torch.Generator().manual_seed(seed)
    d = erp_directions(height, 2 * height, dtype=F64)
    coef = torch.randn(3, 3, generator=g, dtype=F64) * 0.3
    return (1.0 + (d @ coef * d).sum(-1) + 0.2 * d[..., 1]).to(dtype)


def exact_gradients(L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gx [H, W]: L[v, u+1 mod W] - L[v, u]; gy [H, W]: L[v+1, u] - L[v, u] (last row 0)."""
    gx = torch.roll(L, -1, dims=1) - L
    gy = torch.zeros_like(L)
    gy[:-1] = L[1:] - L[:-1]
    return gx, gy


def ones(L: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(L)


def test_solution_is_the_minimiser_of_the_energy():
    """Random weights, targets and pole edges: the energy's gradient vanishes at the solution, A is symmetric."""
    g = torch.Generator().manual_seed(1)
    H, W = 6, 10
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    L0, gx, gy = r(H, W), r(H, W) - 0.5, r(H, W) - 0.5
    wx, wy, fid = r(H, W), r(H, W), 0.1 * r(H, W)
    wx[2, 3] = 0.0  # a cut edge
    wp, gp = r(2, W // 2), r(2, W // 2)
    res = solve_refinement(L0, gx, gy, wx, wy, fid, tol=1e-13, max_iterations=500, wp=wp, gp=gp)
    assert res.converged and res.iterations > 0
    L = res.log_distance.clone().requires_grad_(True)
    refinement_energy(L, L0, gx, gy, wx, wy, fid, wp, gp).backward()
    assert L.grad.abs().max() < 1e-9
    # A is the (half) Hessian of the energy and symmetric
    x, y = r(H, W), r(H, W)
    Ax = apply_refinement_operator(x, wx, wy, fid, wp)
    Ay = apply_refinement_operator(y, wx, wy, fid, wp)
    assert torch.allclose((Ax * y).sum(), (Ay * x).sum(), atol=1e-12)
    e0 = refinement_energy(res.log_distance, L0, gx, gy, wx, wy, fid, wp, gp)
    e1 = refinement_energy(res.log_distance + 1e-3 * r(H, W), L0, gx, gy, wx, wy, fid, wp, gp)
    assert e1 > e0


def test_exact_gradients_and_offset_blend_give_the_field_plus_the_offset():
    """Exact gradients and L0 = L_true + c: the minimiser is L_true + c exactly (energy 0)."""
    L_true = smooth_field(32)
    gx, gy = exact_gradients(L_true)
    L = refine_log_distance(L_true + 0.7, gx, gy, ones(L_true), ones(L_true), 1e-3 * ones(L_true), tol=1e-12)
    assert torch.allclose(L, L_true + 0.7, atol=1e-8)


def test_exact_gradients_remove_a_large_smooth_blend_error_up_to_a_constant():
    """L0 = L_true + a large smooth error + noise, small fidelity: L - L_true is (almost) a constant.

    Bound: with exact gradients the result is L_true + delta, where delta is the screened-Poisson smoothing of the
    error e = L0 - L_true with screening length ~1/sqrt(fidelity) pixels; with fidelity 1e-6 (length 1000 px on a
    64x128 grid) delta's spread is a small fraction of e's.
    """
    H = 32
    g = torch.Generator().manual_seed(2)
    L_true = smooth_field(H, seed=3)
    lon, lat = erp_lonlat_grid(H, 2 * H, dtype=F64)
    error = 0.8 * torch.sin(lon) * torch.cos(lat) + 0.5 * torch.sin(2 * lat) + 0.05 * torch.randn(
        H, 2 * H, generator=g, dtype=F64
    )
    gx, gy = exact_gradients(L_true)
    L = refine_log_distance(L_true + error, gx, gy, ones(L_true), ones(L_true), 1e-6 * ones(L_true), tol=1e-12,
                            max_iterations=500)
    residual = L - L_true
    assert residual.std() < 0.01 * error.std()
    assert abs(float(residual.mean() - error.mean())) < 1e-3  # the constant is the blend's mean error


def test_wrong_region_with_no_fidelity_is_recovered_exactly():
    """Exact gradients, L0 wrong only in a region where the fidelity is 0: the result is L_true everywhere."""
    H = 32
    L_true = smooth_field(H, seed=4)
    wrong = torch.zeros(H, 2 * H, dtype=torch.bool)
    wrong[8:20, 50:64] = True  # touches the seam column W-1
    wrong[8:20, 0:6] = True  # ... and continues across it
    L0 = torch.where(wrong, L_true + 0.5, L_true)
    gx, gy = exact_gradients(L_true)
    fid = torch.where(wrong, 0.0, 1e-2).to(F64)
    L = refine_log_distance(L0, gx, gy, ones(L0), ones(L0), fid, tol=1e-12, max_iterations=500)
    assert (L - L_true).abs().max() < 1e-8


def test_wrong_region_with_uniform_small_fidelity_is_mostly_corrected():
    """Same region, uniform fidelity 1e-4: the 0.5 offset shrinks to a small bump (float32, default tol)."""
    H = 32
    L_true = smooth_field(H, seed=5, dtype=torch.float32)
    wrong = torch.zeros(H, 2 * H, dtype=torch.bool)
    wrong[10:18, 20:30] = True
    L0 = torch.where(wrong, L_true + 0.5, L_true)
    gx, gy = exact_gradients(L_true)
    L = refine_log_distance(L0, gx, gy, ones(L0), ones(L0), 1e-4 * ones(L0), tol=1e-5)
    assert L.dtype == torch.float32
    err = (L - L_true - (L - L_true).median()).abs()
    assert err.max() < 0.02 * 0.5


def test_seam_step_is_removed_and_wrap_around_is_like_any_column():
    """L0 = 1 on the left half, 0 on the right (steps at the seam and at W/2), gradients 0: no jump anywhere,
    and the solution commutes with a rotation in longitude (the seam is an ordinary column boundary)."""
    H, W = 16, 32
    L0 = torch.zeros(H, W, dtype=F64)
    L0[:, : W // 2] = 1.0
    z = torch.zeros_like(L0)
    fid = 1e-3 * ones(L0)
    L = refine_log_distance(L0, z, z, ones(L0), ones(L0), fid, tol=1e-12, max_iterations=500)
    seam_jump = (L[:, 0] - L[:, -1]).abs().max()
    mid_jump = (L[:, W // 2] - L[:, W // 2 - 1]).abs().max()
    assert seam_jump < 0.02  # from a step of 1
    assert torch.allclose(seam_jump, mid_jump, atol=1e-10)
    # rotate the input by a quarter turn: the output rotates with it
    shift = W // 4
    L_rot = refine_log_distance(torch.roll(L0, shift, 1), z, z, ones(L0), ones(L0), fid, tol=1e-12, max_iterations=500)
    assert torch.allclose(L_rot, torch.roll(L, shift, 1), atol=1e-9)


def test_seam_continuity_with_exact_gradients_and_a_seam_step_in_the_blend():
    """L0 = L_true + a ramp 0.3 u / W (a 0.3 step at the seam); exact gradients: across the seam the result follows
    the true difference, no step remains."""
    H = 32
    L_true = smooth_field(H, seed=6)
    W = 2 * H
    ramp = 0.3 * torch.arange(W, dtype=F64)[None, :] / W
    gx, gy = exact_gradients(L_true)
    L = refine_log_distance(L_true + ramp, gx, gy, ones(L_true), ones(L_true), 1e-6 * ones(L_true), tol=1e-12,
                            max_iterations=500)
    seam_error = (L[:, 0] - L[:, -1] - gx[:, -1]).abs().max()
    assert seam_error < 0.003  # the blend says 0.3 - 0.3/W
    assert (L - L_true - (L - L_true).mean()).abs().max() < 0.01


def test_zero_weight_edges_cut_the_step_out_of_the_smoothing():
    """L0 = 1 on the left half, 0 on the right, gradient targets 0 but the edges across both steps have weight 0:
    the step is kept from L0, whatever the (ignored) targets across it say."""
    H, W = 16, 32
    L0 = torch.zeros(H, W, dtype=F64)
    L0[:, : W // 2] = 1.0
    gx = torch.zeros_like(L0)
    wx = ones(L0)
    for col in (W // 2 - 1, W - 1):  # edge col -> col+1 (mod W)
        wx[:, col] = 0.0
        gx[:, col] = 5.0  # ignored
    L = refine_log_distance(L0, gx, torch.zeros_like(L0), wx, ones(L0), 1e-3 * ones(L0), tol=1e-12)
    assert torch.allclose(L, L0, atol=1e-9)


def test_cut_off_box_gets_its_level_from_its_own_fidelity():
    """A box cut off all around (a near object) in a smooth field, exact gradients, blend error = smooth + noise +
    0.25 on the box, tiny fidelity, float32. With exact gradients the answer is L_true + each part's mean blend error
    (up to O(fidelity)); the deflation of the box's constant gets the box right in a few iterations (without it the
    residual drops just as fast but the box stays 0.08 off)."""
    H = 32
    L_true = smooth_field(H, seed=7, dtype=torch.float32)
    box = torch.zeros(H, 2 * H, dtype=torch.bool)
    box[10:20, 30:45] = True
    L_true = torch.where(box, L_true - 0.4, L_true)
    gx, gy = exact_gradients(L_true)
    wx, wy = ones(L_true), ones(L_true)
    wx[(torch.roll(box, -1, 1) != box)] = 0.0
    wy[:-1][box[1:] != box[:-1]] = 0.0
    lon, lat = erp_lonlat_grid(H, 2 * H)
    g = torch.Generator().manual_seed(5)
    error = 0.25 * box + 0.2 * torch.sin(lon) * torch.cos(lat) + 0.02 * torch.randn(H, 2 * H, generator=g)
    res = solve_refinement(L_true + error, gx, gy, wx, wy, 1e-6 * ones(L_true), tol=1e-6, max_iterations=40)
    assert res.converged
    L = res.log_distance
    assert (L[box] - L_true[box] - error[box].mean()).abs().max() < 1e-3
    assert (L[~box] - L_true[~box] - error[~box].mean()).abs().max() < 1e-3


def test_preconditioner_is_exact_for_weights_constant_along_rows():
    """Weights that depend on the latitude only (here the sphere metric times a row profile): the FFT + cyclic
    reduction preconditioner is the exact inverse, so one conjugate-gradient iteration solves the problem."""
    H, W = 24, 48
    g = torch.Generator().manual_seed(6)
    mx, my, mf = sphere_metric_weights(H, dtype=F64)
    profile = 0.5 + torch.rand(H, 1, generator=g, dtype=F64)
    wx, wy, fid = (mx * profile).expand(H, W), (my * profile).expand(H, W), (1e-3 * mf).expand(H, W)
    L0, gx, gy = (torch.randn(H, W, generator=g, dtype=F64) for _ in range(3))
    res = solve_refinement(L0, gx, gy, wx, wy, fid, tol=1e-10, max_iterations=5)
    assert res.iterations == 1 and res.relative_residual < 1e-10
    res = solve_refinement(L0, gx, gy, wx, wy, fid, tol=1e-10, max_iterations=5, wp=torch.ones(2, W // 2, dtype=F64))
    assert res.iterations == 1  # constant pole edges are part of the exact preconditioner too


def test_cut_off_part_without_fidelity_keeps_the_blend_mean():
    H, W = 12, 24
    L_true = smooth_field(H, seed=8)
    box = torch.zeros(H, W, dtype=torch.bool)
    box[3:7, 5:11] = True
    gx, gy = exact_gradients(L_true)
    wx, wy = ones(L_true), ones(L_true)
    wx[(torch.roll(box, -1, 1) != box)] = 0.0
    wy[:-1][box[1:] != box[:-1]] = 0.0
    L0 = L_true + 0.3 * torch.rand(H, W, generator=torch.Generator().manual_seed(0), dtype=F64)
    fid = torch.where(box, 0.0, 1e-2).to(F64)
    L = refine_log_distance(L0, gx, gy, wx, wy, fid, tol=1e-12, max_iterations=500)
    assert torch.isfinite(L).all()
    assert torch.allclose(L[box].mean(), L0[box].mean(), atol=1e-9)  # its free constant: the blend's mean
    inside = (L - L_true)[box]
    assert (inside - inside.mean()).abs().max() < 1e-8  # its shape: the gradients'


def test_connected_components_merge_across_the_seam_and_the_poles():
    H, W = 4, 8
    wx, wy = torch.ones(H, W), torch.ones(H, W)
    wx[:, 3] = 0.0  # cut between columns 3 and 4 ...
    lab = connected_components(wx, wy)
    assert lab.unique().numel() == 1  # ... but the seam keeps the ring connected
    wx[:, 7] = 0.0  # cut the seam too: two halves
    lab = connected_components(wx, wy)
    assert lab.unique().numel() == 2 and lab[0, 0] != lab[0, 4] and (lab[:, :4] == lab[0, 0]).all()
    wp = torch.zeros(2, W // 2)
    wp[0, 1] = 1.0  # one edge across the north pole joins them again: (0, 1) -- (0, 5)
    assert connected_components(wx, wy, wp).unique().numel() == 1


def test_sphere_metric_keeps_the_map_continuous_through_the_poles():
    """Noisy blend, exact gradients of a field smooth on the sphere: each polar row comes out (nearly) constant,
    i.e. continuous through the pole, as the true field is."""
    H = 32
    L_true = smooth_field(H, seed=9, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    L0 = L_true + 0.05 * torch.randn(L_true.shape, generator=g)
    gx, gy = exact_gradients(L_true)
    conf = ones(L0)
    L, info = GradientRefinement(fidelity_weight=1.0, tol=1e-5, max_iterations=200).refine(L0, gx, gy, conf, conf, conf)
    assert info["converged"]
    for row in (0, -1):
        true_spread = float(L_true[row].max() - L_true[row].min())
        assert float(L[row].max() - L[row].min()) < true_spread + 0.01
        assert float(L0[row].max() - L0[row].min()) > true_spread + 0.1  # the blend was not
    err = (L - L_true - (L - L_true).mean()).abs()
    assert err.max() < 0.05 and err.mean() < 0.01


def test_pole_edges_tie_the_polar_rows_across_the_pole():
    """Pixel metric, a blend whose top row differs by 1 between the two halves, gradients 0 except across the
    x-edges of row 0 which are cut: only pole edges can bring the halves together."""
    H, W = 8, 16
    L0 = torch.zeros(H, W, dtype=F64)
    L0[0, : W // 2] = 1.0
    z = torch.zeros_like(L0)
    wx = ones(L0)
    wx[0] = 0.0
    wy = ones(L0)
    wy[0] = 0.0  # row 0 hangs only on pole edges (and its fidelity)
    fid = ones(L0)
    common = dict(tol=1e-12, max_iterations=500)
    L_no = refine_log_distance(L0, z, z, wx, wy, fid, **common)
    wp = torch.full((2, W // 2), 10.0, dtype=F64)
    L_pole = refine_log_distance(L0, z, z, wx, wy, fid, wp=wp, **common)
    gap = lambda L: float((L[0, : W // 2] - L[0, W // 2 :]).abs().max())  # noqa: E731
    assert gap(L_no) == pytest.approx(1.0, abs=1e-9)
    assert gap(L_pole) == pytest.approx(1.0 / 21.0, abs=1e-9)  # (1 + 2 wp) x gap = 1 for each pair
    # the same through the Hydra-facing class (pixel metric, pole edges weighted from the next y-edges)
    wy[0] = 1.0
    L_cls_no, _ = GradientRefinement(tol=1e-10, sphere_metric=False).refine(L0, z, z, wx, wy, fid)
    with_pole = GradientRefinement(tol=1e-10, sphere_metric=False, pole_weight=10.0)
    L_cls_pole, info = with_pole.refine(L0, z, z, wx, wy, fid)
    assert info["converged"] and gap(L_cls_pole) < 0.5 * gap(L_cls_no)


def test_sphere_metric_weights():
    mx, my, mf = sphere_metric_weights(8, dtype=F64)
    assert mx.shape == my.shape == mf.shape == (8, 1)
    assert torch.allclose(mx * mf, torch.ones_like(mx))
    assert my[-1] == 0 and (my[:-1] > 0).all() and torch.allclose(my[3], torch.ones(1, dtype=F64))  # equator edge
    assert torch.allclose(mf, mf.flip(0))  # symmetric about the equator


def test_warm_start_and_dtype_handling():
    H = 16
    L_true = smooth_field(H, seed=10, dtype=torch.float32)
    gx, gy = exact_gradients(L_true)
    g = torch.Generator().manual_seed(3)
    L0 = L_true + 0.1 * torch.randn(L_true.shape, generator=g)
    args = (gx, gy, ones(L0), ones(L0), 1e-2 * ones(L0))
    ref = refine_log_distance(L0, *args, tol=1e-6, max_iterations=300)
    warm = solve_refinement(L0, *args, tol=1e-6, max_iterations=300, x0=ref)
    assert warm.iterations <= 2 and torch.allclose(warm.log_distance, ref, atol=1e-5)
    half = refine_log_distance(L0.half(), *(a.half() for a in args), tol=1e-4)
    assert half.dtype == torch.float16 and (half.float() - ref).abs().max() < 5e-3


def test_gradient_refinement_info_and_no_refinement():
    H = 16
    L0 = smooth_field(H, seed=11, dtype=torch.float32)
    gx, gy = exact_gradients(L0)
    conf = ones(L0)
    L, info = GradientRefinement().refine(L0, gx, gy, conf, conf, conf)
    assert set(info) == {"iterations", "relative_residual", "converged", "seconds"}
    assert torch.allclose(L, L0, atol=1e-5) and info["iterations"] == 0  # nothing to do
    L1, info1 = NoRefinement().refine(L0 + 1, gx, gy, conf, conf, conf)
    assert torch.equal(L1, L0 + 1) and info1["iterations"] == 0


def test_bad_inputs_raise_clear_errors():
    H, W = 4, 8
    a = torch.zeros(H, W)
    o = torch.ones(H, W)
    with pytest.raises(ValueError, match="fidelity is zero everywhere"):
        refine_log_distance(a, a, a, o, o, a)
    with pytest.raises(ValueError, match="wy has negative"):
        refine_log_distance(a, a, a, o, -o, o)
    bad = a.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="gx has non-finite"):
        refine_log_distance(a, bad, a, o, o, o)
    with pytest.raises(ValueError, match="fidelity has non-finite"):
        refine_log_distance(a, a, a, o, o, bad)
    with pytest.raises(ValueError, match=r"gy has shape \(4, 7\)"):
        refine_log_distance(a, a, a[:, :-1], o, o, o)
    with pytest.raises(ValueError, match="even ERP width"):
        refine_log_distance(a[:, :-1], a[:, :-1], a[:, :-1], o[:, :-1], o[:, :-1], o[:, :-1], wp=torch.ones(2, 3))
    with pytest.raises(RefinementConfigError, match="fidelity_weight"):
        GradientRefinement(fidelity_weight=0.0)
    with pytest.raises(UserError, match="tol"):
        GradientRefinement(tol=2.0)


@pytest.mark.parametrize("name, cls", [("none", NoRefinement), ("gradient", GradientRefinement)])
def test_configs_instantiate(name, cls):
    cfg = OmegaConf.load(PROJECT_ROOT / "configs" / "refinement" / f"{name}.yaml")
    obj = instantiate(cfg)
    assert isinstance(obj, cls)
    if cls is GradientRefinement:  # every key is read
        described = obj.describe()
        assert all(described[k] == cfg[k] for k in cfg if k != "_target_")


@pytest.mark.gpu
def test_cuda_matches_cpu():
    H = 64
    L_true = smooth_field(H, seed=12, dtype=torch.float32)
    gx, gy = exact_gradients(L_true)
    g = torch.Generator().manual_seed(4)
    L0 = L_true + 0.1 * torch.randn(L_true.shape, generator=g)
    wx = ones(L0)
    wx[:, 10] = 0.0
    wx[:, 40] = 0.0
    args = [L0, gx, gy, wx, ones(L0), ones(L0)]
    ref = GradientRefinement(tol=1e-5, max_iterations=300)
    L_cpu, _ = ref.refine(*args)
    L_gpu, info = ref.refine(*(a.cuda() for a in args))
    assert L_gpu.is_cuda and info["converged"]
    assert torch.allclose(L_gpu.cpu(), L_cpu, atol=1e-4)


def test_parts_with_negligible_fidelity_stay_finite():
    """A region cut off by zero-weight edges whose fidelity is denormal is treated as having none (no overflow)."""
    from modules.fusion.refinement import refine_log_distance

    H, W = 16, 32
    L0 = torch.randn(H, W)
    wx, wy = torch.ones(H, W), torch.ones(H, W)
    wx[4:8, 3:9] = 0  # cut a box out of the grid
    wx[4:8, 2] = 0
    wy[3, 3:9] = 0
    wy[7, 3:9] = 0
    fidelity = torch.ones(H, W)
    fidelity[4:8, 3:9] = 1e-40  # denormal in float32
    L = refine_log_distance(L0, torch.zeros(H, W), torch.zeros(H, W), wx, wy, fidelity)
    assert torch.isfinite(L).all()
