"""ERP <- face splatting by boxes: each face's gnomonic projection evaluated on the ERP pixels of its bounding box.

The direct formulation of :class:`~modules.geometry.tangent.FaceSamples` for splatting: the same (ERP pixel, face)
pairs - the pixels of the face's row/column bounds (:func:`~modules.geometry.tangent.face_bounds`) whose ray lies
inside the face's square - but stored densely per face, as the plane coordinates and border weight of every pixel of
the box (weight 0 where the face does not see the pixel). Splatting is then one ``grid_sample`` per face into its box
and one slice addition into the ERP grid (columns wrap): no pixel index list, no sort, no scatter with random indices,
no padded "grouped layout". The plane coordinates are computed separably from the rows' latitudes and the columns'
longitudes (``R^T d`` with d = (cos lat sin lon, -sin lat, cos lat cos lon)), so building the boxes is a handful of
elementwise operations per box pixel; they equal the table's to float rounding (``tests/test_face_boxes.py``).

Conventions: :mod:`modules.geometry.spherical` and :mod:`modules.geometry.tangent`. Device and dtype follow the
cameras.
"""

from __future__ import annotations

import functools
import math
from typing import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache import DiskCache, ValueCache
from .spherical import erp_row_latitudes
from .face_sampling import face_bounds
from .tangent import TangentCameras

__all__ = ["FaceBoxes", "erp_face_boxes", "cached_erp_face_boxes", "splat_boxes", "boxes_to_erp"]


@dataclass(frozen=True)
class FaceBoxes:
    """Per face f, the ERP box rows ``v0:v1`` x columns ``u0:u1`` (taken modulo W; ``u1 - u0 <= W``) and, for every
    pixel of the box (row-major), its plane coordinates in face f and its border weight.

    Attributes:
        bounds: [F, 4] int64 on the CPU: (v0, v1, u0, u1) per face.
        grid: [N, 2] plane coordinates (xn, yn) (grid_sample, align_corners=False) of every box pixel, face-major;
            (0, 0) where the face does not see the pixel.
        weight: [N] border weight, > 0 exactly where the face sees the pixel (the pairs of ``FaceSamples``).
        height, width: ERP size.
        num_faces: F.
    """

    bounds: Tensor
    grid: Tensor
    weight: Tensor
    height: int
    width: int
    num_faces: int

    @functools.cached_property
    def _offsets(self) -> list[int]:
        b = self.bounds
        sizes = ((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2])).tolist()
        out = [0]
        for s in sizes:
            out.append(out[-1] + int(s))
        return out

    def face(self, f: int) -> tuple[tuple[int, int, int, int], Tensor, Tensor]:
        """Face f's bounds (v0, v1, u0, u1), grid [bh, bw, 2] and weight [bh, bw] (views)."""
        v0, v1, u0, u1 = (int(x) for x in self.bounds[f].tolist())
        a, b = self._offsets[f], self._offsets[f + 1]
        shape = (v1 - v0, u1 - u0)
        return (v0, v1, u0, u1), self.grid[a:b].view(*shape, 2), self.weight[a:b].view(shape)

    @functools.cached_property
    def weight_sum(self) -> Tensor:
        """[H * W] sum of the border weights of the faces that see each pixel (cached)."""
        return _accumulate(self, [w[None] for w in self._weights()], 1, self.weight.dtype)[0].view(-1)

    @functools.cached_property
    def count(self) -> Tensor:
        """[H * W] int64 number of faces that see each pixel (cached)."""
        acc = _accumulate(self, [(w > 0).to(torch.int32)[None] for w in self._weights()], 1, torch.int32)
        return acc[0].view(-1).long()

    def coverage(self) -> Tensor:
        """[H, W] number of faces that see each ERP pixel."""
        return self.count.view(self.height, self.width)

    def _weights(self) -> list[Tensor]:
        return [self.face(f)[2] for f in range(self.num_faces)]


