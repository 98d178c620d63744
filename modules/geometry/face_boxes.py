"""ERP <- face splatting by boxes: each face's gnomonic projection evaluated on the ERP pixels of a few boxes.

The direct formulation of :class:`~modules.geometry.tangent.FaceSamples` for splatting: the same (ERP pixel, face)
pairs - the pixels of the face's row/column bounds (:func:`~modules.geometry.tangent.face_bounds`) whose ray lies
inside the face's square - but stored densely per box, as the plane coordinates and border weight of every pixel of
the box (weight 0 where the face does not see the pixel). A face's rows are cut into bands, each boxed with the columns
that the cap around the face's axis holding its square spans on those rows (around the seam where they wrap): a face
holding a pole spans every column only near it. Splatting is
then one ``grid_sample`` per box and one slice addition into the ERP grid (columns wrap): no pixel index list, no
sort, no scatter with random indices, no padded "grouped layout". The plane coordinates are computed separably from the rows' latitudes and the columns'
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
from .spherical import erp_column_longitudes, erp_row_latitudes
from .face_sampling import face_bounds
from .tangent import TangentCameras

__all__ = ["BANDS_PER_FACE", "FaceBoxes", "erp_face_boxes", "cached_erp_face_boxes", "splat_boxes", "boxes_to_erp"]


#: row bands per face: each band of a face's rows gets the columns the face's cap spans there (a face holding a pole
#: spans every column near the pole, far fewer further away): at 20 faces of 512 px and 2048x1024, 8 bands hold 0.77
#: of the pixels one box of the face's row and column bounds holds (the pixels the faces see are 0.63 of it)
BANDS_PER_FACE = 8


@dataclass(frozen=True)
class FaceBoxes:
    """ERP boxes, a few per face (one per band of the face's rows, :data:`BANDS_PER_FACE`), each box rows ``v0:v1`` x
    columns ``u0:u1`` (taken modulo W; ``u1 - u0 <= W``) holding every ERP pixel of those rows that its face sees
    and, for every pixel of the box (row-major), its plane coordinates in the face and its border weight.

    Attributes:
        bounds: [B, 4] int64 on the CPU: (v0, v1, u0, u1) per box.
        box_face: [B] int64 on the CPU: the face of each box, ascending (a face's boxes are consecutive and do not
            overlap).
        grid: [N, 2] plane coordinates (xn, yn) (grid_sample, align_corners=False) of every box pixel, box-major;
            (0, 0) where the face does not see the pixel.
        weight: [N] border weight, > 0 exactly where the face sees the pixel (the pairs of ``FaceSamples``).
        height, width: ERP size.
        num_faces: F.
    """

    bounds: Tensor
    box_face: Tensor
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

    @functools.cached_property
    def _boxes(self) -> list[tuple[int, tuple[int, int, int, int]]]:
        return [(int(f), (int(v0), int(v1), int(u0), int(u1)))
                for f, (v0, v1, u0, u1) in zip(self.box_face.tolist(), self.bounds.tolist())]

    def box(self, i: int) -> tuple[int, tuple[int, int, int, int], Tensor, Tensor]:
        """Box i's face, bounds (v0, v1, u0, u1), grid [bh, bw, 2] and weight [bh, bw] (views)."""
        f, (v0, v1, u0, u1) = self._boxes[i]
        a, b = self._offsets[i], self._offsets[i + 1]
        shape = (v1 - v0, u1 - u0)
        return f, (v0, v1, u0, u1), self.grid[a:b].view(*shape, 2), self.weight[a:b].view(shape)

    @property
    def num_boxes(self) -> int:
        return int(self.bounds.shape[0])

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
        return [self.box(i)[3] for i in range(self.num_boxes)]


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


def _accumulate(boxes: FaceBoxes, per_box: list[Tensor], channels: int, dtype: torch.dtype) -> Tensor:
    """[C, H, W] sum of the per-box maps [C, bh, bw] placed at their bounds."""
    acc = torch.zeros(channels, boxes.height, boxes.width, dtype=dtype, device=boxes.grid.device)
    for (_, bounds), box in zip(boxes._boxes, per_box):
        _add_box(acc, box, bounds)
    return acc


def erp_face_boxes(cameras: TangentCameras, height: int, width: int, weight_power: float = 1.0,
                   bands: int = BANDS_PER_FACE) -> FaceBoxes:
    """The boxes of every face at the given ERP size (see the module docstring and :class:`FaceBoxes`).

    Args:
        cameras: F face cameras; device and dtype of the result follow them.
        height, width: ERP size.
        weight_power: exponent of :func:`~modules.geometry.tangent.border_weight`.
        bands: row bands per face (each with the columns of the face's cap on its rows; 1: one box per face).
    """
    R = cameras.R_world_from_face
    device, dtype = R.device, R.dtype
    t = cameras.tan_half_fov
    bounds = face_bounds(cameras, height, width)  # [F, 4] int64, CPU
    lat = erp_row_latitudes(height, device, dtype)
    sin_lat, cos_lat = torch.sin(lat), torch.cos(lat)
    lon = erp_column_longitudes(width, device, dtype)
    sin_lon, cos_lon = torch.sin(lon), torch.cos(lon)
    Rh = R.detach().to("cpu", torch.float64).tolist()  # host copies of the 9 coefficients (one read)
    th = t.detach().to("cpu", torch.float64).tolist()

    def plane(f: int, v0: int, v1: int, c: Tensor, gv: Tensor, wv: Tensor) -> None:
        """Face f on rows v0:v1 x ERP columns c [bw]: the plane coordinates and border weights of the pixels, written
        into ``gv`` [bh, bw, 2] and ``wv`` [bh, bw] (0 where the face does not see the pixel)."""
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

    # per band of each face's rows, the columns of the cap around the face's axis that holds its square (the cap of
    # face_bounds, whose angular radius reaches the corners): at latitude lat the cap spans |lon - lon0| <= acos((cos
    # c - sin lat sin lat0) / (cos lat cos lat0)), every column where that ratio is <= -1 (the cap holds the pole's
    # side); the widest row of the band, with face_bounds' margins (1 column before, 2 after)
    axis_lat = torch.asin((-R[:, 1, 2]).clamp(-1, 1)).to("cpu", torch.float64).tolist()
    axis_lon = torch.atan2(R[:, 0, 2], R[:, 2, 2]).to("cpu", torch.float64).tolist()
    corner = torch.atan(math.sqrt(2.0) * t.detach().to("cpu", torch.float64)).tolist()
    lat64 = erp_row_latitudes(height, "cpu", torch.float64)
    boxes: list[tuple[int, int, int, int, int]] = []  # face, rows a:b, columns c0:c1
    for f, (v0, v1, _, _) in enumerate(bounds.tolist()):
        if v1 <= v0:
            continue
        lat_b = lat64[v0:v1]
        ratio = (math.cos(corner[f]) - torch.sin(lat_b) * math.sin(axis_lat[f])) / (
            torch.cos(lat_b) * math.cos(axis_lat[f])).clamp_min(1e-300)
        # half-width in columns per row (a row the cap misses gets 0: its highest point is on the axis' meridian)
        half = (torch.acos(ratio.clamp(-1.0, 1.0)) * (width / (2 * math.pi))).tolist()
        full = (ratio <= -1).tolist()
        centre = (axis_lon[f] / (2 * math.pi) + 0.5) * width - 0.5  # column coordinate of the axis' longitude
        k = max(1, min(int(bands), v1 - v0))
        edges = [v0 + round(i * (v1 - v0) / k) for i in range(k + 1)]
        for a, b in zip(edges[:-1], edges[1:]):
            c0, c1 = 0, width
            if not any(full[a - v0:b - v0]):
                h = max(half[a - v0:b - v0])
                c0, c1 = math.floor(centre - h) - 1, math.ceil(centre + h) + 2
                if c1 - c0 >= width:
                    c0, c1 = 0, width
                elif c0 >= width:  # columns as _add_box takes them: u0 in [-W, W), u1 > 0
                    c0, c1 = c0 - width, c1 - width
                elif c1 <= 0:
                    c0, c1 = c0 + width, c1 + width
            boxes.append((f, a, b, c0, c1))
    sizes = [(b - a) * (c1 - c0) for _, a, b, c0, c1 in boxes]
    grid = torch.empty(sum(sizes), 2, device=device, dtype=dtype)
    weight = torch.empty(sum(sizes), device=device, dtype=dtype)
    start = 0
    # then their pixels, written in place into the outputs (few full-size temporaries: on the CPU fresh large
    # buffers cost page faults)
    for (f, a, b, c0, c1), size in zip(boxes, sizes):
        plane(f, a, b, torch.arange(c0, c1, device=device) % width,
              grid[start:start + size].view(b - a, c1 - c0, 2), weight[start:start + size].view(b - a, c1 - c0))
        start += size
    return FaceBoxes(torch.tensor([bx[1:] for bx in boxes], dtype=torch.long).reshape(-1, 4),
                     torch.tensor([bx[0] for bx in boxes], dtype=torch.long), grid, weight, int(height), int(width),
                     cameras.num_faces)


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
        return {"bounds": b.bounds, "box_face": b.box_face, "grid": b.grid, "weight": b.weight,
                "height": b.height, "width": b.width, "num_faces": b.num_faces}

    def decode(d: dict) -> FaceBoxes:
        b = FaceBoxes(d["bounds"].cpu().long(), d["box_face"].cpu().long(), d["grid"], d["weight"], d["height"],
                      d["width"], d["num_faces"])
        n = b._offsets[-1]
        if ((b.height, b.width, b.num_faces) != (height, width, cameras.num_faces)
                or b.bounds.shape != (b.box_face.numel(), 4) or b.grid.shape != (n, 2) or b.weight.shape != (n,)
                or b.grid.dtype != cameras.R_world_from_face.dtype):
            raise ValueError("stored boxes do not match their key")
        return b

    key = (float(weight_power), *cameras.cache_key(device=False), int(height), int(width), "bands", BANDS_PER_FACE)
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
    current, maps = -1, None
    for i in range(boxes.num_boxes):
        f, bounds, grid, w = boxes.box(i)
        if grid.numel() == 0:
            continue
        if f != current:  # a face's boxes are consecutive: its maps are made once
            current, maps = f, maps_of(f)
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
