"""Coloured occupancy grids from point clouds, and their MagicaVoxel ``.vox`` / ``.npy`` files.

Grid conventions:

* The grid is axis-aligned in the camera/world frame (OpenCV axes: x right, y down, z forward). Voxels are cubes
  of side ``voxel_size``; voxel ``(i, j, k)`` covers ``origin + [i, i+1) x [j, j+1) x [k, k+1) * voxel_size``
  (the last voxel of an axis also holds points exactly on the upper bound). Tensors are indexed ``[i, j, k]``
  = ``[x, y, z]``.
* ``resolution`` is the number of voxels along the longest side of the bounds; the other axes get as many voxels
  as their extent needs (``ceil``), so voxels stay cubic.
* A voxel is occupied when at least ``min_points`` points fall into it; its colour is the mean of their colours.

MagicaVoxel ``.vox`` (version 150; chunks MAIN > SIZE, XYZI, RGBA; see
https://github.com/ephtracy/voxel-model/blob/master/MagicaVoxel-file-format-vox.txt): each axis holds at most
256 voxels, colours are indices 1..255 into a palette (index 0 = empty; RGBA entry ``n`` of the chunk is colour
index ``n + 1``). MagicaVoxel's z axis points up, so our axes are mapped by a rotation (no mirroring):

    vox_x = i,   vox_y = k (forward),   vox_z = (Ny - 1) - j (up = -y)

and the ``SIZE`` chunk is ``(Nx, Nz, Ny)``. Grids with more than 255 distinct colours are quantised to a
palette with Pillow's median cut (or another Pillow method).

``.npy``: a uint8 array [Nx, Ny, Nz, 4] in our axes: RGB of each voxel and alpha 255 where occupied, 0 where
empty. ``VoxelGrid.describe()`` gives the origin and voxel size that place it in space.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import UserError
from .atomic import atomic_path, atomic_write_bytes

__all__ = [
    "VOX_MAX_DIM",
    "VoxelGrid",
    "VoxModel",
    "VoxelError",
    "VoxFormatError",
    "voxelize_points",
    "quantize_palette",
    "grid_to_vox_indices",
    "vox_to_grid_indices",
    "encode_vox",
    "write_vox",
    "read_vox",
    "write_voxel_npy",
]

VOX_MAX_DIM = 256
VOX_MAX_COLOURS = 255
_PILLOW_METHODS = {
    "median_cut": Image.Quantize.MEDIANCUT,
    "max_coverage": Image.Quantize.MAXCOVERAGE,
    "fast_octree": Image.Quantize.FASTOCTREE,
}


class VoxelError(UserError, ValueError):
    """Bad voxelisation input or parameters."""


class VoxFormatError(VoxelError):
    """A grid that does not fit the .vox format, or a file that is not a valid .vox."""


@dataclass(frozen=True)
class VoxelGrid:
    """A coloured occupancy grid.

    Attributes:
        occupancy: [Nx, Ny, Nz] bool.
        counts: [Nx, Ny, Nz] int64, points per voxel.
        colours: [Nx, Ny, Nz, 3] float mean colour in [0, 1] (0 where empty), or None without input colours.
        origin: [3] world position of the grid's minimum corner.
        voxel_size: side of a voxel in world units (metres).
    """

    occupancy: Tensor
    counts: Tensor
    colours: Tensor | None
    origin: Tensor
    voxel_size: float

    @property
    def dims(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.occupancy.shape)  # type: ignore[return-value]

    def occupied(self) -> tuple[Tensor, Tensor | None]:
        """Indices [M, 3] (long, ``(i, j, k)``) of the occupied voxels and their colours [M, 3] (or None)."""
        idx = torch.nonzero(self.occupancy, as_tuple=False)
        colours = None if self.colours is None else self.colours[idx[:, 0], idx[:, 1], idx[:, 2]]
        return idx, colours

    def centres(self, indices: Tensor) -> Tensor:
        """World positions [M, 3] of voxel centres for indices [M, 3]."""
        return self.origin + (indices.to(self.origin.dtype) + 0.5) * self.voxel_size

    def describe(self) -> dict[str, Any]:
        """What meta.json records about the grid."""
        return {
            "dims_xyz": list(self.dims),
            "origin": [float(v) for v in self.origin],
            "voxel_size": float(self.voxel_size),
            "occupied": int(self.occupancy.sum()),
            "axes": "OpenCV (x right, y down, z forward); grid indexed [x, y, z]",
        }


def _quantile_bounds(points: Tensor, q: float) -> Tensor:
    """[2, 3] per-axis q and 1-q quantiles (kthvalue, so any number of points works)."""
    n = points.shape[0]
    lo_k = max(1, min(n, int(math.floor(q * (n - 1))) + 1))
    hi_k = max(1, min(n, int(math.ceil((1.0 - q) * (n - 1))) + 1))
    lo = torch.stack([points[:, a].kthvalue(lo_k).values for a in range(3)])
    hi = torch.stack([points[:, a].kthvalue(hi_k).values for a in range(3)])
    return torch.stack((lo, hi))


def voxelize_points(
    points: Tensor,
    colours: Tensor | None = None,
    resolution: int = 128,
    bounds: Tensor | Sequence[Sequence[float]] | None = None,
    min_points: int = 1,
    bounds_quantile: float = 0.0,
) -> VoxelGrid:
    """Occupancy grid of a point cloud.

    Args:
        points: [N, 3] positions (OpenCV axes); non-finite points are dropped.
        colours: optional [N, 3] colours in [0, 1].
        resolution: voxels along the longest side of the bounds (>= 1).
        bounds: optional [2, 3] (min corner, max corner); points outside are dropped. None = the points' extent.
        min_points: points a voxel needs to be occupied (>= 1; larger values drop stray points).
        bounds_quantile: with ``bounds=None``, use the per-axis ``q`` and ``1 - q`` quantiles of the points
            instead of min/max (e.g. 0.01 ignores the 1 % farthest points on each side); 0 = exact extent.
    Returns:
        :class:`VoxelGrid` on ``points``' device.
    Raises:
        VoxelError: bad shapes or parameters, no finite point, or empty bounds.
    """
    if points.dim() != 2 or points.shape[-1] != 3:
        raise VoxelError(f"points must be [N, 3], got {tuple(points.shape)}")
    if colours is not None and colours.shape != points.shape:
        raise VoxelError(f"colours must be [N, 3] like points {tuple(points.shape)}, got {tuple(colours.shape)}")
    if int(resolution) < 1 or int(min_points) < 1:
        raise VoxelError(f"resolution and min_points must be >= 1, got {resolution} and {min_points}")
    if not 0.0 <= bounds_quantile < 0.5:
        raise VoxelError(f"bounds_quantile must be in [0, 0.5), got {bounds_quantile}")
    dtype = points.dtype if points.is_floating_point() else torch.float32
    pts = points.to(dtype)
    keep = torch.isfinite(pts).all(dim=-1)
    pts = pts[keep]
    cols = None if colours is None else colours.to(device=pts.device, dtype=dtype)[keep]
    if pts.shape[0] == 0:
        raise VoxelError("voxelize_points: no finite point to voxelise")

    if bounds is None and bounds_quantile > 0:
        box = _quantile_bounds(pts, bounds_quantile)
    elif bounds is None:
        box = torch.stack((pts.min(0).values, pts.max(0).values))
    else:
        box = torch.as_tensor(bounds, dtype=dtype, device=pts.device).reshape(2, 3)
    extent = box[1] - box[0]
    if not bool((extent >= 0).all()) or float(extent.max()) <= 0:
        raise VoxelError(f"voxel bounds are empty: min {box[0].tolist()} max {box[1].tolist()}")
    voxel_size = float(extent.max()) / int(resolution)
    dims = [max(1, int(math.ceil(float(e) / voxel_size - 1e-9))) for e in extent]

    inside = ((pts >= box[0]) & (pts <= box[1])).all(dim=-1)
    pts = pts[inside]
    cols = None if cols is None else cols[inside]
    dims_t = torch.tensor(dims, device=pts.device)
    idx = torch.floor((pts - box[0]) / voxel_size).long()
    idx = torch.minimum(idx.clamp(min=0), dims_t - 1)
    flat = (idx[:, 0] * dims[1] + idx[:, 1]) * dims[2] + idx[:, 2]
    n_cells = dims[0] * dims[1] * dims[2]
    counts = torch.bincount(flat, minlength=n_cells)
    occupancy = counts >= int(min_points)
    grid_colours = None
    if cols is not None:
        sums = torch.zeros(n_cells, 3, device=pts.device, dtype=dtype).index_add_(0, flat, cols)
        grid_colours = torch.where(occupancy[:, None], sums / counts.clamp(min=1)[:, None].to(dtype), 0.0)
        grid_colours = grid_colours.reshape(*dims, 3)
    return VoxelGrid(occupancy.reshape(dims), counts.reshape(dims), grid_colours, box[0].clone(), voxel_size)


def quantize_palette(
    colours: Tensor, max_colours: int = VOX_MAX_COLOURS, method: str = "median_cut"
) -> tuple[Tensor, Tensor]:
    """Map colours to a palette of at most ``max_colours`` entries.

    Colours are rounded to 8 bits first; when at most ``max_colours`` distinct colours remain, the palette holds
    exactly those (lossless). Otherwise Pillow quantises them (``method``: ``median_cut``, ``max_coverage`` or
    ``fast_octree``; no dithering).

    Args:
        colours: [M, 3] in [0, 1].
    Returns:
        palette [K, 3] uint8 (K <= max_colours) and index [M] long into it, on ``colours``' device.
    """
    if not 1 <= int(max_colours) <= 256:
        raise VoxelError(f"max_colours must be in [1, 256], got {max_colours}")
    if method not in _PILLOW_METHODS:
        raise VoxelError(f"unknown palette method '{method}'; known: {', '.join(_PILLOW_METHODS)}")
    device = colours.device
    u8 = (colours.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()
    if u8.shape[0] == 0:
        return torch.zeros(0, 3, dtype=torch.uint8, device=device), torch.zeros(0, dtype=torch.long, device=device)
    unique, inverse = torch.unique(u8, dim=0, return_inverse=True)
    if unique.shape[0] <= max_colours:
        return unique.to(device), inverse.to(device)
    image = Image.fromarray(u8.numpy()[None, :, :])
    quantised = image.quantize(colors=int(max_colours), method=_PILLOW_METHODS[method], dither=Image.Dither.NONE)
    index = torch.from_numpy(np.asarray(quantised, dtype=np.int64)[0])
    palette = np.asarray(quantised.getpalette()[: 3 * (int(index.max()) + 1)], dtype=np.uint8).reshape(-1, 3)
    return torch.from_numpy(palette).to(device), index.to(device)


def grid_to_vox_indices(indices: Tensor, dims: Sequence[int]) -> Tensor:
    """Our grid indices (i, j, k) [M, 3] -> MagicaVoxel (x, y, z) [M, 3] (z up); see the module docstring."""
    i, j, k = indices.unbind(-1)
    return torch.stack((i, k, int(dims[1]) - 1 - j), dim=-1)


def vox_to_grid_indices(vox_xyz: Tensor, dims: Sequence[int]) -> Tensor:
    """Inverse of :func:`grid_to_vox_indices`; ``dims`` are our grid's (Nx, Ny, Nz)."""
    x, y, z = vox_xyz.unbind(-1)
    return torch.stack((x, int(dims[1]) - 1 - z, y), dim=-1)


