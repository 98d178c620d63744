"""The sky's boundary, cleaned up after the predictions: which side of a blurred depth edge a pixel is on (decided by
its colour), and the surface pixels next to the sky freed of the sky's share in their disparity.

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

__all__ = ["snap_sky_to_image", "extend_surfaces_to_sky"]


def _box_sum(x: Tensor, r: int) -> Tensor:
    """Sums of x [C, H, W] over (2r + 1)^2 windows (columns wrap around, rows replicate at the poles: ERP), in x's
    dtype, separably by cumulative sums (exact for 0/1 masks in float32 up to (H + 2r) (2r + 1) < 2^24)."""
    k = 2 * r + 1
    p = pad_erp(x[None], r)[0]
    c = F.pad(p.cumsum(-1), (1, 0))
    rows = c[..., k:] - c[..., :-k]  # [C, H + 2r, W] sums along each row's window
    c = F.pad(rows.cumsum(-2), (0, 0, 1, 0))
    return c[:, k:] - c[:, :-k]


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


def _bilinear_erp(x: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """x [H, W] sampled bilinearly at pixel coordinates (u column, v row; pixel centres at integers), columns
    wrapping around, NaN beyond the first / last row's centre and wherever a texel used is NaN. u, v: any shape."""
    H, W = x.shape
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    c0 = u0.long().remainder_(W)
    c1 = c0 + 1
    c1 = torch.where(c1 == W, torch.zeros_like(c1), c1)
    r0 = v0.long()
    r1 = r0 + 1
    flat = x.reshape(-1)
    nan = torch.full((), float("nan"), dtype=x.dtype, device=x.device)

    def row(r: Tensor) -> Tensor:  # the row's two texels blended along u; NaN outside the rows
        base = r.clamp(0, H - 1) * W
        a, b = flat[base + c0], flat[base + c1]
        return torch.where((r >= 0) & (r < H), a * (1 - fu) + b * fu, nan)

    return row(r0) * (1 - fv) + row(r1) * fv


#: band pixels sampled at a time (bounds the temporaries to ~100 MB)
_CHUNK = 1 << 17


