"""ERP grid mesh topology: closed sphere and room, seam, poles, discontinuity cuts, invalid pixels, decimation."""

import math

import numpy as np

import pytest
import torch

from modules.export.mesh import (
    Mesh,
    boundary_edges,
    discontinuity_mask,
    erp_grid_mesh,
    mesh_edges,
)
from modules.export.mesh_open3d import decimate_mesh, poisson_mesh
from modules.geometry.erp_maps import InvalidDistanceError
from modules.geometry.spherical import direction_to_lonlat, erp_directions


def box_room_distance(H, W, lo=(-2.0, -1.5, -3.0), hi=(2.5, 1.2, 2.0)):
    """Distance from the origin to the inside of the axis-aligned box [lo, hi] (OpenCV axes) per ERP pixel."""
    d = erp_directions(H, W, dtype=torch.float64)
    lo, hi = torch.tensor(lo, dtype=d.dtype), torch.tensor(hi, dtype=d.dtype)
    t = torch.where(d > 0, hi / d, torch.where(d < 0, lo / d, torch.full_like(d, math.inf)))
    return t.min(dim=-1).values.float()


def euler_characteristic(mesh: Mesh) -> int:
    edges, _ = mesh_edges(mesh.faces)
    return mesh.num_vertices - edges.shape[0] + mesh.num_faces


def face_normals_toward_camera(mesh: Mesh) -> torch.Tensor:
    p = mesh.vertices[mesh.faces]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    return (n * p.mean(dim=1)).sum(-1) < 0


def test_sphere_is_closed_and_faces_the_camera():
    H, W = 12, 24
    mesh = erp_grid_mesh(torch.full((H, W), 2.0))
    assert mesh.num_vertices == H * W + 2  # every pixel plus two poles
    assert mesh.num_faces == 2 * W * (H - 1) + 2 * W
    assert boundary_edges(mesh.faces).shape[0] == 0
    assert euler_characteristic(mesh) == 2  # a closed sphere
    r = mesh.vertices.norm(dim=1)
    assert torch.allclose(r[:-2], torch.tensor(2.0))
    # pole vertices where the first / last row's ring plane meets the axis
    assert torch.allclose(r[-2:], torch.tensor(2.0 * math.cos(math.pi / (2 * H))))
    assert bool(face_normals_toward_camera(mesh).all())


def test_seam_is_closed():
    H, W = 8, 16
    mesh = erp_grid_mesh(torch.full((H, W), 1.0), close_poles=False)
    lon, _ = direction_to_lonlat(mesh.vertices)
    first = lon < -math.pi + math.pi / W + 1e-4  # column 0
    last = lon > math.pi - math.pi / W - 1e-4  # column W - 1
    assert int(first.sum()) == H and int(last.sum()) == H
    across = (first[mesh.faces].any(1) & last[mesh.faces].any(1)).sum()
    assert int(across) == 2 * (H - 1)  # two triangles per row pair join column W-1 to column 0
    # without poles the only boundary is the first and last row
    b = boundary_edges(mesh.faces)
    assert b.shape[0] == 2 * W


def test_poles_are_fanned():
    H, W = 6, 10
    d = torch.full((H, W), 3.0)
    d[0] = 2.0
    mesh = erp_grid_mesh(d)
    x, y, z = mesh.vertices.unbind(1)
    pole = (x.abs() < 1e-6) & (z.abs() < 1e-6) & (y < 0)  # straight up (-y)
    assert int(pole.sum()) == 1
    ring = 2.0 * math.cos(math.pi / (2 * H))  # the first row's points' height above the camera
    assert torch.allclose(mesh.vertices[pole], torch.tensor([[0.0, -ring, 0.0]]), atol=1e-5)
    assert int(pole[mesh.faces].any(1).sum()) == W


