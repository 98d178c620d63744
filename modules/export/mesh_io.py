"""Mesh files: PLY, OBJ (+MTL), GLB and binary FBX, textured with the panorama; read-backs.

Size (over the ~450-line guide): one short writer per format plus the shared axes, UV and texture helpers they all
use; splitting them would spread one file format's conventions over several modules (the FBX encoder itself is in
fbx.py).

Axes (``axes``, one option for every 3D file). Meshes live in the project's OpenCV frame (x right, y down,
z forward, camera at the origin) and are written in one of:

* ``gltf`` (default): ``(x, y, z) = (x, -y, -z)_opencv``: x right, +Y up, the panorama's centre column along -Z (a
  180 deg rotation about x). MeshLab, three.js and Open3D show it upright; Blender's OBJ, glTF and FBX importers
  convert Y-up to Z-up, so it opens upright there too. Blender's PLY importer does not convert (it reads the
  file as Z up): choose ``blender_z_up`` for PLY files meant for Blender, or Forward -Z / Up Y in its dialog.
* ``blender_z_up``: ``(x, y, z) = (x, z, -y)_opencv``: x right, +Y the panorama's centre, +Z up (Blender's own
  frame; upright in Blender's PLY importer, lying on its back in MeshLab).
* ``opencv``: the project's frame, as distance.npy / points.exr (upside down in MeshLab).

GLB is always written in the glTF frame (the format mandates +Y up); FBX files declare their axes in
GlobalSettings (UpAxis / FrontAxis / CoordAxis), so FBX readers show them upright whichever is chosen.

Texture. With a texture (the equirect panorama), OBJ, GLB and FBX carry spherical UVs into it: u = lon / 2pi +
0.5, v = lat / pi + 0.5 (glTF: 1 - v, its origin is the top-left); triangles across the +-180 deg seam get u + 1
(the texture repeats in u) and pole vertices get the mean u of their triangle, so a decimated mesh keeps the
photo's full resolution. Every format carries vertex normals (area-weighted, facing the camera, which sees the
surfaces from the inside).

* PLY: binary little endian, float32 x y z nx ny nz, uchar red green blue, faces as ``vertex_indices``.
* OBJ: ``v x y z r g b`` (vertex colours, read by Blender >= 3.5, MeshLab, assimp), ``vn``, ``vt`` + ``map_Kd``.
* GLB: POSITION, NORMAL, TEXCOORD_0 and a baseColorTexture (JPEG or PNG inside the file) when textured, else
  COLOR_0 (linear, as glTF defines vertex colours); an unlit material (KHR_materials_unlit: the photo's colours,
  not relit); a perspective camera node at the origin.
* FBX: binary FBX 7.4 written by :mod:`modules.export.fbx` (float32 layers, zlib-compressed arrays, colours per
  control point, a Lambert material whose DiffuseColor is connected to the panorama texture); coordinates in
  scene units (metres) with ``UnitScaleFactor = unit_scale`` centimetres per unit (default 100), so Blender and
  Unity open it at its true size.

Every file goes through :func:`modules.export.atomic.atomic_path`.
"""

from __future__ import annotations

import io
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
from torch import Tensor

from ..extras import require
from .atomic import atomic_path
from .axes import AXES, to_axes
from .fbx import encode_fbx, fbx_mesh_document
from .mesh import Mesh, vertex_normals
from .ply import read_ply

