"""Render a camera walking through a procedural scene (room, corridor or outdoor street): equirect frames with exact
distances and poses.

    python -m tools.make_synthetic_video --out example_data/synthetic_walk --frames 60 --height 256 --mp4

Writes DIR/frames/NNNNNN.png (RGB), DIR/distance/NNNNNN.npy (exact float32 ray distances, metres),
DIR/poses.json (per frame: position and R_world_from_cam, OpenCV axes), DIR/scene.json and, with --mp4,
DIR/clip.mp4 (the frames encoded with OpenCV's mp4v at --fps). Outdoors the sky's distance is inf. Run mode=video on it with the synthetic predictor:

    python core_exp_runner.py mode=video predictor=synthetic dataset.image_path=DIR/clip.mp4 \
        'predictor.gt_distance=DIR/distance/{frame:06d}.npy'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from modules.dataset.synthetic_scene import SCENE_KINDS, make_scene
from modules.dataset.synthetic_video import plan_path, render_frame
from modules.export.atomic import atomic_path, atomic_write_text
from modules.export.depth_files import write_npy


def encode_mp4(frames_dir: Path, path: Path, fps: float) -> None:
    """Encode DIR/frames/*.png (sorted) into an mp4 with OpenCV (mp4v), atomically."""
    import cv2

    files = sorted(frames_dir.glob("*.png"))
    first = cv2.imread(str(files[0]))
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (first.shape[1], first.shape[0]))
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
        try:
            for f in files:
                writer.write(cv2.imread(str(f)))
        finally:
            writer.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--kind", choices=sorted(SCENE_KINDS), default="room", help="scene kind")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scene layout")
    parser.add_argument("--height", type=int, default=256, help="panorama height; width is twice this")
    parser.add_argument("--frames", type=int, default=60, help="number of frames")
    parser.add_argument("--path-length", type=float, default=2.0, help="metres the camera walks")
    parser.add_argument("--yaw", type=float, default=90.0, help="degrees the camera turns on the way")
    parser.add_argument("--pitch", type=float, default=4.0, help="amplitude (degrees) of a slow nod")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of clip.mp4")
    parser.add_argument("--mp4", action="store_true", help="also encode clip.mp4")
    args = parser.parse_args(argv)
    if args.height < 8:
        parser.error("--height must be at least 8")
    scene = make_scene(args.kind, args.seed)
    path = plan_path(scene, args.frames, args.path_length, args.yaw, args.pitch)
    for name in ("frames", "distance"):
        (args.out / name).mkdir(parents=True, exist_ok=True)
    ranges = []
    for i in range(len(path)):
        rgb, distance = render_frame(scene, path, i, args.height)
        with atomic_path(args.out / "frames" / f"{i:06d}.png") as tmp:
            Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
        write_npy(args.out / "distance" / f"{i:06d}.npy", distance)
        finite = distance[np.isfinite(distance)]
        ranges.append([float(finite.min()), float(finite.max())])
    poses = [{"frame": i, "position": path.positions[i].tolist(), "R_world_from_cam": path.rotations[i].tolist()}
             for i in range(len(path))]
    atomic_write_text(args.out / "poses.json", json.dumps({"axes": "opencv (x right, y down, z forward)",
                                                            "fps": args.fps, "frames": poses}, indent=1) + "\n")
    description = {
        "kind": args.kind, "seed": args.seed, "height": args.height, "frames": args.frames, "path_length": args.path_length,
        "yaw_deg": args.yaw, "pitch_deg": args.pitch, "clearance": path.clearance,
        **({"room_min": scene.lo, "room_max": scene.hi} if hasattr(scene, "lo") else
           {"camera_height": scene.camera_height, "ground_radius": scene.ground_radius}),
        "boxes": [{"center": b.center, "half_size": b.half, "yaw": b.yaw} for b in scene.boxes],
        "distance_range_per_frame": ranges,
    }
    atomic_write_text(args.out / "scene.json", json.dumps(description, indent=2) + "\n")
    if args.mp4:
        encode_mp4(args.out / "frames", args.out / "clip.mp4", args.fps)
    print(f"wrote {args.frames} frames ({2 * args.height}x{args.height}) to {args.out}"
          + (" and clip.mp4" if args.mp4 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
