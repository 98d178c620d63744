"""Mesh files: PLY, OBJ (+MTL, optional texture), GLB (with a camera at the origin) and binary FBX; read-backs.

Axes. Meshes live in the project's OpenCV frame (x right, y down, z forward, camera at the origin).
Interchange formats are written in the glTF frame, ``(x, y, z)_gltf = (x, -y, -z)_opencv``: x right, +Y up,
the panorama's centre column along -Z. That is a 180 deg rotation about x (handedness and triangle winding are
kept), the frame glTF mandates (a glTF camera with no rotation looks along -Z with +Y up, so the camera node at
the origin needs no rotation to face the panorama's centre), and the frame FBX files from assimp declare
(UpAxis = Y); Blender, game engines and MeshLab then open the room upright.

* PLY: ``axes`` chooses (default OpenCV, matching distance.npy and the point clouds); binary little endian,
  float32 x y z, uchar red green blue, faces as ``vertex_indices``.
* OBJ: ``axes`` chooses (default glTF); vertex colours as the common ``v x y z r g b`` extension (read by
  Blender >= 3.5, MeshLab, assimp), and, when a texture image is given, UVs into the equirect image
  (``map_Kd``), so a decimated mesh keeps the photo's full resolution. UVs come from each vertex's direction
  (u = lon / 2pi + 0.5, v = lat / pi + 0.5); triangles across the seam get u + 1 (the texture repeats) and pole
  vertices get the mean u of their triangle.
* GLB: glTF frame; COLOR_0 as float linear RGB (glTF defines vertex colours as linear, so sRGB colours are
  linearised); an unlit material (KHR_materials_unlit: the photo's colours, not relit); a perspective camera
  node at the origin.
* FBX: binary FBX 7.5 written by the assimp command-line tool of the ``cmeel-assimp`` wheel from a temporary
  PLY. assimp's FBX declares centimetres (UnitScaleFactor 1), so coordinates are multiplied by ``unit_scale``
  (default 100: one scene unit = one metre = 100 cm) and the mesh opens at its true size in Blender.

Every file goes through :func:`modules.export.atomic.atomic_path`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData
from torch import Tensor

from .atomic import atomic_path
from .mesh import Mesh

__all__ = [
    "AXES",
    "AssimpError",
    "to_axes",
    "srgb_to_linear",
    "write_mesh_ply",
    "write_mesh_obj",
    "write_mesh_glb",
    "write_mesh_fbx",
    "find_assimp",
    "read_ply",
    "MeshFileInfo",
    "assimp_info",
    "assimp_read",
]

AXES = ("opencv", "gltf")
_MIN_ASSIMP = (6, 0)  # versions checked to write FBX that Blender and assimp read back


class AssimpError(RuntimeError):
    """The assimp command-line tool is missing, too old, or failed on a file."""


def to_axes(xyz: np.ndarray, axes: str) -> np.ndarray:
    """Points or vectors [N, 3] in OpenCV axes -> ``axes`` ("opencv": unchanged, "gltf": (x, -y, -z))."""
    if axes == "opencv":
        return xyz
    if axes == "gltf":
        return xyz * np.array([1.0, -1.0, -1.0], dtype=xyz.dtype)
    raise ValueError(f"unknown axes {axes!r}; expected one of {AXES}")


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear values (IEC 61966-2-1)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _np(t: Tensor | None, dtype) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().astype(dtype)


def _colours_u8(mesh: Mesh) -> np.ndarray | None:
    c = _np(mesh.colours, np.float64)
    return None if c is None else (np.clip(c, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _check_mesh(mesh: Mesh, path: Path) -> None:
    if mesh.num_vertices == 0 or mesh.num_faces == 0:
        raise ValueError(
            f"{path}: refusing to write an empty mesh ({mesh.num_vertices} vertices, {mesh.num_faces} faces)"
        )
    if not bool(torch.isfinite(mesh.vertices).all()):
        raise ValueError(f"{path}: mesh has non-finite vertex coordinates")


# ---------------------------------------------------------------------------------------------------- PLY


def _ply_bytes(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None) -> bytes:
    """Binary little-endian PLY: packed structured arrays after a text header (fast for millions of faces)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(vertices), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = vertices.astype(np.float32).T
    if colours is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colours.T
    face = np.empty(len(faces), dtype=[("n", "u1"), ("vertex_indices", "<i4", (3,))])
    face["n"] = 3
    face["vertex_indices"] = faces.astype(np.int32)
    header = ["ply", "format binary_little_endian 1.0", "comment ImmersiveDepth mesh", f"element vertex {len(vertex)}"]
    header += [f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in fields]
    header += [f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()


def write_mesh_ply(path: str | os.PathLike, mesh: Mesh, axes: str = "opencv") -> Path:
    """Binary little-endian PLY: float32 x y z, uchar red green blue (when coloured), int32 triangles."""
    path = Path(path)
    _check_mesh(mesh, path)
    data = _ply_bytes(to_axes(_np(mesh.vertices, np.float64), axes), _np(mesh.faces, np.int64), _colours_u8(mesh))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------- OBJ


def _spherical_uvs(vertices: np.ndarray, faces: np.ndarray, pole_eps: float = 1e-6):
    """Equirect texture coordinates for a mesh seen from the origin (OpenCV axes).

    Args:
        vertices: [V, 3]; faces: [F, 3].
    Returns:
        uv [T, 2] texture coordinates (one per vertex, then extra ones for seam and pole corners) and
        face_uv [F, 3] indices into them (0-based).
    """
    x, y, z = vertices.T
    r = np.maximum(np.linalg.norm(vertices, axis=1), 1e-30)
    uv = np.stack((np.arctan2(x, z) / (2 * np.pi) + 0.5, np.arcsin(np.clip(-y / r, -1.0, 1.0)) / np.pi + 0.5), 1)
    at_pole = np.hypot(x, z) <= pole_eps * r
    u = uv[faces, 0]  # [F, 3] per corner
    pole = at_pole[faces]
    ring_u = np.where(pole, np.nan, u)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-pole (degenerate) triangles give all-NaN rows
        seam = (np.nanmax(ring_u, 1) - np.nanmin(ring_u, 1)) > 0.5  # spans the +-180 deg seam
        new_u = np.where(seam[:, None] & (u < 0.5), u + 1.0, u)
        pole_u = np.nanmean(np.where(pole, np.nan, new_u), 1)
    new_u = np.where(pole, np.nan_to_num(pole_u, nan=0.5)[:, None], new_u)
    changed = (new_u != u).reshape(-1)
    face_uv = faces.reshape(-1).copy()
    face_uv[changed] = len(uv) + np.arange(int(changed.sum()))
    extra = np.stack((new_u.reshape(-1)[changed], uv[faces.reshape(-1)[changed], 1]), 1)
    return np.concatenate((uv, extra)), face_uv.reshape(faces.shape)


def _write_rows(f, fmt: str, rows: np.ndarray, chunk: int = 200_000) -> None:
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        f.write(("\n".join([fmt] * len(block)) % tuple(block.reshape(-1))) + "\n")


def write_mesh_obj(
    path: str | os.PathLike,
    mesh: Mesh,
    axes: str = "gltf",
    texture: Tensor | None = None,
    material_name: str = "panorama",
    uvs: Tensor | None = None,
) -> dict[str, Path]:
    """Wavefront OBJ + MTL (same stem), vertex colours as ``v x y z r g b``, optional equirect texture.

    Args:
        path: the .obj path; the material goes to ``<stem>.mtl`` and the texture to ``<stem>_texture.png``.
        mesh: the mesh (OpenCV axes, camera at the origin).
        axes: frame of the written coordinates ("gltf", Y up, the default for OBJ consumers, or "opencv").
        texture: optional [3, H, W] equirect image in [0, 1] used as diffuse map with spherical UVs.
        material_name: name of the single material.
        uvs: [V, 2] per-vertex texture coordinates (v up) for ``texture``; None: spherical UVs (a panorama).
    Returns:
        {"obj": path, "mtl": ..., "texture": ...} of the files written.
    """
    from PIL import Image

    path = Path(path)
    _check_mesh(mesh, path)
    if texture is not None and (texture.ndim != 3 or texture.shape[0] != 3):
        raise ValueError(f"{path}: texture must be [3, H, W], got {tuple(texture.shape)}")
    if uvs is not None and tuple(uvs.shape) != (mesh.num_vertices, 2):
        raise ValueError(f"{path}: uvs must be [{mesh.num_vertices}, 2] (one per vertex), got {tuple(uvs.shape)}")
    v_cv = _np(mesh.vertices, np.float64)
    faces = _np(mesh.faces, np.int64)
    v = to_axes(v_cv, axes)
    mtl_path = path.with_suffix(".mtl")
    tex_path = path.with_name(f"{path.stem}_texture.png")
    written = {"obj": path, "mtl": mtl_path}

    mtl = [f"newmtl {material_name}", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "illum 1"]
    if texture is not None:
        mtl.append(f"map_Kd {tex_path.name}")
        img = (texture.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        with atomic_path(tex_path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        written["texture"] = tex_path
    with atomic_path(mtl_path) as tmp:
        tmp.write_text("\n".join(mtl) + "\n", encoding="utf-8")

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# ImmersiveDepth mesh: {len(v)} vertices, {len(faces)} faces, axes={axes}\n")
        f.write(f"mtllib {mtl_path.name}\n")
        if mesh.colours is not None:
            rows = np.concatenate((v, _np(mesh.colours, np.float64).clip(0, 1)), axis=1)
            _write_rows(f, "v %.6g %.6g %.6g %.4f %.4f %.4f", rows)
        else:
            _write_rows(f, "v %.6g %.6g %.6g", v)
        f.write(f"usemtl {material_name}\n")
        if texture is not None:
            if uvs is None:
                uv, face_uv = _spherical_uvs(v_cv, faces)
            else:
                uv, face_uv = _np(uvs, np.float64), faces
            _write_rows(f, "vt %.7f %.7f", uv)
            rows = np.stack((faces + 1, face_uv + 1), axis=2).reshape(-1, 6)
            _write_rows(f, "f %d/%d %d/%d %d/%d", rows)
        else:
            _write_rows(f, "f %d %d %d", faces + 1)
    return written


# ---------------------------------------------------------------------------------------------------- GLB


def write_mesh_glb(
    path: str | os.PathLike,
    mesh: Mesh,
    camera: bool = True,
    camera_yfov_deg: float = 90.0,
    camera_aspect: float = 16.0 / 9.0,
    camera_znear: float = 0.01,
    unlit: bool = True,
    double_sided: bool = False,
) -> Path:
    """Binary glTF 2.0 in the glTF frame (+Y up, -Z forward); with no faces the points are written as POINTS.

    Args:
        path: output .glb.
        mesh: the mesh (OpenCV axes); colours (sRGB) become linear COLOR_0.
        camera: add a perspective camera node at the origin looking at the panorama's centre.
        camera_yfov_deg, camera_aspect, camera_znear: that camera's vertical field of view, aspect ratio and near
            plane (scene units).
        unlit: use KHR_materials_unlit so viewers show the photo's colours without relighting.
        double_sided: glTF ``doubleSided``; False lets viewers cull the outside of walls (a see-in dollhouse).
    """
    import pygltflib as g

    path = Path(path)
    if mesh.num_vertices == 0 or not bool(torch.isfinite(mesh.vertices).all()):
        raise ValueError(f"{path}: refusing to write a mesh without vertices or with non-finite coordinates")
    pos = to_axes(_np(mesh.vertices, np.float64), "gltf").astype(np.float32)
    parts = [pos.tobytes()]
    attributes = g.Attributes(POSITION=0)
    accessors = [
        g.Accessor(bufferView=0, componentType=g.FLOAT, count=len(pos), type=g.VEC3,
                   min=pos.min(0).tolist(), max=pos.max(0).tolist())
    ]
    views = [g.BufferView(buffer=0, byteOffset=0, byteLength=len(parts[0]), target=g.ARRAY_BUFFER)]

    def add(data: bytes, accessor: g.Accessor, target: int) -> int:
        offset = sum(len(p) for p in parts)
        parts.append(data)
        views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), target=target))
        accessor.bufferView = len(views) - 1
        accessors.append(accessor)
        return len(accessors) - 1

    if mesh.colours is not None:
        col = srgb_to_linear(_np(mesh.colours, np.float64)).astype(np.float32)
        attributes.COLOR_0 = add(col.tobytes(), g.Accessor(componentType=g.FLOAT, count=len(col), type=g.VEC3),
                                 g.ARRAY_BUFFER)
    primitive = g.Primitive(attributes=attributes, material=0, mode=g.POINTS)
    if mesh.num_faces > 0:
        idx = _np(mesh.faces, np.uint32).reshape(-1)
        primitive.indices = add(idx.tobytes(), g.Accessor(componentType=g.UNSIGNED_INT, count=len(idx), type=g.SCALAR),
                                g.ELEMENT_ARRAY_BUFFER)
        primitive.mode = g.TRIANGLES
    material = g.Material(
        name="panorama",
        pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0,
                                                    roughnessFactor=1.0),
        doubleSided=bool(double_sided),
    )
    gltf = g.GLTF2(
        asset=g.Asset(generator="ImmersiveDepth", version="2.0"),
        scene=0,
        scenes=[g.Scene(nodes=[0])],
        nodes=[g.Node(name="panorama_mesh", mesh=0)],
        meshes=[g.Mesh(name="panorama_mesh", primitives=[primitive])],
        materials=[material],
        accessors=accessors,
        bufferViews=views,
        buffers=[g.Buffer(byteLength=sum(len(p) for p in parts))],
    )
    if unlit:
        material.extensions = {"KHR_materials_unlit": {}}
        gltf.extensionsUsed = ["KHR_materials_unlit"]
    if camera:
        if not 0.0 < camera_yfov_deg < 180.0:
            raise ValueError(f"camera_yfov_deg must be in (0, 180), got {camera_yfov_deg}")
        gltf.cameras = [g.Camera(name="panorama_camera", type=g.PERSPECTIVE, perspective=g.Perspective(
            yfov=math.radians(camera_yfov_deg), aspectRatio=float(camera_aspect), znear=float(camera_znear)))]
        gltf.nodes.append(g.Node(name="panorama_camera", camera=0))  # at the origin, looking along -Z
        gltf.scenes[0].nodes.append(1)
    gltf.set_binary_blob(b"".join(parts))
    with atomic_path(path) as tmp:
        gltf.save_binary(str(tmp))
    return path