__all__ = [
    "AXES",
    "AssimpError",
    "to_axes",
    "srgb_to_linear",
    "mesh_normals",
    "spherical_uvs",
    "write_texture",
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

_MIN_ASSIMP = (6, 0)  # versions checked to read back what the writers here produce
# FBX GlobalSettings per axes: ((UpAxis, sign), (FrontAxis, sign), (CoordAxis, sign)); FrontAxis is the direction
# towards the viewer (minus the panorama's centre), CoordAxis the right-hand direction (+x in every frame).
_FBX_AXES = {
    "gltf": ((1, 1), (2, 1), (0, 1)),
    "blender_z_up": ((2, 1), (1, -1), (0, 1)),
    "opencv": ((1, -1), (2, -1), (0, 1)),
}


class AssimpError(RuntimeError):
    """The assimp command-line tool is missing, too old, or failed on a file."""


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


def _check_axes(axes: str) -> None:
    if axes not in AXES:
        raise ValueError(f"unknown axes {axes!r}; expected one of {AXES}")


def _check_texture(texture: Tensor | None, path: Path) -> None:
    if texture is not None and (texture.ndim != 3 or texture.shape[0] != 3):
        raise ValueError(f"{path}: texture must be [3, H, W], got {tuple(texture.shape)}")


def mesh_normals(mesh: Mesh) -> np.ndarray:
    """Unit vertex normals [V, 3] (float64, OpenCV axes): area-weighted, facing the camera; a vertex whose
    triangles cancel out (or that has none) gets the direction towards the camera."""
    n = _np(vertex_normals(mesh), np.float64)
    v = _np(mesh.vertices, np.float64)
    bad = ~(np.linalg.norm(n, axis=1) > 0.5)
    if bad.any():
        n[bad] = -v[bad] / np.maximum(np.linalg.norm(v[bad], axis=1, keepdims=True), 1e-30)
        still = ~(np.linalg.norm(n, axis=1) > 0.5)
        n[still] = (0.0, 0.0, -1.0)
    return n


def _texture_u8(texture: Tensor) -> np.ndarray:
    return (texture.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def _image_bytes(texture: Tensor, fmt: str, jpeg_quality: int = 95, png_compress_level: int = 1) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(_texture_u8(texture))
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=int(jpeg_quality), subsampling=0)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=int(png_compress_level))
    else:
        raise ValueError(f"unknown texture format {fmt!r}; expected 'jpeg' or 'png'")
    return buf.getvalue()


def write_texture(path: str | os.PathLike, texture: Tensor, png_compress_level: int = 1) -> Path:
    """The equirect texture [3, H, W] in [0, 1] as an 8-bit RGB PNG (what OBJ and FBX refer to)."""
    path = Path(path)
    _check_texture(texture, path)
    data = _image_bytes(texture, "png", png_compress_level=png_compress_level)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------- PLY


def _ply_bytes(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None,
               normals: np.ndarray | None = None) -> bytes:
    """Binary little-endian PLY: packed structured arrays after a text header (fast for millions of faces)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(vertices), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = vertices.astype(np.float32).T
    if normals is not None:
        vertex["nx"], vertex["ny"], vertex["nz"] = normals.astype(np.float32).T
    if colours is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colours.T
    face = np.empty(len(faces), dtype=[("n", "u1"), ("vertex_indices", "<i4", (3,))])
    face["n"] = 3
    face["vertex_indices"] = faces.astype(np.int32)
    header = ["ply", "format binary_little_endian 1.0", "comment ImmersiveDepth mesh", f"element vertex {len(vertex)}"]
    header += [f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in fields]
    header += [f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()


def write_mesh_ply(path: str | os.PathLike, mesh: Mesh, axes: str = "gltf", normals: bool = True) -> Path:
    """Binary little-endian PLY: float32 x y z (nx ny nz), uchar red green blue (when coloured), int32 triangles."""
    path = Path(path)
    _check_mesh(mesh, path)
    _check_axes(axes)
    n = to_axes(mesh_normals(mesh), axes) if normals else None
    data = _ply_bytes(to_axes(_np(mesh.vertices, np.float64), axes), _np(mesh.faces, np.int64), _colours_u8(mesh), n)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------- UVs


def spherical_uvs(vertices: np.ndarray, faces: np.ndarray, pole_eps: float = 1e-6):
    """Equirect texture coordinates for a mesh seen from the origin (OpenCV axes; v up, OBJ / FBX convention).

    Args:
        vertices: [V, 3]; faces: [F, 3].
    Returns:
        uv [T, 2] texture coordinates (one per vertex, then extra ones for seam and pole corners) and
        face_uv [F, 3] indices into them (0-based); extra entries have indices >= V.
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


_spherical_uvs = spherical_uvs  # the name earlier code and tests use


