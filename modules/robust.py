"""Robust statistics shared by every robust fit (the joint predictor's scale/shift fit, the global alignment, the
metric network's scale): the MAD estimate of a Gaussian sigma and the IRLS weights of the Huber and Tukey losses.

Base layer (docs/architecture.md): pure tensor functions, device and dtype from the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAD_TO_SIGMA", "ROBUST_LOSSES", "robust_weights"]

#: sigma of a Gaussian = 1.4826 x its median absolute deviation
MAD_TO_SIGMA = 1.4826

ROBUST_LOSSES = ("huber", "tukey")


def robust_weights(abs_residual: Tensor, threshold: Tensor | float, loss: str = "huber") -> Tensor:
    """IRLS weights of residuals ``|r|`` [...] for a loss with the given threshold [...] (broadcast).

    ``huber``: 1 within the threshold, ``threshold / |r|`` beyond it; ``tukey`` (biweight): ``(1 - (r / t)^2)^2``
    within, 0 beyond. A threshold of 0 gives weight 0 to every non-zero residual.
    """
    if loss == "huber":
        return torch.where(abs_residual <= threshold, torch.ones_like(abs_residual),
                           threshold / abs_residual.clamp_min(1e-30))
    if loss == "tukey":
        t = torch.as_tensor(threshold, dtype=abs_residual.dtype, device=abs_residual.device)
        u = abs_residual / t.clamp_min(torch.finfo(abs_residual.dtype).tiny)
        return torch.where(u < 1, (1 - u * u) ** 2, torch.zeros_like(u))
    raise ValueError(f"unknown robust loss {loss!r}; expected one of {ROBUST_LOSSES}")
