"""Stitching quality: how visible the face borders are in a fused ERP map.

The seam score is the mean jump of log-distance across the ERP pixel edges that cross a face border (one end inside
a face's image, the other outside), divided by the same statistic of the ground truth on the same edges. 1.0 means
the borders are as smooth as the scene itself (no visible seam); above 1, the stitching adds jumps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..geometry.tangent import TangentCameras, erp_face_samples

__all__ = ["face_border_edges", "seam_score"]


def face_border_edges(cameras: TangentCameras, height: int, width: int) -> tuple[Tensor, Tensor]:
    """ERP edges that cross the border of at least one face's image.

    Returns:
        across_x [H, W]: the edge (v, u) -> (v, u + 1 mod W) crosses a border; across_y [H, W]: the edge
        (v, u) -> (v + 1, u) does (last row False).
    """
    samples = erp_face_samples(cameras, height, width)
    across_x = torch.zeros(height, width, dtype=torch.bool, device=samples.erp_index.device)
    across_y = torch.zeros_like(across_x)
    for f in range(cameras.num_faces):
        inside = torch.zeros(height * width, dtype=torch.bool, device=across_x.device)
        inside[samples.erp_index[samples.face_index == f]] = True
        inside = inside.view(height, width)
        across_x |= inside ^ torch.roll(inside, -1, dims=1)
        across_y[:-1] |= inside[:-1] ^ inside[1:]
    return across_x, across_y


def _mean_jump(log_d: Tensor, across_x: Tensor, across_y: Tensor) -> Tensor:
    """Mean |jump| over the border edges given; edges with a non-finite end (sky) are skipped."""
    jx = (torch.roll(log_d, -1, dims=1) - log_d).abs()[across_x]
    jy = (log_d[1:] - log_d[:-1]).abs()[across_y[:-1]]
    j = torch.cat((jx, jy))
    return j[torch.isfinite(j)].mean()


def seam_score(distance: Tensor, truth: Tensor, cameras: TangentCameras) -> float:
    """Mean |jump of log-distance| across face borders, relative to the truth's on the same edges.

    Args:
        distance: [H, W] fused distance (any global scale: only log differences count).
        truth: [H, W] ground-truth distance (``inf`` for the sky; edges touching sky in either map are skipped).
        cameras: the faces whose borders are examined.
    """
    if distance.shape != truth.shape:
        raise ValueError(f"distance {tuple(distance.shape)} and truth {tuple(truth.shape)} differ in shape")
    H, W = distance.shape
    ax, ay = face_border_edges(cameras.to(distance.device), H, W)
    # only edges between surfaces count (sky, ``inf``, in either map is left out of both)
    surface = torch.isfinite(distance) & torch.isfinite(truth.to(distance.device))
    ax = ax & surface & torch.roll(surface, -1, dims=1)
    ay = ay.clone()
    ay[:-1] &= surface[:-1] & surface[1:]
    pred = _mean_jump(torch.log(distance.double()), ax, ay)
    ref = _mean_jump(torch.log(truth.to(distance.device).double()), ax, ay)
    return float(pred / ref)