def _split_uv_vertices(num_vertices: int, faces: np.ndarray, uv: np.ndarray, face_uv: np.ndarray):
    """One vertex per distinct (position, uv) pair, for formats with a single index per corner (glTF).

    Returns:
        source [V'] original vertex of each output vertex, uv [V', 2], faces [F, 3] into the output vertices.
    """
    cv, ct = faces.reshape(-1), face_uv.reshape(-1)
    changed = ct >= num_vertices
    out_faces = cv.copy()
    if not changed.any():
        return np.arange(num_vertices), uv[:num_vertices], faces
    key = np.stack((cv[changed], np.round(uv[ct[changed], 0] * 2.0**24).astype(np.int64)), 1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    out_faces[changed] = num_vertices + inverse.reshape(-1)
    source = np.concatenate((np.arange(num_vertices), cv[changed][first]))
    out_uv = np.concatenate((uv[:num_vertices], uv[ct[changed][first]]))
    return source, out_uv, out_faces.reshape(faces.shape)


# ---------------------------------------------------------------------------------------------------- OBJ


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
    normals: bool = True,
    texture_file: str | os.PathLike | None = None,
    png_compress_level: int = 1,
    uvs: Tensor | None = None,
) -> dict[str, Path]:
    """Wavefront OBJ + MTL (same stem), vertex colours as ``v x y z r g b``, normals, optional equirect texture.

    Args:
        path: the .obj path; the material goes to ``<stem>.mtl`` and the texture to ``<stem>_texture.png``.
        mesh: the mesh (OpenCV axes, camera at the origin).
        axes: frame of the written coordinates (see the module docstring).
        texture: optional [3, H, W] equirect image in [0, 1] used as diffuse map with spherical UVs.
        material_name: name of the single material.
        normals: write ``vn`` vertex normals.
        texture_file: an existing texture file to refer to instead of writing ``<stem>_texture.png``.
        uvs: [V, 2] per-vertex texture coordinates (v up) for ``texture``; None: spherical UVs (a panorama).
    Returns:
        {"obj": path, "mtl": ..., "texture": ...} of the files written (texture: the file referred to).
    """
    path = Path(path)
    _check_mesh(mesh, path)
    _check_axes(axes)
    _check_texture(texture, path)
    if uvs is not None and tuple(uvs.shape) != (mesh.num_vertices, 2):
        raise ValueError(f"{path}: uvs must be [{mesh.num_vertices}, 2] (one per vertex), got {tuple(uvs.shape)}")
    v_cv = _np(mesh.vertices, np.float64)
    faces = _np(mesh.faces, np.int64)
    v = to_axes(v_cv, axes)
    mtl_path = path.with_suffix(".mtl")
    written = {"obj": path, "mtl": mtl_path}

    mtl = [f"newmtl {material_name}", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "illum 1"]
    if texture is not None:
        tex_path = Path(texture_file) if texture_file is not None else path.with_name(f"{path.stem}_texture.png")
        if texture_file is None:
            write_texture(tex_path, texture, png_compress_level)
        mtl.append(f"map_Kd {os.path.relpath(tex_path, path.parent)}")
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
        if normals:
            _write_rows(f, "vn %.4f %.4f %.4f", to_axes(mesh_normals(mesh), axes))
        f.write(f"usemtl {material_name}\n")
        if texture is not None:
            if uvs is None:
                uv, face_uv = spherical_uvs(v_cv, faces)
            else:
                uv, face_uv = _np(uvs, np.float64), faces
            _write_rows(f, "vt %.7f %.7f", uv)
            if normals:
                rows = np.stack((faces + 1, face_uv + 1, faces + 1), axis=2).reshape(-1, 9)
                _write_rows(f, "f %d/%d/%d %d/%d/%d %d/%d/%d", rows)
            else:
                rows = np.stack((faces + 1, face_uv + 1), axis=2).reshape(-1, 6)
                _write_rows(f, "f %d/%d %d/%d %d/%d", rows)
        elif normals:
            rows = np.stack((faces + 1, faces + 1), axis=2).reshape(-1, 6)
            _write_rows(f, "f %d//%d %d//%d %d//%d", rows)
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
    texture: Tensor | None = None,
    texture_format: str = "jpeg",
    jpeg_quality: int = 95,
    normals: bool = True,
) -> Path:
    """Binary glTF 2.0 in the glTF frame (+Y up, -Z forward); with no faces the points are written as POINTS.

    Args:
        path: output .glb.
        mesh: the mesh (OpenCV axes); colours (sRGB) become linear COLOR_0 when there is no texture.
        camera: add a perspective camera node at the origin looking at the panorama's centre.
        camera_yfov_deg, camera_aspect, camera_znear: that camera's vertical field of view, aspect ratio and near
            plane (scene units).
        unlit: use KHR_materials_unlit so viewers show the photo's colours without relighting.
        double_sided: glTF ``doubleSided``; False lets viewers cull the outside of walls (a see-in dollhouse).
        texture: optional [3, H, W] equirect image: embedded (``texture_format`` "jpeg" or "png") as the
            baseColorTexture, with TEXCOORD_0 from spherical UVs (seam vertices duplicated).
        normals: write NORMAL (unit, facing the camera).
    """
    g = require("pygltflib", "GLB export")

    path = Path(path)
    if mesh.num_vertices == 0 or not bool(torch.isfinite(mesh.vertices).all()):
        raise ValueError(f"{path}: refusing to write a mesh without vertices or with non-finite coordinates")
    _check_texture(texture, path)
    has_faces = mesh.num_faces > 0
    v_cv = _np(mesh.vertices, np.float64)
    faces = _np(mesh.faces, np.int64)
    source = np.arange(len(v_cv))
    uv = None
    if texture is not None and has_faces:
        uv_obj, face_uv = spherical_uvs(v_cv, faces)
        source, uv, faces = _split_uv_vertices(len(v_cv), faces, uv_obj, face_uv)
        uv = np.stack((uv[:, 0], 1.0 - uv[:, 1]), 1).astype(np.float32)  # glTF: v from the top
    pos = to_axes(v_cv[source], "gltf").astype(np.float32)
    parts: list[bytes] = []
    accessors: list = []
    views: list = []

    def add(data: bytes, accessor, target: int | None) -> int:
        offset = sum(len(p) for p in parts)
        parts.append(data + b"\x00" * (-len(data) % 4))  # 4-byte alignment of every view
        views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), target=target))
        if accessor is None:
            return len(views) - 1
        accessor.bufferView = len(views) - 1
        accessors.append(accessor)
        return len(accessors) - 1

    attributes = g.Attributes(POSITION=add(pos.tobytes(), g.Accessor(
        componentType=g.FLOAT, count=len(pos), type=g.VEC3, min=pos.min(0).tolist(), max=pos.max(0).tolist()),
        g.ARRAY_BUFFER))
    if normals and has_faces:
        n = to_axes(mesh_normals(mesh)[source], "gltf")
        n = (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)
        attributes.NORMAL = add(n.tobytes(), g.Accessor(componentType=g.FLOAT, count=len(n), type=g.VEC3),
                                g.ARRAY_BUFFER)
    if uv is not None:
        attributes.TEXCOORD_0 = add(uv.tobytes(), g.Accessor(componentType=g.FLOAT, count=len(uv), type=g.VEC2),
                                    g.ARRAY_BUFFER)
    elif mesh.colours is not None:
        col = srgb_to_linear(_np(mesh.colours, np.float64)[source]).astype(np.float32)
        attributes.COLOR_0 = add(col.tobytes(), g.Accessor(componentType=g.FLOAT, count=len(col), type=g.VEC3),
                                 g.ARRAY_BUFFER)
    primitive = g.Primitive(attributes=attributes, material=0, mode=g.POINTS)
    if has_faces:
        idx = faces.astype(np.uint32).reshape(-1)
        primitive.indices = add(idx.tobytes(), g.Accessor(componentType=g.UNSIGNED_INT, count=len(idx),
                                                          type=g.SCALAR), g.ELEMENT_ARRAY_BUFFER)
        primitive.mode = g.TRIANGLES
    pbr = g.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
    material = g.Material(name="panorama", pbrMetallicRoughness=pbr, doubleSided=bool(double_sided))
    gltf = g.GLTF2(
        asset=g.Asset(generator="ImmersiveDepth", version="2.0"),
        scene=0,
        scenes=[g.Scene(nodes=[0])],
        nodes=[g.Node(name="panorama_mesh", mesh=0)],
        meshes=[g.Mesh(name="panorama_mesh", primitives=[primitive])],
        materials=[material],
        accessors=accessors,
        bufferViews=views,
    )
    if uv is not None:
        image = add(_image_bytes(texture, texture_format, jpeg_quality), None, None)
        gltf.images = [g.Image(name="panorama", bufferView=image,
                               mimeType="image/jpeg" if texture_format == "jpeg" else "image/png")]
        # u repeats (seam triangles run past 1); v clamps at the poles
        gltf.samplers = [g.Sampler(magFilter=g.LINEAR, minFilter=g.LINEAR_MIPMAP_LINEAR, wrapS=g.REPEAT,
                                   wrapT=g.CLAMP_TO_EDGE)]
        gltf.textures = [g.Texture(sampler=0, source=0, name="panorama")]
        pbr.baseColorTexture = g.TextureInfo(index=0)
    gltf.buffers = [g.Buffer(byteLength=sum(len(p) for p in parts))]
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


