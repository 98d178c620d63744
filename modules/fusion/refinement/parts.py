"""Parts of the ERP grid cut off by zero-weight edges (connected components) and their deflation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor



# ----------------------------------------------------------------------------------------------------------------
# Parts cut off by zero-weight edges, and their deflation
# ----------------------------------------------------------------------------------------------------------------


def label_graph(num_nodes: int, first: Tensor, second: Tensor) -> Tensor:
    """Connected components of an undirected graph, on the edges' device (no host round trip).

    Min-label hooking with pointer jumping (Shiloach-Vishkin style): every round each edge hooks the root of the
    larger label onto the smaller one (``scatter_reduce`` amin), then every node jumps to its root; a few dozen
    rounds even for long thin parts. Every node ends with the smallest node index of its part.

    Args:
        num_nodes: n; first, second: [E] int64 node indices of the edges.
    Returns:
        [n] int64: the smallest node index of each node's part.
    """
    label = torch.arange(num_nodes, device=first.device)
    if first.numel() == 0:
        return label
    while True:
        la, lb = label[first], label[second]
        low = torch.minimum(la, lb)
        hooked = label.clone()
        for target in (la, lb, first, second):
            hooked.scatter_reduce_(0, target, low, reduce="amin")
        while True:  # pointer jumping: every node to its root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, label):
            return label
        label = hooked


def connected_components(wx: Tensor, wy: Tensor, wp: Tensor | None = None) -> Tensor:
    """Connected parts of the ERP edge graph (edges of weight > 0, longitude wrapping, optional pole edges).

    On the device of ``wx``: the runs of each row joined by x-edges of positive weight (a segmented scan), then
    :func:`label_graph` over the y-, seam and pole edges of positive weight between the runs; parts
    are numbered in raster order of their first pixel.

    Args:
        wx, wy: [H, W] edge weights as in :func:`solve_refinement` (last row of wy ignored); wp: [2, W/2] or None.
    Returns:
        [H, W] int64 labels 0 .. n-1 on the device of ``wx``.
    """
    H, W = wx.shape
    cx = wx > 0
    # runs along each row first (a segmented scan: each pixel takes the first pixel of its run), so that the graph
    # left to label joins runs, not pixels; most of its edges are then duplicates and dropped
    starts = torch.ones(H, W, dtype=torch.bool, device=wx.device)
    starts[:, 1:] = ~cx[:, :-1]
    run_id = torch.cumsum(starts.view(-1), 0).view(H, W) - 1  # runs numbered in raster order
    run = torch.where(starts, run_id, torch.zeros_like(run_id)).cummax(dim=1).values  # each pixel's run
    first, second = [run[:, -1][cx[:, -1]]], [run[:, 0][cx[:, -1]]]  # the seam (v, W-1) -> (v, 0)
    cy = wy[:-1] > 0
    # a y-edge joining the same two runs as the y-edge to its left adds nothing
    same = torch.zeros_like(cy)
    same[:, 1:] = cy[:, :-1] & (run[:-1, 1:] == run[:-1, :-1]) & (run[1:, 1:] == run[1:, :-1])
    cy = cy & ~same
    first.append(run[:-1][cy])
    second.append(run[1:][cy])
    if wp is not None:
        half = W // 2
        for p, row in ((0, 0), (1, H - 1)):
            cp = wp[p] > 0
            first.append(run[row, :half][cp])
            second.append(run[row, half:][cp])
    num_runs = int(run_id[-1, -1]) + 1
    root = label_graph(num_runs, torch.cat(first), torch.cat(second))
    # each part's root is its first run in raster order: number the roots in that order
    is_root = root == torch.arange(num_runs, device=wx.device)
    return (torch.cumsum(is_root, 0) - 1)[root][run]


@dataclass
class _Deflation:
    """Exact deflation of the constants of parts of the graph cut off by zero-weight edges.

    Such a part's constant offset is set by its fidelity alone; with the row-mean preconditioner, which does not see
    the cuts, conjugate gradients would find it only slowly (and the residual norm would hardly show it). For a part
    c with no edge to the rest, A 1_c = fidelity * 1_c, so with Z = [1_c] (every part but the largest, with positive
    fidelity) the coarse matrix Z^T A Z = diag(sum_c fidelity) and the deflated iteration (A-DEF2) only needs
    per-part fidelity-weighted means. Parts with no fidelity at all are defined up to a constant: their mean
    correction is set to zero (they keep the blend's mean).

    idx: [M] flat indices of the pixels of deflated parts; comp: [M] their part 0..C-1; weight: [M] their fidelity;
    inv_mass: [C] 1 / fidelity sum of each part; free_idx, free_comp: pixels and parts without fidelity;
    free_count: [C0] pixels of each part without fidelity.
    """

    idx: Tensor
    comp: Tensor
    weight: Tensor
    inv_mass: Tensor
    free_idx: Tensor
    free_comp: Tensor
    free_count: Tensor

    @staticmethod
    def build(labels: Tensor, fidelity: Tensor) -> "_Deflation | None":
        """labels: [H, W] int64 from :func:`connected_components`; fidelity: [H, W]. None if nothing to deflate."""
        flat = labels.flatten()
        n = int(flat.max()) + 1
        if n == 1:
            return None
        f = fidelity.flatten()
        count = torch.bincount(flat, minlength=n)
        mass = torch.zeros(n, dtype=torch.float64, device=f.device).index_add_(0, flat, f.to(torch.float64))
        # a part whose fidelity is negligible (e.g. denormal confidences) is treated as having none: inverting its
        # mass would overflow
        has_fidelity = mass > 1e-12 * float(mass.max()) if float(mass.max()) > 0 else torch.zeros_like(mass, dtype=torch.bool)
        deflated = has_fidelity.clone()
        deflated[int(torch.argmax(count))] = False  # the row-mean preconditioner already handles the main part
        free = ~has_fidelity

        def select(mask: Tensor) -> tuple[Tensor, Tensor]:
            remap = torch.cumsum(mask, 0) - 1
            idx = torch.nonzero(mask[flat]).flatten()
            return idx, remap[flat[idx]]

        idx, comp = select(deflated)
        free_idx, free_comp = select(free)
        return _Deflation(
            idx=idx,
            comp=comp,
            weight=f[idx],
            inv_mass=(1.0 / mass[deflated]).to(f.dtype),
            free_idx=free_idx,
            free_comp=free_comp,
            free_count=count[free].to(f.dtype),
        )

    def _part_sums(self, values: Tensor) -> Tensor:
        """values: [M] -> [C] sums per deflated part."""
        return torch.zeros_like(self.inv_mass).index_add_(0, self.comp, values)

    def coarse(self, b: Tensor) -> Tensor:
        """Q b = Z (Z^T A Z)^-1 Z^T b. b: [H, W] -> [H, W] (zero outside the deflated parts)."""
        x = torch.zeros_like(b)
        x.view(-1)[self.idx] = (self._part_sums(b.view(-1)[self.idx]) * self.inv_mass)[self.comp]
        return x

    def project_(self, y: Tensor) -> Tensor:
        """y <- (I - Q A) y in place (removes each deflated part's fidelity-weighted mean). y: [H, W]."""
        flat = y.view(-1)
        means = self._part_sums(self.weight * flat[self.idx]) * self.inv_mass
        flat.index_add_(0, self.idx, means[self.comp], alpha=-1.0)
        return y

    def fix_free_(self, x: Tensor) -> Tensor:
        """Sets the mean of x to 0 on every part without fidelity, in place. x: [H, W]."""
        if self.free_idx.numel():
            flat = x.view(-1)
            sums = torch.zeros_like(self.free_count).index_add_(0, self.free_comp, flat[self.free_idx])
            flat.index_add_(0, self.free_idx, (sums / self.free_count)[self.free_comp], alpha=-1.0)
        return x
