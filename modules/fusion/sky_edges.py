"""The sky's boundary snapped to the image: which side of a blurred depth edge a pixel is on, decided by its colour.

Networks smear depth edges, so the sky mask found from the predictions (:mod:`modules.fusion.sky`) is uncertain a few
pixels either side of its boundary: a halo of sky pixels that carry some of a facade's disparity comes out as surface
(floating fringes in every mesh), and facade pixels mixed with the sky's zero disparity come out as sky (bites out of
the buildings). Colour separates them where depth cannot: within ``band`` pixels of the boundary, each pixel goes to
the side whose local mean colour (over the sure pixels of that side within ``window`` pixels, i.e. outside the band)
is nearer to its own. A pixel with no sure pixel of one of the sides nearby keeps its label, so a boundary without a
colour contrast stays where the depth put it.

By default the colour only adds sky (``both_ways=False``): the halo goes, and no pixel the predictions took for sky
comes back as a surface, whose distance there would only be its neighbours' (the stitching benchmark: sky recall up
on every outdoor cell, surface AbsRel unchanged). ``both_ways=True`` also gives facade pixels back to the surfaces
(fewer bites, at the price of those pixels' filled distances).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry.erp_maps import pad_erp

__all__ = ["snap_sky_to_image"]


def _box_sum(x: Tensor, r: int) -> Tensor:
    """Sums of x [C, H, W] over (2r + 1)^2 windows (ERP wrap-around), by cumulative sums in float64."""
    p = pad_erp(x.double()[None], r)[0]
    c = F.pad(p.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    k = 2 * r + 1
    return (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k])


def _dilate(mask: Tensor, r: int) -> Tensor:
    """[H, W] bool grown by r pixels (square window, ERP wrap-around), separably."""
    x = pad_erp(mask[None, None].to(torch.float32), r)
    x = F.max_pool2d(x, (1, 2 * r + 1), stride=1)
    return F.max_pool2d(x, (2 * r + 1, 1), stride=1)[0, 0] > 0


def snap_sky_to_image(sky: Tensor, image: Tensor, band: int, window: int, both_ways: bool = False) -> Tensor:
    """Re-decide the pixels near the sky's boundary by colour.

    Args:
        sky: [H, W] bool, the sky mask from the predictions.
        image: [3, H, W] the panorama's colours (any range; the same for both sides), on sky's device.
        band: pixels within this distance of the boundary (either side) are re-decided (0: no change).
        window: radius of the neighbourhood whose sure pixels give each side's local mean colour (> band).
        both_ways: False: only surface pixels that look like the sky become sky; True: sky pixels that look like
            the surface become surface too.
    Returns:
        [H, W] bool, the refined mask.
    """
    if band <= 0 or not bool(sky.any()) or bool(sky.all()):
        return sky
    if window <= band:
        raise ValueError(f"window ({window}) must be larger than band ({band})")
    if tuple(image.shape[-2:]) != tuple(sky.shape) or image.shape[0] != 3:
        raise ValueError(f"image {tuple(image.shape)} does not match the sky mask {tuple(sky.shape)}")
    uncertain = _dilate(sky, band) & _dilate(~sky, band)
    if not bool(uncertain.any()):
        return sky
    sure_sky = (sky & ~uncertain).to(torch.float64)[None]
    sure_surface = (~sky & ~uncertain).to(torch.float64)[None]
    img = image.to(torch.float64)
    sums = _box_sum(torch.cat((sure_sky, sure_surface, img * sure_sky, img * sure_surface)), window)
    n_sky, n_surface = sums[0], sums[1]
    mean_sky = sums[2:5] / n_sky.clamp_min(1.0)
    mean_surface = sums[5:8] / n_surface.clamp_min(1.0)
    to_sky, to_surface = ((img - mean_sky) ** 2).sum(0), ((img - mean_surface) ** 2).sum(0)
    decide = uncertain & (n_sky > 0) & (n_surface > 0)
    out = sky | (decide & (to_sky < to_surface))
    if both_ways:
        out = out & ~(decide & (to_surface < to_sky))  # ties keep their label
    return out
