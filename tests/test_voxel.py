"""Voxelisation, palette quantisation, and the MagicaVoxel .vox / .npy files."""

import struct

import numpy as np
import pytest
import torch

from modules.export.voxel import (
    VoxFormatError,
    grid_to_vox_indices,
    quantize_palette,
    read_vox,
    vox_to_grid_indices,
    voxelize_points,
    write_vox,
    write_voxel_npy,
)

BOX_MIN = (-2.0, -1.0, -3.0)
BOX_MAX = (2.0, 1.5, 3.0)
WALL_COLOURS = {  # (axis, side) -> colour
    (0, 0): (1.0, 0.0, 0.0), (0, 1): (0.0, 1.0, 0.0),
    (1, 0): (0.0, 0.0, 1.0), (1, 1): (1.0, 1.0, 0.0),
    (2, 0): (0.0, 1.0, 1.0), (2, 1): (1.0, 0.0, 1.0),
}  # fmt: skip


def _box_room(step: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the six walls of an axis-aligned box (analytic grid on each wall), coloured per wall."""
    lo, hi = torch.tensor(BOX_MIN), torch.tensor(BOX_MAX)
    points, colours = [], []
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        ua = torch.arange(float(lo[a]), float(hi[a]) + 1e-6, step)
        ub = torch.arange(float(lo[b]), float(hi[b]) + 1e-6, step)
        ga, gb = torch.meshgrid(ua, ub, indexing="ij")
        for side, value in ((0, lo[axis]), (1, hi[axis])):
            p = torch.empty(ga.numel(), 3)
            p[:, axis], p[:, a], p[:, b] = value, ga.flatten(), gb.flatten()
            points.append(p)
            colours.append(torch.tensor(WALL_COLOURS[(axis, side)]).expand(p.shape[0], 3))
    return torch.cat(points), torch.cat(colours)


def test_box_room_voxelises_to_its_walls():
    points, colours = _box_room()
    grid = voxelize_points(points, colours, resolution=24)
    nx, ny, nz = grid.dims
    assert nz == 24 and grid.voxel_size == pytest.approx(6.0 / 24)
    assert (nx, ny) == (16, 10)  # 4 m / 0.25 m, 2.5 m / 0.25 m
    i, j, k = torch.meshgrid(torch.arange(nx), torch.arange(ny), torch.arange(nz), indexing="ij")
    shell = (i == 0) | (i == nx - 1) | (j == 0) | (j == ny - 1) | (k == 0) | (k == nz - 1)
    assert torch.equal(grid.occupancy, shell)  # walls occupied, interior empty
    # wall interiors (away from edges) carry their wall's colour
    inner = (slice(1, -1),) * 2
    assert torch.allclose(grid.colours[0][inner], torch.tensor(WALL_COLOURS[(0, 0)]))
    assert torch.allclose(grid.colours[:, -1][1:-1, 1:-1], torch.tensor(WALL_COLOURS[(1, 1)]))
    assert torch.allclose(grid.colours[:, :, -1][1:-1, 1:-1], torch.tensor(WALL_COLOURS[(2, 1)]))
    assert torch.allclose(grid.origin, torch.tensor(BOX_MIN))


def test_box_room_vox_round_trip(tmp_path):
    points, colours = _box_room()
    grid = voxelize_points(points, colours, resolution=24)
    write_vox(tmp_path / "room.vox", grid)
    model = read_vox(tmp_path / "room.vox")
    nx, ny, nz = grid.dims
    assert model.size == (nx, nz, ny)  # MagicaVoxel: z up
    back = vox_to_grid_indices(torch.from_numpy(model.xyz), grid.dims)
    occupancy = torch.zeros(grid.dims, dtype=torch.bool)
    occupancy[back[:, 0], back[:, 1], back[:, 2]] = True
    assert torch.equal(occupancy, grid.occupancy)
    # the floor (y = max, down) is at MagicaVoxel z = 0 and the ceiling at the top
    floor = torch.from_numpy(model.xyz[:, 2] == 0)
    assert torch.all(back[floor][:, 1] == ny - 1)
    rgb = torch.from_numpy(model.colours()[:, :3].astype(np.float32) / 255.0)
    idx, expected = grid.occupied()
    order_file = back[:, 0] * ny * nz + back[:, 1] * nz + back[:, 2]
    order_grid = idx[:, 0] * ny * nz + idx[:, 1] * nz + idx[:, 2]
    got = rgb[torch.argsort(order_file)]
    want = expected[torch.argsort(order_grid)]
    assert torch.allclose(got, want, atol=0.5 / 255 + 1e-6)  # exact up to 8-bit rounding
    assert (model.colours()[:, 3] == 255).all()


def test_random_grid_round_trip_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 7, (60, 3), generator=g) * torch.tensor([1, 2, 3])  # dims up to 7 x 13 x 19
    palette = torch.rand(5, 3, generator=g)
    colours = palette[torch.randint(0, 5, (60,), generator=g)]
    points = idx.float() + 0.5
    grid = voxelize_points(points, colours, resolution=20, bounds=[[0, 0, 0], [20, 20, 20]])
    write_vox(tmp_path / "r.vox", grid)
    model = read_vox(tmp_path / "r.vox")
    assert model.size == (20, 20, 20)
    back = vox_to_grid_indices(torch.from_numpy(model.xyz), grid.dims)
    got = {tuple(v.tolist()): tuple(c) for v, c in zip(back, model.colours()[:, :3], strict=True)}
    occ_idx, occ_col = grid.occupied()
    want = {
        tuple(v.tolist()): tuple((c * 255 + 0.5).to(torch.uint8).tolist())
        for v, c in zip(occ_idx, occ_col, strict=True)
    }
    assert got == want and len(got) == len(set(map(tuple, idx.tolist())))


def test_axis_mapping_is_a_rotation():
    dims = (3, 4, 5)
    idx = torch.tensor([[0, 0, 0], [2, 3, 4], [1, 0, 2]])
    vox = grid_to_vox_indices(idx, dims)
    assert vox.tolist() == [[0, 0, 3], [2, 4, 0], [1, 2, 3]]  # y down -> z up, z forward -> y
    assert torch.equal(vox_to_grid_indices(vox, dims), idx)
    # directions: x -> x, y -> -z, z -> y has determinant +1 (no mirroring)
    m = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert float(torch.linalg.det(m)) == pytest.approx(1.0)


def test_palette_quantisation_limits_colours():
    g = torch.Generator().manual_seed(1)
    colours = torch.rand(2000, 3, generator=g)
    palette, index = quantize_palette(colours, max_colours=255)
    assert palette.shape[0] <= 255 and palette.dtype == torch.uint8
    assert int(index.max()) < palette.shape[0]
    err = (palette[index].float() / 255 - colours).abs().mean()
    assert err < 0.05  # 255 colours approximate uniform noise closely
    few = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.25], [0.0, 0.0, 0.0]])
    palette, index = quantize_palette(few)
    assert palette.shape[0] == 2 and torch.equal(palette[index][0], palette[index][2])


def test_quantised_grid_writes_valid_vox(tmp_path):
    g = torch.Generator().manual_seed(2)
    points = torch.rand(3000, 3, generator=g)
    grid = voxelize_points(points, torch.rand(3000, 3, generator=g), resolution=16)
    write_vox(tmp_path / "many.vox", grid)
    model = read_vox(tmp_path / "many.vox")
    assert model.colour_index.min() >= 1 and model.colour_index.max() <= 255
    assert model.xyz.shape[0] == int(grid.occupancy.sum())


def test_vox_limits_and_errors(tmp_path):
    line = torch.stack((torch.linspace(0, 1, 1000), torch.zeros(1000), torch.zeros(1000)), dim=-1)
    grid = voxelize_points(line, resolution=300)
    with pytest.raises(VoxFormatError, match="exceeds the .vox limit of 256"):
        write_vox(tmp_path / "big.vox", grid)
    assert not list(tmp_path.iterdir())
    (tmp_path / "bad.vox").write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(VoxFormatError, match="not a MagicaVoxel file"):
        read_vox(tmp_path / "bad.vox")
    truncated = b"VOX " + struct.pack("<i", 150) + b"MAIN" + struct.pack("<ii", 0, 999)
    (tmp_path / "short.vox").write_bytes(truncated)
    with pytest.raises(VoxFormatError, match="runs past the end"):
        read_vox(tmp_path / "short.vox")
    with pytest.raises(ValueError, match=r"points must be \[N, 3\]"):
        voxelize_points(torch.zeros(4, 2))


def test_grid_without_colours_and_npy(tmp_path):
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.9, 0.9], [float("nan"), 0.0, 0.0]])
    grid = voxelize_points(points, resolution=2, min_points=2)
    assert grid.occupancy.sum() == 1 and bool(grid.occupancy[1, 1, 1])  # the lone point is filtered
    write_vox(tmp_path / "grey.vox", grid)
    assert tuple(read_vox(tmp_path / "grey.vox").colours()[0, :3]) == (204, 204, 204)
    write_voxel_npy(tmp_path / "grid.npy", grid)
    rgba = np.load(tmp_path / "grid.npy")
    assert rgba.shape == (2, 2, 2, 4) and rgba.dtype == np.uint8
    assert rgba[1, 1, 1].tolist() == [204, 204, 204, 255] and rgba[0, 0, 0].tolist() == [0, 0, 0, 0]


def test_bounds_quantile_ignores_outliers():
    g = torch.Generator().manual_seed(3)
    points = torch.cat((torch.rand(1000, 3, generator=g), torch.tensor([[100.0, 100.0, 100.0]])))
    grid = voxelize_points(points, resolution=10, bounds_quantile=0.01)
    assert grid.voxel_size < 0.11  # the outlier does not stretch the grid
    assert int(grid.counts.sum()) < 1001
