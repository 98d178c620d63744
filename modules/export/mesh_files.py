"""The one mesh-files writer: mesh.ply, mesh.obj + mesh.mtl (+ mesh_texture.png), mesh.glb, mesh.fbx, and, when
enabled, splats.ply, points.ply and preview_*.png, with the written files read back and counted (``verify``).

``mode=render_dense`` (an ERP mesh, via :func:`modules.export.dense.export_dense_assets`) and ``mode=single_view``
(a perspective mesh) both write through :func:`write_mesh_assets`, so every option of ``export.dense.files``,
``splats``, ``point_cloud`` and ``previews`` means the same in both. Options are typed dataclasses built by
:func:`modules.config.options_from` (unknown keys are errors).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from .mesh import Mesh
from .fbx import summarize_fbx
from .mesh_io import (
    AXES,
    AssimpError,
    assimp_info,
    write_mesh_fbx,
    write_mesh_glb,
    write_mesh_obj,
    write_mesh_ply,
    write_texture,
)
from .pointcloud import process_point_cloud, write_point_cloud_ply
from .splats import Splats, SplatStyle, write_splats_ply, write_splats_web

__all__ = ["MESH_FORMATS", "FileOptions", "SplatOptions", "PointCloudOptions", "PreviewOptions", "check_formats",
           "write_mesh_files", "write_mesh_assets"]

log = logging.getLogger(__name__)

MESH_FORMATS = ("ply", "obj", "glb", "fbx")


@dataclass(frozen=True)
class FileOptions:
    """Which mesh files to write and how. ``formats``: subset of ply, obj, glb, fbx; ``texture``: texture OBJ, GLB
    and FBX with the image (a panorama: spherical UVs; GLB embeds it as ``glb_texture_format``, OBJ and FBX refer to
    ``mesh_texture.png``; a single view: OBJ only, with UVs into the photo); ``normals``: vertex normals in every
    file; ``glb_camera_yfov_deg``: the GLB camera's vertical field of view, None: the view's own (90 degrees for a
    panorama, the photo's for a single view); ``fbx_unit_scale``: FBX centimetres per scene unit;
    ``fbx_compress_level``: zlib level of the FBX arrays; ``verify``: formats to read back after writing and compare
    counts (FBX: every node and array header; GLB: the JSON chunk's accessors; PLY: the header; OBJ: assimp, slow)."""

    formats: tuple[str, ...] = MESH_FORMATS
    texture: bool = True
    normals: bool = True
    glb_camera: bool = True
    glb_camera_yfov_deg: float | None = None
    glb_unlit: bool = True
    glb_double_sided: bool = False
    glb_texture_format: str = "jpeg"
    glb_jpeg_quality: int = 95
    fbx_unit_scale: float = 100.0
    fbx_compress_level: int = 1
    assimp_executable: str | None = None
    verify: tuple[str, ...] = ("fbx",)


@dataclass(frozen=True)
class SplatOptions(SplatStyle):
    """3DGS splats: ``splats.ply`` (``sh_degree`` 0..3) and, in ``formats``, the compact web format ``splats.splat``;
    ``confidence_opacity``: fade low-confidence splats; the rest: :class:`~modules.export.splats.SplatStyle`."""

    enabled: bool = False
    formats: tuple[str, ...] = ("ply", "splat")
    sh_degree: int = 0
    confidence_opacity: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not set(self.formats) <= {"ply", "splat"}:
            raise ValueError(f"unknown splat format(s) {sorted(set(self.formats) - {'ply', 'splat'})}; expected ply, "
                             "splat")


@dataclass(frozen=True)
class PointCloudOptions:
    """Cleaned point cloud (``points.ply``): ``outlier_max_residual`` (None: off) drops isolated wrong distances on
    the ERP grid (pointcloud.erp_outlier_mask; a panorama only), then pointcloud.process_point_cloud (statistical outlier removal,
    off by default: it drops accurate points at corners and far walls, voxel downsampling, normals)."""

    enabled: bool = False
    stride: int = 1
    outlier_max_residual: float | None = 0.03
    sor_neighbors: int | None = None
    sor_std_ratio: float = 2.0
    voxel_size: float | None = None
    normals: bool = True
    normal_radius: float | None = None
    normal_max_nn: int = 30


@dataclass(frozen=True)
class PreviewOptions:
    """PNG previews of the mesh (``preview_*.png``); see previews.py. ``required``: False turns a missing EGL
    into a logged warning instead of an error."""

    enabled: bool = False
    views: tuple[str, ...] = ("front", "right", "back", "left", "above", "outside")
    width: int = 640
    height: int = 360
    columns: int = 3
    cmap: str = "turbo"
    percentiles: tuple[float, ...] = (2.0, 98.0)
    required: bool = True


def check_formats(files: FileOptions) -> None:
    bad = sorted((set(files.formats) | set(files.verify)) - set(MESH_FORMATS))
    if bad:
        raise ValueError(f"unknown mesh format(s) {bad}; expected some of {MESH_FORMATS}")


def _glb_counts(path: Path) -> dict[str, int]:
    """Faces and vertices of a GLB's first primitive from its JSON chunk (no buffer decoding)."""
    data = path.read_bytes()
    if data[:4] != b"glTF" or len(data) < 20:
        raise AssimpError(f"{path}: not a binary glTF")
    (json_len,) = struct.unpack_from("<I", data, 12)
    doc = json.loads(data[20 : 20 + json_len])
    prim = doc["meshes"][0]["primitives"][0]
    faces = doc["accessors"][prim["indices"]]["count"] // 3 if "indices" in prim else 0
    return {"vertices": doc["accessors"][prim["attributes"]["POSITION"]]["count"], "faces": faces}


def _ply_counts(path: Path) -> dict[str, int]:
    """Element counts from a PLY header."""
    with open(path, "rb") as f:
        head = f.read(4096).split(b"end_header", 1)[0].decode("ascii", "replace")
    counts = dict(re.findall(r"^element (\w+) (\d+)", head, flags=re.M))
    return {"vertices": int(counts.get("vertex", 0)), "faces": int(counts.get("face", 0))}


def _verify(files: dict[str, Path], mesh: Mesh, assimp_executable) -> dict[str, dict]:
    """Read written files back and compare face counts (and vertex counts where the file keeps one vertex per
    mesh vertex: PLY, FBX control points; GLB and OBJ add seam vertices / assimp joins vertices)."""
    report = {}
    for name, path in files.items():
        if name == "mesh_ply":
            counts = _ply_counts(path)
        elif name == "mesh_fbx":
            s = summarize_fbx(path)
            counts = {"vertices": s.num_vertices, "faces": s.num_faces}
        elif name == "mesh_glb":
            counts = _glb_counts(path)
        elif name == "mesh_obj":
            counts = assimp_info(path, assimp_executable)
        else:
            continue
        same_vertices = name not in ("mesh_ply", "mesh_fbx") or counts["vertices"] == mesh.num_vertices
        if counts["faces"] != mesh.num_faces or not same_vertices:
            raise AssimpError(
                f"{path}: read back {counts['vertices']} vertices / {counts['faces']} faces, wrote "
                f"{mesh.num_vertices} / {mesh.num_faces}"
            )
        report[name] = counts
    return report


def write_mesh_files(
    out_dir: str | os.PathLike,
    mesh: Mesh,
    files: FileOptions,
    *,
    texture: Tensor | None = None,
    texture_uvs: Tensor | None = None,
    camera_yfov_deg: float = 90.0,
    axes: str = "gltf",
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write ``mesh`` in ``files.formats`` and read back those in ``files.verify``.

    Args:
        texture: [3, H, W] image for the OBJ (with ``files.texture``); None: vertex colours only.
        texture_uvs: [V, 2] per-vertex texture coordinates (OBJ convention, v up); None: spherical (a panorama).
        camera_yfov_deg: the GLB camera's vertical field of view when ``files.glb_camera_yfov_deg`` is null.
        axes: frame of the PLY / OBJ / FBX files (``export.axes``; GLB is always glTF).
    Returns:
        ({mesh_ply | mesh_obj | mesh_mtl | mesh_texture | mesh_glb | mesh_fbx: path}, {"read_back": ...} when
        ``verify`` is set).
    """
    fo = files
    check_formats(fo)
    if axes not in AXES:
        raise ValueError(f"unknown axes {axes!r}; expected one of {AXES}")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    texture = texture if fo.texture else None
    # GLB and FBX texture with spherical UVs only (a panorama); a single view's UVs go into the OBJ
    wrap_texture = texture if texture_uvs is None else None
    if "ply" in fo.formats:
        written["mesh_ply"] = write_mesh_ply(out_dir / "mesh.ply", mesh, axes=axes, normals=fo.normals)
    if texture is not None and ("obj" in fo.formats or (wrap_texture is not None and "fbx" in fo.formats)):
        written["mesh_texture"] = write_texture(out_dir / "mesh_texture.png", texture)
    if "obj" in fo.formats:
        obj = write_mesh_obj(out_dir / "mesh.obj", mesh, axes=axes, texture=texture, normals=fo.normals,
                             texture_file=written.get("mesh_texture"), uvs=texture_uvs)
        written.update({f"mesh_{k}": v for k, v in obj.items()})
    if "glb" in fo.formats:
        yfov = camera_yfov_deg if fo.glb_camera_yfov_deg is None else fo.glb_camera_yfov_deg
        written["mesh_glb"] = write_mesh_glb(out_dir / "mesh.glb", mesh, camera=fo.glb_camera, camera_yfov_deg=yfov,
                                             unlit=fo.glb_unlit, double_sided=fo.glb_double_sided,
                                             texture=wrap_texture, texture_format=fo.glb_texture_format,
                                             jpeg_quality=fo.glb_jpeg_quality, normals=fo.normals)
    if "fbx" in fo.formats:
        written["mesh_fbx"] = write_mesh_fbx(out_dir / "mesh.fbx", mesh, unit_scale=fo.fbx_unit_scale, axes=axes,
                                             texture=wrap_texture,
                                             texture_file=written.get("mesh_texture") if wrap_texture is not None
                                             else None,
                                             normals=fo.normals, compress_level=fo.fbx_compress_level)["fbx"]
    stats: dict[str, Any] = {}
    if fo.verify:
        check = {k: v for k, v in written.items() if k.startswith("mesh_") and k[5:] in fo.verify}
        stats["read_back"] = _verify(check, mesh, fo.assimp_executable)
    return written, stats


def write_mesh_assets(
    out_dir: str | os.PathLike,
    mesh: Mesh,
    *,
    files: FileOptions,
    splats: SplatOptions,
    point_cloud: PointCloudOptions,
    previews: PreviewOptions,
    make_splats: Callable[[SplatStyle], Splats] | None,
    sample_points: Callable[[int], tuple[Tensor, Tensor | None]],
    preview_map: Tensor,
    texture: Tensor | None = None,
    texture_uvs: Tensor | None = None,
    camera_yfov_deg: float = 90.0,
    axes: str = "gltf",
    what: str = "the input",
) -> tuple[dict[str, Path], dict[str, Any]]:
    """:func:`write_mesh_files`, then splats.ply, points.ply and previews when enabled.

    Args:
        make_splats: the view's splats in a style (None: no colours, splats cannot be made).
        sample_points: stride -> (points [N, 3], colours [N, 3] or None) of the view's valid pixels.
        preview_map: [H, W] distance or depth shown above the preview renders.
        axes: frame of the mesh files and points.ply (``export.axes``).
        what: how to name the source in errors.
    Returns:
        (files written, counts: read_back, splats, points, previews_skipped).
    """
    out_dir = Path(out_dir)
    written, stats = write_mesh_files(out_dir, mesh, files, texture=texture, texture_uvs=texture_uvs,
                                      camera_yfov_deg=camera_yfov_deg, axes=axes)
    so, po, vo = splats, point_cloud, previews
    if so.enabled:
        if make_splats is None:
            raise ValueError(f"splats need colours: no rgb given (and none found for {what})")
        sp = make_splats(SplatStyle(**{f.name: getattr(so, f.name) for f in dataclasses.fields(SplatStyle)}))
        if "ply" in so.formats:
            written["splats_ply"] = write_splats_ply(out_dir / "splats.ply", sp, sh_degree=so.sh_degree)
        if "splat" in so.formats:
            written["splats_splat"] = write_splats_web(out_dir / "splats.splat", sp)
        stats["splats"] = sp.num_splats
    if po.enabled:
        pts, cols = sample_points(po.stride)
        pts, cols, normals = process_point_cloud(
            pts, cols, sor_neighbors=po.sor_neighbors, sor_std_ratio=po.sor_std_ratio, voxel_size=po.voxel_size,
            normals=po.normals, normal_radius=po.normal_radius, normal_max_nn=po.normal_max_nn)
        write_point_cloud_ply(out_dir / "points.ply", pts, cols, normals, axes=axes)
        written["points_ply"] = out_dir / "points.ply"
        stats["points"] = int(pts.shape[0])
    if vo.enabled:
        from .previews import PreviewUnavailableError, write_previews

        try:
            written.update(write_previews(out_dir, mesh=mesh, distance=preview_map, views=vo.views,
                                          size=(vo.width, vo.height), columns=vo.columns, cmap=vo.cmap,
                                          percentiles=vo.percentiles))
        except PreviewUnavailableError as e:
            if vo.required:
                raise
            log.warning("previews skipped: %s", e)
            stats["previews_skipped"] = str(e)
    return written, stats
