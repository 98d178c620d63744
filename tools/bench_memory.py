"""Measure the peak memory (max RSS) of one run per panorama size: the data behind modules/dataset/size_guard.py.

    python tools/bench_memory.py --heights 256 512 1024 2048 [--mode predict] [--keep DIR] [-- overrides ...]

For each height H it writes a W = 2H panorama of an analytic box room (PNG, plus its exact distance.npy for the
synthetic predictor) into a temporary folder, runs ``python core_exp_runner.py mode=<mode> predictor=synthetic``
on it in a fresh process under ``/usr/bin/time -v`` (or ``resource.getrusage`` of the child when GNU time is
missing) and prints a markdown table: size, pixels, max RSS, wall seconds, and the size guard's estimate for the same
config (at the processed size when ``dataset.max_height`` is given). ``--fit`` adds the least-squares line ``rss = a + b * H * W`` over the measured sizes (the guard's per-pixel
coefficient for that mode). The size guard is switched off for the measured run (``dataset.max_memory_gb`` large)
unless an override sets ``dataset.max_memory_gb``.

``--gt-height`` writes the distance.npy at another height (the size the panorama is processed at when
``dataset.max_height`` downscales it), so a downscaled run can be measured with the synthetic predictor.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def box_distance(height: int, rows: slice | None = None) -> np.ndarray:
    """[h, 2H] float32 ray distance to an axis-aligned 6 x 2.8 x 4 m room (camera 1.5 m above the floor)."""
    width = 2 * height
    v = np.arange(height)[rows if rows is not None else slice(None)] + 0.5
    u = np.arange(width) + 0.5
    lat = (0.5 - v / height)[:, None] * np.pi
    lon = (u / width - 0.5)[None, :] * 2 * np.pi
    d = np.stack(np.broadcast_arrays(np.cos(lat) * np.sin(lon), -np.sin(lat), np.cos(lat) * np.cos(lon)))
    lo, hi = np.array([-2.5, -1.3, -1.5]), np.array([3.5, 1.5, 2.5])
    with np.errstate(divide="ignore"):
        t = np.where(d > 0, hi[:, None, None] / d, lo[:, None, None] / d)
    return np.min(np.where(np.isfinite(t) & (t > 0), t, np.inf), axis=0).astype(np.float32)


def write_png_rows(path: Path, height: int, chunk: int = 256) -> None:
    """An RGB PNG of the room (colour from distance), encoded row block by row block (little memory at any size)."""
    width = 2 * height

    def chunk_bytes(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    comp = zlib.compressobj(1)
    idat = []
    for start in range(0, height, chunk):
        d = box_distance(height, slice(start, min(height, start + chunk)))
        g = np.clip(255 * (1 - d / 5), 0, 255).astype(np.uint8)
        rgb = np.stack([g, (g // 2 + 64).astype(np.uint8), (255 - g)], axis=-1)
        raw = np.concatenate([np.zeros((rgb.shape[0], 1), np.uint8), rgb.reshape(rgb.shape[0], -1)], axis=1)
        idat.append(comp.compress(raw.tobytes()))
    idat.append(comp.flush())
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk_bytes(b"IHDR", header) + chunk_bytes(b"IDAT", b"".join(idat))
                     + chunk_bytes(b"IEND", b""))


def measure(cmd: list[str]) -> tuple[float, float, int, str]:
    """(max RSS in GB, wall seconds, exit code, output tail) of ``cmd`` run as a child process."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    start = time.perf_counter()
    if gnu_time:
        proc = subprocess.run([gnu_time, "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        rss_kb = int(match[1]) if match else 0
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    wall = time.perf_counter() - start
    return rss_kb * 1024 / 1e9, wall, proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heights", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--mode", default="predict")
    parser.add_argument("--gt-height", type=int, default=None, help="height of distance.npy (default: the panorama's)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the inputs and outputs (kept)")
    parser.add_argument("--fit", action="store_true", help="fit rss = a + b * pixels over the sizes")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the measured run")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; mode={args.mode} predictor=synthetic "
          f"{' '.join(args.overrides)}")
    print("| size | Mpx | max RSS GB | wall s | estimate GB | exit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for h in args.heights:
        folder = work / f"h{h}"
        folder.mkdir(exist_ok=True)
        image = folder / "pano.png"
        if not image.exists():
            write_png_rows(image, h)
        gt_h = args.gt_height or h
        np.save(folder / "distance.npy", box_distance(gt_h))
        cmd = [sys.executable, "core_exp_runner.py", f"mode={args.mode}", "predictor=synthetic",
               f"dataset.image_path={image}", f"hydra.run.dir={folder / 'out'}", "batch.progress=false", *args.overrides]
        if not any(o.startswith("dataset.max_memory_gb=") for o in args.overrides):
            cmd.append("dataset.max_memory_gb=100000")  # guard off: measure what the run really takes
        rss, wall, code, tail = measure(cmd)
        estimate = _estimate(args.mode, h, args.overrides)
        rows.append((h, rss))
        print(f"| {2 * h}x{h} | {2 * h * h / 1e6:.2f} | {rss:.2f} | {wall:.1f} | {estimate} | {code} |", flush=True)
        if code != 0:
            print(tail, file=sys.stderr)
    if args.fit and len(rows) >= 2:
        px = np.array([2.0 * h * h for h, _ in rows])
        rss = np.array([r for _, r in rows])
        b, a = np.polyfit(px, rss, 1)
        print(f"fit: rss_gb = {a:.3f} + {b * 1e9:.1f} bytes/pixel * H*W / 1e9")
    return 0


def _estimate(mode: str, height: int, overrides: list[str]) -> str:
    try:
        from hydra import compose, initialize_config_dir

        from modules.config import CONFIG_DIR, register_resolvers
        from modules.dataset.size_guard import estimate_peak_gb
    except ImportError:
        return "-"
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"mode={mode}", "predictor=synthetic", *overrides])
    if cfg.dataset.max_height is not None:  # processed downscaled
        height = min(height, int(cfg.dataset.max_height))
    return f"{estimate_peak_gb(cfg, height, 2 * height):.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
