"""Face preprocessing: identity chain, Gaussian blur, CLAHE, dark-channel dehazing, config builder."""

import pytest
import torch

from modules.geo_predictors.enhance import (
    CLAHE,
    Dehaze,
    GaussianBlur,
    PreprocessChain,
    build_preprocess_chain,
    dark_channel,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_empty_chain_returns_input_unchanged():
    images = torch.rand(2, 3, 8, 8, generator=_gen())
    assert PreprocessChain()(images) is images
    assert build_preprocess_chain(None)(images) is images
    default_off = build_preprocess_chain({"gaussian_blur": {"sigma": 2.0}, "clahe": {}, "dehaze": {"enabled": False}})
    assert len(default_off) == 0 and default_off(images) is images


def test_gaussian_blur():
    images = torch.rand(2, 3, 32, 32, generator=_gen(1), dtype=torch.float64)
    out = GaussianBlur(sigma=1.5)(images)
    assert out.shape == images.shape and out.dtype == torch.float64
    assert float(out.std()) < 0.5 * float(images.std())  # white noise is smoothed
    assert float(out.mean()) == pytest.approx(float(images.mean()), abs=0.01)
    const = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(GaussianBlur(sigma=1.0)(const), const, atol=1e-6)
    # a centred impulse spreads to the kernel, which sums to one and is symmetric
    impulse = torch.zeros(1, 3, 21, 21)
    impulse[..., 10, 10] = 1.0
    spread = GaussianBlur(sigma=1.0)(impulse)
    assert float(spread.sum()) == pytest.approx(3.0, abs=1e-5)
    assert torch.allclose(spread, spread.flip(-1)) and torch.allclose(spread, spread.transpose(-1, -2))
    with pytest.raises(ValueError, match="sigma > 0"):
        GaussianBlur(sigma=0.0)


def test_clahe_raises_contrast_and_keeps_grey():
    # a low-contrast grey ramp in [0.4, 0.5]
    ramp = torch.linspace(0.4, 0.5, 64)
    images = ramp[None, None, None, :].expand(2, 3, 64, 64).contiguous()
    out = CLAHE(clip_limit=4.0, tile_grid=(2, 2))(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 1.5 * float(images.std())  # contrast is stretched
    assert float((out[:, 0] - out[:, 1]).abs().max()) < 1e-2  # grey stays grey (hue kept)
    # brightness order is kept up to the tile interpolation (a couple of 8-bit levels)
    assert torch.all(out[..., 1:] >= out[..., :-1] - 3 / 255)
    assert float(out[..., -1].mean() - out[..., 0].mean()) > 0.2
    with pytest.raises(ValueError, match="clip_limit"):
        CLAHE(clip_limit=0)


def test_dark_channel_is_min_over_window_and_channels():
    images = torch.ones(1, 3, 5, 5)
    images[0, 1, 2, 2] = 0.1
    dc = dark_channel(images, patch_size=3)
    assert dc.shape == (1, 1, 5, 5)
    assert float(dc[0, 0, 1, 1]) == pytest.approx(0.1) and float(dc[0, 0, 0, 0]) == 1.0


def test_dehaze_recovers_a_synthetic_hazy_scene():
    # scene radiance with a zero channel everywhere (dark channel 0), seen through uniform haze t = 0.5 with
    # atmospheric light A = 0.9; a "sky" block shows the atmosphere itself (t = 0), as the prior expects.
    g = _gen(2)
    J = torch.rand(1, 3, 48, 48, generator=g) * 0.8 + 0.1
    zero = torch.randint(0, 3, (1, 1, 48, 48), generator=g)
    J = J.scatter(1, zero, 0.0)
    A, t = 0.9, 0.5
    hazy = J * t + A * (1 - t)
    hazy[..., :12, :12] = A
    dehazed = Dehaze(patch_size=3, omega=1.0, t0=0.1, top_fraction=0.01, guided_radius=0)(hazy)
    region = (..., slice(16, None), slice(16, None))  # away from the sky block
    before = float((hazy[region] - J[region]).abs().mean())
    after = float((dehazed[region] - J[region]).abs().mean())
    assert after < 0.1 * before
    refined = Dehaze(patch_size=3, omega=0.95, top_fraction=0.01, guided_radius=4)(hazy)
    assert float((refined[region] - J[region]).abs().mean()) < 0.5 * before
    assert float(refined.min()) >= 0.0 and float(refined.max()) <= 1.0


def test_dehaze_shared_atmosphere_uses_the_whole_batch():
    hazy = torch.full((2, 3, 16, 16), 0.5)
    hazy[0, :, :4, :4] = 0.9  # only the first face sees the sky
    step = Dehaze(patch_size=3, top_fraction=0.01, guided_radius=0, shared_atmosphere=True)
    light = step.atmospheric_light(hazy, dark_channel(hazy, 3))
    assert torch.allclose(light, torch.full_like(light, 0.9))
    own = Dehaze(patch_size=3, top_fraction=0.01, guided_radius=0, shared_atmosphere=False)
    light_own = own.atmospheric_light(hazy, dark_channel(hazy, 3))
    assert float(light_own[1].max()) == pytest.approx(0.5)


def test_build_chain_order_and_errors():
    chain = build_preprocess_chain(
        {
            "order": ["clahe", "gaussian_blur"],
            "gaussian_blur": {"enabled": True, "sigma": 0.8},
            "clahe": {"enabled": True, "clip_limit": 3.0, "tile_grid": [4, 4]},
            "dehaze": {"enabled": False},
        }
    )
    assert [s["name"] for s in chain.describe()] == ["clahe", "gaussian_blur"]
    images = torch.rand(1, 3, 16, 16, generator=_gen(3))
    out = chain(images)
    assert out.shape == images.shape and not torch.equal(out, images)
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        build_preprocess_chain({"sharpen": {"enabled": True}})
    with pytest.raises(ValueError, match=r"images \[B, 3, h, w\]"):
        chain(torch.rand(3, 16, 16))
