"""Dense triangle meshes from an ERP distance map (decimation and Poisson reconstruction: :mod:`.mesh_open3d`).

Conventions (ARCHITECTURE.md): camera at the origin, OpenCV axes (x right, y down, z forward); ERP pixel
(u, v) has its ray through the pixel centre; ``distance`` is the Euclidean length along that ray.

Topology of :func:`erp_grid_mesh` (pure torch):

* one vertex per valid pixel (finite and > 0); invalid pixels are dropped together with every triangle that
  touches them, never written as garbage vertices;
* each 2x2 block of neighbouring pixels is split into two triangles; the block between column W-1 and column 0
  is included, so the longitude seam at +-180 deg is closed; the split diagonal is the one joining the two
  corners with the closer distances (or the one that keeps a triangle when a corner is invalid);
* one vertex at each pole (distance: median over the first / last row of the points' component along the
  pole's axis, exact for a floor or ceiling) fanned to that row;
* triangles across depth discontinuities are cut (see :func:`discontinuity_mask`); with ``skirt`` (default) each
  cut triangle is replaced by a copy on its far layer: its near corners move back along their own rays to the
  far corner's tangent plane (see :func:`skirt_triangles`), so the background continues under the foreground's edge up to the foreground's pixel
  centres. From the capture point the 1-pixel crack along every depth edge is closed, and no triangle spans the
  discontinuity (the skirt is hidden behind the foreground from there; elsewhere it is a 1-pixel band of
  background);
* every triangle is wound so that its normal (right-hand rule) points towards the camera: the surfaces are
  seen from the inside, and a renderer with back-face culling shows the interior from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.erp_maps import InvalidDistanceError, check_distance_map, valid_distance_mask
from ..geometry.erp_normals import erp_normals
from ..geometry.spherical import erp_directions

__all__ = [
    "Mesh",
    "erp_grid_mesh",
    "perspective_grid_mesh",
    "discontinuity_mask",
    "skirt_triangles",
    "remove_unreferenced_vertices",
    "mesh_edges",
    "boundary_edges",
    "vertex_normals",
]


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: [V, 3] float positions (OpenCV axes, camera at the origin).
        faces: [F, 3] int64 vertex indices, wound so that normals face the camera.
        colours: [V, 3] float RGB in [0, 1], or None.
    """

    vertices: Tensor
    faces: Tensor
    colours: Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def _check_rgb(rgb: Tensor | None, shape: tuple[int, int]) -> None:
    if rgb is not None and (rgb.ndim != 3 or rgb.shape[0] != 3 or tuple(rgb.shape[1:]) != shape):
        raise ValueError(f"rgb must be [3, {shape[0]}, {shape[1]}] to match the distance map, got {tuple(rgb.shape)}")


def _quad_triangles(index: Tensor, log_d: Tensor, wrap: bool = True) -> Tensor:
    """Two triangles per 2x2 pixel block, diagonal chosen per block.

    Args:
        index: [h, w] int64 vertex index per pixel, -1 where invalid.
        log_d: [h, w] log distance (any value where invalid).
        wrap: also join column w-1 to column 0 (the ERP longitude seam); False for perspective images.
    Returns:
        [T, 3] int64 triangles, possibly containing -1 (removed by the caller).
    """
    a, b = index[:-1], index[:-1].roll(-1, dims=1)  # top-left, top-right (column W-1 pairs with column 0)
    c, d = index[1:], index[1:].roll(-1, dims=1)  # bottom-left, bottom-right
    la, lb = log_d[:-1], log_d[:-1].roll(-1, dims=1)
    lc, ld = log_d[1:], log_d[1:].roll(-1, dims=1)
    if not wrap:
        a, b, c, d, la, lb, lc, ld = (t[:, :-1] for t in (a, b, c, d, la, lb, lc, ld))
    # Diagonal a-d when it spans the smaller distance change, or when b or c is missing; b-c otherwise.
    use_ad = (la - ld).abs() < (lb - lc).abs()
    use_ad = torch.where((b < 0) | (c < 0), torch.ones_like(use_ad), use_ad)
    use_ad = torch.where((a < 0) | (d < 0), torch.zeros_like(use_ad), use_ad)
    # Winding (a, c, d), (a, d, b) / (a, c, b), (b, c, d): normals towards the origin.
    t1 = torch.where(use_ad[..., None], torch.stack((a, c, d), -1), torch.stack((a, c, b), -1))
    t2 = torch.where(use_ad[..., None], torch.stack((a, d, b), -1), torch.stack((b, c, d), -1))
    return torch.cat((t1.reshape(-1, 3), t2.reshape(-1, 3)))