def _chunk(chunk_id: bytes, content: bytes, children: bytes = b"") -> bytes:
    return chunk_id + struct.pack("<ii", len(content), len(children)) + content + children


def encode_vox(size_xyz: Sequence[int], xyz: np.ndarray, colour_index: np.ndarray, palette: np.ndarray) -> bytes:
    """Bytes of a single-model MagicaVoxel file (version 150).

    Args:
        size_xyz: model size in MagicaVoxel axes, each in [1, 256].
        xyz: [M, 3] voxel coordinates (MagicaVoxel axes), each < size.
        colour_index: [M] colour indices in [1, 255].
        palette: [K, 3] or [K, 4] uint8, K <= 255; entry n is colour index n + 1.
    """
    size = [int(s) for s in size_xyz]
    if any(not 1 <= s <= VOX_MAX_DIM for s in size):
        raise VoxFormatError(f".vox models hold 1..{VOX_MAX_DIM} voxels per axis, got size {size}")
    xyz = np.asarray(xyz, dtype=np.int64).reshape(-1, 3)
    colour_index = np.asarray(colour_index, dtype=np.int64).reshape(-1)
    if xyz.shape[0] != colour_index.shape[0]:
        raise VoxFormatError(f"{xyz.shape[0]} voxel positions but {colour_index.shape[0]} colour indices")
    if xyz.size and (xyz.min() < 0 or (xyz >= np.asarray(size)).any()):
        raise VoxFormatError("voxel coordinates fall outside the model size")
    if colour_index.size and (colour_index.min() < 1 or colour_index.max() > VOX_MAX_COLOURS):
        raise VoxFormatError("colour indices must be in 1..255 (0 means empty)")
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] not in (3, 4) or palette.shape[0] > VOX_MAX_COLOURS:
        raise VoxFormatError(f"palette must be [K<=255, 3 or 4] uint8, got {palette.shape}")
    rgba = np.zeros((256, 4), dtype=np.uint8)
    rgba[:, 3] = 255
    rgba[: palette.shape[0], : palette.shape[1]] = palette
    voxels = np.concatenate((xyz, colour_index[:, None]), axis=1).astype(np.uint8)
    children = (
        _chunk(b"SIZE", struct.pack("<iii", *size))
        + _chunk(b"XYZI", struct.pack("<i", voxels.shape[0]) + voxels.tobytes())
        + _chunk(b"RGBA", rgba.tobytes())
    )
    return b"VOX " + struct.pack("<i", 150) + _chunk(b"MAIN", b"", children)


