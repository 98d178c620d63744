"""Preconditioner: the operator with row-mean coefficients, diagonalised by the FFT in longitude and solved by
cyclic reduction in latitude (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .operator import _System


# ----------------------------------------------------------------------------------------------------------------
# Preconditioner: row-mean coefficients, FFT in longitude, cyclic reduction in latitude
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _CRLevel:
    """One cyclic-reduction level of a batch of tridiagonal systems of length n; coefficients [rows, K, 2]."""

    alpha: Tensor  # [n_odd, K, 2]   multiplier of the left (even) neighbour's equation
    gamma: Tensor  # [n_right, K, 2] multiplier of the right (even) neighbour's equation
    a_even: Tensor  # [n_even, K, 2] a / b of the even equations
    c_even: Tensor  # [n_even, K, 2] c / b of the even equations
    inv_b_even: Tensor  # [n_even, K, 2]


class _CyclicReduction:
    """Exact batched solver of tridiagonal systems  a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i  along dim 0.

    Factorised once (in float64) from real coefficients a, b, c: [n, K] (a[0] and c[n-1] unused); ``solve_`` takes
    d: [n, K, 2] (real and imaginary part of K complex right-hand sides) in the working dtype. Each level eliminates
    the even-indexed unknowns from the odd-indexed equations: log2(n) levels, each a few vectorised operations over
    all K systems. Coefficients are stored expanded to [.., K, 2] (broadcasting over the last dim is much slower).
    """

    def __init__(self, a: Tensor, b: Tensor, c: Tensor, dtype: torch.dtype):
        self.levels: list[_CRLevel] = []
        a, c = a.clone(), c.clone()
        a[0] = 0
        c[-1] = 0

        def store(t: Tensor) -> Tensor:
            return t.to(dtype)[..., None].expand(*t.shape, 2).contiguous()

        while b.shape[0] > 1:
            n = b.shape[0]
            n_odd, n_even = n // 2, (n + 1) // 2
            n_right = min(n_odd, n_even - 1)  # odd t has a right even neighbour t+1 only if t+1 < n_even
            ae, be, ce = a[0::2], b[0::2], c[0::2]
            ao, bo, co = a[1::2], b[1::2], c[1::2]
            alpha = -ao / be[:n_odd]
            gamma = -co[:n_right] / be[1 : n_right + 1]
            new_a = alpha * ae[:n_odd]
            new_b = bo + alpha * ce[:n_odd]
            new_b[:n_right] += gamma * ae[1 : n_right + 1]
            new_c = torch.zeros_like(new_b)
            new_c[:n_right] = gamma * ce[1 : n_right + 1]
            self.levels.append(
                _CRLevel(store(alpha), store(gamma), store(ae / be), store(ce / be), store(1.0 / be))
            )
            a, b, c = new_a, new_b, new_c
        self.inv_b_last = store(1.0 / b)

    def solve_(self, d: Tensor) -> Tensor:
        """Solves in place: d: [n, K, 2] right-hand sides -> the solutions, in the same storage.

        Level l works on the strided view of rows (2^l - 1) :: 2^l; the forward sweep overwrites the odd rows of each
        level with their reduced right-hand sides, the backward sweep the even rows with their solutions.
        """
        views = []
        cur = d
        for lev in self.levels:
            views.append(cur)
            even, odd = cur[0::2], cur[1::2]
            n_odd, n_right = lev.alpha.shape[0], lev.gamma.shape[0]
            odd.addcmul_(lev.alpha, even[:n_odd])
            odd[:n_right].addcmul_(lev.gamma, even[1 : n_right + 1])
            cur = odd
        cur.mul_(self.inv_b_last)
        for lev, cur in zip(reversed(self.levels), reversed(views)):
            even, odd = cur[0::2], cur[1::2]
            n_even, n_odd = even.shape[0], odd.shape[0]
            even.mul_(lev.inv_b_even)
            even[1:].addcmul_(lev.a_even[1:], odd[: n_even - 1], value=-1.0)
            n_r = min(n_odd, n_even)
            even[:n_r].addcmul_(lev.c_even[:n_r], odd[:n_r], value=-1.0)
        return d


class _RowMeanPreconditioner:
    """M^-1 for M = the operator with every weight replaced by its row mean (exact inverse via FFT + cyclic reduction).

    Args:
        system: the weights (the grid width W is the longitudinal period).
        floor: row-mean fidelity given to rows without any, relative to the mean fidelity (keeps M positive
            definite; rows with fidelity keep theirs, so M is exact for row-constant weights).
    """

    def __init__(self, system: _System, floor: float = 1e-6):
        H, W = system.fidelity.shape
        f64 = torch.float64
        dev = system.fidelity.device
        cx = system.wx.to(f64).mean(dim=1)  # [H]
        cy = system.wy.to(f64).mean(dim=1)  # [H-1]
        cf = system.fidelity.to(f64).mean(dim=1)
        cf = torch.where(cf > 0, cf, floor * cf.mean())  # rows without fidelity: keep M positive definite
        K = W // 2 + 1
        k = torch.arange(K, device=dev, dtype=f64)
        lam = 2.0 - 2.0 * torch.cos(2.0 * math.pi * k / W)  # eigenvalues of the periodic 1D Laplacian
        up = torch.zeros(H, device=dev, dtype=f64)  # weight of the edge to the row above
        down = torch.zeros(H, device=dev, dtype=f64)  # ... and below
        up[1:] = cy
        down[:-1] = cy
        b = cf[:, None] + cx[:, None] * lam[None, :] + (up + down)[:, None]
        if system.wp is not None:
            odd = (torch.arange(K, device=dev) % 2 == 1).to(f64)  # shift by W/2 is (-1)^k in Fourier space
            b[0] += 2.0 * system.wp[0].to(f64).mean() * odd
            b[-1] += 2.0 * system.wp[1].to(f64).mean() * odd
        a = (-up)[:, None].expand(H, K)
        c = (-down)[:, None].expand(H, K)
        self.width = W
        self.cr = _CyclicReduction(a, b, c, system.fidelity.dtype)
        self._spec: Tensor | None = None

    def __call__(self, r: Tensor, out: Tensor | None = None) -> Tensor:
        """r: [H, W] -> M^-1 r: [H, W] (written into ``out`` if given)."""
        if self._spec is None:
            self._spec = torch.fft.rfft(r, dim=1)  # [H, K] complex, reused by later calls
        else:
            torch.fft.rfft(r, dim=1, out=self._spec)
        self.cr.solve_(torch.view_as_real(self._spec))
        if out is None:
            return torch.fft.irfft(self._spec, n=self.width, dim=1)
        return torch.fft.irfft(self._spec, n=self.width, dim=1, out=out)