def extend_surfaces_to_sky(inv_distance: Tensor, sky: Tensor, band: int, grazing: float,
                           max_gain: float = 2.0, noise: float = 1.0) -> Tensor:
    """Undo the sky's share in the surface pixels next to it.

    Networks blur depth edges over a few of their own pixels, and the sky's disparity is ~0, so a facade pixel within
    that blur of the sky carries a mixture: its inverse distance is too low (too far; a halo of floating points
    behind every roof line and tree top), never too high. Each surface pixel within ``band`` pixels of the sky takes
    the value its surface has further in, extrapolated to it: along the direction away from the sky (the gradient
    of the box-smoothed sky mask), 5 x 5 samples (5 depths starting ``band`` + 1 pixels from the boundary, 5 offsets
    across, spacing band / 5 and band / 10 pixels) fit a line in depth, evaluated at the pixel, less ``noise`` x the
    samples' RMS about the line (so that noise alone raises no pixel: the larger of two noisy values is biased
    nearer). One-sided: the pixel keeps the larger of its own and the extrapolated inverse distance, so nothing moves
    farther. Grazing surfaces are left alone (the ground toward the horizon, whose distance changes by more across the
    band than the blur's share): where the line's change over the extrapolated distance exceeds ``grazing`` x the
    line's value at the pixel, or any sample is sky or beyond the poles. A pixel whose extrapolated value exceeds
    ``max_gain`` x its own keeps its own too: it would be more sky than surface (the sky detector's ``edge_ratio``
    sends those to the sky), so the samples are more likely another, nearer surface (a far roof above a near one)
    than its own.

    Args:
        inv_distance: [H, W] inverse distance (any value where ``sky``).
        sky: [H, W] bool.
        band: pixels (of this map) next to the sky that are re-estimated (0: no change).
        grazing: see above (e.g. 0.3).
        max_gain: see above (> 1; e.g. 2).
        noise: see above (>= 0; e.g. 1).
    Returns:
        [H, W] inverse distance (``inv_distance`` outside the band; the same tensor when nothing changes).
    """
    if band <= 0 or not bool(sky.any()) or bool(sky.all()):
        return inv_distance
    H, W = sky.shape
    dt = inv_distance.dtype if inv_distance.dtype == torch.float64 else torch.float32
    # box-smoothed sky share s (radius band): for a straight boundary at distance delta from a pixel centre,
    # s = (band + 0.5 - delta) / (2 band + 1), which gives each pixel's depth into the surface; its gradient points
    # into the sky
    k = 2 * band + 1
    share = _box_sum(sky[None].to(dt), band)[0].div_(k * k)
    in_band = ~sky & (share > 0)
    if not bool(in_band.any()):
        return inv_distance
    v, u = torch.nonzero(in_band, as_tuple=True)
    # central differences of the share at the band pixels (columns wrap, rows clamp), pointing away from the sky
    up, down = (v - 1).clamp_min(0), (v + 1).clamp_max(H - 1)
    nv = share[up, u] - share[down, u]
    nu = share[v, (u - 1) % W] - share[v, (u + 1) % W]
    norm = torch.sqrt(nv * nv + nu * nu)
    ok = norm > 0
    nv, nu = nv / norm.clamp_min(1e-12), nu / norm.clamp_min(1e-12)
    depth = (band + 0.5 - share[v, u] * k + 0.5).clamp(1, band)  # ~ pixels to the sky (1: touching it)
    step, across = band / 5.0, band / 10.0
    t = (band + 1 - depth)[:, None] + step * torch.arange(5, device=sky.device, dtype=dt)[None, :]  # [N, 5]
    s = across * torch.arange(-2, 3, device=sky.device, dtype=dt)  # [5]
    m = torch.where(sky, torch.full_like(inv_distance, float("nan")), inv_distance).to(dt)
    tm = t.mean(1)
    line, scatter, slope = torch.empty_like(tm), torch.empty_like(tm), torch.empty_like(tm)
    finite = torch.empty_like(ok)
    for i in range(0, len(v), _CHUNK):  # in chunks: an 8K panorama has ~10^6 band pixels
        c = slice(i, i + _CHUNK)
        uu = u[c].to(dt)[:, None, None] + t[c, None, :] * nu[c, None, None] - s[None, :, None] * nv[c, None, None]
        vv = v[c].to(dt)[:, None, None] + t[c, None, :] * nv[c, None, None] + s[None, :, None] * nu[c, None, None]
        samples = _bilinear_erp(m, uu, vv)  # [n, 5 across, 5 depths]
        vals = samples.mean(1)
        vm, dtc = vals.mean(1), t[c] - tm[c, None]
        b = ((dtc * (vals - vm[:, None])).sum(1) / (dtc * dtc).sum(1)).clamp_min(0)  # receding: extended flat
        fit = vm[:, None] + b[:, None] * dtc  # [n, 5] the line at each depth
        rms = (samples - fit[:, None, :]).square().mean((1, 2)).sqrt()
        line[c], scatter[c], slope[c] = vm - b * tm[c], rms, b
        finite[c] = torch.isfinite(samples).flatten(1).all(1)
    # the line at the pixel less the samples' own scatter about it: a noisy pixel is raised only where its deficit
    # exceeds the surface's noise (the larger of two noisy values alone would be biased nearer)
    extrapolated = line - noise * scatter
    here = m[v, u]
    ok = ok & finite & (slope * tm <= grazing * line) & (extrapolated <= max_gain * here)
    out = inv_distance.clone()
    out[v[ok], u[ok]] = torch.maximum(here[ok], extrapolated[ok]).to(out.dtype)
    return out