def write_vox(
    path: str | os.PathLike,
    grid: VoxelGrid,
    palette_method: str = "median_cut",
    default_colour: Sequence[float] = (0.8, 0.8, 0.8),
) -> None:
    """Write ``grid`` as a MagicaVoxel .vox (atomically).

    Args:
        grid: at most 256 voxels per axis.
        palette_method: see :func:`quantize_palette` (used only beyond 255 distinct colours).
        default_colour: RGB in [0, 1] for grids without colours.
    Raises:
        VoxFormatError: the grid exceeds 256 voxels on an axis (lower the resolution).
    """
    dims = grid.dims
    if max(dims) > VOX_MAX_DIM:
        raise VoxFormatError(f"{path}: grid {dims} exceeds the .vox limit of {VOX_MAX_DIM} voxels per axis")
    idx, colours = grid.occupied()
    if colours is None:
        colours = torch.tensor(default_colour, dtype=torch.float32).expand(idx.shape[0], 3)
    palette, index = quantize_palette(colours, VOX_MAX_COLOURS, palette_method)
    vox_xyz = grid_to_vox_indices(idx, dims)
    data = encode_vox(
        (dims[0], dims[2], dims[1]), vox_xyz.cpu().numpy(), index.cpu().numpy() + 1, palette.cpu().numpy()
    )
    atomic_write_bytes(path, data)


