"""Parts of the ERP grid cut off by zero-weight edges (connected components) and their deflation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as csgraph_components
from torch import Tensor



# ----------------------------------------------------------------------------------------------------------------
# Parts cut off by zero-weight edges, and their deflation
# ----------------------------------------------------------------------------------------------------------------


def connected_components(wx: Tensor, wy: Tensor, wp: Tensor | None = None) -> Tensor:
    """Connected parts of the ERP edge graph (edges of weight > 0, longitude wrapping, optional pole edges).

    Labelled with ``scipy.ndimage.label`` on a doubled grid (pixels at even positions, edges between them), then
    the parts joined by the seam (column W-1 to 0) and pole edges are merged.

    Args:
        wx, wy: [H, W] edge weights as in :func:`solve_refinement` (last row of wy ignored); wp: [2, W/2] or None.
    Returns:
        [H, W] int64 labels 0 .. n-1 on the device of ``wx``.
    """
    H, W = wx.shape
    cx = (wx > 0).cpu().numpy()
    cy = (wy[:-1] > 0).cpu().numpy()
    grid = np.zeros((2 * H - 1, 2 * W), dtype=bool)
    grid[0::2, 0::2] = True
    grid[0::2, 1::2] = cx
    grid[1::2, 0::2] = cy
    lab, n = ndimage.label(grid)
    del grid
    node = lab[0::2, 0::2].astype(np.int64) - 1
    del lab
    a, b = [node[cx[:, -1], -1]], [node[cx[:, -1], 0]]  # seam edges (v, W-1) -> (v, 0)
    if wp is not None:
        half = W // 2
        cp = (wp > 0).cpu().numpy()
        for p, row in ((0, 0), (1, -1)):
            a.append(node[row, :half][cp[p]])
            b.append(node[row, half:][cp[p]])
    a, b = np.concatenate(a), np.concatenate(b)
    if np.any(a != b):
        merge = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
        _, mapping = csgraph_components(merge, directed=False)
        node = mapping.astype(np.int64)[node]
    return torch.from_numpy(node).to(wx.device)


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
