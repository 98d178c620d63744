"""One prepared GPU benchmark of the whole tangent pipeline with the real large networks (random weights: speed only).

    python -m tools.bench_gpu --out bench_gpu_out                 # a lent GPU, <= 8 minutes, no network access
    python -m tools.bench_gpu --tiny --out /tmp/bench_tiny        # CPU smoke run with tiny configs (the test suite)

What it measures (each part skipped, with the reason recorded, once ``--budget-s`` would be exceeded):

1. ``runs``: the default pipeline (``predictor=joint``: MiDaS v3.1 BEiT-L-512 + Depth Anything V2-L, 20 faces of
   512 px; the default fusion stages: affine alignment, sky detection, blending, refinement as configured, scale) on a
   2048x1024 synthetic room, per stage:
   cold (first panorama: geometry caches built, kernels chosen) and warm (median of ``--repeats`` more), with the
   peak GPU memory; in fp32, bf16 and bf16 + ``torch.compile`` (``runtime.compile``).
2. ``batch``: throughput of the fastest of those over ``--batch`` panoramas in a row (panoramas per second).
3. ``large``: one 7680x3840 panorama (bf16): seconds per stage, peak GPU memory, peak host RSS.

Weights are random (``weights: random``, ``allow_random_weights``; nothing is searched or downloaded): the times are
those of the real architectures, their depth is meaningless, so the fusion stages are fed the synthetic ground-truth
predictor's disparities of the same room (``NetworksThenTruth``: both networks still run on every face).
Output: ``<out>/bench_gpu.json`` and ``<out>/bench_gpu.md`` (format in README, "GPU benchmark"). ``--tiny``: the
same flow on the CPU with tiny configs of the same classes, 128x64 panoramas of 32 px cubemap faces, 2 panoramas, a
256x128 "large" run, compile skipped (an Inductor build takes minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from modules.config import PROJECT_ROOT, register_resolvers
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.atomic import atomic_write_text
from modules.geo_predictors.base import DepthPredictor
from modules.geo_predictors.tiny_configs import tiny_model_overrides
from modules.pipeline import build_pipeline

STAGES = ("projection", "network", "alignment", "blending", "refinement", "scale")
NETWORKS = {"midas": ("midas_v31", "beit_large_512"), "depth_anything": ("depth_anything_v2", "large")}


def _config(args: argparse.Namespace, precision: str, compile_: bool, synthetic: bool = False):
    overrides = [f"runtime.device={args.device}", f"runtime.precision={precision}", f"runtime.compile={compile_}",
                 "predictor=synthetic" if synthetic else "predictor=joint", f"projection.face_size={args.face_size}",
                 "paths.output_dir=/tmp/unused", *(["projection=cubemap"] if args.tiny else [])]
    if synthetic:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            return compose("config", overrides=overrides)
    for member, (_, variant) in NETWORKS.items():
        overrides += [f"predictor.{member}.variant={variant}", f"predictor.{member}.weights=random",
                      f"predictor.{member}.allow_random_weights=true", f"predictor.{member}.allow_download=false",
                      f"predictor.{member}.batch_size={args.batch_size}"]
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if args.tiny:
        for member, (name, variant) in NETWORKS.items():
            OmegaConf.update(cfg, f"predictor.{member}.model_overrides", tiny_model_overrides(name, variant),
                             merge=False)
            OmegaConf.update(cfg, f"predictor.{member}.input_size", 28, merge=False)
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gpu_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: kilobytes


def _stages(timings: dict) -> dict:
    out = {s: round(float(timings.get(s, 0.0)), 4) for s in STAGES}
    out["total"] = round(sum(out.values()), 4)
    out["non_network"] = round(out["total"] - out["network"], 4)
    return out


def _truth(height: int, device: torch.device) -> torch.Tensor:
    """The room's true distance [H, 2H] (for the synthetic predictor's fusion row)."""
    _, distance = render_erp(make_room(0), height)
    return torch.from_numpy(distance).float().to(device)


def _panorama(height: int, device: torch.device) -> torch.Tensor:
    """A synthetic room [3, H, 2H] on ``device`` (rendered at <= 1024 rows, upsampled above)."""
    rgb, _ = render_erp(make_room(0), min(height, 1024))
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().to(device)
    if x.shape[1] != height:
        x = F.interpolate(x[None], size=(height, 2 * height), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    return x


class Budget:
    """Wall-clock budget: ``allows(estimate)`` is False once starting a part would overrun it."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, estimate: float) -> bool:
        return self.left() > estimate