def _pole_fan(pole: int, row: Tensor, north: bool) -> Tensor:
    """Triangles joining a pole vertex to consecutive vertices of its row (seam included).

    Args:
        pole: the pole's vertex index.
        row: [w] vertex indices of the first (north) or last (south) row, -1 where invalid.
    Returns:
        [w, 3] int64, wound so that normals face the origin.
    """
    nxt = row.roll(-1)
    p = torch.full_like(row, pole)
    return torch.stack((p, row, nxt), -1) if north else torch.stack((p, nxt, row), -1)


def discontinuity_mask(
    vertices: Tensor,
    faces: Tensor,
    max_edge_stretch: float | None = 12.0,
    max_grazing_deg: float | None = None,
) -> Tensor:
    """Which triangles span a depth discontinuity (camera at the origin).

    Two tests, each disabled by None; a triangle is cut when either fires:

    * edge stretch: for every edge (i, j), ``|p_i - p_j| / (min(|p_i|, |p_j|) * angle(p_i, p_j))``, the edge
      length relative to the arc it would have on a sphere around the camera. It is about 1 for a surface facing
      the camera, ``1 / cos(a)`` for a surface seen at angle ``a`` from its normal, and ``(jump / distance) /
      pixel angle`` across a step, so it does not depend on latitude (ERP pixels shrink towards the poles);
    * grazing angle: the angle between the triangle's normal and the ray through its centroid, in degrees.

    Args:
        vertices: [V, 3].
        faces: [F, 3] int64.
        max_edge_stretch: cut when the largest edge stretch exceeds this (> 1).
        max_grazing_deg: cut when the grazing angle exceeds this (0..90).
    Returns:
        [F] bool, True for triangles to cut.
    """
    cut = torch.zeros(faces.shape[0], dtype=torch.bool, device=faces.device)
    if faces.shape[0] == 0:
        return cut
    p = vertices[faces]  # [F, 3, 3]
    if max_edge_stretch is not None:
        if not max_edge_stretch > 1.0:
            raise ValueError(f"max_edge_stretch must be > 1 or None, got {max_edge_stretch}")
        q = p.roll(-1, dims=1)
        r_p, r_q = p.norm(dim=-1), q.norm(dim=-1)
        angle = torch.atan2(torch.linalg.cross(p, q).norm(dim=-1), (p * q).sum(-1))
        arc = torch.minimum(r_p, r_q) * angle
        stretch = (p - q).norm(dim=-1) / arc.clamp_min(torch.finfo(p.dtype).tiny)
        cut |= stretch.amax(dim=1) > max_edge_stretch
    if max_grazing_deg is not None:
        if not 0.0 < max_grazing_deg < 90.0:
            raise ValueError(f"max_grazing_deg must be in (0, 90) or None, got {max_grazing_deg}")
        n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        m = p.mean(dim=1)
        cos = (n * m).sum(-1).abs() / (n.norm(dim=-1) * m.norm(dim=-1)).clamp_min(torch.finfo(p.dtype).tiny)
        cut |= ~(cos >= math.cos(math.radians(max_grazing_deg)))  # degenerate (NaN) triangles are cut too
    return cut


def _edge_stretch(p: Tensor, q: Tensor) -> Tensor:
    """Edge length over the arc on a sphere around the camera (see :func:`discontinuity_mask`). [..., 3] -> [...]."""
    angle = torch.atan2(torch.linalg.cross(p, q, dim=-1).norm(dim=-1), (p * q).sum(-1))
    arc = torch.minimum(p.norm(dim=-1), q.norm(dim=-1)) * angle
    return (p - q).norm(dim=-1) / arc.clamp_min(torch.finfo(p.dtype).tiny)


