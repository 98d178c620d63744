"""The sky's boundary snapped to the image (modules/fusion/sky_edges.py): halos of blurred depth edges go to the sky
by their colour, a boundary without colour contrast stays, the longitude seam wraps."""

import pytest
import torch

from modules.fusion.sky_edges import snap_sky_to_image

SKY, WALL = torch.tensor([0.45, 0.6, 0.95]), torch.tensor([0.55, 0.35, 0.3])


def scene(H=64, W=128, left=40, right=70, top=20):
    """A panorama whose upper part is sky except a facade (columns left..right-1 reaching up to row ``top``); the lower
    third is ground. Returns the image [3, H, W] (with a little texture) and the true sky mask [H, W]."""
    sky = torch.zeros(H, W, dtype=torch.bool)
    sky[: 2 * H // 3] = True
    sky[top:, left:right] = False
    g = torch.Generator().manual_seed(0)
    image = torch.where(sky, SKY[:, None, None], WALL[:, None, None]) + 0.03 * torch.rand(3, H, W, generator=g)
    return image, sky


def grow(mask, r):
    """The mask grown by r pixels: in x wrapping around, in y not past the poles."""
    out = mask.clone()
    for dx in range(-r, r + 1):
        shifted = torch.roll(mask, dx, 1)
        for dy in range(-r, r + 1):
            if dy > 0:
                out[dy:] |= shifted[:-dy]
            elif dy < 0:
                out[:dy] |= shifted[-dy:]
            else:
                out |= shifted
    return out


def test_a_halo_around_a_facade_goes_to_the_sky_and_the_facade_stays():
    image, truth = scene()
    predicted = truth & ~grow(~truth, 2)  # the facade's blurred depth leaves a 2-px surface halo in the sky
    assert int((predicted != truth).sum()) > 100
    out = snap_sky_to_image(predicted, image, band=3, window=8)
    assert torch.equal(out, truth)


def test_by_default_the_colour_only_adds_sky_both_ways_also_gives_pixels_back():
    image, truth = scene()
    bitten = truth | (grow(truth, 2) & ~truth)  # 2 px of facade and ground taken for sky
    assert torch.equal(snap_sky_to_image(bitten, image, band=3, window=8), bitten)
    assert torch.equal(snap_sky_to_image(bitten, image, band=3, window=8, both_ways=True), truth)


def test_without_colour_contrast_the_boundary_stays():
    _, truth = scene()
    predicted = truth & ~grow(~truth, 2)
    flat = torch.full((3, *truth.shape), 0.5)
    assert torch.equal(snap_sky_to_image(predicted, flat, band=3, window=8, both_ways=True), predicted)


def test_the_longitude_seam_wraps():
    image, truth = scene()
    image, truth = torch.roll(image, -50, 2), torch.roll(truth, -50, 1)  # the facade now straddles column 0
    assert not bool(truth[30, 0]) and not bool(truth[30, -1])
    predicted = truth & ~grow(~truth, 2)
    assert torch.equal(snap_sky_to_image(predicted, image, band=3, window=8), truth)


def test_band_zero_is_off_and_the_window_must_reach_past_the_band():
    image, truth = scene()
    predicted = truth & ~grow(~truth, 2)
    assert torch.equal(snap_sky_to_image(predicted, image, band=0, window=8), predicted)
    with pytest.raises(ValueError, match="window"):
        snap_sky_to_image(predicted, image, band=3, window=3)
    with pytest.raises(ValueError, match="does not match"):
        snap_sky_to_image(predicted, image[:, :, :64], band=3, window=8)
