"""Convert an upstream release checkpoint to a Hugging Face model directory (config.json + model.safetensors).

    python -m tools.convert_checkpoint pre_checkpoints/dpt_beit_large_512.pt
    python -m tools.convert_checkpoint my_depth_anything.pth --predictor depth_anything_v2 --variant large \
        --output pre_checkpoints/converted/my_da

Supported: MiDaS v3.1 ``dpt_beit_*.pt`` / ``dpt_swin2_*.pt`` and Depth Anything V2 ``depth_anything_v2_vit{s,b,l}.pth``.
The key mapping is documented in ``modules/geo_predictors/checkpoint_conversion.py``; the predictors apply the same
conversion automatically when ``weights:`` points at an upstream file, so converting first is optional (it saves the
renaming at every start and gives a directory any transformers code can load). The file is read with
``torch.load(weights_only=True)``; every model parameter must be found in it.

Output default: ``pre_checkpoints/converted/<file stem>/``; use it with ``weights: converted/<file stem>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from modules.geo_predictors.depth_anything import DEPTH_ANYTHING_V2_VARIANTS, DepthAnythingV2Predictor
from modules.geo_predictors.hf_predictor import HFDepthPredictor
from modules.geo_predictors.midas import MIDAS_VARIANTS, MidasPredictor

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "pre_checkpoints"
PREDICTORS: dict[str, type[HFDepthPredictor]] = {
    MidasPredictor.predictor_name: MidasPredictor,
    DepthAnythingV2Predictor.predictor_name: DepthAnythingV2Predictor,
}


def infer_variant(path: Path) -> tuple[str, str]:
    """(predictor, variant) whose upstream file name is ``path``'s name."""
    for predictor, table in (
        (MidasPredictor.predictor_name, MIDAS_VARIANTS),
        (DepthAnythingV2Predictor.predictor_name, DEPTH_ANYTHING_V2_VARIANTS),
    ):
        for name, variant in table.items():
            if variant.upstream_file == path.name:
                return predictor, name
    raise SystemExit(f"cannot tell the variant from the file name {path.name!r}: pass --predictor and --variant")


def convert(source: Path, output: Path, predictor: str, variant: str, model_overrides: dict | None = None) -> Path:
    """Load ``source`` through the predictor's upstream conversion and save it in Hugging Face format at ``output``.

    ``model_overrides`` changes the architecture like the predictors' key of that name (tests use tiny models).
    The directory is written under a temporary name beside ``output`` and renamed into place when complete.
    """
    model = PREDICTORS[predictor](
        variant=variant,
        weights=str(source.resolve()),
        device="cpu",
        allow_download=False,
        allow_random_weights=False,
        model_overrides=model_overrides,
    ).model
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent))
    try:
        model.save_pretrained(tmp)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="upstream .pt / .pth file")
    parser.add_argument("--predictor", choices=sorted(PREDICTORS), help="default: from the file name")
    parser.add_argument("--variant", help="default: from the file name")
    parser.add_argument("--output", type=Path, help="default: pre_checkpoints/converted/<file stem>")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        raise SystemExit(f"no such file: {args.source}")
    if args.predictor and args.variant:
        predictor, variant = args.predictor, args.variant
    else:
        predictor, variant = infer_variant(args.source)
    output = args.output or DEFAULT_CHECKPOINT_DIR / "converted" / args.source.stem
    print(f"{predictor}/{variant}: {convert(args.source, output, predictor, variant)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