class NetworksThenTruth(DepthPredictor):
    """The real networks run on every face (their time is the network stage), but the fusion gets the synthetic
    ground-truth predictor's disparities: random weights give no usable depth, and the non-network stages should be
    timed on the paths real predictions take (no faces dropped, sky where there is sky)."""

    def __init__(self, networks: DepthPredictor, truth: DepthPredictor):
        self.networks, self.truth = networks, truth

    @property
    def device(self) -> torch.device:
        return self.networks.device

    def begin_panorama(self, image_path, erp_hw) -> None:
        self.networks.begin_panorama(image_path, erp_hw)
        self.truth.begin_panorama(image_path, erp_hw)

    def predict_with_confidence(self, images, cameras=None):
        disparity, _ = self.networks.predict_with_confidence(images, cameras)
        _sync(disparity.device)
        return self.truth.predict_with_confidence(images, cameras)

    def predict(self, images, cameras=None):
        return self.predict_with_confidence(images, cameras)[0]

    def describe(self) -> dict:
        return {"networks": self.networks.describe(), "fusion_input": "synthetic ground truth"}


def bench_run(args, name: str, precision: str, compile_: bool, device, pano, budget: Budget, skipped: list):
    """One configuration: build (random weights), cold run, warm runs. Returns (row, pipeline)."""
    start = time.perf_counter()
    pipeline = build_pipeline(_config(args, precision, compile_))
    build_s = time.perf_counter() - start
    networks = pipeline.predictor
    truth = build_pipeline(_config(args, "fp32", False, synthetic=True)).predictor
    truth.use_ground_truth("room", _truth(pano.shape[1], device), "synthetic room")
    pipeline.predictor = NetworksThenTruth(networks, truth)
    _reset_peak(device)
    cold = pipeline.run(pano, "room")
    _sync(device)
    warm = []
    for _ in range(args.repeats):
        if not budget.allows(2 * cold.timings.get("network", 0.0) + 5):
            skipped.append(f"{name}: warm repeats cut short by the budget")
            break
        warm.append(_stages(pipeline.run(pano, "room").timings))
    row = {"name": name, "precision": precision, "compile": compile_, "build_s": round(build_s, 2),
           "cold": _stages(cold.timings), "peak_gpu_gb": _peak_gpu_gb(device),
           "attention": {m: getattr(networks, m).describe().get("attention") for m in NETWORKS
                         if hasattr(networks, m)}}
    if warm:
        row["warm"] = {k: round(statistics.median(w[k] for w in warm), 4) for k in warm[0]}
    return row, pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_gpu_out"))
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with tiny configs (the test suite)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--height", type=int, default=None, help="panorama height (default 1024; tiny 64)")
    parser.add_argument("--large-height", type=int, default=None, help="large run height (default 3840; tiny 128)")
    parser.add_argument("--face-size", type=int, default=None, help="default 512 (tiny 32)")
    parser.add_argument("--batch", type=int, default=None, help="panoramas in the throughput run (16; tiny 3)")
    parser.add_argument("--repeats", type=int, default=None, help="warm runs per configuration (3; tiny 1)")
    parser.add_argument("--batch-size", default="auto", help="faces per network pass (auto: from free GPU memory)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting new parts after this")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.device = args.device or ("cpu" if tiny else "cuda")
    args.height = args.height or (64 if tiny else 1024)
    args.large_height = args.large_height or (128 if tiny else 3840)
    args.face_size = args.face_size or (32 if tiny else 512)
    args.batch = args.batch or (2 if tiny else 16)
    args.repeats = args.repeats or (1 if tiny else 3)
    register_resolvers()
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here (use --tiny on a CPU)")
    pano = _panorama(args.height, device)
    skipped: list[str] = []
    configs = [("fp32", "fp32", False), ("bf16", "bf16", False)]
    if args.no_compile or tiny:
        why = "--no-compile" if args.no_compile else "--tiny (an Inductor build takes minutes on a CPU)"
        skipped.append(f"bf16+compile: {why}")
    else:
        configs.append(("bf16+compile", "bf16", True))
    runs, pipelines = [], {}
    for name, precision, compile_ in configs:
        need = 60.0 if not compile_ else 180.0
        if runs and not budget.allows(need):
            skipped.append(f"{name}: budget ({budget.left():.0f} s left, needs ~{need:.0f} s)")
            continue
        row, pipeline = bench_run(args, name, precision, compile_, device, pano, budget, skipped)
        runs.append(row)
        pipelines[name] = pipeline
        print(json.dumps(row), flush=True)
    result: dict = {
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "cpu_threads": torch.get_num_threads()},
        "setup": {"panorama": f"{2 * args.height}x{args.height}", "face_size": args.face_size, "tiny": tiny,
                  "networks": {m: f"{n}:{v}" for m, (n, v) in NETWORKS.items()}, "weights": "random (speed only)",
                  "batch_size": args.batch_size, "repeats": args.repeats},
        "runs": runs,
    }
    if budget.allows(30.0):  # the non-network stages on realistic disparities (random networks give none)
        synthetic = build_pipeline(_config(args, "fp32", False, synthetic=True))
        synthetic.predictor.use_ground_truth("room", _truth(args.height, device), "synthetic room")
        cold = _stages(synthetic.run(pano, "room").timings)
        warm = [_stages(synthetic.run(pano, "room").timings) for _ in range(args.repeats)]
        result["fusion_synthetic"] = {"cold": cold, "warm": {k: round(statistics.median(w[k] for w in warm), 4)
                                                             for k in cold}}
    else:
        skipped.append("fusion_synthetic: budget")
    fastest = min((r for r in runs if "warm" in r), key=lambda r: r["warm"]["total"], default=None)
    if fastest is not None:
        if budget.allows(args.batch * fastest["warm"]["total"] + 10):
            pipeline = pipelines[fastest["name"]]
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.batch):
                pipeline.run(pano, "room")
            _sync(device)
            seconds = time.perf_counter() - start
            result["batch"] = {"config": fastest["name"], "panoramas": args.batch, "seconds": round(seconds, 3),
                               "panoramas_per_s": round(args.batch / seconds, 3)}
        else:
            skipped.append("batch: budget")
    large_name = "bf16" if "bf16" in pipelines else next(iter(pipelines), None)
    if large_name is not None and budget.allows(60.0):
        pipeline = pipelines[large_name]
        big = _panorama(args.large_height, device)
        pipeline.predictor.truth.use_ground_truth("big", _truth(args.large_height, device), "synthetic room")
        _reset_peak(device)
        start = time.perf_counter()
        out = pipeline.run(big, "big")
        _sync(device)
        result["large"] = {"config": large_name, "panorama": f"{2 * args.large_height}x{args.large_height}",
                           "seconds": round(time.perf_counter() - start, 3), "stages": _stages(out.timings),
                           "peak_gpu_gb": _peak_gpu_gb(device), "output": list(out.distance.shape)}
        del big, out
    else:
        skipped.append("large: budget")
    result["peak_rss_gb"] = _peak_rss_gb()
    result["skipped"] = skipped
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench_gpu.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "bench_gpu.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The README table: one row per configuration (warm seconds per stage), then batch and large lines."""
    m, s = result["machine"], result["setup"]
    lines = [f"GPU benchmark: {m['device']}, torch {m['torch']} (CUDA {m['cuda']}); {s['panorama']}, faces of "
             f"{s['face_size']} px, {s['networks']['midas']} + {s['networks']['depth_anything']}, {s['weights']}"
             + (" — TINY configs" if s["tiny"] else ""), "",
             "| config | " + " | ".join(STAGES) + " | total warm (s) | non-network | cold total (s) | peak GPU (GB) |",
             "|---" * (len(STAGES) + 5) + "|"]
    for r in result["runs"]:
        w = r.get("warm", r["cold"])
        lines.append(f"| {r['name']} | " + " | ".join(f"{w[k]:.3f}" for k in STAGES) + f" | {w['total']:.3f} | "
                     f"{w['non_network']:.3f} | {r['cold']['total']:.3f} | {r['peak_gpu_gb']} |")
    if "batch" in result:
        b = result["batch"]
        lines += ["", f"Batch ({b['config']}): {b['panoramas']} panoramas in {b['seconds']:.2f} s = "
                      f"**{b['panoramas_per_s']:.2f} panoramas/s**."]
    if "large" in result:
        g = result["large"]
        lines += ["", f"Large ({g['config']}): {g['panorama']} in {g['seconds']:.2f} s (network "
                      f"{g['stages']['network']:.2f} s), peak GPU {g['peak_gpu_gb']} GB."]
    if "fusion_synthetic" in result:
        f = result["fusion_synthetic"]["warm"]
        lines += ["", "Non-network stages on realistic disparities (predictor=synthetic, warm): "
                  + ", ".join(f"{k} {f[k]:.3f}" for k in STAGES if k != "network")
                  + f"; all non-network **{f['non_network']:.3f} s**."]
    lines += ["", f"Peak host RSS: {result['peak_rss_gb']} GB."]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