# ---------------------------------------------------------------------------------------------------- FBX


def _assimp_version(cmd: list[str], env: dict) -> tuple[int, int]:
    out = subprocess.run([*cmd, "version"], capture_output=True, text=True, env=env, timeout=60)
    m = re.search(r"Version\s+(\d+)\.(\d+)", out.stdout + out.stderr)
    if m is None:
        raise AssimpError(f"could not read the version of assimp at {cmd[0]} (output: {out.stdout[-300:]!r})")
    return int(m.group(1)), int(m.group(2))


def find_assimp(executable: str | os.PathLike | None = None) -> tuple[list[str], dict]:
    """Locate the assimp command-line tool.

    Order: ``executable`` if given; the binary inside the ``cmeel-assimp`` wheel (``<site-packages>/cmeel.prefix``,
    run with its ``lib`` on LD_LIBRARY_PATH, as its own launcher does); an ``assimp`` on PATH of version >= 6.0
    (Debian's 5.2.5 writes FBX that does not read back).

    Returns:
        the command prefix (a list for subprocess) and the environment to run it with.
    Raises:
        AssimpError: none found.
    """
    env = dict(os.environ)
    if executable is not None:
        exe = Path(executable)
        if not exe.is_file():
            raise AssimpError(f"assimp executable {exe} does not exist")
        return [str(exe)], env
    for entry in sys.path:
        prefix = Path(entry or ".") / "cmeel.prefix"
        exe = prefix / "bin" / "assimp"
        if exe.is_file() and os.access(exe, os.X_OK):
            lib = str(prefix / "lib")
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, env.get("LD_LIBRARY_PATH")) if p)
            return [str(exe)], env
    found = shutil.which("assimp")
    if found is not None:
        version = _assimp_version([found], env)
        if version >= _MIN_ASSIMP:
            return [found], env
        raise AssimpError(
            f"assimp at {found} is version {version[0]}.{version[1]}; FBX export needs >= "
            f"{_MIN_ASSIMP[0]}.{_MIN_ASSIMP[1]}: pip install cmeel-assimp"
        )
    raise AssimpError("the assimp command-line tool was not found: pip install cmeel-assimp")


