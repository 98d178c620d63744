"""Write a procedural scene with exact ground truth: DIR/rgb.png (equirect render), DIR/distance.npy, DIR/scene.json.

    python tools/make_synthetic_scene.py --out example_data/synthetic_room --seed 0 --height 512
    python tools/make_synthetic_scene.py --out /tmp/street --kind outdoor      # distance.npy is inf for the sky
    python tools/make_synthetic_scene.py --out /tmp/photo --photo-hfov 60      # a pinhole photo: rgb.png + depth.npy

Kinds: room (default), corridor (long and narrow), outdoor (ground, buildings at 5-100 m, open sky).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from modules.dataset.synthetic_scene import SCENE_KINDS, OutdoorScene, make_scene, render_erp, render_perspective
from modules.export.atomic import atomic_path, atomic_write_text
from modules.export.depth_files import write_npy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--kind", choices=sorted(SCENE_KINDS), default="room", help="what to build (default: room)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the layout")
    parser.add_argument("--height", type=int, default=512, help="panorama height; width is twice this")
    parser.add_argument("--photo-hfov", type=float, default=None,
                        help="write a pinhole photo with this horizontal field of view (degrees) instead of a panorama: "
                             "rgb.png + depth.npy (z-depth), 4:3, --height rows (rooms and corridors only)")
    args = parser.parse_args(argv)
    if args.height < 8:
        parser.error("--height must be at least 8")
    scene = make_scene(args.kind, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.photo_hfov is not None:
        if isinstance(scene, OutdoorScene) or not 0 < args.photo_hfov < 180:
            parser.error("--photo-hfov needs --kind room or corridor and 0 < hfov < 180")
        return write_photo(scene, args)
    rgb, distance = render_erp(scene, args.height)
    with atomic_path(args.out / "rgb.png") as tmp:
        Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
    write_npy(args.out / "distance.npy", distance)
    finite = np.isfinite(distance)
    description = {"kind": args.kind, "seed": args.seed, "height": args.height}
    if isinstance(scene, OutdoorScene):
        description.update(camera_height=scene.camera_height, ground_radius=scene.ground_radius)
    else:
        description.update(room_min=scene.lo, room_max=scene.hi, camera_height=scene.hi[1])
    description.update(
        boxes=[{"center": b.center, "half_size": b.half, "yaw": b.yaw} for b in scene.boxes],
        distance_range=[float(distance[finite].min()), float(distance[finite].max())],
        sky_fraction=float(1.0 - finite.mean()),
    )
    atomic_write_text(args.out / "scene.json", json.dumps(description, indent=2) + "\n")
    print(f"wrote {args.out}/rgb.png, distance.npy, scene.json ({args.kind}, {2 * args.height}x{args.height}, "
          f"{len(scene.boxes)} boxes, sky {description['sky_fraction']:.0%})")
    return 0


def write_photo(scene, args) -> int:
    """rgb.png + depth.npy (z in the camera) + scene.json of a pinhole view from the room's camera position, looking
    along +z (OpenCV axes); the synthetic predictor reads depth.npy beside the photo (mode=single_view)."""
    height, width = args.height, (4 * args.height) // 3
    f = (width / 2) / np.tan(np.radians(args.photo_hfov) / 2)
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    rgb, depth = render_perspective(scene, K, height, width)
    with atomic_path(args.out / "rgb.png") as tmp:
        Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
    write_npy(args.out / "depth.npy", depth)
    description = {"kind": args.kind, "seed": args.seed, "height": height, "width": width,
                   "hfov_deg": args.photo_hfov, "K": K.tolist(), "depth_range": [float(depth.min()), float(depth.max())]}
    atomic_write_text(args.out / "scene.json", json.dumps(description, indent=2) + "\n")
    print(f"wrote {args.out}/rgb.png, depth.npy, scene.json ({args.kind} photo, {width}x{height}, "
          f"hfov {args.photo_hfov:g} deg)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
