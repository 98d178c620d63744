"""Benchmark: panoramas per second of a batch run, runtime=local vs runtime=ray, on N synthetic panoramas.

    python -m tools.bench_batch --num 16 --height 64 --workers 2 [--override projection.face_size=64 ...]

Generates N procedural rooms (rgb.png + distance.npy) into a temporary folder and runs the batch mode on them with
the synthetic predictor, side by side in one process: runtime=local with 1 torch thread and no prefetch (read,
compute, write one after the other), the same with ``runtime.prefetch=1`` (reader and writer threads overlap the
compute), runtime=local with torch's default threads, and runtime=ray with ``--workers`` actors of 1 CPU and 1 thread
each on a private 127.0.0.1 instance of ``--cpus`` CPUs (default = workers). The Ray instance is started before
timing (like a cluster that is already up); its start-up time is reported separately. Throughput = panoramas / wall
time of the batch (listing, fingerprints, workers loading their models, processing, writing; summary.json's
``wall_seconds``). Outputs of the 1-thread runs are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_scenes(root: Path, num: int, height: int) -> None:
    from modules.dataset.synthetic_scene import make_room, render_erp

    for i in range(num):
        rgb, distance = render_erp(make_room(i), height)
        folder = root / f"scene{i:04d}"
        folder.mkdir(parents=True)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
        np.save(folder / "distance.npy", distance)


def run(image_dir: Path, out: Path, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from modules.config import PROJECT_ROOT
    from modules.modes.batch import SUMMARY_FILE
    from modules.modes.batch import run as run_batch

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset.image_path={image_dir}", f"paths.output_dir={out}",
                                           "batch.progress=false", *overrides])
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run tables
        code = run_batch(cfg)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    if code != 0:
        raise SystemExit(f"benchmark run failed (exit {code}): see {out / SUMMARY_FILE}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=16, help="number of panoramas")
    parser.add_argument("--height", type=int, default=64, help="panorama height (width = 2 x height)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray instance (default: --workers)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = parser.parse_args()
    overrides = ["predictor=synthetic", "runtime.device=cpu", *args.override]

    import ray

    from modules.runtime.ray_executor import loopback_ray_init

    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        make_scenes(tmp / "in", args.num, args.height)
        one = [*overrides, "runtime.num_threads=1"]
        rows.append(("local, 1 thread, no prefetch", run(tmp / "in", tmp / "local1", [*one, "runtime.prefetch=0"])))
        rows.append(("local, 1 thread, prefetch 1", run(tmp / "in", tmp / "local1p", [*one, "runtime.prefetch=1"])))
        rows.append((f"local, {default_threads} threads, prefetch 1", run(tmp / "in", tmp / "local", overrides)))
        start = time.perf_counter()
        loopback_ray_init(address="local", num_cpus=args.cpus or args.workers, include_dashboard=False,
                          log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            remote = run(tmp / "in", tmp / "ray", [*one, "runtime=ray", "runtime.device=cpu",
                                                   f"runtime.num_workers={args.workers}"])
        finally:
            ray.shutdown()
        rows.append((f"ray, {args.workers} workers x 1 CPU x 1 thread", remote))
        names = sorted(p.name for p in (tmp / "local1").iterdir() if p.is_dir() and not p.name.startswith("."))
        identical = all((tmp / a / n / "distance.npy").read_bytes() == (tmp / "local1" / n / "distance.npy").read_bytes()
                        for a in ("local1p", "ray") for n in names)

    extra = " ".join(args.override) or "-"
    print(f"{args.num} panoramas {2 * args.height}x{args.height}, predictor=synthetic, overrides: {extra}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({default_threads} threads by default); Ray start-up (not timed below): {ray_start:.1f} s\n")
    print(f"distance.npy byte-identical across the 1-thread runs: {identical}\n")
    print("| runtime | panoramas | wall s | panoramas/s |")
    print("|---|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {s['succeeded']} | {s['wall_seconds']:.1f} | {s['panoramas_per_second']:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
