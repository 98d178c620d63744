"""Gnomonic (tangent-plane) face cameras and resampling between the ERP grid and the faces.

A face camera is a square pinhole camera of ``size`` x ``size`` pixels at the sphere's centre, rotated by
``R_world_from_face`` (columns: the face's x, y, z axes in world coordinates; z is the optical axis), with
half field of view ``atan(tan_half_fov)`` to the middle of each image edge. OpenCV axes: x right, y down.

Face pixel ``(i, j)`` (column, row) has its centre at normalised plane coordinates
``xn = ((i + 0.5) / size) * 2 - 1``, ``yn = ((j + 0.5) / size) * 2 - 1`` in (-1, 1); the camera ray is
``(xn * tan_half_fov, yn * tan_half_fov, 1)``. ``xn, yn`` are exactly the coordinates ``grid_sample``
expects with ``align_corners=False``.

Conventions of the ERP grid: :mod:`modules.geometry.spherical`. All functions are pure; device and dtype
come from the inputs.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache import DiskCache, ValueCache
from .face_sampling import face_bounds, face_lonlat, plane_coords
from .spherical import direction_to_lonlat, erp_directions, lonlat_to_erp_pixel

__all__ = [
    "TangentCameras",
    "face_frame_from_axis",
    "face_rays",
    "face_cos_to_axis",
    "face_lonlat",
    "pad_erp",
    "erp_to_faces",
    "FaceSamples",
    "cached_erp_face_samples",
    "erp_face_samples",
    "face_bounds",
    "sample_faces",
    "splat_faces",
    "faces_to_erp",
    "border_weight",
]


@dataclass(frozen=True)
class TangentCameras:
    """A set of F square gnomonic cameras sharing one image size.

    Attributes:
        R_world_from_face: [F, 3, 3] rotations; column k is the face's k-th axis in world coordinates.
        tan_half_fov: [F] tangent of each face's half field of view (centre to middle of an edge).
        size: face image side in pixels.
        ids: [F] long, each face's index in the full face set it was taken from (a projection's faces of all its
            rotated copies, copy-major); None: 0 .. F-1. Geometry ignores it; predictors that draw per-face
            errors (the synthetic one) key them by it, so that faces predicted in separate calls stay distinct.
    """

    R_world_from_face: Tensor
    tan_half_fov: Tensor
    size: int
    ids: Tensor | None = None

    @property
    def num_faces(self) -> int:
        return int(self.R_world_from_face.shape[0])

    @property
    def face_ids(self) -> Tensor:
        """[F] long on the CPU: :attr:`ids`, or 0 .. F-1."""
        return self.ids.cpu() if self.ids is not None else torch.arange(self.num_faces)

    @property
    def axes(self) -> Tensor:
        """[F, 3] optical axes (unit) in world coordinates."""
        return self.R_world_from_face[:, :, 2]

    @property
    def focal(self) -> Tensor:
        """[F] focal length in pixels."""
        return (self.size / 2.0) / self.tan_half_fov

    def cache_key(self, device: bool = True) -> tuple:
        """Identifies this camera set by value for caches of derived geometry (:mod:`modules.geometry.cache`):
        face count, size, dtype, device (left out with ``device=False``, for a :class:`~modules.geometry.cache.DiskCache`)
        and a digest of the rotations and fields of view (never a tensor address, which misses ``tan_half_fov`` and can
        be reused by another tensor once this one is freed)."""
        R, t = self.R_world_from_face, self.tan_half_fov
        digest = hashlib.sha1()
        for x in (R, t):  # exact float64 reprs (no NumPy round trip)
            digest.update(repr(x.detach().to("cpu", torch.float64).flatten().tolist()).encode())
        where = (str(R.device),) if device else ()
        return (self.num_faces, self.size, str(R.dtype), str(t.dtype), *where, digest.hexdigest())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TangentCameras":
        return TangentCameras(
            self.R_world_from_face.to(device=device, dtype=dtype),
            self.tan_half_fov.to(device=device, dtype=dtype),
            self.size,
            self.ids,
        )

    def select(self, index: Tensor | slice) -> "TangentCameras":
        """The cameras at ``index`` (a slice or a [K] index tensor), keeping their :attr:`face_ids`."""
        ids = self.face_ids[index.cpu() if isinstance(index, Tensor) else index]
        return TangentCameras(self.R_world_from_face[index], self.tan_half_fov[index], self.size, ids)

    @staticmethod
    def concat(cameras: list["TangentCameras"]) -> "TangentCameras":
        sizes = {c.size for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate cameras of different sizes {sorted(sizes)}")
        ids = torch.cat([c.face_ids for c in cameras]) if any(c.ids is not None for c in cameras) else None
        return TangentCameras(torch.cat([c.R_world_from_face for c in cameras]),
                              torch.cat([c.tan_half_fov for c in cameras]), cameras[0].size, ids)


def face_frame_from_axis(axis: Tensor) -> Tensor:
    """Camera frames looking along ``axis`` with image "up" as close to world up (-y) as possible.

    Args:
        axis: [F, 3] optical axes (need not be unit length).
    Returns:
        R_world_from_face: [F, 3, 3] with columns (x right, y down, z = axis). For an axis along +-y (a pole)
        the x axis is taken as world +x.
    """
    z = F.normalize(axis, dim=-1)
    up = torch.zeros_like(z)
    up[:, 1] = -1.0
    x = torch.linalg.cross(z, up, dim=-1)
    degenerate = x.norm(dim=-1) < 1e-6
    if bool(degenerate.any()):
        fallback = torch.zeros_like(z)
        fallback[:, 0] = 1.0
        x = torch.where(degenerate[:, None], fallback - (fallback * z).sum(-1, keepdim=True) * z, x)
    x = F.normalize(x, dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    return torch.stack((x, y, z), dim=-1)


def face_rays(cameras: TangentCameras) -> Tensor:
    """Unit world directions of every face pixel centre.

    Returns:
        [F, S, S, 3] indexed [face, row, column].
    """
    R = cameras.R_world_from_face
    S = cameras.size
    s = plane_coords(S, R.device, R.dtype)
    t = cameras.tan_half_fov[:, None, None]  # [F, 1, 1]
    x = s[None, None, :] * t  # [F, 1, S]
    y = s[None, :, None] * t  # [F, S, 1]
    cam = torch.stack(torch.broadcast_tensors(x, y, torch.ones_like(t)), dim=-1)  # [F, S, S, 3]
    cam = F.normalize(cam, dim=-1)
    return torch.einsum("fij,fhwj->fhwi", R, cam)


def face_cos_to_axis(cameras: TangentCameras) -> Tensor:
    """Cosine between each face pixel's ray and the optical axis: planar depth = distance * cos.

    Closed form: the ray of plane point (xn, yn) is (xn t, yn t, 1), so cos = 1 / sqrt(1 + t^2 (xn^2 + yn^2)).

    Returns:
        [F, S, S].
    """
    t = cameras.tan_half_fov
    s = plane_coords(cameras.size, t.device, t.dtype)
    r2 = (s * s)[None, :, None] + (s * s)[None, None, :]  # [1, S, S]
    return torch.rsqrt(1.0 + (t * t)[:, None, None] * r2)


def pad_erp(erp: Tensor, pad: int = 1) -> Tensor:
    """Pad an ERP image so that bilinear sampling is continuous everywhere on the sphere.

    Columns wrap around in longitude; rows beyond a pole continue on the other side of the pole, i.e. the row
    ``pad`` pixels above the top is row ``pad - 1`` rotated by 180 degrees of longitude (W must be even).

    Args:
        erp: [B, C, H, W].
    Returns:
        [B, C, H + 2 pad, W + 2 pad].
    """
    if erp.shape[-1] % 2:
        raise ValueError(f"ERP width must be even to pad across the poles, got {erp.shape[-1]}")
    half = erp.shape[-1] // 2
    top = torch.roll(erp[..., :pad, :], shifts=half, dims=-1).flip(-2)
    bottom = torch.roll(erp[..., -pad:, :], shifts=half, dims=-1).flip(-2)
    out = torch.cat((top, erp, bottom), dim=-2)
    return torch.cat((out[..., -pad:], out, out[..., :pad]), dim=-1)


def _erp_grid(direction: Tensor, height: int, width: int, pad: int) -> Tensor:
    """Directions [..., 3] -> grid_sample coordinates (align_corners=True) into ``pad_erp(erp, pad)``."""
    lon, lat = direction_to_lonlat(direction)
    u, v = lonlat_to_erp_pixel(lon, lat, height, width)
    gx = (u + pad) * (2.0 / (width + 2 * pad - 1)) - 1.0
    gy = (v + pad) * (2.0 / (height + 2 * pad - 1)) - 1.0
    return torch.stack((gx, gy), dim=-1)


def erp_to_faces(erp: Tensor, cameras: TangentCameras, mode: str = "bilinear", antialias: bool = True) -> Tensor:
    """Render every face from an ERP image in one batched ``grid_sample``.

    Args:
        erp: [B, C, H, W] panorama (any float values).
        cameras: F face cameras (same device as ``erp``).
        mode: ``"bilinear"`` or ``"nearest"``.
        antialias: if the ERP is much finer than the faces' pixels, area-downsample it first so that the faces
            do not alias (never upsamples).
    Returns:
        [B, F, C, S, S].
    """
    B, C, H, W = erp.shape
    if antialias and mode == "bilinear":
        # angular size of a face pixel at its centre vs an ERP pixel
        face_pixel = float((2.0 * cameras.tan_half_fov.min() / cameras.size).atan())
        erp_pixel = 2.0 * math.pi / W
        factor = int(face_pixel / erp_pixel)
        if factor >= 2:
            H, W = H // factor, W // factor
            W -= W % 2
            erp = F.interpolate(erp, size=(H, W), mode="area")
    lonlat = face_lonlat(cameras.to(erp.device, erp.dtype))  # [F, S, S, 2]
    Fn, S = lonlat.shape[0], lonlat.shape[1]
    # _erp_grid's mapping (lon, lat) -> pixel -> grid_sample coordinates into pad_erp(erp, 1), as one affine map
    cw, ch = 2.0 / (W + 1), 2.0 / (H + 1)
    k = lonlat.new_tensor([W / (2.0 * math.pi) * cw, -H / math.pi * ch])
    b = lonlat.new_tensor([(0.5 * W + 0.5) * cw - 1.0, (0.5 * H + 0.5) * ch - 1.0])
    grid = torch.addcmul(b, lonlat, k).reshape(1, Fn * S, S, 2).expand(B, -1, -1, -1)
    out = F.grid_sample(pad_erp(erp, 1), grid, mode=mode, padding_mode="border", align_corners=True)
    return out.reshape(B, C, Fn, S, S).permute(0, 2, 1, 3, 4)


def border_weight(xn: Tensor, yn: Tensor, power: float = 1.0) -> Tensor:
    """Blending weight of a face at normalised plane coordinates: 1 at the centre, 0 at and beyond the border.

    ``w = ((1 - |xn|) (1 - |yn|))^power`` clipped at 0.
    """
    return ((1.0 - xn.abs()).clamp_min(0) * (1.0 - yn.abs()).clamp_min(0)) ** power


@dataclass(frozen=True)
class FaceSamples:
    """Every (ERP pixel, face) pair where the face sees the pixel, i.e. its weight is positive.

    Attributes:
        erp_index: [N] flat ERP pixel index ``v * W + u``.
        face_index: [N] face of each pair.
        face_xy: [N, 2] normalised plane coordinates (xn, yn) in (-1, 1) (grid_sample, align_corners=False).
        cos_axis: [N] cosine of the angle between the pixel's ray and the face's optical axis.
        weight: [N] blending weight, > 0.
        height, width: ERP size.
        num_faces: F.

    :func:`erp_face_samples` returns them face-major (sorted by face, then pixel); :meth:`sorted_by_pixel` gives the
    pixel-major order that pairing samples of one pixel needs.
    """

    erp_index: Tensor
    face_index: Tensor
    face_xy: Tensor
    cos_axis: Tensor
    weight: Tensor
    height: int
    width: int
    num_faces: int

    def coverage(self) -> Tensor:
        """[H, W] number of faces that see each ERP pixel."""
        count = torch.zeros(self.height * self.width, device=self.erp_index.device, dtype=torch.long)
        count.index_add_(0, self.erp_index, torch.ones_like(self.erp_index))
        return count.view(self.height, self.width)

    def sorted_by_pixel(self) -> "FaceSamples":
        """The same samples ordered by ERP pixel (stable: faces ascending within a pixel)."""
        order = torch.sort(self.erp_index * self.num_faces + self.face_index).indices
        return FaceSamples(
            self.erp_index[order], self.face_index[order], self.face_xy[order], self.cos_axis[order],
            self.weight[order], self.height, self.width, self.num_faces,
        )

    @functools.cached_property
    def _padded(self) -> tuple[Tensor, Tensor, Tensor, int]:
        """The grouped layout for :func:`splat_faces`: grid [F, 1, Nmax, 2], the ERP pixel of every slot [F * Nmax]
        (padding: the dummy pixel H * W), the border weight of every slot [F, 1, Nmax], and H * W."""
        grid, slot, _ = self._grid
        P = self.height * self.width
        erp = torch.full((grid.shape[0] * grid.shape[2],), P, dtype=torch.long, device=grid.device)
        erp[slot] = self.erp_index
        w = torch.zeros(erp.shape, dtype=self.weight.dtype, device=grid.device)
        w[slot] = self.weight
        return grid, erp, w.view(grid.shape[0], 1, -1), P

    @functools.cached_property
    def _grid(self) -> tuple[Tensor, Tensor, Tensor]:
        """Samples grouped by face for one batched grid_sample: grid [F, 1, Nmax, 2], slot [N] (position of each
        sample in the flattened [F, Nmax] layout)."""
        face = self.face_index
        counts = torch.bincount(face, minlength=self.num_faces)
        starts = torch.cumsum(counts, 0) - counts
        n_max = int(counts.max()) if face.numel() else 0
        position = torch.arange(face.numel(), device=face.device)
        if face.numel() > 1 and not bool((face[1:] >= face[:-1]).all()):  # not face-major: rank within each face
            order = torch.sort(face, stable=True).indices
            rank = torch.empty_like(order)
            rank[order] = position
            position = rank
        slot = face * n_max + (position - starts[face])
        grid = torch.zeros(self.num_faces * n_max, 2, dtype=self.face_xy.dtype, device=face.device)
        grid[slot] = self.face_xy
        return grid.view(self.num_faces, 1, n_max, 2), slot, counts


def erp_face_samples(cameras: TangentCameras, height: int, width: int, weight_power: float = 1.0) -> FaceSamples:
    """Find, for every ERP pixel centre, every face that sees it and where.

    Args:
        cameras: F face cameras; device and dtype of the result follow them.
        height, width: ERP size.
        weight_power: exponent of :func:`border_weight`.
    Returns:
        :class:`FaceSamples`, face-major, with N pairs (about the faces' total solid angle over 4 pi times H W).
    """
    R = cameras.R_world_from_face
    device, dtype = R.device, R.dtype
    dirs = erp_directions(height, width, device, dtype)  # [H, W, 3]
    t = cameras.tan_half_fov
    bounds = face_bounds(cameras, height, width).tolist()
    faces, pixels, xs, ys, zs = [], [], [], [], []
    for f in range(cameras.num_faces):  # one face at a time keeps memory at O(P), not O(P F)
        v0, v1, u0, u1 = (int(b) for b in bounds[f])
        if u1 - u0 >= width:
            cols = None
            cam = dirs[v0:v1].reshape(-1, 3) @ R[f]  # [rows * W, 3] = R^T d for every pixel of those rows
        else:  # only the face's columns (wrapping), ascending so that the samples stay in pixel order
            cols = torch.sort(torch.arange(u0, u1, device=device) % width).values
            cam = dirs[v0:v1, cols].reshape(-1, 3) @ R[f]
        z = cam[:, 2]
        x_lim = t[f] * z
        inside = (z > 0) & (cam[:, 0].abs() < x_lim) & (cam[:, 1].abs() < x_lim)
        idx = torch.nonzero(inside, as_tuple=True)[0]
        c = cam[idx]
        if cols is not None:
            idx = torch.div(idx, len(cols), rounding_mode="floor") * width + cols[idx % len(cols)]
        pixels.append(idx + v0 * width)
        faces.append(torch.full_like(idx, f))
        xs.append(c[:, 0] / (c[:, 2] * t[f]))
        ys.append(c[:, 1] / (c[:, 2] * t[f]))
        zs.append(c[:, 2])
    xn, yn = torch.cat(xs), torch.cat(ys)
    return FaceSamples(
        erp_index=torch.cat(pixels),
        face_index=torch.cat(faces),
        face_xy=torch.stack((xn, yn), dim=-1),
        cos_axis=torch.cat(zs),
        weight=border_weight(xn, yn, weight_power),
        height=height,
        width=width,
        num_faces=cameras.num_faces,
    )


def cached_erp_face_samples(cameras: TangentCameras, height: int, width: int, weight_power: float = 1.0,
                            disk: DiskCache | None = None, memory: ValueCache | None = None) -> FaceSamples:
    """:func:`erp_face_samples`, kept in ``memory`` (the pipeline's value-keyed cache: every stage that asks for the
    same table - the blender, the sky detector - gets the one copy) and loaded from / stored in ``disk`` when given
    (keyed by the cameras' values, the size and the weight power; loaded onto the cameras' device)."""
    if memory is not None:
        key = ("erp_face_samples", float(weight_power), *cameras.cache_key(), int(height), int(width))
        return memory.get(key, lambda: cached_erp_face_samples(cameras, height, width, weight_power, disk))
    build = functools.partial(erp_face_samples, cameras, height, width, weight_power)
    if disk is None or cameras.num_faces >= 2**15 or height * width >= 2**31:  # beyond the stored int16/int32
        return build()

    def encode(s: FaceSamples) -> dict:  # compact: int32 pixels, int16 faces, the weight recomputed on load
        return {"erp_index": s.erp_index.to(torch.int32), "face_index": s.face_index.to(torch.int16),
                "face_xy": s.face_xy, "cos_axis": s.cos_axis, "height": s.height, "width": s.width,
                "num_faces": s.num_faces}

    def decode(d: dict) -> FaceSamples:
        xy = d["face_xy"]
        s = FaceSamples(d["erp_index"].long(), d["face_index"].long(), xy, d["cos_axis"],
                        border_weight(xy[:, 0], xy[:, 1], weight_power), d["height"], d["width"], d["num_faces"])
        n = s.erp_index.shape[0]
        if (s.height, s.width, s.num_faces) != (height, width, cameras.num_faces) or xy.shape != (n, 2) or any(
                t.shape != (n,) for t in (s.face_index, s.cos_axis)) or xy.dtype != cameras.R_world_from_face.dtype:
            raise ValueError("stored samples do not match their key")
        return s

    key = (float(weight_power), *cameras.cache_key(device=False), int(height), int(width))
    return disk.get("erp_face_samples", key, build, cameras.R_world_from_face.device, encode=encode, decode=decode)


def sample_faces(face_maps: Tensor, samples: FaceSamples) -> Tensor:
    """Bilinear samples of face images at every sample point (edge pixels replicated), one batched grid_sample.

    Args:
        face_maps: [F, C, S, S].
        samples: the points (their faces and plane coordinates).
    Returns:
        [N, C] in the samples' order.
    """
    grid, slot, _ = samples._grid
    Fn, C = face_maps.shape[:2]
    out = F.grid_sample(face_maps, grid.to(face_maps.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(Fn, C, -1).permute(0, 2, 1).reshape(-1, C)[slot]


def splat_faces(face_maps: Tensor, samples: FaceSamples) -> Tensor:
    """The one splatting of face images into the ERP grid: per ERP pixel, the sum over the faces that see it of
    border weight x bilinear sample of ``face_maps``.

    One grid_sample over the samples grouped by face (padded to equal length), one index_add into the pixels;
    padding slots land in a dummy pixel that is dropped (the padded layout is cached on ``samples``).

    Args:
        face_maps: [F, C, S, S].
    Returns:
        [C, H * W] weighted sums.
    """
    grid, erp, w, P = samples._padded
    Fn, C = face_maps.shape[:2]
    out = F.grid_sample(face_maps, grid.to(face_maps.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)
    out = (out.view(Fn, C, -1) * w).transpose(0, 1).reshape(C, -1)
    acc = torch.zeros(C, P + 1, dtype=face_maps.dtype, device=face_maps.device).index_add_(1, erp, out)
    return acc[:, :P]


def faces_to_erp(face_maps: Tensor, samples: FaceSamples) -> tuple[Tensor, Tensor]:
    """Blend face images into the ERP grid: each pixel is the weighted mean over every face that sees it.

    Args:
        face_maps: [F, C, S, S].
        samples: from :func:`erp_face_samples`.
    Returns:
        erp: [C, H, W] (0 where no weight), weight_sum: [H, W].
    """
    num = splat_faces(face_maps, samples)  # [C, P]
    den = torch.zeros(samples.height * samples.width, device=num.device, dtype=num.dtype)
    den.index_add_(0, samples.erp_index, samples.weight.to(num.dtype))
    erp = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))
    return erp.reshape(-1, samples.height, samples.width), den.view(samples.height, samples.width)