@dataclass(frozen=True)
class VoxModel:
    """The first model of a .vox file.

    Attributes:
        size: (sx, sy, sz) in MagicaVoxel axes.
        xyz: [M, 3] int64 voxel coordinates.
        colour_index: [M] int64 in 1..255.
        palette: [256, 4] uint8 RGBA (entry n = colour index n + 1), or None when the file has no RGBA chunk
            (MagicaVoxel then uses its default palette).
    """

    size: tuple[int, int, int]
    xyz: np.ndarray
    colour_index: np.ndarray
    palette: np.ndarray | None

    def colours(self) -> np.ndarray:
        """[M, 4] RGBA of every voxel (needs a palette)."""
        if self.palette is None:
            raise VoxFormatError("the file has no RGBA chunk; its colours refer to MagicaVoxel's default palette")
        return self.palette[self.colour_index - 1]


def _iter_chunks(data: bytes, start: int, end: int, path: Path):
    pos = start
    while pos < end:
        if pos + 12 > end:
            raise VoxFormatError(f"{path}: truncated chunk header at byte {pos}")
        chunk_id = data[pos : pos + 4]
        n_content, n_children = struct.unpack_from("<ii", data, pos + 4)
        body = pos + 12
        if n_content < 0 or n_children < 0 or body + n_content + n_children > end:
            raise VoxFormatError(f"{path}: chunk {chunk_id!r} at byte {pos} runs past the end of the file")
        yield chunk_id, body, n_content, n_children
        pos = body + n_content + n_children


