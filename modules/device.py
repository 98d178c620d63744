"""Where and how torch computes: the device policy and the ``runtime`` group's process settings.

Base layer (docs/architecture.md): predictors, the pipeline and the runtime all resolve devices here.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

__all__ = ["resolve_device", "configure_runtime"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available, else mps if available, else cpu; other names are checked to exist."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was requested but CUDA is not available on this machine")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device '{name}' was requested but MPS is not available on this machine")
    return dev


def configure_runtime(cfg: DictConfig) -> None:
    """Apply the runtime group to this process: CPU threads."""
    if cfg.runtime.num_threads:
        torch.set_num_threads(int(cfg.runtime.num_threads))
