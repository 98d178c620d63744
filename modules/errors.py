"""Errors a user can act on. The runner prints their message (naming the file and the problem) without a
traceback and exits with status 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input, missing files or weights, or an impossible configuration."""