def read_vox(path: str | os.PathLike) -> VoxModel:
    """Read the first model (SIZE + XYZI) and the palette (RGBA) of a MagicaVoxel file; other chunks are skipped.

    Raises:
        FileNotFoundError: no such file. VoxFormatError: not a .vox file, or no model in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".vox file not found: {path}")
    data = path.read_bytes()
    if len(data) < 20 or data[:4] != b"VOX ":
        raise VoxFormatError(f"{path}: not a MagicaVoxel file (missing 'VOX ' header)")
    chunks = list(_iter_chunks(data, 8, len(data), path))
    if not chunks or chunks[0][0] != b"MAIN":
        raise VoxFormatError(f"{path}: missing MAIN chunk")
    _, body, n_content, n_children = chunks[0]
    size = xyz = index = palette = None
    for chunk_id, cbody, clen, _ in _iter_chunks(data, body + n_content, body + n_content + n_children, path):
        if chunk_id == b"SIZE" and size is None:
            size = struct.unpack_from("<iii", data, cbody)
        elif chunk_id == b"XYZI" and xyz is None:
            (count,) = struct.unpack_from("<i", data, cbody)
            if 4 + 4 * count > clen:
                raise VoxFormatError(f"{path}: XYZI chunk holds fewer voxels than it declares ({count})")
            voxels = np.frombuffer(data, dtype=np.uint8, count=4 * count, offset=cbody + 4).reshape(count, 4)
            xyz, index = voxels[:, :3].astype(np.int64), voxels[:, 3].astype(np.int64)
        elif chunk_id == b"RGBA":
            palette = np.frombuffer(data, dtype=np.uint8, count=1024, offset=cbody).reshape(256, 4).copy()
    if size is None or xyz is None:
        raise VoxFormatError(f"{path}: no SIZE/XYZI model in the file")
    return VoxModel(tuple(int(s) for s in size), xyz, index, palette)  # type: ignore[arg-type]


def write_voxel_npy(
    path: str | os.PathLike, grid: VoxelGrid, default_colour: Sequence[float] = (0.8, 0.8, 0.8)
) -> None:
    """Write the grid as a uint8 [Nx, Ny, Nz, 4] RGBA array (alpha 255 = occupied) in our axes (atomically)."""
    occupancy = grid.occupancy.cpu()
    if grid.colours is None:
        rgb = torch.tensor(default_colour, dtype=torch.float32).expand(*occupancy.shape, 3)
    else:
        rgb = grid.colours.detach().cpu().float()
    rgba = np.empty((*occupancy.shape, 4), dtype=np.uint8)
    rgba[..., :3] = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    rgba[..., :3] *= occupancy.numpy()[..., None]
    rgba[..., 3] = occupancy.numpy().astype(np.uint8) * 255
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, rgba, allow_pickle=False)