def _run_assimp(args: list[str], executable=None, timeout_s: float = 600.0) -> str:
    cmd, env = find_assimp(executable)
    try:
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise AssimpError(f"assimp {' '.join(args)} timed out after {timeout_s} s") from e
    if out.returncode != 0:
        raise AssimpError(f"assimp {' '.join(args)} failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}")
    return out.stdout


def write_mesh_fbx(
    path: str | os.PathLike,
    mesh: Mesh,
    unit_scale: float = 100.0,
    assimp_executable: str | os.PathLike | None = None,
    timeout_s: float = 600.0,
) -> Path:
    """Binary FBX (7.5, Y up, centimetres) with vertex colours, written by assimp from a temporary PLY.

    Args:
        path: output .fbx.
        mesh: the mesh (OpenCV axes); written in the glTF frame (Y up), coordinates times ``unit_scale``.
        unit_scale: FBX units (centimetres) per scene unit; 100 keeps metres metres in Blender / Unity.
        assimp_executable: explicit assimp binary (default: see :func:`find_assimp`).
        timeout_s: limit for the conversion.
    """
    path = Path(path)
    _check_mesh(mesh, path)
    if not (math.isfinite(unit_scale) and unit_scale > 0):
        raise ValueError(f"unit_scale must be positive and finite, got {unit_scale}")
    v = to_axes(_np(mesh.vertices, np.float64), "gltf") * unit_scale
    data = _ply_bytes(v, _np(mesh.faces, np.int64), _colours_u8(mesh))
    with tempfile.TemporaryDirectory(prefix="immersivedepth_fbx_") as tmpdir:
        src = Path(tmpdir) / "mesh.ply"
        src.write_bytes(data)
        with atomic_path(path) as tmp:
            _run_assimp(["export", str(src), str(tmp), "-ffbx"], assimp_executable, timeout_s)
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise AssimpError(f"{path}: assimp reported success but wrote no FBX")
    return path


