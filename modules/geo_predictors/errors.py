"""Errors of the network predictors a user can act on (the runner prints them without a traceback)."""

from __future__ import annotations

from ..errors import UserError

__all__ = ["CheckpointFormatError", "PredictorConfigError", "WeightsNotFoundError"]


class CheckpointFormatError(UserError, ValueError):
    """A checkpoint's contents do not match the expected format or architecture."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """Weights were asked for but are not on this machine and cannot be downloaded."""


class PredictorConfigError(UserError, ValueError):
    """A predictor option has a value it cannot take (unknown variant, precision, override key, ...)."""