def test_closed_room_has_no_holes():
    H, W = 32, 64
    d = box_room_distance(H, W)
    mesh = erp_grid_mesh(d, torch.rand(3, H, W, generator=torch.Generator().manual_seed(0)))
    assert mesh.num_vertices == H * W + 2
    assert boundary_edges(mesh.faces).shape[0] == 0
    assert euler_characteristic(mesh) == 2
    assert bool(face_normals_toward_camera(mesh).all())
    assert mesh.colours is not None and mesh.colours.shape == (mesh.num_vertices, 3)
    # vertices lie on the box walls
    on_wall = torch.stack(
        [(mesh.vertices[:, i] - v).abs() < 1e-4 for i, v in enumerate((-2.0, -1.5, -3.0))]
        + [(mesh.vertices[:, i] - v).abs() < 1e-4 for i, v in enumerate((2.5, 1.2, 2.0))]
    ).any(0)
    assert bool(on_wall[: H * W].all())


def test_step_edge_is_cut():
    H, W = 32, 64  # pixel angle 0.1 rad: the 1 -> 3 step stretches an edge about 20x
    d = torch.full((H, W), 3.0)
    d[:, W // 4 : 3 * W // 4] = 1.0  # near band in front, far behind: steps at lon = -90 and +90 deg
    skirted = erp_grid_mesh(d, close_poles=False)  # the far layer continues under the near band's edge
    r = skirted.vertices.norm(dim=1)[skirted.faces]
    assert float((r.amax(1) / r.amin(1)).max()) < 1.05  # no triangle spans the 1 -> 3 discontinuity
    mesh = erp_grid_mesh(d, close_poles=False, skirt=False)
    r = mesh.vertices.norm(dim=1)[mesh.faces]
    assert float((r.amax(1) / r.amin(1)).max()) < 1.01  # no triangle spans the discontinuity
    lon, _ = direction_to_lonlat(mesh.vertices)
    b = boundary_edges(mesh.faces).reshape(-1)
    near_step = ((lon[b].abs() - math.pi / 2).abs() < 2 * math.pi / W + 1e-4) | (
        mesh.vertices[b, 1].abs() > 0.9 * mesh.vertices[b].norm(dim=1) * math.cos(math.pi / H)
    )
    assert bool(near_step.all())  # boundaries only at the steps (and the unfanned first / last rows)
    uncut = erp_grid_mesh(d, close_poles=False, max_edge_stretch=None)
    r = uncut.vertices.norm(dim=1)[uncut.faces]
    assert float((r.amax(1) / r.amin(1)).max()) > 2.9  # the control: without the cut, triangles span it


def test_grazing_angle_cut():
    H, W = 32, 64
    d = torch.full((H, W), 3.0)
    d[:, W // 4 : 3 * W // 4] = 1.0
    mesh = erp_grid_mesh(d, close_poles=False, max_edge_stretch=None, max_grazing_deg=80.0)
    r = mesh.vertices.norm(dim=1)[mesh.faces]
    assert float((r.amax(1) / r.amin(1)).max()) < 1.01
    v = erp_grid_mesh(torch.full((H, W), 2.0)).vertices
    f = torch.tensor([[0, 1, 2]])
    assert not bool(discontinuity_mask(v, f, None, 80.0)[0])  # a camera-facing triangle is kept


def test_invalid_pixels_are_dropped():
    H, W = 16, 32
    d = box_room_distance(H, W)
    d[4:7, 10:14] = float("nan")
    d[10, 3] = float("inf")
    d[11, 20] = 0.0
    d[12, 25] = -1.0
    n_invalid = 3 * 4 + 3
    mesh = erp_grid_mesh(d)
    assert mesh.num_vertices == H * W - n_invalid + 2
    assert bool(torch.isfinite(mesh.vertices).all())
    assert mesh.vertices.norm(dim=1).min() > 0.5
    # holes only around the invalid pixels: every boundary vertex neighbours one
    invalid = ~(torch.isfinite(d) & (d > 0))
    near = torch.nn.functional.max_pool2d(invalid[None, None].float(), 3, 1, 1)[0, 0].bool()
    near_pts = erp_directions(H, W)[near & ~invalid] * d[near & ~invalid][:, None]
    b = boundary_edges(mesh.faces).reshape(-1).unique()
    dist = (mesh.vertices[b][:, None] - near_pts[None]).norm(dim=-1).amin(1)
    assert b.numel() > 0 and float(dist.max()) < 1e-5


def test_stride_and_bad_input():
    d = torch.full((16, 32), 1.0)
    assert erp_grid_mesh(d, stride=2).num_vertices == 8 * 16 + 2
    with pytest.raises(InvalidDistanceError, match="2-D"):
        erp_grid_mesh(torch.ones(1, 8, 16))
    with pytest.raises(InvalidDistanceError, match="no valid pixel"):
        erp_grid_mesh(torch.full((8, 16), float("nan")))
    with pytest.raises(ValueError, match="rgb"):
        erp_grid_mesh(d, torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match="stride"):
        erp_grid_mesh(d, stride=0)


def test_decimation_keeps_colours_and_budget():
    H, W = 32, 64
    d = box_room_distance(H, W)
    mesh = erp_grid_mesh(d, torch.full((3, H, W), 0.25))
    small = decimate_mesh(mesh, 500)
    assert 0 < small.num_faces <= 500
    assert small.colours is not None and torch.allclose(small.colours, torch.tensor(0.25), atol=1e-3)
    assert decimate_mesh(small, 10_000) is small


def test_poisson_reconstruction_faces_camera():
    H, W = 24, 48
    mesh = erp_grid_mesh(torch.full((H, W), 2.0), torch.full((3, H, W), 0.5))
    rec = poisson_mesh(mesh, depth=5, density_quantile=0.0)
    assert rec.num_faces > 100 and rec.colours is not None
    r = rec.vertices.norm(dim=1)
    assert float((r - 2.0).abs().median()) < 0.1
    assert float(face_normals_toward_camera(rec).float().mean()) > 0.99


def test_skirt_closes_depth_edge_cracks_without_stretching():
    """Synthetic room (boxes in front of walls) at 64x128; rays from the capture point through a 4x finer grid,
    intersected by Open3D's ray caster: without the skirt some pass through the cut along the depth edges; with it
    none does, and no triangle spans a discontinuity (every edge within max_edge_stretch)."""
    import open3d as o3d

    from modules.dataset.synthetic_scene import make_room, render_erp
    from modules.export.mesh import _edge_stretch

    d = torch.from_numpy(render_erp(make_room(0), 64)[1]).double()
    dirs = erp_directions(256, 512, dtype=torch.float32).reshape(-1, 3).numpy()
    rays = o3d.core.Tensor(np.concatenate([np.zeros_like(dirs), dirs], 1).astype(np.float32))

    def miss_fraction(m):
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(m.vertices.float().numpy()),
                            o3d.core.Tensor(m.faces.numpy().astype(np.uint32)))
        return float(np.isinf(scene.cast_rays(rays)["t_hit"].numpy()).mean())

    open_mesh = erp_grid_mesh(d, skirt=False)
    closed = erp_grid_mesh(d)
    assert miss_fraction(open_mesh) > 1e-3
    assert miss_fraction(closed) == 0.0
    p = closed.vertices[closed.faces]
    assert float(_edge_stretch(p, p.roll(-1, dims=1)).max()) <= 12.0
    # every vertex is a pixel's point or lies behind it on its ray (the skirt's far layer), never in front
    lon, lat = direction_to_lonlat(closed.vertices)
    u = ((lon / (2 * math.pi) + 0.5) * 128 - 0.5).round().long() % 128
    v = ((0.5 - lat / math.pi) * 64 - 0.5).round().long().clamp(0, 63)
    r = closed.vertices.norm(dim=1)
    not_pole = lat.abs() < math.pi / 2 - 1e-6
    assert (r[not_pole] >= d[v, u][not_pole] * (1 - 1e-9)).all()
    behind = (r[not_pole] > d[v, u][not_pole] * (1 + 1e-6)).sum()
    assert 0 < behind < 0.02 * closed.num_vertices
    rgb = torch.rand(3, 64, 128, dtype=torch.float64)
    assert erp_grid_mesh(d, rgb).colours.shape == (closed.num_vertices, 3)
