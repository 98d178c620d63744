"""3D-file benchmark: size and write time of every output format at given panorama sizes (synthetic room).

    python tools/bench_export.py --heights 512 1024

Scene: make_room(0) rendered at each height (W = 2H), exact distances, its render as the texture. Every file is
written with the project's defaults (export.axes=gltf, texture on, normals on, splat footprint 1.0, SH degree 0,
outlier removal 3 %) into a temporary folder; prints a markdown table (MB = 10^6 bytes, seconds of wall time, one
run each: on a shared machine the times are upper bounds) plus the FBX read-back (verify) time and the FBX and
points.ply numbers the old writers gave (assimp FBX, Open3D SOR) where cheap enough.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.fbx import summarize_fbx
from modules.export.maps import write_surface_maps
from modules.export.mesh import erp_grid_mesh
from modules.export.mesh_io import write_mesh_fbx, write_mesh_glb, write_mesh_obj, write_mesh_ply, write_texture
from modules.export.pointcloud import erp_outlier_mask, erp_points, write_point_cloud_ply
from modules.export.splats import erp_splats, write_splats_ply, write_splats_web


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench(height: int, folder: Path) -> list[tuple[str, float, float, str]]:
    rgb, distance = render_erp(make_room(0), height)
    d = torch.from_numpy(distance)
    tex = torch.from_numpy(rgb).permute(2, 0, 1).float()
    rows = []

    def size(*names):
        return sum((folder / n).stat().st_size for n in names) / 1e6

    mesh, t = _timed(lambda: erp_grid_mesh(d, tex))
    rows.append(("(mesh build: ERP grid + skirt)", float("nan"), t, f"{mesh.num_vertices} vertices, {mesh.num_faces} faces"))
    _, t = _timed(lambda: write_texture(folder / "mesh_texture.png", tex))
    rows.append(("mesh_texture.png", size("mesh_texture.png"), t, "the panorama, 8-bit PNG (OBJ and FBX refer to it)"))
    _, t = _timed(lambda: write_mesh_ply(folder / "mesh.ply", mesh))
    rows.append(("mesh.ply", size("mesh.ply"), t, "float32 xyz + normals, RGB, int32 faces"))
    _, t = _timed(lambda: write_mesh_obj(folder / "mesh.obj", mesh, texture=tex, texture_file=folder / "mesh_texture.png"))
    rows.append(("mesh.obj + .mtl", size("mesh.obj", "mesh.mtl"), t, "text: v rgb, vn, vt, f v/vt/vn"))
    _, t = _timed(lambda: write_mesh_glb(folder / "mesh.glb", mesh, texture=tex))
    rows.append(("mesh.glb", size("mesh.glb"), t, "JPEG texture inside, NORMAL, TEXCOORD_0"))
    _, t = _timed(lambda: write_mesh_fbx(folder / "mesh.fbx", mesh, texture=tex, texture_file=folder / "mesh_texture.png"))
    _, tv = _timed(lambda: summarize_fbx(folder / "mesh.fbx"))
    rows.append(("mesh.fbx", size("mesh.fbx"), t, f"read-back check {tv:.3f} s ({100 * tv / t:.0f} % of the write)"))
    sp, t_sp = _timed(lambda: erp_splats(d, tex))
    _, t = _timed(lambda: write_splats_ply(folder / "splats.ply", sp))
    rows.append(("splats.ply (SH 0)", size("splats.ply"), t + t_sp, f"{sp.num_splats} splats, 17 floats each"))
    _, t = _timed(lambda: write_splats_ply(folder / "splats_sh3.ply", sp, sh_degree=3))
    rows.append(("splats.ply (sh_degree=3)", size("splats_sh3.ply"), t + t_sp, "62 floats each (45 zero SH)"))
    _, t = _timed(lambda: write_splats_web(folder / "splats.splat", sp))
    rows.append(("splats.splat", size("splats.splat"), t + t_sp, "32 bytes each (web viewers)"))

    def points():
        dd = torch.where(erp_outlier_mask(d), torch.full_like(d, float("nan")), d)
        p, c = erp_points(dd, tex)
        write_point_cloud_ply(folder / "points.ply", p, c)
    _, t = _timed(points)
    rows.append(("points.ply", size("points.ply"), t, "outlier removal + float32 xyz + RGB (normals: +12 B/point)"))
    p2, c2 = erp_points(d, tex, stride=2)
    _, t = _timed(lambda: write_point_cloud_ply(folder / "pointcloud.ply", p2, c2))
    rows.append(("pointcloud.ply (stride 2)", size("pointcloud.ply"), t, "every run; export.pointcloud.stride=2"))
    for name in ("distance_exr", "points_exr", "normal_png", "normal_exr", "mask_png"):
        _, t = _timed(lambda: write_surface_maps(folder, d, (name,)))
        fname = name.replace("_exr", ".exr").replace("_png", ".png")
        rows.append((fname, size(fname), t, "ZIP-compressed float32" if name.endswith("exr") else "8-bit PNG"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heights", type=int, nargs="+", default=[512, 1024])
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f}")
    results = {}
    for h in args.heights:
        with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
            results[h] = bench(h, Path(tmp))
    heads = " | ".join(f"{2 * h}x{h} MB | {2 * h}x{h} s" for h in args.heights)
    print(f"\n| file | {heads} | notes |\n|---|" + "---:|" * (2 * len(args.heights)) + "---|")
    for i, row in enumerate(results[args.heights[0]]):
        cells = " | ".join(
            ("" if np.isnan(results[h][i][1]) else f"{results[h][i][1]:.1f}") + f" | {results[h][i][2]:.2f}"
            for h in args.heights)
        print(f"| {row[0]} | {cells} | {results[args.heights[-1]][i][3]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
