"""Speed of the depth predictors at real size: per-face latency and whole-panorama time (20 icosahedron faces).

    python -m tools.bench_predictors                                   # small models, CPU-friendly
    python -m tools.bench_predictors --variants midas_v31:beit_large_512 depth_anything_v2:large \
        --device cuda --precision bf16 --batch-size 20                # on a GPU: all 20 faces in one batch
    python -m tools.bench_predictors --variants all --budget-s 240

Real weights are used when found in pre_checkpoints/ (nothing is downloaded); otherwise a randomly initialised model
of the same architecture is timed (speed does not depend on the weights). The output is a markdown table (and the
same rows as JSON) for the README. This is a benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from modules.export.atomic import atomic_write_text
from modules.geo_predictors.base import DepthPredictor
from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS, DepthAnythingV2Predictor
from modules.geo_predictors.depth_pro import DEPTH_PRO_VARIANTS, DepthProPredictor
from modules.geo_predictors.hf_predictor import HFDepthPredictor
from modules.geo_predictors.joint import JointPredictor
from modules.geo_predictors.midas import MIDAS_VARIANTS, MidasPredictor

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "pre_checkpoints"
PREDICTORS: dict[str, type[HFDepthPredictor]] = {
    "midas_v31": MidasPredictor,
    "depth_anything_v2": DepthAnythingV2Predictor,
    "depth_pro": DepthProPredictor,
}
ALL = (
    [f"midas_v31:{v}" for v in MIDAS_VARIANTS]
    + [f"depth_anything_v2:{v}" for v in DEPTH_ANYTHING_V2_VARIANTS]
    + [f"depth_pro:{v}" for v in DEPTH_PRO_VARIANTS]
)
DEFAULT = ["midas_v31:swin2_tiny_256", "depth_anything_v2:small"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_variant(name: str, args: argparse.Namespace, faces: torch.Tensor) -> dict[str, object]:
    """Load one variant and time it; returns one table row."""
    predictor_name, variant = name.split(":", 1)
    start = time.perf_counter()
    pred = PREDICTORS[predictor_name](
        variant=variant,
        weights=None,
        checkpoint_dir=str(args.checkpoint_dir),
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        allow_download=False,
        allow_random_weights=True,
    )
    load_s = time.perf_counter() - start
    device = pred.device
    images = faces.to(device)
    pred.predict(images[:1])  # warm-up (allocations, kernels)
    per_face = [_timed(lambda: pred.predict(images[:1]), device) for _ in range(args.repeats)]
    latency = statistics.median(per_face)
    row: dict[str, object] = {
        "predictor": predictor_name,
        "variant": variant,
        "licence": pred.variant.licence,
        "params_M": round(sum(p.numel() for p in pred.model.parameters()) / 1e6, 1),
        "net_input": "x".join(map(str, pred.network_size(tuple(faces.shape[-2:])))),
        "weights": pred.resolved_weights.source,
        "load_s": round(load_s, 2),
        "face_latency_s": round(latency, 3),
        "device": str(device),
        "precision": pred.effective_precision,
        "batch_size": args.batch_size,
    }
    estimate = latency * faces.shape[0]
    if estimate <= args.budget_s:
        row["panorama_s"] = round(_timed(lambda: pred.predict(images), device), 2)
    else:
        row["panorama_s"] = None
        row["panorama_estimate_s"] = round(estimate, 1)
    return row


def bench_fusion(faces: torch.Tensor, device: torch.device, repeats: int) -> float:
    """Time of the joint predictor's per-face alignment + combination alone (networks excluded)."""
    g = torch.Generator().manual_seed(1)
    shape = (faces.shape[0], *faces.shape[-2:])
    d = (torch.rand(shape, generator=g) + 0.5).to(device)
    m = (2.0 * d + 0.1 * torch.rand(shape, generator=g).to(device)).to(device)
    joint = JointPredictor(_Stub(), _Stub())  # the default fusion parameters; no networks
    joint.fuse(m, d)
    return statistics.median(_timed(lambda: joint.fuse(m, d), device) for _ in range(repeats))


class _Stub(DepthPredictor):
    """A predictor that is never run (the fusion benchmark feeds disparities directly)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def predict(self, images, cameras=None):
        raise RuntimeError("the fusion benchmark does not run networks")


def markdown(rows: list[dict[str, object]], fusion_s: float, args: argparse.Namespace, n_faces: int) -> str:
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"Faces: {n_faces} x {args.face_size}x{args.face_size}; threads: {torch.get_num_threads()}; "
        f"CPU: {cpu} ({os.cpu_count()} cores, load average {load}); torch {torch.__version__}.",
        "",
        "| predictor | variant | licence | params (M) | net input | device | precision | batch | "
        "per face (s) | 20-face panorama (s) | weights |",
        "|---|---|---|---:|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        pano = f"{r['panorama_s']}" if r["panorama_s"] is not None else f"~{r['panorama_estimate_s']} (est.)"
        lines.append(
            f"| {r['predictor']} | {r['variant']} | {r['licence']} | {r['params_M']} | {r['net_input']} | "
            f"{r['device']} | {r['precision']} | {r['batch_size']} | {r['face_latency_s']} | {pano} | {r['weights']} |"
        )
    lines += ["", f"Joint fusion (alignment + combination, networks excluded), {n_faces} faces: {fusion_s:.3f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT, help=f"predictor:variant, or 'all' ({len(ALL)})")
    parser.add_argument("--faces", type=int, default=20, help="faces of one panorama (icosahedron: 20)")
    parser.add_argument("--face-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=3, help="single-face timings; the median is reported")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="skip the whole-panorama run when the estimate exceeds this (reported as an estimate)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument("--output", type=Path, help="write the markdown table here (and <output>.json)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = ALL if args.variants == ["all"] else args.variants
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {ALL}")
    faces = torch.rand(args.faces, 3, args.face_size, args.face_size, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in names:
        rows.append(bench_variant(name, args, faces))
        print(json.dumps(rows[-1]), flush=True)
    device = torch.device(rows[0]["device"]) if rows else torch.device("cpu")
    fusion_s = bench_fusion(faces, device, args.repeats)
    table = markdown(rows, fusion_s, args, args.faces)
    print(table)
    if args.output:
        atomic_write_text(args.output, table)
        atomic_write_text(args.output.with_suffix(".json"), json.dumps({"rows": rows, "fusion_s": fusion_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