def write_mesh_fbx(
    path: str | os.PathLike,
    mesh: Mesh,
    unit_scale: float = 100.0,
    axes: str = "gltf",
    texture: Tensor | None = None,
    texture_file: str | os.PathLike | None = None,
    normals: bool = True,
    colours: bool = True,
    compress_level: int = 1,
    png_compress_level: int = 1,
) -> dict[str, Path]:
    """Binary FBX 7.4 (see :mod:`modules.export.fbx`): normals, vertex colours, UVs and a connected diffuse texture.

    Args:
        path: output .fbx.
        mesh: the mesh (OpenCV axes); written in ``axes`` (declared in GlobalSettings) in scene units.
        unit_scale: the file's ``UnitScaleFactor``, centimetres per scene unit (100: metres stay metres).
        texture: optional [3, H, W] equirect image; with it the file gets spherical UVs and a Lambert material
            whose diffuse colour is the texture file.
        texture_file: an existing PNG of ``texture`` to refer to; None writes ``<stem>_texture.png``.
        normals, colours: write per-vertex normals / colours (colours once per vertex, not per face corner).
        compress_level: zlib level of the arrays (1: fast; 0: uncompressed).
    Returns:
        {"fbx": path, "texture": ...} of the files written (texture: the file referred to).
    """
    path = Path(path)
    _check_mesh(mesh, path)
    _check_axes(axes)
    _check_texture(texture, path)
    if not (math.isfinite(unit_scale) and unit_scale > 0):
        raise ValueError(f"unit_scale must be positive and finite, got {unit_scale}")
    v_cv = _np(mesh.vertices, np.float64)
    faces = _np(mesh.faces, np.int64)
    written = {"fbx": path}
    uv = face_uv = tex_rel = tex_abs = None
    if texture is not None:
        tex_path = Path(texture_file) if texture_file is not None else path.with_name(f"{path.stem}_texture.png")
        if texture_file is None:
            write_texture(tex_path, texture, png_compress_level)
        written["texture"] = tex_path
        uv, face_uv = spherical_uvs(v_cv, faces)
        tex_rel = os.path.relpath(tex_path, path.parent)
        tex_abs = str(tex_path.resolve())
    nodes = fbx_mesh_document(
        to_axes(v_cv, axes),
        faces,
        normals=to_axes(mesh_normals(mesh), axes) if normals else None,
        colours=_np(mesh.colours, np.float64).clip(0, 1) if colours and mesh.colours is not None else None,
        uv=uv,
        face_uv=face_uv,
        texture_file=tex_rel,
        texture_abs=tex_abs,
        axes=_FBX_AXES[axes],
        unit_scale_cm=float(unit_scale),
    )
    data = encode_fbx(nodes, compress_level)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return written


# ---------------------------------------------------------------------------------------------------- assimp


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


# ---------------------------------------------------------------------------------------------------- read-back


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
    has_normals: bool
    textures: tuple[str, ...]  # diffuse texture file names of the materials
    positions: np.ndarray  # [N, 3] as read (file's frame and units)
    colours: np.ndarray | None  # [N, 4] RGBA as read, or None
    normals: np.ndarray | None  # [N, 3] as read, or None


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
    nrm = [np.asarray(m["normals"], dtype=np.float64).reshape(-1, 3) for m in meshes if m.get("normals")]
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
        has_normals=bool(meshes) and all(len(m.get("normals") or []) == len(m["vertices"]) for m in meshes),
        textures=tuple(p["value"] for mat in scene.get("materials", []) for p in mat.get("properties", [])
                       if p.get("key") == "$tex.file" and p.get("semantic") == 1),
        positions=positions,
        colours=np.concatenate(cols) if cols else None,
        normals=np.concatenate(nrm) if nrm and len(nrm) == len(meshes) else None,
    )