def skirt_triangles(
    vertices: Tensor,
    faces: Tensor,
    max_edge_stretch: float,
    colours: Tensor | None = None,
    normals: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Far-layer copies of triangles cut at depth discontinuities (camera at the origin).

    For each triangle, its farthest corner defines the far layer; corners whose edge to it stretches more than
    ``max_edge_stretch`` (the near layer; 1.0: every corner but the farthest) are replaced by new vertices on their own rays
    where they meet the far corner's tangent plane (``normals``), so a skirt over a floor stays in the floor; at the
    far corner's distance when there is no normal or the plane is met behind the near corner or beyond twice the far
    distance (grazing). New vertices are coloured like the far corner and shared when they coincide.

    Args:
        vertices: [V, 3]; faces: [C, 3] the cut triangles; colours: optional [V, 3]; normals: optional [V, 3]
            surface normals of the vertices (NaN where unknown).
    Returns:
        new vertices [N, 3], triangles [C, 3] indexing ``cat(vertices, new vertices)``, new colours [N, 3] or None.
    """
    p = vertices[faces]  # [C, 3, 3]
    r = p.norm(dim=-1)
    far = r.argmax(dim=1)
    rows = torch.arange(faces.shape[0], device=faces.device)
    p_far = p[rows, far]  # [C, 3]
    near = _edge_stretch(p, p_far[:, None].expand_as(p)) > max_edge_stretch  # the far corner itself: 0 / 0 -> False
    near[rows, far] = False
    key_vertex = faces[near]  # [K]
    r_far = r[rows, far][:, None].expand_as(r)[near]  # [K]
    key_dist = r_far
    if normals is not None and key_vertex.numel() > 0:
        far_vertex = faces[rows, far][:, None].expand_as(faces)[near]
        n = normals[far_vertex]
        ray = vertices[key_vertex] / vertices[key_vertex].norm(dim=1, keepdim=True)
        t = (n * vertices[far_vertex]).sum(1) / (n * ray).sum(1)
        ok = torch.isfinite(t) & (t >= r[near]) & (t <= 2 * r_far)
        key_dist = torch.where(ok, t, r_far)
    if key_vertex.numel() == 0:
        empty = vertices.new_zeros((0, 3))
        return empty, faces, None if colours is None else colours.new_zeros((0, 3))
    keys = torch.stack((key_vertex.to(vertices.dtype), key_dist), dim=1)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    src = unique[:, 0].long()
    new_vertices = vertices[src] / vertices[src].norm(dim=1, keepdim=True) * unique[:, 1:2]
    out = faces.clone()
    out[near] = vertices.shape[0] + inverse
    new_colours = None
    if colours is not None:
        far_vertex = faces[rows, far][:, None].expand_as(faces)[near]
        new_colours = torch.zeros_like(new_vertices)
        new_colours[inverse] = colours[far_vertex]
    return new_vertices, out, new_colours


def remove_unreferenced_vertices(mesh: Mesh) -> Mesh:
    """Drop vertices that no face uses and renumber the faces."""
    used = torch.zeros(mesh.num_vertices, dtype=torch.bool, device=mesh.faces.device)
    used[mesh.faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    colours = None if mesh.colours is None else mesh.colours[used]
    return Mesh(mesh.vertices[used], remap[mesh.faces], colours)


def erp_grid_mesh(
    distance: Tensor,
    rgb: Tensor | None = None,
    *,
    stride: int = 1,
    max_edge_stretch: float | None = 12.0,
    max_grazing_deg: float | None = None,
    close_poles: bool = True,
    drop_unreferenced: bool = True,
    skirt: bool = True,
) -> Mesh:
    """Triangulate an ERP distance map on its pixel grid.

    Args:
        distance: [H, W] distance along each pixel's ray; NaN / inf / <= 0 pixels are invalid and dropped.
        rgb: optional [3, H, W] colours in [0, 1] (vertex colours).
        stride: use every ``stride``-th row and column (>= 1).
        max_edge_stretch, max_grazing_deg: discontinuity cut, see :func:`discontinuity_mask`.
        close_poles: add a vertex at each pole and fan it to the first / last row.
        drop_unreferenced: drop valid pixels left without any triangle.
        skirt: replace triangles cut at depth discontinuities by far-layer copies (:func:`skirt_triangles`);
            needs ``max_edge_stretch``.
    Returns:
        :class:`Mesh` on ``distance``'s device; vertices in ``distance``'s dtype.
    Raises:
        InvalidDistanceError: see :func:`check_distance_map`.
    """
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    check_distance_map(distance)
    H, W = distance.shape
    _check_rgb(rgb, (H, W))
    d = distance[::stride, ::stride]
    dirs = erp_directions(H, W, distance.device, distance.dtype, stride)
    h, w = d.shape
    if h < 2 or w < 3:
        raise InvalidDistanceError(f"stride {stride} leaves a {h}x{w} grid; need at least 2 rows and 3 columns")
    valid = valid_distance_mask(d)
    index = torch.full((h, w), -1, dtype=torch.long, device=d.device)
    index[valid] = torch.arange(int(valid.sum()), device=d.device)
    vertices = [dirs[valid] * d[valid][:, None]]
    colours = None if rgb is None else [rgb[:, ::stride, ::stride].permute(1, 2, 0)[valid].to(distance.dtype)]
    log_d = torch.where(valid, d, torch.ones_like(d)).log()
    faces = [_quad_triangles(index, log_d)]
    if close_poles:
        n_vert = vertices[0].shape[0]
        for north, r in ((True, 0), (False, h - 1)):
            row_valid = valid[r]
            if not bool(row_valid.any()):
                continue
            pole_dir = torch.tensor([0.0, -1.0 if north else 1.0, 0.0], dtype=d.dtype, device=d.device)
            # on the axis where a plane through the row's points (a floor, a ceiling) meets it
            axial = (vertices[0][index[r][row_valid]] @ pole_dir).median()
            vertices.append((pole_dir * axial)[None])
            if colours is not None:
                colours.append(colours[0][index[r][row_valid]].mean(0, keepdim=True))
            faces.append(_pole_fan(n_vert, index[r], north))
            n_vert += 1
    V = torch.cat(vertices)
    C = None if colours is None else torch.cat(colours)
    F = torch.cat(faces)
    F = F[(F >= 0).all(dim=1)]
    cut = discontinuity_mask(V, F, max_edge_stretch, max_grazing_deg)
    if skirt and max_edge_stretch is not None and bool(cut.any()):
        N = torch.full_like(V, float("nan"))
        N[: int(valid.sum())] = erp_normals(d).permute(1, 2, 0)[valid]  # pixel vertices come first, in order
        new_v, skirt_f, new_c = skirt_triangles(V, F[cut], max_edge_stretch, C, N)
        V = torch.cat((V, new_v))
        C = None if C is None else torch.cat((C, new_c))
        again = discontinuity_mask(V, skirt_f, max_edge_stretch, max_grazing_deg)
        if bool(again.any()):  # three layers in one triangle: every corner onto the far layer
            new_v, flat_f, new_c = skirt_triangles(V, skirt_f[again], 1.0, C)
            V = torch.cat((V, new_v))
            C = None if C is None else torch.cat((C, new_c))
            skirt_f = torch.cat((skirt_f[~again], flat_f))
            skirt_f = skirt_f[~discontinuity_mask(V, skirt_f, max_edge_stretch, max_grazing_deg)]
        F = torch.cat((F[~cut], skirt_f))
    else:
        F = F[~cut]
    mesh = Mesh(V, F, None if C is None else C.clamp(0, 1))
    return remove_unreferenced_vertices(mesh) if drop_unreferenced else mesh


def perspective_grid_mesh(
    points: Tensor,
    rgb: Tensor | None = None,
    *,
    max_edge_stretch: float | None = 12.0,
    max_grazing_deg: float | None = None,
) -> Mesh:
    """Triangulate a perspective image's back-projected pixels (a depth map's points) on its pixel grid.

    Same rules as :func:`erp_grid_mesh` without the seam and the poles: invalid pixels (non-finite or z <= 0)
    dropped with their triangles, discontinuities cut, triangles facing the camera.

    Args:
        points: [H, W, 3] camera-frame points (OpenCV axes).
        rgb: optional [3, H, W] colours in [0, 1].
    """
    H, W, _ = points.shape
    _check_rgb(rgb, (H, W))
    valid = torch.isfinite(points).all(-1) & (points[..., 2] > 0)
    if not bool(valid.any()):
        raise InvalidDistanceError("depth map has no valid pixel (all non-finite or non-positive)")
    index = torch.full((H, W), -1, dtype=torch.long, device=points.device)
    index[valid] = torch.arange(int(valid.sum()), device=points.device)
    r = points.norm(dim=-1)
    log_d = torch.where(valid, r, torch.ones_like(r)).log()
    V = points[valid]
    F = _quad_triangles(index, log_d, wrap=False)
    F = F[(F >= 0).all(dim=1)]
    F = F[~discontinuity_mask(V, F, max_edge_stretch, max_grazing_deg)]
    colours = None if rgb is None else rgb.permute(1, 2, 0)[valid].to(points.dtype).clamp(0, 1)
    return remove_unreferenced_vertices(Mesh(V, F, colours))


def mesh_edges(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Undirected edges of a triangle mesh and how many faces use each.

    Args:
        faces: [F, 3] int64.
    Returns:
        edges [E, 2] (sorted pairs, unique) and counts [E].
    """
    e = torch.cat((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]])).sort(dim=1).values
    return torch.unique(e, dim=0, return_counts=True)


def boundary_edges(faces: Tensor) -> Tensor:
    """Edges used by exactly one face (the rims of holes and cuts): [E_b, 2]."""
    edges, counts = mesh_edges(faces)
    return edges[counts == 1]


def vertex_normals(mesh: Mesh) -> Tensor:
    """Area-weighted vertex normals [V, 3] (unit length; zero for isolated vertices), facing the camera."""
    p = mesh.vertices[mesh.faces]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    out = torch.zeros_like(mesh.vertices)
    for k in range(3):
        out.index_add_(0, mesh.faces[:, k], n)
    return torch.nn.functional.normalize(out, dim=1)
