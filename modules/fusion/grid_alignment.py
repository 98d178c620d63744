"""Deformable alignment: per face a coarse grid of scale and shift, bilinearly interpolated, solved jointly.

Real networks do not err by one scale and shift per face: their error bends smoothly across the face. Here each face
f carries a G x G grid of nodes (a_fk, b_fk) over its image; at a face point p with bilinear node weights B_k(p),

    inverse distance = cos(theta) * (S_f(p) * d_f(p) + T_f(p)),   S_f = sum_k B_k a_fk,   T_f = sum_k B_k b_fk.

The energy is linear least squares in all nodes of all faces:

* agreement: every ERP sample seen by faces a and b gives ``inv_a - inv_b``, relative to the local inverse distance
  and robustly reweighted (Huber), as in :mod:`.alignment`;
* smoothness: 4-neighbouring nodes of one face differ little (``smoothness``), in units of the face's own scale and
  shift level;
* anchor: nodes stay near the face's global affine solution (``anchor``), which keeps every scale away from zero and
  fixes the gauge.

The global per-face affine solution (:class:`GlobalAffineAlignment`) is solved first: it is the anchor and the
starting point. The unknowns are few (2 G^2 F: 1440 for 20 faces of a 6 x 6 grid), so the normal matrix is assembled
densely on the input's device (each agreement row adds its 16 x 16 outer product, one ``index_add_``) and solved by a
Cholesky factorisation there (``torch.linalg.cholesky_ex``; a general solve if it is not positive definite): no host
round trip, no SciPy.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from .alignment import Alignment, GlobalAffineAlignment, huber_weights, overlap_observations, overlap_samples
from ..geometry.cache import ValueCache
from .faces import AlignedFaces, FacePredictions

__all__ = ["GridAlignment", "grid_basis", "grid_laplacian", "solve_spd"]

log = logging.getLogger(__name__)


def grid_basis(face_xy: Tensor, grid_size: int) -> tuple[Tensor, Tensor]:
    """Bilinear weights of the G x G node grid at face points.

    Nodes sit at normalised coordinates ``-1 + 2 i / (G - 1)`` (the image corners are nodes).

    Args:
        face_xy: [N, 2] normalised plane coordinates (xn, yn) in [-1, 1].
        grid_size: G >= 2.
    Returns:
        node index [N, 4] (row-major ``iy * G + ix``) and weights [N, 4] summing to 1.
    """
    G = grid_size
    g = ((face_xy.clamp(-1, 1) + 1.0) * (0.5 * (G - 1))).clamp(0, G - 1 - 1e-6)
    i0 = torch.floor(g).long()
    f = g - i0
    ix, iy = i0[:, 0], i0[:, 1]
    fx, fy = f[:, 0], f[:, 1]
    idx = torch.stack((iy * G + ix, iy * G + ix + 1, (iy + 1) * G + ix, (iy + 1) * G + ix + 1), 1)
    w = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), 1)
    return idx, w


def grid_laplacian(grid_size: int, num_faces: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """Graph Laplacian D^T D of the 4-neighbour edges of ``num_faces`` independent G x G node grids.

    Returns:
        [F G^2, F G^2] dense (block diagonal), nodes numbered ``f * G^2 + iy * G + ix``.
    """
    G, K = grid_size, grid_size * grid_size
    k = torch.arange(K, device=device).view(G, G)
    ea = torch.cat((k[:, :-1].reshape(-1), k[:-1].reshape(-1)))
    eb = torch.cat((k[:, 1:].reshape(-1), k[1:].reshape(-1)))
    lap = torch.zeros(K, K, dtype=dtype, device=device)
    ones = torch.ones(ea.numel(), dtype=dtype, device=device)
    lap.index_put_((ea, ea), ones, accumulate=True)
    lap.index_put_((eb, eb), ones, accumulate=True)
    lap.index_put_((ea, eb), -ones, accumulate=True)
    lap.index_put_((eb, ea), -ones, accumulate=True)
    return torch.block_diag(*([lap] * num_faces)) if num_faces > 1 else lap


def solve_spd(lhs: Tensor, rhs: Tensor) -> Tensor:
    """x = lhs^-1 rhs for a symmetric positive (semi-)definite ``lhs`` [n, n], on its device: Cholesky of the
    Jacobi-equilibrated matrix D lhs D (D = diag(lhs)^-1/2: unknowns of very different levels, e.g. a nearly dropped
    face, no longer ruin the conditioning), or a general solve where the factorisation fails. rhs: [n] -> [n]."""
    d = lhs.diagonal().abs().clamp_min(torch.finfo(lhs.dtype).tiny).rsqrt()
    scaled = d[:, None] * lhs * d[None, :]
    L, info = torch.linalg.cholesky_ex(scaled)
    if int(info) == 0:
        return d * torch.cholesky_solve((d * rhs)[:, None], L)[:, 0]
    return d * torch.linalg.solve(scaled, d * rhs)


class GridAlignment(Alignment):
    """Per-face G x G scale/shift grids solved jointly (sparse linear least squares, robust IRLS).

    Args:
        grid_size: nodes per side of each face's grid (2 = per-face bilinear; 4-8 typical).
        smoothness: weight of neighbouring-node differences relative to the agreement term.
        anchor: weight pulling the nodes toward the face's global affine solution.
        sample_height: ERP height at which overlaps are sampled.
        irls_iterations: robust reweighting rounds.
        huber_k: Huber threshold in robust standard deviations.
        weight_power: exponent of the border weight used to weigh overlap samples.
        pairs: which samples of a pixel are compared: ``chain`` (each face with the next, a ring) or ``all``.
        affine: the global per-face solve that initialises and anchors the grids.
    """

    def __init__(
        self,
        grid_size: int = 6,
        smoothness: float = 0.1,
        anchor: float = 0.01,
        sample_height: int = 64,
        irls_iterations: int = 3,
        huber_k: float = 1.345,
        weight_power: float = 1.0,
        pairs: str = "chain",
        affine: GlobalAffineAlignment | None = None,
    ):
        if grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        if irls_iterations < 1:
            raise ValueError(f"irls_iterations must be >= 1, got {irls_iterations}")
        if smoothness < 0 or anchor <= 0:
            raise ValueError(f"need smoothness >= 0 and anchor > 0, got {smoothness} and {anchor}")
        self.grid_size = int(grid_size)
        self.smoothness = float(smoothness)
        self.anchor = float(anchor)
        self.sample_height = int(sample_height)
        self.irls_iterations = int(irls_iterations)
        self.huber_k = float(huber_k)
        self.weight_power = float(weight_power)
        self.pairs = str(pairs)
        self.affine = affine if affine is not None else GlobalAffineAlignment()
        self._geometry_cache = ValueCache()

    @property
    def cache(self) -> ValueCache:
        """Derived geometry by value (the pipeline replaces it with the one it owns; the affine solve shares it)."""
        return self._geometry_cache

    @cache.setter
    def cache(self, value: ValueCache) -> None:
        self._geometry_cache = value
        self.affine.cache = value

    def describe(self) -> dict:
        return {
            "name": "grid",
            "grid_size": self.grid_size,
            "smoothness": self.smoothness,
            "anchor": self.anchor,
            "sample_height": self.sample_height,
            "irls_iterations": self.irls_iterations,
            "pairs": self.pairs,
            "affine": self.affine.describe(),
        }

    def _geometry(self, pred: FacePredictions):
        """Cached per camera set: samples, pairs, each sample's 8 unknown columns, the pairs' sparse pattern."""
        cams = pred.cameras
        key = ("grid", self.grid_size, self.sample_height, self.weight_power, self.pairs, *cams.cache_key(),
               str(pred.disparity.device))
        return self.cache.get(key, lambda: self._build_geometry(pred))

    def _build_geometry(self, pred: FacePredictions):
        cams = pred.cameras
        samples, a, b = overlap_samples(pred, self.sample_height, self.weight_power, self.pairs)
        node_idx, node_w = grid_basis(samples.face_xy, self.grid_size)
        K = self.grid_size**2
        n = 2 * cams.num_faces * K
        gnode = samples.face_index[:, None] * K + node_idx  # [N, 4] global node ids
        cols = torch.cat((2 * gnode, 2 * gnode + 1), 1)  # [N, 8]: scale nodes, then shift nodes
        pair_cols = torch.cat((cols[a], cols[b]), 1)  # [M, 16]
        # flat index into the dense [n, n] normal matrix of each entry of a pair's 16 x 16 outer product
        flat = (pair_cols[:, :, None] * n + pair_cols[:, None, :]).reshape(-1)
        dev = samples.erp_index.device
        lap = grid_laplacian(self.grid_size, cams.num_faces, dev)
        # the same grid Laplacian for the scale and the shift unknowns (interleaved: 2 j and 2 j + 1)
        L2 = torch.zeros(n, n, dtype=torch.float64, device=dev)
        L2[0::2, 0::2] = lap
        L2[1::2, 1::2] = lap
        return samples, a, b, node_w, cols, flat, L2

    def solve(self, pred: FacePredictions) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Node grids: scale [F, G, G], shift [F, G, G] (float64), keep [F] bool, report."""
        s_aff, t_aff, keep, report = self.affine.solve(pred)
        samples, a, b, node_w, cols, flat, L2 = self._geometry(pred)
        Fn, G = pred.cameras.num_faces, self.grid_size
        K = G * G
        n = 2 * Fn * K  # unknowns, interleaved: scale of node j at 2 j, shift at 2 j + 1
        dev = samples.erp_index.device
        disp, w_pair = overlap_observations(pred, samples, a, b)
        c, face = samples.cos_axis, samples.face_index
        fa, fb = face[a], face[b]
        use_pair = keep[fa] & keep[fb] & torch.isfinite(disp[a]) & torch.isfinite(disp[b])
        d0 = torch.nan_to_num(disp)
        coef = torch.cat((node_w * (c * d0)[:, None], node_w * c[:, None]), 1)  # [N, 8]
        pair_coef = torch.cat((coef[a], -coef[b]), 1)  # [M, 16]: the pair's row of the design matrix
        outer = (pair_coef[:, :, None] * pair_coef[:, None, :]).reshape(len(pair_coef), -1)  # [M, 256]

        # anchor: each face's affine solution at all of its nodes; levels make the regularisers relative
        x0 = torch.stack((s_aff.repeat_interleave(K), t_aff.repeat_interleave(K)), 1).reshape(-1)
        face_disp = pred.disparity.double().reshape(Fn, -1).median(dim=1).values.to(dev)
        level_s = s_aff.abs().clamp_min(1e-12)
        level_t = (s_aff * face_disp).abs().clamp_min(1e-12)
        inv_level = torch.stack((1.0 / level_s, 1.0 / level_t), 1).repeat_interleave(K, 0).reshape(-1)
        L2 = inv_level[:, None] * L2 * inv_level[None, :]
        anchor_diag = inv_level**2
        pinned = (~keep).repeat_interleave(2 * K)
        free = (~pinned).double()

        x = x0
        sigma = None
        for it in range(self.irls_iterations):
            est = (coef * x[cols]).sum(1)  # [N] inverse distance of each sample under the current grids
            robust, m, sigma = huber_weights(est[a], est[b], use_pair, self.huber_k, self.affine.noise_floor)
            w = w_pair * robust / (m * m).clamp_min(1e-30)
            per_node = w.sum() / (Fn * K)  # regularisers scaled to the agreement term's total weight
            lhs = torch.zeros(n * n, dtype=torch.float64, device=dev)
            lhs.index_add_(0, flat, (outer * w[:, None]).reshape(-1))
            lhs = lhs.view(n, n) + (self.smoothness * per_node) * L2
            lhs.diagonal().add_(self.anchor * per_node * anchor_diag)
            rhs = self.anchor * per_node * anchor_diag * x0
            if bool(pinned.any()):  # dropped faces keep their anchor values (moved to the right-hand side)
                rhs = free * (rhs - lhs @ (x0 * (1.0 - free))) + (1.0 - free) * x0
                lhs = free[:, None] * lhs * free[None, :]
                lhs.diagonal().add_(1.0 - free)
            x = solve_spd(lhs, rhs)
        report = dict(report)
        report.update(
            {"grid_size": G, "grid_robust_sigma": None if sigma is None else float(sigma), "grid_iterations": self.irls_iterations}
        )
        return x[0::2].view(Fn, G, G), x[1::2].view(Fn, G, G), keep, report

    def align(self, pred: FacePredictions) -> AlignedFaces:
        scale, shift, keep, report = self.solve(pred)
        S = pred.cameras.size
        coords = (torch.arange(S, dtype=torch.float64, device=scale.device) + 0.5) * (2.0 / S) - 1.0
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        idx, w = grid_basis(torch.stack((xx.flatten(), yy.flatten()), 1), self.grid_size)  # [S*S, 4]
        K = self.grid_size**2
        scale_map = (scale.reshape(-1, K)[:, idx] * w).sum(-1).view(-1, S, S)
        shift_map = (shift.reshape(-1, K)[:, idx] * w).sum(-1).view(-1, S, S)
        keep_map = keep[:, None, None].expand_as(scale_map)
        return AlignedFaces.from_affine(pred, scale_map, shift_map, keep_map, report)
