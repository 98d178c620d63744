"""face_levels' per-row quantile (one partial topk) equals torch.nanquantile bit for bit, NaN rows included."""

from __future__ import annotations

import pytest
import torch

from modules.fusion.disparity_curves import _quantile_rows, face_levels


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantile_rows_equals_nanquantile(n, dtype):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(5, n, generator=g).abs().to(dtype)
    ok = torch.rand(5, n, generator=g) > 0.3
    ok[0], ok[1] = False, True  # a row without entries (NaN) and a full row
    ref = torch.nanquantile(torch.where(ok, a, torch.full_like(a, float("nan"))), 0.95, dim=1)
    got = _quantile_rows(a, ok, 0.95)
    assert torch.equal(torch.isnan(ref), torch.isnan(got))
    assert torch.equal(ref.nan_to_num(), got.nan_to_num())


def test_face_levels_with_non_finite_and_invalid_pixels():
    d = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1
    d[0, 0, 0] = float("nan")
    d[1] = float("inf")  # no usable pixel: level 1
    valid = torch.ones_like(d, dtype=torch.bool)
    valid[2, :4] = False
    level = face_levels(d, valid)
    a = torch.where(valid & torch.isfinite(d), d.abs(), torch.full_like(d, float("nan"))).reshape(3, -1)
    ref = torch.nanquantile(a, 0.95, dim=1)
    assert level[1] == 1 and level[0] == ref[0] and level[2] == ref[2]
