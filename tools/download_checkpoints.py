"""Fetch depth-network weights into pre_checkpoints/ (run once, on a machine with internet access).

    python -m tools.download_checkpoints                      # what predictor=joint needs (the default)
    python -m tools.download_checkpoints --predictor midas_v31 --variant swin2_tiny_256
    python -m tools.download_checkpoints --predictor depth_anything_v2 --variant small
    python -m tools.download_checkpoints --predictor depth_anything_v2 --variant metric_indoor_large metric_outdoor_large
    python -m tools.download_checkpoints --predictor depth_pro            # Depth Pro (metric; apple-amlr licence)
    python -m tools.download_checkpoints --predictor joint_metric         # joint + its default metric member
    python -m tools.download_checkpoints --predictor all      # every variant (tens of GB)
    python -m tools.download_checkpoints --upstream ...       # the upstream release files instead
    python -m tools.download_checkpoints --list               # the variant tables

Hugging Face models land in ``pre_checkpoints/<owner>/<name>/`` (``config.json`` + ``model.safetensors``), the
first place the predictors look; upstream release files (``dpt_beit_large_512.pt``, ``depth_anything_v2_vitl.pth``)
land in ``pre_checkpoints/`` and are converted when loaded (Depth Pro: Hugging Face format only). Copy the folder
to offline machines.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

from modules.export.atomic import atomic_path
from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS, DepthAnythingV2Predictor
from modules.geo_predictors.depth_pro import DEPTH_PRO_VARIANTS, DepthProPredictor
from modules.geo_predictors.hf_predictor import NetworkVariant
from modules.geo_predictors.midas import MIDAS_VARIANTS, MidasPredictor
from modules.geo_predictors.weights import download_hf_snapshot, hf_dir_for, is_hf_model_dir

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "pre_checkpoints"

TABLES: dict[str, dict[str, NetworkVariant]] = {
    MidasPredictor.predictor_name: MIDAS_VARIANTS,
    DepthAnythingV2Predictor.predictor_name: DEPTH_ANYTHING_V2_VARIANTS,
    DepthProPredictor.predictor_name: DEPTH_PRO_VARIANTS,
}
#: what predictor=joint uses by default (configs/predictor/{midas_v31,depth_anything_v2}.yaml)
JOINT_DEFAULTS = [("midas_v31", "beit_large_512"), ("depth_anything_v2", "large")]
#: predictor=joint_metric: joint plus its default metric member (configs/predictor/joint_metric.yaml)
JOINT_METRIC_DEFAULTS = [*JOINT_DEFAULTS, ("depth_pro", "default")]
#: the variant a single-family --predictor fetches without --variant
SINGLE_DEFAULTS = {"midas_v31": "beit_large_512", "depth_anything_v2": "large", "depth_pro": "default"}


def selected(predictor: str, variants: list[str] | None) -> list[tuple[str, str]]:
    """(predictor, variant) pairs the arguments ask for."""
    if predictor in ("joint", "joint_metric"):
        if variants:
            raise SystemExit(f"--variant applies to a single network family ({', '.join(TABLES)}), not {predictor}")
        return list(JOINT_DEFAULTS if predictor == "joint" else JOINT_METRIC_DEFAULTS)
    if predictor == "all":
        return [(p, v) for p, table in TABLES.items() for v in table]
    table = TABLES[predictor]
    names = variants or [SINGLE_DEFAULTS[predictor]]
    unknown = [v for v in names if v not in table]
    if unknown:
        raise SystemExit(f"unknown {predictor} variant(s) {unknown}; choose from {sorted(table)}")
    return [(predictor, v) for v in names]


def fetch_upstream(variant: NetworkVariant, checkpoint_dir: Path) -> Path:
    """Download the upstream release file into ``checkpoint_dir`` (atomically)."""
    target = checkpoint_dir / variant.upstream_file
    if target.is_file():
        return target
    with atomic_path(target) as tmp, urllib.request.urlopen(variant.upstream_url) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    return target


def print_tables() -> None:
    for predictor, table in TABLES.items():
        print(f"{predictor}:")
        for name, v in table.items():
            kind = f"metric (view {v.metric_view_fov_deg:g} deg)" if v.is_metric else "relative"
            print(f"  {name:21s} {v.hf_id:56s} {v.download_size:>8s}  {kind:25s} input {v.input_size:<5d} "
                  f"{v.upstream_file or '(HF format only)':42s} {v.licence}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictor", default="joint", choices=["joint", "joint_metric", "all", *TABLES])
    parser.add_argument("--variant", nargs="+", help="variant name(s) of --predictor (default: its default variant)")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument("--upstream", action="store_true", help="fetch the upstream release files instead")
    parser.add_argument("--list", action="store_true", help="print the variant tables and exit")
    args = parser.parse_args(argv)
    if args.list:
        print_tables()
        return 0
    failed = 0
    for predictor, name in selected(args.predictor, args.variant):
        variant = TABLES[predictor][name]
        try:
            if args.upstream and variant.upstream_file:
                path = fetch_upstream(variant, args.checkpoint_dir)
            else:
                if args.upstream:
                    print(f"{predictor}/{name}: no upstream release file is supported; fetching the Hugging Face model")
                if is_hf_model_dir(hf_dir_for(args.checkpoint_dir, variant.hf_id)):
                    print(f"{predictor}/{name}: already present")
                path = download_hf_snapshot(variant.hf_id, args.checkpoint_dir)
        except Exception as err:  # network, HTTP, disk: report and go on with the next model
            failed += 1
            print(f"{predictor}/{name}: download failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        print(f"{predictor}/{name} ({variant.licence}): {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