# ---------------------------------------------------------------------------------------------------- read-back


def read_ply(path: str | os.PathLike) -> dict:
    """Read a PLY with plyfile.

    Returns:
        {"elements": {name: count}, "properties": {name: [property names]}, "data": PlyData}.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such PLY file")
    ply = PlyData.read(str(path))
    return {
        "elements": {e.name: e.count for e in ply.elements},
        "properties": {e.name: [p.name for p in e.properties] for e in ply.elements},
        "data": ply,
    }


@dataclass(frozen=True)
class MeshFileInfo:
    """What assimp reads back from a file (summed over its meshes).

    ``num_vertices`` counts assimp's vertices: FBX and OBJ with UVs store one per face corner, so compare
    ``num_unique_positions`` (distinct positions) against the written mesh.
    """

    num_meshes: int
    num_vertices: int
    num_faces: int
    num_unique_positions: int
    num_cameras: int
    has_colours: bool
    has_uvs: bool
    positions: np.ndarray  # [N, 3] as read (file's frame and units)
    colours: np.ndarray | None  # [N, 4] RGBA as read, or None


def assimp_info(path: str | os.PathLike, assimp_executable=None, timeout_s: float = 600.0) -> dict[str, int]:
    """Quick counts from ``assimp info`` (vertices after assimp joins identical ones).

    Returns:
        {"meshes", "vertices", "faces", "cameras"} as ints.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = _run_assimp(["info", str(path)], assimp_executable, timeout_s)
    counts = {}
    for key in ("Meshes", "Vertices", "Faces", "Cameras"):
        m = re.search(rf"^{key}:\s+(\d+)", out, flags=re.M)
        if m is None:
            raise AssimpError(f"{path}: `assimp info` printed no {key} count")
        counts[key.lower()] = int(m.group(1))
    return counts


