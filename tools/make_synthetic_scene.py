"""Write a procedural room with exact ground truth: DIR/rgb.png (equirect render) and DIR/distance.npy.

    python tools/make_synthetic_scene.py --out example_data/synthetic_room --seed 0 --height 512
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.atomic import atomic_path, atomic_write_text
from modules.export.depth_files import write_npy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the room layout")
    parser.add_argument("--height", type=int, default=512, help="panorama height; width is twice this")
    args = parser.parse_args(argv)
    if args.height < 8:
        parser.error("--height must be at least 8")
    scene = make_room(args.seed)
    rgb, distance = render_erp(scene, args.height)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "rgb.png") as tmp:
        Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
    write_npy(args.out / "distance.npy", distance)
    description = {
        "seed": args.seed,
        "height": args.height,
        "room_min": scene.lo,
        "room_max": scene.hi,
        "camera_height": scene.hi[1],
        "boxes": [{"center": b.center, "half_size": b.half, "yaw": b.yaw} for b in scene.boxes],
        "distance_range": [float(distance.min()), float(distance.max())],
    }
    atomic_write_text(args.out / "scene.json", json.dumps(description, indent=2) + "\n")
    print(f"wrote {args.out}/rgb.png, distance.npy, scene.json ({2 * args.height}x{args.height}, {len(scene.boxes)} boxes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