def _add_box(acc: Tensor, box: Tensor, bounds: tuple[int, int, int, int]) -> None:
    """acc[..., v0:v1, u0:u1 (mod W)] += box [..., bh, bw] (at most two column slices)."""
    v0, v1, u0, u1 = bounds
    W = acc.shape[-1]
    if u0 < 0:
        acc[..., v0:v1, u0 + W:] += box[..., :-u0]
        acc[..., v0:v1, :u1] += box[..., -u0:]
    elif u1 > W:
        acc[..., v0:v1, u0:] += box[..., :W - u0]
        acc[..., v0:v1, :u1 - W] += box[..., W - u0:]
    else:
        acc[..., v0:v1, u0:u1] += box


def _accumulate(boxes: FaceBoxes, per_face: list[Tensor], channels: int, dtype: torch.dtype) -> Tensor:
    """[C, H, W] sum of the per-face boxes [C, bh, bw] placed at their bounds."""
    acc = torch.zeros(channels, boxes.height, boxes.width, dtype=dtype, device=boxes.grid.device)
    for f, box in enumerate(per_face):
        _add_box(acc, box, tuple(int(x) for x in boxes.bounds[f].tolist()))
    return acc


def erp_face_boxes(cameras: TangentCameras, height: int, width: int, weight_power: float = 1.0) -> FaceBoxes:
    """The boxes of every face at the given ERP size (see the module docstring).

    Args:
        cameras: F face cameras; device and dtype of the result follow them.
        height, width: ERP size.
        weight_power: exponent of :func:`~modules.geometry.tangent.border_weight`.
    """
    R = cameras.R_world_from_face
    device, dtype = R.device, R.dtype
    t = cameras.tan_half_fov
    bounds = face_bounds(cameras, height, width)  # [F, 4] int64, CPU
    lat = erp_row_latitudes(height, device, dtype)
    sin_lat, cos_lat = torch.sin(lat), torch.cos(lat)
    cols = torch.arange(width, device=device, dtype=dtype)
    lon = ((cols + 0.5) / width - 0.5) * (2.0 * math.pi)
    sin_lon, cos_lon = torch.sin(lon), torch.cos(lon)
    Rh = R.detach().to("cpu", torch.float64).tolist()  # host copies of the 9 coefficients (one read)
    th = t.detach().to("cpu", torch.float64).tolist()
    sizes = ((bounds[:, 1] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 2])).tolist()
    grid = torch.empty(sum(sizes), 2, device=device, dtype=dtype)
    weight = torch.empty(sum(sizes), device=device, dtype=dtype)
    start = 0
    # written in place into the outputs (few full-size temporaries: on the CPU fresh large buffers cost page faults)
    for f, (v0, v1, u0, u1) in enumerate(bounds.tolist()):
        bh, bw = v1 - v0, u1 - u0
        gv = grid[start:start + bh * bw].view(bh, bw, 2)
        wv = weight[start:start + bh * bw].view(bh, bw)
        start += bh * bw
        c = torch.arange(u0, u1, device=device) % width
        sl, cl = sin_lon[c], cos_lon[c]  # [bw]
        st, ct = sin_lat[v0:v1, None], cos_lat[v0:v1, None]  # [bh, 1]
        Rf = Rh[f]

        def axis(k: int) -> Tensor:  # component k of R^T d over the box [bh, bw]
            return torch.mul(ct, (Rf[0][k] * sl + Rf[2][k] * cl)[None, :]).sub_(Rf[1][k] * st)

        z = axis(2)
        inside = z > 0
        zt = z.mul_(th[f])
        x = axis(0)
        tmp = x.abs()
        inside &= tmp < zt
        y = axis(1)
        torch.abs(y, out=tmp)
        inside &= tmp < zt
        outside = ~inside
        xn = x.div_(zt).masked_fill_(outside, 0.0)  # plane coordinates, 0 outside the face
        yn = y.div_(zt).masked_fill_(outside, 0.0)
        gv[..., 0] = xn
        gv[..., 1] = yn
        # border_weight(xn, yn) = ((1 - |xn|)+ (1 - |yn|)+)^power, 0 outside
        torch.abs(xn, out=tmp).neg_().add_(1.0).clamp_min_(0)
        torch.abs(yn, out=wv).neg_().add_(1.0).clamp_min_(0).mul_(tmp)
        if weight_power != 1.0:
            wv.pow_(weight_power)
        wv.masked_fill_(outside, 0.0)
    return FaceBoxes(bounds, grid, weight, int(height), int(width), cameras.num_faces)