def assimp_read(path: str | os.PathLike, assimp_executable=None, timeout_s: float = 600.0) -> MeshFileInfo:
    """Import a file with assimp (dumped to its JSON format) and summarise it. For tests and small files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="immersivedepth_assimp_") as tmpdir:
        out = Path(tmpdir) / "scene.assjson"
        _run_assimp(["export", str(path), str(out), "-fassjson"], assimp_executable, timeout_s)
        scene = json.loads(out.read_text(encoding="utf-8"))
    meshes = scene.get("meshes", [])
    pos = [np.asarray(m["vertices"], dtype=np.float64).reshape(-1, 3) for m in meshes]
    cols = [np.asarray(m["colors"][0], dtype=np.float64).reshape(-1, 4) for m in meshes if m.get("colors")]
    positions = np.concatenate(pos) if pos else np.zeros((0, 3))
    return MeshFileInfo(
        num_meshes=len(meshes),
        num_vertices=len(positions),
        num_faces=sum(len(m.get("faces", [])) for m in meshes),
        num_unique_positions=len(np.unique(positions.astype(np.float32), axis=0)) if len(positions) else 0,
        num_cameras=len(scene.get("cameras", [])),
        has_colours=bool(cols) and len(cols) == len(meshes),
        has_uvs=any(m.get("texturecoords") for m in meshes),
        positions=positions,
        colours=np.concatenate(cols) if cols else None,
    )
