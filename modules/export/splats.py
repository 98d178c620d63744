"""Gaussian splats from an ERP distance map (or a perspective view's points), written as a PLY in the standard 3D Gaussian Splatting layout.

One flat splat per (subsampled) valid pixel, a disc facing the camera:

* centre: the pixel's ray times its distance, in ``axes`` (default OpenCV, the convention of COLMAP-trained 3DGS
  scenes that splat viewers expect; "gltf" and "blender_z_up" as in axes.py);
* rotation: ``R = Ry(lon) Rx(lat)``, whose columns are the pixel's local east, down and ray directions, so the
  splat's third axis (the thin one) lies along the ray; quaternion stored w first, as the reference 3DGS code's
  ``build_rotation`` reads ``rot_0..3``;
* scales (stored as natural log): east ``d * 2pi/W * stride * cos(lat)``, down ``d * pi/H * stride`` (the
  pixel's footprint at its distance) times ``footprint_scale`` (1 by default: neighbouring discs overlap at one
  standard deviation, so from the capture point they render opaque, without the see-through grid of 0.5);
  thickness ``thickness_ratio`` times the smaller;
* colour: degree-0 spherical harmonic ``f_dc = (rgb - 0.5) / C0`` with ``C0 = 0.28209479177387814``; the file's
  ``sh_degree`` (0 by default: no ``f_rest_*``) sets how many zero higher-order coefficients are written
  (3 * ((degree + 1)^2 - 1): 45 for degree 3, for tools that expect them);
* opacity (stored as logit): ``max_opacity`` without a confidence map (what the dense export passes by default:
  every pixel has a surface, so nothing should be see-through from the capture point); with one,
  ``min_opacity + (max_opacity - min_opacity) * confidence`` (low-confidence splats fade);
* ``nx ny nz``: the disc's normal, towards the camera (3DGS viewers ignore it).

Properties, all float32, binary little endian, in this order: x y z nx ny nz f_dc_0..2 f_rest_* opacity
scale_0..2 rot_0..3.

:func:`write_splats_web` writes the compact ``.splat`` format read by web viewers (antimatter15/splat, SuperSplat,
gsplat.js, ...): 32 bytes per splat, little endian: position 3 x float32, scale 3 x float32 (linear), colour RGBA
4 x uint8 (A = opacity), rotation 4 x uint8 (w, x, y, z of the unit quaternion, ``q * 128 + 128``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..geometry.erp_maps import check_distance_map, valid_distance_mask
from ..geometry.spherical import direction_to_lonlat, erp_lonlat_grid, lonlat_to_direction
from .atomic import atomic_path
from .axes import axes_matrix
from .ply import read_ply

__all__ = [
    "SH_C0",
    "Splats",
    "SplatStyle",
    "erp_splats",
    "pinhole_splats",
    "quaternion_to_matrix",
    "splat_ply_properties",
    "write_splats_ply",
    "read_splats_ply",
    "write_splats_web",
    "read_splats_web",
]

SH_C0 = 0.28209479177387814


@dataclass(frozen=True)
class Splats:
    """Gaussian splats (activated values, not the PLY's stored logit / log).

    Attributes:
        means: [N, 3] centres.
        normals: [N, 3] unit disc normals (towards the camera).
        colours: [N, 3] RGB in [0, 1].
        opacities: [N] in (0, 1).
        scales: [N, 3] standard deviations along the rotation's columns.
        quats: [N, 4] unit quaternions (w, x, y, z), rotation from splat to world.
    """

    means: Tensor
    normals: Tensor
    colours: Tensor
    opacities: Tensor
    scales: Tensor
    quats: Tensor

    @property
    def num_splats(self) -> int:
        return int(self.means.shape[0])


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit quaternions [..., 4] (w, x, y, z) -> rotation matrices [..., 3, 3]."""
    q = torch.nn.functional.normalize(q, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ),
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def _quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of quaternions [..., 4] (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack((
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ), dim=-1)


def _matrix_to_quaternion(m: Tensor) -> Tensor:
    """A rotation matrix [3, 3] -> unit quaternion [4] (w, x, y, z) (Shepperd's method, any rotation)."""
    t = torch.trace(m)
    cands = torch.stack((t, m[0, 0], m[1, 1], m[2, 2]))
    k = int(torch.argmax(cands))
    if k == 0:
        r = torch.sqrt(1 + t)
        q = torch.stack((r / 2, (m[2, 1] - m[1, 2]) / (2 * r), (m[0, 2] - m[2, 0]) / (2 * r),
                         (m[1, 0] - m[0, 1]) / (2 * r)))
    else:
        i, j, l = k - 1, k % 3, (k + 1) % 3
        r = torch.sqrt(1 + m[i, i] - m[j, j] - m[l, l])
        v = [None, None, None]
        v[i] = r / 2
        v[j] = (m[j, i] + m[i, j]) / (2 * r)
        v[l] = (m[l, i] + m[i, l]) / (2 * r)
        q = torch.stack(((m[l, j] - m[j, l]) / (2 * r), *v))
    return q / q.norm()


def _camera_facing_quaternion(lon: Tensor, lat: Tensor) -> Tensor:
    """Quaternion (w, x, y, z) of ``Ry(lon) Rx(lat)``: [...] -> [..., 4]."""
    cy, sy = torch.cos(lon / 2), torch.sin(lon / 2)
    cx, sx = torch.cos(lat / 2), torch.sin(lat / 2)
    return torch.stack((cy * cx, cy * sx, sy * cx, -sy * sx), dim=-1)


@dataclass(frozen=True)
class SplatStyle:
    """How pixels become splats (keyword options of :func:`erp_splats` and :func:`pinhole_splats`).

    Attributes:
        stride: keep every ``stride``-th row and column.
        footprint_scale: standard deviation as a fraction of the (strided) pixel footprint.
        thickness_ratio: thin-axis scale relative to the smaller in-plane scale (0 < ratio <= 1).
        min_opacity, max_opacity: opacity at confidence 0 and 1 (0 < min <= max < 1).
        axes: "opencv" (project frame, default), "gltf" ((x, -y, -z): Y up) or "blender_z_up" ((x, z, -y)).
    """

    stride: int = 1
    footprint_scale: float = 1.0
    thickness_ratio: float = 0.05
    min_opacity: float = 0.1
    max_opacity: float = 0.95
    axes: str = "opencv"

    def __post_init__(self) -> None:
        if int(self.stride) != self.stride or self.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {self.stride}")
        if not (0.0 < self.min_opacity <= self.max_opacity < 1.0):
            raise ValueError(f"need 0 < min_opacity <= max_opacity < 1, got {self.min_opacity}, {self.max_opacity}")
        if not (0.0 < self.thickness_ratio <= 1.0) or not self.footprint_scale > 0:
            raise ValueError(f"need 0 < thickness_ratio <= 1 and footprint_scale > 0, got {self.thickness_ratio}, "
                             f"{self.footprint_scale}")
        axes_matrix(self.axes)  # raises on unknown axes


def _check_maps(H: int, W: int, rgb: Tensor, confidence: Tensor | None) -> None:
    if rgb.ndim != 3 or rgb.shape[0] != 3 or tuple(rgb.shape[1:]) != (H, W):
        raise ValueError(f"rgb must be [3, {H}, {W}], got {tuple(rgb.shape)}")
    if confidence is not None and tuple(confidence.shape) != (H, W):
        raise ValueError(f"confidence must be [{H}, {W}], got {tuple(confidence.shape)}")


def _ray_splats(lon: Tensor, lat: Tensor, d: Tensor, east: Tensor, down: Tensor, colours: Tensor,
                confidence: Tensor | None, style: SplatStyle) -> Splats:
    """Camera-facing discs at distance ``d`` [N] along the rays (lon, lat) [N] with in-plane scales east, down [N]."""
    thickness_ratio, min_opacity, max_opacity, axes = (style.thickness_ratio, style.min_opacity, style.max_opacity,
                                                       style.axes)
    scales = torch.stack((east, down, thickness_ratio * torch.minimum(east, down)), dim=-1)
    if confidence is None:
        opacities = torch.full_like(d, max_opacity)
    else:
        c = torch.nan_to_num(confidence.to(d.dtype), nan=0.0).clamp(0, 1)
        opacities = min_opacity + (max_opacity - min_opacity) * c
    quats = _camera_facing_quaternion(lon, lat)
    ray = lonlat_to_direction(lon, lat)
    means, normals = ray * d[:, None], -ray
    if axes != "opencv":
        M = torch.as_tensor(axes_matrix(axes), dtype=d.dtype, device=d.device)
        means, normals = means @ M.T, normals @ M.T
        quats = _quat_multiply(_matrix_to_quaternion(M).expand_as(quats), quats)  # world rotation first
    return Splats(means, normals, colours.to(d.dtype).clamp(0, 1), opacities, scales, quats)


def erp_splats(distance: Tensor, rgb: Tensor, confidence: Tensor | None = None, **style) -> Splats:
    """One camera-facing flat Gaussian per (subsampled) valid pixel of an ERP distance map.

    Args:
        distance: [H, W] distance along each ray; NaN / inf / <= 0 pixels are dropped.
        rgb: [3, H, W] colours in [0, 1].
        confidence: optional [H, W] in [0, 1] (NaN counts as 0) mapped linearly to opacity.
        style: keyword options of :class:`SplatStyle` (stride, footprint_scale, thickness_ratio, min_opacity,
            max_opacity, axes).
    Returns:
        :class:`Splats` on ``distance``'s device and dtype.
    """
    st = SplatStyle(**style)
    stride, footprint_scale = st.stride, st.footprint_scale
    check_distance_map(distance)
    H, W = distance.shape
    _check_maps(H, W, rgb, confidence)
    s = (slice(None, None, stride), slice(None, None, stride))
    lon, lat = (t[s] for t in erp_lonlat_grid(H, W, distance.device, distance.dtype))
    d = distance[s]
    valid = valid_distance_mask(d)
    lon, lat, d = lon[valid], lat[valid], d[valid]
    east = d * (2 * math.pi / W) * stride * torch.cos(lat) * footprint_scale
    down = d * (math.pi / H) * stride * torch.ones_like(lat) * footprint_scale
    colours = rgb[:, s[0], s[1]].permute(1, 2, 0)[valid]
    conf = None if confidence is None else confidence[s][valid]
    return _ray_splats(lon, lat, d, east, down, colours, conf, st)


def pinhole_splats(points: Tensor, rgb: Tensor, fx: float, fy: float, confidence: Tensor | None = None,
                   **style) -> Splats:
    """One camera-facing flat Gaussian per (subsampled) pixel of a perspective view (``mode=single_view``).

    Args:
        points: [H, W, 3] camera-frame points of the pixels (OpenCV axes); pixels with a non-finite point or
            z <= 0 are dropped.
        rgb: [3, H, W]; fx, fy: focal lengths in pixels; confidence: optional [H, W].
        style: as :func:`erp_splats`; the in-plane scales are the pixel's footprint ``z / fx`` and ``z / fy`` (on
            the fronto-parallel plane at its depth) times ``stride * footprint_scale``.
    """
    st = SplatStyle(**style)
    stride, footprint_scale = st.stride, st.footprint_scale
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [H, W, 3], got {tuple(points.shape)}")
    H, W = points.shape[:2]
    _check_maps(H, W, rgb, confidence)
    s = (slice(None, None, stride), slice(None, None, stride))
    p = points[s]
    valid = torch.isfinite(p).all(-1) & (p[..., 2] > 0)
    p = p[valid]
    lon, lat = direction_to_lonlat(p)
    z = p[:, 2]
    east = z / float(fx) * stride * footprint_scale
    down = z / float(fy) * stride * footprint_scale
    colours = rgb[:, s[0], s[1]].permute(1, 2, 0)[valid]
    conf = None if confidence is None else confidence[s][valid]
    return _ray_splats(lon, lat, p.norm(dim=-1), east, down, colours, conf, st)


def splat_ply_properties(sh_degree: int = 3) -> list[str]:
    """Property names of a 3DGS PLY in file order."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def write_splats_ply(path: str | os.PathLike, splats: Splats, sh_degree: int = 0) -> Path:
    """Write splats as a binary little-endian 3DGS PLY (float32; opacity as logit, scales as log); ``sh_degree``
    0..3 sets the number of (zero) higher-order SH coefficients."""
    path = Path(path)
    if splats.num_splats == 0:
        raise ValueError(f"{path}: refusing to write an empty splat file")
    if int(sh_degree) != sh_degree or not 0 <= sh_degree <= 3:
        raise ValueError(f"sh_degree must be 0, 1, 2 or 3, got {sh_degree}")
    eps = 1e-6
    op = splats.opacities.detach().double().clamp(eps, 1 - eps)
    columns = [
        splats.means.detach().double(),
        splats.normals.detach().double(),
        (splats.colours.detach().double() - 0.5) / SH_C0,
        torch.zeros(splats.num_splats, 3 * ((sh_degree + 1) ** 2 - 1), dtype=torch.float64, device=op.device),
        torch.log(op / (1 - op))[:, None],
        torch.log(splats.scales.detach().double().clamp_min(1e-30)),
        torch.nn.functional.normalize(splats.quats.detach().double(), dim=-1),
    ]
    values = torch.cat([c.to(op.device) for c in columns], dim=1).cpu().numpy().astype(np.float32)
    names = splat_ply_properties(sh_degree)
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: splat attributes contain non-finite values")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(values)}"]
    header += [f"property float {n}" for n in names] + ["end_header"]
    body = np.ascontiguousarray(values, dtype="<f4").tobytes()  # rows of float32 = the PLY's vertex records
    with atomic_path(path) as tmp:
        tmp.write_bytes(("\n".join(header) + "\n").encode("ascii") + body)
    return path


def read_splats_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a 3DGS PLY back: {property name: [N] float32}, in file order (dict order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such splat PLY")
    vertex = read_ply(path)["data"]["vertex"]
    return {name: np.asarray(vertex[name]) for name in vertex.dtype.names}


def write_splats_web(path: str | os.PathLike, splats: Splats) -> Path:
    """Write the compact ``.splat`` web format (32 bytes a splat, see the module docstring), largest and most
    opaque splats first (the order its reference converter uses; viewers re-sort by depth)."""
    path = Path(path)
    if splats.num_splats == 0:
        raise ValueError(f"{path}: refusing to write an empty splat file")
    means = splats.means.detach().cpu().double().numpy()
    scales = splats.scales.detach().cpu().double().numpy()
    if not (np.isfinite(means).all() and np.isfinite(scales).all()):
        raise ValueError(f"{path}: splat attributes contain non-finite values")
    opac = splats.opacities.detach().cpu().double().numpy()
    order = np.argsort(-(scales.prod(axis=1) * opac), kind="stable")
    rec = np.empty(splats.num_splats, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                                              ("rot", "u1", 4)])
    rec["pos"] = means[order]
    rec["scale"] = scales[order]
    rgba = np.concatenate((splats.colours.detach().cpu().double().numpy(), opac[:, None]), axis=1)[order]
    rec["rgba"] = np.clip(rgba * 255.0 + 0.5, 0, 255).astype(np.uint8)
    q = torch.nn.functional.normalize(splats.quats.detach().cpu().double(), dim=-1).numpy()[order]
    rec["rot"] = np.clip(np.round(q * 128.0 + 128.0), 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        tmp.write_bytes(rec.tobytes())
    return path


def read_splats_web(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.splat`` file: {"means" [N, 3], "scales" [N, 3], "colours" [N, 3] in [0, 1], "opacities" [N],
    "quats" [N, 4] (w, x, y, z, unnormalised as stored)}."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) == 0 or len(data) % 32:
        raise ValueError(f"{path}: a .splat file holds 32-byte records; got {len(data)} bytes")
    rec = np.frombuffer(data, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    return {"means": rec["pos"].astype(np.float64), "scales": rec["scale"].astype(np.float64),
            "colours": rec["rgba"][:, :3] / 255.0, "opacities": rec["rgba"][:, 3] / 255.0,
            "quats": (rec["rot"].astype(np.float64) - 128.0) / 128.0}
