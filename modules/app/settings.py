"""Settings of the web app (server behaviour only: nothing here changes a result; the pipeline's options come from
configs/ and the form)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["AppSettings", "parse_args"]


@dataclass
class AppSettings:
    """
    Attributes:
        host, port: where the server listens (127.0.0.1 by default: only this machine can reach it).
        max_upload_mb: largest request body accepted (panorama + optional ground truth), in MiB.
        max_megapixels: largest panorama accepted, in millions of pixels (checked from the header before decoding).
        session_ttl_s: a session's folder (uploads and outputs) is deleted this long after its last request, once
            none of its jobs is queued or running.
        cleanup_interval_s: how often expired sessions are looked for.
        concurrency: jobs run at the same time (1: one job at a time, the others wait in the queue).
        max_queue: jobs waiting at most (queued + running); more are refused with a message.
        work_dir: where session folders go (None: a fresh temporary folder, removed at exit).
        device: ``runtime.device`` of every run (auto | cpu | cuda | mps).
        num_threads: ``runtime.num_threads`` of every run (None: torch's default).
        allow_download: let the predictors fetch missing weights (off: the app never goes online).
    """

    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 200.0
    max_megapixels: float = 64.0
    session_ttl_s: float = 3600.0
    cleanup_interval_s: float = 60.0
    concurrency: int = 1
    max_queue: int = 16
    work_dir: Path | None = None
    device: str = "auto"
    num_threads: int | None = None
    allow_download: bool = False

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_megapixels <= 0:
            raise ValueError("max_upload_mb and max_megapixels must be positive")
        if self.concurrency < 1 or self.max_queue < 1:
            raise ValueError("concurrency and max_queue must be >= 1")
        if self.session_ttl_s <= 0 or self.cleanup_interval_s <= 0:
            raise ValueError("session_ttl_s and cleanup_interval_s must be positive")
        if self.work_dir is not None:
            self.work_dir = Path(self.work_dir)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def parse_args(argv: list[str] | None = None) -> AppSettings:
    d = AppSettings()
    p = argparse.ArgumentParser(prog="immersivedepth-app", description="ImmersiveDepth web app (local, offline).")
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload in MiB (%(default)s)")
    p.add_argument("--max-megapixels", type=float, default=d.max_megapixels,
                   help="largest panorama in megapixels (%(default)s)")
    p.add_argument("--session-ttl", type=float, default=d.session_ttl_s, dest="session_ttl_s",
                   help="seconds after a session's last request before its files are deleted (%(default)s)")
    p.add_argument("--cleanup-interval", type=float, default=d.cleanup_interval_s, dest="cleanup_interval_s",
                   help="seconds between clean-up passes (%(default)s)")
    p.add_argument("--concurrency", type=int, default=d.concurrency,
                   help="jobs run at once; the rest wait in the queue (%(default)s)")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="most jobs queued or running (%(default)s)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for session files (default: a temporary folder removed at exit)")
    p.add_argument("--device", default=d.device, help="runtime.device: auto | cpu | cuda | mps (%(default)s)")
    p.add_argument("--num-threads", type=int, default=None, help="runtime.num_threads (default: torch's)")
    p.add_argument("--allow-download", action="store_true",
                   help="let predictors download missing weights (default: never go online)")
    ns = p.parse_args(argv)
    names = {f.name for f in fields(AppSettings)}
    return AppSettings(**{k: v for k, v in vars(ns).items() if k in names})
