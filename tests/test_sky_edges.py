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


# --- surfaces next to the sky freed of the sky's share (extend_surfaces_to_sky) ---

from modules.fusion.sky_edges import extend_surfaces_to_sky  # noqa: E402


def facade_next_to_sky(H=64, W=128, top=20, value=0.05, seam=False):
    """Inverse distance of a facade (constant ``value``, a plane seen face-on is near enough constant over a few pixels)
    below a sky (rows < top); the 3 rows under the sky carry a blurred edge's mixture with the sky's 0 (x 0.55, 0.75,
    0.9: pixels with more than half sky go to the sky in the detector, edge_ratio). With ``seam`` the sky only spans the columns around the +-180 degree seam. Returns (observed, truth, sky)."""
    sky = torch.zeros(H, W, dtype=torch.bool)
    cols = torch.cat((torch.arange(W - 20, W), torch.arange(0, 20))) if seam else torch.arange(W)
    sky[:top, cols] = True
    truth = torch.where(sky, torch.zeros(H, W, dtype=torch.float64), torch.full((H, W), value, dtype=torch.float64))
    observed = truth.clone()
    for i, share in enumerate((0.55, 0.75, 0.9)):
        observed[top + i, cols] *= share
    return observed, truth, sky


def test_a_blurred_facade_top_gets_its_surface_value_and_pixels_beyond_the_band_stay():
    observed, truth, sky = facade_next_to_sky()
    out = extend_surfaces_to_sky(observed, sky, band=5, grazing=0.3)
    assert torch.allclose(out[20:25], truth[20:25], rtol=1e-9)  # every contaminated row restored
    assert torch.equal(out[25:], observed[25:])  # beyond the band nothing moves
    assert torch.equal(out[sky], observed[sky])


def test_the_longitude_seam_wraps_for_the_extension():
    observed, truth, sky = facade_next_to_sky(seam=True)
    out = extend_surfaces_to_sky(observed, sky, band=5, grazing=0.3)
    # under the sky, on both sides of the seam, away from the sky's side edges
    for col in (0, 5, 127, 120):
        assert torch.allclose(out[20:23, col], truth[20:23, col], rtol=1e-9), col


def test_grazing_ground_toward_the_horizon_is_left_alone():
    """The ground's inverse distance grows ~linearly with the angle below the horizon, from ~0 at the sky: across the
    band it changes by more than its own value, so it is not extrapolated (on this exact line the extrapolation would
    even be right, but the blended maps of real faces are not linear at the pixel scale there, and the stitching
    benchmark's far ground came out up to 20 % too near when it was)."""
    H, W, top = 64, 128, 32
    sky = torch.zeros(H, W, dtype=torch.bool)
    sky[:top] = True
    rows = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    ground = torch.where(sky, torch.zeros_like(rows), 0.004 * (rows - top + 0.5))
    observed = ground.clone()
    observed[top] *= 0.5  # even with a mixed first row
    assert torch.equal(extend_surfaces_to_sky(observed, sky, band=5, grazing=0.3), observed)


def test_never_farther_and_noise_only_moves_pixels_in_the_band():
    g = torch.Generator().manual_seed(1)
    observed, _, sky = facade_next_to_sky()
    noisy = torch.where(sky, observed, observed * (1 + 0.05 * torch.randn(observed.shape, generator=g, dtype=torch.float64)))
    out = extend_surfaces_to_sky(noisy, sky, band=5, grazing=0.3)
    assert bool((out >= noisy).all())  # one-sided: a blurred edge only ever makes surfaces look farther
    assert torch.equal(out[25:], noisy[25:])
    # the contaminated rows come back to within the noise of the facade
    assert float((out[20:23] / 0.05 - 1).abs().mean()) < 0.06 < float((noisy[20:23] / 0.05 - 1).abs().mean())


def test_a_far_roof_above_a_much_nearer_surface_is_not_pulled_onto_it():
    """Samples further in that are more than max_gain x nearer belong to another surface (a far building seen over a
    near one) more likely than to a blurred edge of this one: the far roof keeps its value."""
    observed, _, sky = facade_next_to_sky(value=0.2)
    observed[20:23] = 0.02  # a far roof 3 rows tall under the sky, the near facade (10 x nearer) below it
    out = extend_surfaces_to_sky(observed, sky, band=5, grazing=0.3, max_gain=2.0)
    assert torch.equal(out[20:23], observed[20:23])
    assert not torch.equal(extend_surfaces_to_sky(observed, sky, band=5, grazing=0.3, max_gain=100.0)[20:23],
                           observed[20:23])


def test_noise_alone_raises_few_pixels():
    """A facade next to the sky with noise but no blur: keeping the larger of a pixel and a noisy extrapolation would
    pull the band nearer on average; lowering the extrapolation by the samples' scatter (noise=1) keeps that small."""
    _, truth, sky = facade_next_to_sky()
    g = torch.Generator().manual_seed(2)
    noisy = torch.where(sky, truth, truth * (1 + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64)))

    def bias(noise):  # mean relative change of the band, share of its pixels raised
        out = extend_surfaces_to_sky(noisy, sky, band=5, grazing=0.3, max_gain=2.0, noise=noise)
        return float(((out[20:25] - noisy[20:25]) / truth[20:25]).mean()), float((out[20:25] != noisy[20:25]).double().mean())

    plain, scattered = bias(0.0), bias(1.0)
    assert scattered[0] < 0.5 * plain[0] and scattered[0] < 0.006, (plain, scattered)
    assert scattered[1] < 0.5 * plain[1], (plain, scattered)


def test_no_sky_or_band_zero_returns_the_input():
    observed, _, sky = facade_next_to_sky()
    assert extend_surfaces_to_sky(observed, torch.zeros_like(sky), 5, 0.3) is observed
    assert extend_surfaces_to_sky(observed, sky, 0, 0.3) is observed
    assert extend_surfaces_to_sky(observed, torch.ones_like(sky), 5, 0.3) is observed


def test_the_band_is_a_share_of_the_face_width():
    """edge_band is a share of the face width (the networks see every face at their input size, so their blur is a
    share of the face), converted to the output's pixels at the face centre."""
    from modules.fusion.sky import SkyDetector
    from modules.geometry.projections import IcosahedronProjection

    det = SkyDetector(edge_band=0.012)
    small = IcosahedronProjection(face_size=128).cameras("cpu", torch.float64)
    large = IcosahedronProjection(face_size=512).cameras("cpu", torch.float64)
    # 127-degree faces: 2 tan(63.5 deg) = 4.02 rad at the centre's scale; 0.012 of it is 2.76 deg
    assert det.edge_band_pixels(small, 256) == 4  # 0.70 deg per ERP pixel
    assert det.edge_band_pixels(large, 256) == 4  # the face's pixel count does not matter
    assert det.edge_band_pixels(large, 1024) == 16
    assert det.edge_band_pixels(None, 256) == 0
    assert SkyDetector(edge_band=0).edge_band_pixels(large, 256) == 0