def cached_erp_face_boxes(cameras: TangentCameras, height: int, width: int, weight_power: float = 1.0,
                          disk: DiskCache | None = None, memory: ValueCache | None = None) -> FaceBoxes:
    """:func:`erp_face_boxes`, kept in ``memory`` (the pipeline's value-keyed cache: the blender and the sky detector
    at one size get one copy) and loaded from / stored in ``disk`` when given (keyed by the cameras' values, the size
    and the weight power; loaded onto the cameras' device)."""
    if memory is not None:
        key = ("erp_face_boxes", float(weight_power), *cameras.cache_key(), int(height), int(width))
        return memory.get(key, lambda: cached_erp_face_boxes(cameras, height, width, weight_power, disk))
    if disk is None:
        return erp_face_boxes(cameras, height, width, weight_power)

    def encode(b: FaceBoxes) -> dict:
        return {"bounds": b.bounds, "grid": b.grid, "weight": b.weight, "height": b.height, "width": b.width,
                "num_faces": b.num_faces}

    def decode(d: dict) -> FaceBoxes:
        b = FaceBoxes(d["bounds"].cpu().long(), d["grid"], d["weight"], d["height"], d["width"], d["num_faces"])
        n = b._offsets[-1]
        if ((b.height, b.width, b.num_faces) != (height, width, cameras.num_faces) or b.bounds.shape != (b.num_faces, 4)
                or b.grid.shape != (n, 2) or b.weight.shape != (n,) or b.grid.dtype != cameras.R_world_from_face.dtype):
            raise ValueError("stored boxes do not match their key")
        return b

    key = (float(weight_power), *cameras.cache_key(device=False), int(height), int(width))
    return disk.get("erp_face_boxes", key, lambda: erp_face_boxes(cameras, height, width, weight_power),
                    cameras.R_world_from_face.device, encode=encode, decode=decode)


def splat_boxes(face_maps: Tensor | Callable[[int], Tensor], boxes: FaceBoxes) -> Tensor:
    """Per ERP pixel, the sum over the faces that see it of border weight x bilinear sample of ``face_maps`` (edge
    pixels replicated): :func:`~modules.geometry.tangent.splat_faces` by boxes.

    Args:
        face_maps: [F, C, S, S]; or a function of the face index f returning face f's maps [C, S, S], called once
            per face in order and read before the next call (it may refill one buffer: the maps of all faces never
            exist at once).
    Returns:
        [C, H * W] weighted sums.
    """
    if callable(face_maps):
        maps_of = face_maps
    else:
        if face_maps.shape[0] != boxes.num_faces:
            raise ValueError(f"face_maps has {face_maps.shape[0]} faces, the boxes {boxes.num_faces}")

        def maps_of(f: int) -> Tensor:
            return face_maps[f]
    acc = None
    for f in range(boxes.num_faces):
        bounds, grid, w = boxes.face(f)
        if grid.numel() == 0:
            continue
        maps = maps_of(f)
        if acc is None:
            acc = torch.zeros(maps.shape[0], boxes.height, boxes.width, dtype=maps.dtype, device=maps.device)
        out = F.grid_sample(maps[None], grid[None].to(maps.dtype), mode="bilinear", padding_mode="border",
                            align_corners=False)[0]  # [C, bh, bw]
        _add_box(acc, out.mul_(w.to(maps.dtype)), bounds)
    if acc is None:  # no face sees any pixel
        maps = maps_of(0)
        acc = torch.zeros(maps.shape[0], boxes.height, boxes.width, dtype=maps.dtype, device=maps.device)
    return acc.view(acc.shape[0], -1)


def boxes_to_erp(face_maps: Tensor | Callable[[int], Tensor], boxes: FaceBoxes) -> tuple[Tensor, Tensor]:
    """Blend face images into the ERP grid (weighted mean over the faces that see each pixel), by boxes.

    Args:
        face_maps: [F, C, S, S], or a function of the face index (:func:`splat_boxes`).
    Returns:
        erp: [C, H, W] (0 where no weight), weight_sum: [H, W].
    """
    num = splat_boxes(face_maps, boxes)
    den = boxes.weight_sum.to(num.dtype)
    erp = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))
    return erp.reshape(-1, boxes.height, boxes.width), den.view(boxes.height, boxes.width)
