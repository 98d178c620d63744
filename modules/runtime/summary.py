"""The end of a batch: summary.json, the printed table, the exit code.

Exit codes: 0 every panorama succeeded or was skipped as already done; 1 at least one failed; 2 ``image_path`` named a
single image and that image is unusable (as for any user error; a folder of one bad image exits 1); 130 / 143 the run
was interrupted by SIGINT / SIGTERM (the panoramas not reached are listed as "not run"). A job that cannot start at
all (no inputs, bad config, missing weights) exits 2 through the runner's UserError handling.
"""

from __future__ import annotations

from typing import Sequence

from .worker import FAILED, NOT_RUN, OK, SKIPPED, TaskResult

__all__ = ["build_summary", "format_table", "exit_code", "EXIT_FAILED", "EXIT_USER_ERROR", "EXIT_SIGNAL"]

EXIT_FAILED = 1
#: the runner's exit code for a user error
EXIT_USER_ERROR = 2
#: exit code of a run interrupted by a signal: 128 + signal number
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def build_summary(results: Sequence[TaskResult], executor: dict, wall_seconds: float, interrupted: str | None,
                  source: str, output_dir: str, single: bool = False) -> dict:
    """The content of summary.json."""
    counts = {s: sum(r.status == s for r in results) for s in (OK, SKIPPED, FAILED, NOT_RUN)}
    done = counts[OK] + counts[FAILED]
    return {
        "source": source,
        "output_dir": output_dir,
        "total": len(results),
        "succeeded": counts[OK],
        "skipped": counts[SKIPPED],
        "failed": counts[FAILED],
        "not_run": counts[NOT_RUN],
        "interrupted": interrupted,
        "wall_seconds": wall_seconds,
        "panoramas_per_second": done / wall_seconds if wall_seconds > 0 else None,
        "executor": executor,
        "exit_code": exit_code(results, interrupted, single),
        "panoramas": [r.as_dict() for r in sorted(results, key=lambda r: r.index)],
    }


def exit_code(results: Sequence[TaskResult], interrupted: str | None, single: bool = False) -> int:
    """The process exit code (rules in the module docstring); ``single``: image_path named one image file."""
    if interrupted:
        return EXIT_SIGNAL.get(interrupted, 130)
    failed = [r for r in results if r.status == FAILED]
    if single and failed and failed[0].user_error:
        return EXIT_USER_ERROR
    return EXIT_FAILED if failed else 0


def format_table(results: Sequence[TaskResult], max_ok_rows: int = 100) -> str:
    """A plain-text table: status, name, seconds, attempts and the reason (failures) or the input (others).

    Failures are always listed; beyond ``max_ok_rows`` other rows are elided with a count.
    """
    rows = sorted(results, key=lambda r: (r.status != FAILED, r.index))
    shown, hidden = [], 0
    for r in rows:
        if r.status != FAILED and len(shown) - sum(x.status == FAILED for x in shown) >= max_ok_rows:
            hidden += 1
            continue
        shown.append(r)
    header = ("status", "name", "seconds", "tries", "reason / input")
    body = [
        (r.status, r.name or "-", f"{r.seconds:.2f}" if r.status in (OK, FAILED) else "-", str(r.attempts),
         r.reason if r.status == FAILED else r.image_path)
        for r in shown
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in [header, *body]]
    if hidden:
        lines.append(f"... {hidden} more rows in summary.json")
    counts = {s: sum(r.status == s for r in results) for s in (OK, SKIPPED, FAILED, NOT_RUN)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} panoramas")
    return "\n".join(lines)
