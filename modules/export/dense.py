"""Dense 3D assets from an ERP distance map: what ``mode=render_dense`` calls.

:func:`load_run_distance` reads an earlier run directory (``distance.npy``, optional ``confidence.npy``,
``meta.json`` whose ``input.image_path`` gives the colours). :func:`export_dense_assets` scales the distances
(metric from camera height, a factor, or relative), builds the ERP grid mesh and writes, in ``out_dir``:

    mesh.ply  mesh.obj + mesh.mtl  mesh_texture.png  mesh.glb (texture inside, camera node)  mesh.fbx
    splats.ply (3DGS)       points.ply                                 preview_*.png

Each group of options is a dataclass below, built from a plain mapping (e.g. a Hydra config node) by
:func:`options_from`; an unknown key is an error, so no config key goes unread. Conventions: see mesh.py, axes.py and
mesh_io.py (OpenCV axes inside; files in ``axes``, default glTF: Y up).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .mesh import InvalidDistanceError, Mesh, check_distance_map, decimate_mesh, erp_grid_mesh, poisson_mesh
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
from .pointcloud import erp_outlier_mask, erp_points, process_point_cloud, write_point_cloud_ply
from .scale import ScaleResult, metric_scale
from .splats import erp_splats, write_splats_ply, write_splats_web

__all__ = [
    "RunDirectoryError",
    "RunDistance",
    "MeshOptions",
    "FileOptions",
    "SplatOptions",
    "PointCloudOptions",
    "PreviewOptions",
    "ScaleOptions",
    "DenseExportResult",
    "options_from",
    "load_run_distance",
    "export_dense_assets",
]

log = logging.getLogger(__name__)
MESH_FORMATS = ("ply", "obj", "glb", "fbx")


class RunDirectoryError(UserError, FileNotFoundError):
    """A run directory that is missing or lacks distance.npy."""


@dataclass(frozen=True)
class MeshOptions:
    """ERP grid mesh. ``max_edge_stretch`` / ``max_grazing_deg``: discontinuity cut (None disables each);
    ``decimate_faces``: quadric decimation to about this many faces (None: off); ``poisson``: replace the grid
    mesh by a screened Poisson reconstruction of depth ``poisson_depth``, trimming the lowest
    ``poisson_density_quantile`` of densities."""

    stride: int = 1
    max_edge_stretch: float | None = 12.0
    max_grazing_deg: float | None = None
    close_poles: bool = True
    decimate_faces: int | None = None
    poisson: bool = False
    poisson_depth: int = 9
    poisson_density_quantile: float = 0.02


@dataclass(frozen=True)
class FileOptions:
    """Which mesh files to write and how. ``formats``: subset of ply, obj, glb, fbx; ``texture``: texture OBJ, GLB
    and FBX with the panorama (spherical UVs; GLB embeds it as ``glb_texture_format``, OBJ and FBX refer to
    ``mesh_texture.png``); ``normals``: vertex normals in every file; ``fbx_unit_scale``: FBX centimetres per
    scene unit; ``fbx_compress_level``: zlib level of the FBX arrays; ``verify``: formats to read back after
    writing and compare counts (FBX: every node and array header; GLB: the JSON chunk's accessors; PLY: the
    header; OBJ: assimp, slow)."""

    formats: tuple[str, ...] = MESH_FORMATS
    texture: bool = True
    normals: bool = True
    glb_camera: bool = True
    glb_camera_yfov_deg: float = 90.0
    glb_unlit: bool = True
    glb_double_sided: bool = False
    glb_texture_format: str = "jpeg"
    glb_jpeg_quality: int = 95
    fbx_unit_scale: float = 100.0
    fbx_compress_level: int = 1
    assimp_executable: str | None = None
    verify: tuple[str, ...] = ("fbx",)


@dataclass(frozen=True)
class SplatOptions:
    """3DGS splats: ``splats.ply`` (``sh_degree`` 0..3) and, in ``formats``, the compact web format
    ``splats.splat``; see splats.py for the meaning of each value."""

    enabled: bool = False
    formats: tuple[str, ...] = ("ply", "splat")
    sh_degree: int = 0
    stride: int = 1
    footprint_scale: float = 1.0
    thickness_ratio: float = 0.05
    min_opacity: float = 0.1
    max_opacity: float = 0.95
    confidence_opacity: bool = False
    axes: str = "opencv"


@dataclass(frozen=True)
class PointCloudOptions:
    """Cleaned point cloud (``points.ply``): ``outlier_max_residual`` (None: off) drops isolated wrong distances on
    the ERP grid (pointcloud.erp_outlier_mask), then pointcloud.process_point_cloud (statistical outlier removal,
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


@dataclass(frozen=True)
class ScaleOptions:
    """``camera_height`` (metres, floor fit) or ``factor``; neither: ``relative`` = "median" (median distance 1)
    or "keep" (distances as given, e.g. an earlier run already scaled). ``floor``: options of
    scale.fit_floor_plane."""

    camera_height: float | None = None
    factor: float | None = None
    relative: str = "median"
    floor: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunDistance:
    """What :func:`load_run_distance` found: distance [H, W] (invalid pixels NaN), rgb [3, H, W] or None,
    confidence [H, W] or None, the parsed meta.json (empty without one) and the number of invalid pixels."""

    distance: Tensor
    rgb: Tensor | None
    confidence: Tensor | None
    meta: dict
    num_invalid: int


@dataclass(frozen=True)
class DenseExportResult:
    """Files written ({name: path}), the scale applied (``scale.info`` belongs in meta.json) and counts."""

    files: dict[str, Path]
    scale: ScaleResult
    stats: dict[str, Any]


def options_from(cls, value):
    """Build an options dataclass from None (defaults), an instance, or a mapping with known keys only."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping of options, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    kwargs = {
        k: (tuple(v or ()) if isinstance(getattr(defaults, k), tuple) else v) for k, v in value.items()
    }  # lists (or null) for tuple fields, e.g. from a Hydra config
    return cls(**kwargs)


def _load_image(path: Path, size: tuple[int, int]) -> Tensor:
    """RGB image -> [3, H, W] float in [0, 1], resized (bilinear) to ``size`` = (H, W) when needed."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_run_distance(run_dir: str | os.PathLike) -> RunDistance:
    """Read an earlier run directory.

    Reads ``distance.npy`` ([H, W] float), ``confidence.npy`` if present, ``meta.json`` if present, and the input
    image named by ``meta["input"]["image_path"]`` (absolute, or relative to the working directory or the run
    directory) for colours when readable. Non-finite and non-positive distances become NaN (invalid, dropped by
    the exporters) and are counted.

    Raises:
        RunDirectoryError: the directory or its distance.npy is missing.
        InvalidDistanceError: distance.npy is not a 2-D numeric array or has no valid pixel.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir}: run directory does not exist")
    dpath = run_dir / "distance.npy"
    if not dpath.is_file():
        raise RunDirectoryError(f"{dpath}: no distance.npy in the run directory (is it the output of a predict run?)")
    try:
        arr = np.load(dpath, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InvalidDistanceError(f"{dpath}: not a readable .npy array ({e})") from e
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidDistanceError(f"{dpath}: expected a 2-D numeric [H, W] array, got shape {arr.shape} {arr.dtype}")
    distance = torch.from_numpy(arr.astype(np.float32))
    valid = check_distance_map(distance, name=str(dpath))
    num_invalid = int((~valid).sum())
    if num_invalid:
        log.warning("%s: %d of %d pixels are NaN, inf or <= 0; they are dropped", dpath, num_invalid, valid.numel())
        distance = torch.where(valid, distance, torch.full_like(distance, float("nan")))
    meta = {}
    mpath = run_dir / "meta.json"
    if mpath.is_file():
        try:
            meta = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{mpath}: invalid JSON ({e})") from e
    confidence = None
    cpath = run_dir / "confidence.npy"
    if cpath.is_file():
        conf = np.load(cpath, allow_pickle=False)
        if conf.shape == arr.shape:
            confidence = torch.from_numpy(conf.astype(np.float32))
        else:
            log.warning("%s: shape %s differs from distance.npy %s; ignored", cpath, conf.shape, arr.shape)
    rgb = None
    image = (meta.get("input") or {}).get("image_path") if isinstance(meta, dict) else None
    if image:
        for cand in (Path(image), run_dir / image):
            if cand.is_file():
                try:
                    rgb = _load_image(cand, tuple(arr.shape))
                    break
                except OSError as e:
                    log.warning("%s: input image not readable (%s); exporting without colours", cand, e)
        else:
            log.warning("input image %s (from %s) not found; exporting without colours", image, mpath)
    return RunDistance(distance, rgb, confidence, meta, num_invalid)


def _build_mesh(distance: Tensor, rgb: Tensor | None, o: MeshOptions) -> Mesh:
    mesh = erp_grid_mesh(distance, rgb, stride=o.stride, max_edge_stretch=o.max_edge_stretch,
                         max_grazing_deg=o.max_grazing_deg, close_poles=o.close_poles)
    if mesh.num_faces == 0:
        raise InvalidDistanceError("the distance map gives no triangle (too few valid pixels, or every one was cut)")
    if o.poisson:
        mesh = poisson_mesh(mesh, depth=o.poisson_depth, density_quantile=o.poisson_density_quantile)
    if o.decimate_faces is not None:
        mesh = decimate_mesh(mesh, o.decimate_faces)
    return mesh


def _glb_counts(path: Path) -> dict[str, int]:
    """Faces and vertices of a GLB's first primitive from its JSON chunk (no buffer decoding)."""
    import struct

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


def export_dense_assets(
    distance: Tensor,
    rgb: Tensor | None,
    out_dir: str | os.PathLike,
    confidence: Tensor | None = None,
    *,
    mesh: MeshOptions | Mapping | None = None,
    files: FileOptions | Mapping | None = None,
    splats: SplatOptions | Mapping | None = None,
    point_cloud: PointCloudOptions | Mapping | None = None,
    previews: PreviewOptions | Mapping | None = None,
    scale: ScaleOptions | Mapping | None = None,
    generator: torch.Generator | None = None,
    axes: str = "gltf",
    sky_dome: float | None = None,
) -> DenseExportResult:
    """Scale the distances and write the mesh files (and splats, point cloud, previews when enabled).

    Args:
        distance: [H, W] ERP distance; NaN / inf / <= 0 pixels are invalid and dropped (+inf is the sky, see
            ``sky_dome``).
        rgb: [3, H, W] colours in [0, 1], or None (uncoloured files, no OBJ texture, no splats).
        out_dir: output directory (created).
        confidence: optional [H, W] in [0, 1] (splat opacity).
        mesh, files, splats, point_cloud, previews, scale: option groups (dataclass, mapping or None).
        generator: torch.Generator for the floor fit.
        axes: frame of the mesh files and points.ply ("gltf", "blender_z_up", "opencv"; see mesh_io; GLB is
            always glTF, splats have their own ``splats.axes``).
        sky_dome: None: the sky is dropped; a number: sky pixels are put this many times the farthest surface away
            (a textured dome for viewers).
    Returns:
        :class:`DenseExportResult`; ``files`` keys: mesh_ply, mesh_obj, mesh_mtl, mesh_texture, mesh_glb,
        mesh_fbx, splats_ply, splats_splat, points_ply, preview_*.
    """
    mo, fo = options_from(MeshOptions, mesh), options_from(FileOptions, files)
    so, po = options_from(SplatOptions, splats), options_from(PointCloudOptions, point_cloud)
    vo, sc = options_from(PreviewOptions, previews), options_from(ScaleOptions, scale)
    if not set(so.formats) <= {"ply", "splat"}:
        raise ValueError(f"unknown splat format(s) {sorted(set(so.formats) - {'ply', 'splat'})}; expected ply, splat")
    bad = sorted((set(fo.formats) | set(fo.verify)) - set(MESH_FORMATS))
    if bad:
        raise ValueError(f"unknown mesh format(s) {bad}; expected some of {MESH_FORMATS}")
    if axes not in AXES:
        raise ValueError(f"unknown axes {axes!r}; expected one of {AXES}")
    valid = check_distance_map(distance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    scale_result = metric_scale(distance, camera_height=sc.camera_height, factor=sc.factor, floor=sc.floor,
                                relative=sc.relative, generator=generator)
    d = torch.where(valid, distance * scale_result.factor, torch.full_like(distance, float("nan")))
    if sky_dome is not None:  # sky (+inf) on a textured dome sky_dome x the farthest surface away, for viewers
        d = torch.where(torch.isposinf(distance), sky_dome * d[valid].max(), d)
    m = _build_mesh(d, rgb, mo)
    written: dict[str, Path] = {}
    texture = rgb if fo.texture else None
    if "ply" in fo.formats:
        written["mesh_ply"] = write_mesh_ply(out_dir / "mesh.ply", m, axes=axes, normals=fo.normals)
    if texture is not None and ("obj" in fo.formats or "fbx" in fo.formats):
        written["mesh_texture"] = write_texture(out_dir / "mesh_texture.png", texture)
    if "obj" in fo.formats:
        obj = write_mesh_obj(out_dir / "mesh.obj", m, axes=axes, texture=texture, normals=fo.normals,
                             texture_file=written.get("mesh_texture"))
        written.update({f"mesh_{k}": v for k, v in obj.items()})
    if "glb" in fo.formats:
        written["mesh_glb"] = write_mesh_glb(out_dir / "mesh.glb", m, camera=fo.glb_camera,
                                             camera_yfov_deg=fo.glb_camera_yfov_deg, unlit=fo.glb_unlit,
                                             double_sided=fo.glb_double_sided, texture=texture,
                                             texture_format=fo.glb_texture_format, jpeg_quality=fo.glb_jpeg_quality,
                                             normals=fo.normals)
    if "fbx" in fo.formats:
        written["mesh_fbx"] = write_mesh_fbx(out_dir / "mesh.fbx", m, unit_scale=fo.fbx_unit_scale, axes=axes,
                                             texture=texture, texture_file=written.get("mesh_texture"),
                                             normals=fo.normals, compress_level=fo.fbx_compress_level)["fbx"]
    stats: dict[str, Any] = {"mesh_vertices": m.num_vertices, "mesh_faces": m.num_faces,
                             "invalid_pixels": int((~valid).sum())}
    if fo.verify:
        check = {k: v for k, v in written.items() if k.startswith("mesh_") and k[5:] in fo.verify}
        stats["read_back"] = _verify(check, m, fo.assimp_executable)

    if so.enabled:
        if rgb is None:
            raise ValueError("splats need colours: no rgb given (and none found for the run directory)")
        sp = erp_splats(d, rgb, confidence if so.confidence_opacity else None, stride=so.stride, footprint_scale=so.footprint_scale,
                        thickness_ratio=so.thickness_ratio, min_opacity=so.min_opacity, max_opacity=so.max_opacity,
                        axes=so.axes)
        if "ply" in so.formats:
            written["splats_ply"] = write_splats_ply(out_dir / "splats.ply", sp, sh_degree=so.sh_degree)
        if "splat" in so.formats:
            written["splats_splat"] = write_splats_web(out_dir / "splats.splat", sp)
        stats["splats"] = sp.num_splats
    if po.enabled:
        d_pc = d
        if po.outlier_max_residual is not None:
            outliers = erp_outlier_mask(d, po.outlier_max_residual)
            d_pc = torch.where(outliers, torch.full_like(d, float("nan")), d)
            stats["point_outliers"] = int(outliers.sum())
        pts, cols = erp_points(d_pc, rgb, stride=po.stride)
        pts, cols, normals = process_point_cloud(
            pts, cols, sor_neighbors=po.sor_neighbors, sor_std_ratio=po.sor_std_ratio, voxel_size=po.voxel_size,
            normals=po.normals, normal_radius=po.normal_radius, normal_max_nn=po.normal_max_nn)
        write_point_cloud_ply(out_dir / "points.ply", pts, cols, normals, axes=axes)
        written["points_ply"] = out_dir / "points.ply"
        stats["points"] = int(pts.shape[0])
    if vo.enabled:
        from .previews import PreviewUnavailableError, write_previews

        try:
            written.update(write_previews(out_dir, mesh=m, distance=d, views=vo.views, size=(vo.width, vo.height),
                                          columns=vo.columns, cmap=vo.cmap, percentiles=vo.percentiles))
        except PreviewUnavailableError as e:
            if vo.required:
                raise
            log.warning("previews skipped: %s", e)
            stats["previews_skipped"] = str(e)
    return DenseExportResult(written, scale_result, stats)
