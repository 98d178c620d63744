"""PNG previews: offscreen pyvista renders of a mesh or point cloud, a depth colour map, and a contact sheet.

Geometry is in OpenCV axes (x right, y down, z forward, camera at the origin); every view keeps "up" = -y.
Views (``VIEWS``):

* ``front``, ``right``, ``back``, ``left``: from the panorama's camera at the origin looking along +z, +x, -z, -x;
* ``above``: from above the scene looking down (+y), the panorama's forward direction at the top;
* ``outside``: from an oblique point outside the scene's bounds, looking at its centre.

Back-face culling is on: triangles face the camera at the origin, so from outside the walls nearest the viewer
disappear and the room is seen into, like a dollhouse. Colours are shown unlit (the photo's colours).

Rendering is offscreen through VTK; without a display it needs EGL (apt: libegl1, libgl1). Missing EGL raises
:class:`PreviewUnavailableError` instead of crashing; callers can make previews optional.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import numpy as np
from torch import Tensor

from ..extras import require
from .atomic import atomic_path
from .depth_files import colorize
from .mesh import Mesh

__all__ = [
    "VIEWS",
    "PreviewUnavailableError",
    "render_views",
    "contact_sheet",
    "write_png",
    "write_previews",
]

VIEWS = ("front", "right", "back", "left", "above", "outside")
_INSIDE = {"front": (0, 0, 1), "right": (1, 0, 0), "back": (0, 0, -1), "left": (-1, 0, 0)}


class PreviewUnavailableError(RuntimeError):
    """Offscreen rendering is not possible here (no EGL and no display)."""


def _require_offscreen() -> None:
    if os.environ.get("DISPLAY") and os.environ.get("VTK_DEFAULT_OPENGL_WINDOW") is None:
        return  # an X display is available
    if ctypes.util.find_library("EGL") is None:
        raise PreviewUnavailableError(
            "offscreen rendering needs EGL (no libEGL found and no DISPLAY): install libegl1 and libgl1, "
            "or disable previews"
        )
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _camera_poses(centre: np.ndarray, radius: float, views) -> dict[str, list]:
    poses = {}
    for name in views:
        if name in _INSIDE:
            poses[name] = [(0.0, 0.0, 0.0), _INSIDE[name], (0.0, -1.0, 0.0)]
        elif name == "above":
            poses[name] = [tuple(centre + np.array([0.0, -2.5 * radius, 0.0])), tuple(centre), (0.0, 0.0, 1.0)]
        elif name == "outside":
            eye = centre + 1.8 * radius * np.array([0.6, -0.55, -0.6])
            poses[name] = [tuple(eye), tuple(centre), (0.0, -1.0, 0.0)]
        else:
            raise ValueError(f"unknown preview view {name!r}; expected some of {VIEWS}")
    return poses


def render_views(
    mesh: Mesh | None = None,
    points: Tensor | None = None,
    colours: Tensor | None = None,
    views=VIEWS,
    size: tuple[int, int] = (640, 360),
    inside_fov_deg: float = 90.0,
    point_size: float = 2.0,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> dict[str, np.ndarray]:
    """Render a mesh (vertex colours) or a point cloud from the given views.

    Args:
        mesh: a :class:`Mesh`, or
        points: [N, 3] with optional colours [N, 3] in [0, 1].
        views: names from ``VIEWS``.
        size: (width, height) of each image in pixels.
        inside_fov_deg: vertical field of view for the views from the origin.
        point_size: pixel size of points.
        background: RGB in [0, 1].
    Returns:
        {view: [height, width, 3] uint8}.
    """
    if (mesh is None) == (points is None):
        raise ValueError("render_views needs exactly one of mesh or points")
    _require_offscreen()
    pv = require("pyvista", "rendered previews (export.dense.previews)")

    pv.OFF_SCREEN = True
    if mesh is not None:
        verts = mesh.vertices.detach().cpu().double().numpy()
        f = mesh.faces.detach().cpu().numpy()
        poly = pv.PolyData(verts, np.concatenate((np.full((len(f), 1), 3), f), axis=1).ravel())
        cols = mesh.colours
    else:
        verts = points.detach().cpu().double().numpy()
        poly = pv.PolyData(verts)
        cols = colours
    if len(verts) == 0:
        raise ValueError("nothing to render: no vertices")
    kwargs = {"lighting": False}
    if cols is not None:
        poly.point_data["rgb"] = (cols.detach().cpu().float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        kwargs.update(scalars="rgb", rgb=True)
    else:
        kwargs.update(color=(0.7, 0.7, 0.7))
    if mesh is not None:
        kwargs["culling"] = "back"
    else:
        kwargs.update(point_size=point_size, render_points_as_spheres=False, style="points")
    lo, hi = verts.min(0), verts.max(0)
    centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2) or 1.0
    images = {}
    try:
        plotter = pv.Plotter(off_screen=True, window_size=list(size))
    except Exception as e:  # VTK raises various types when no context can be made
        raise PreviewUnavailableError(f"pyvista could not open an offscreen window: {e}") from e
    try:
        plotter.set_background(background)
        plotter.add_mesh(poly, **kwargs)
        for name, pose in _camera_poses(centre, radius, views).items():
            plotter.camera_position = pose
            plotter.camera.view_angle = inside_fov_deg if name in _INSIDE else 40.0
            plotter.reset_camera_clipping_range()
            if name in _INSIDE:
                plotter.camera.clipping_range = (radius * 1e-3, radius * 10)
            plotter.render()  # screenshot() alone returns the previous frame after a camera change
            images[name] = np.asarray(plotter.screenshot(return_img=True))[..., :3].copy()
    finally:
        plotter.close()
    return images


def contact_sheet(
    tiles: dict[str, np.ndarray], header: np.ndarray | None = None, columns: int = 3, label: bool = True
) -> np.ndarray:
    """Arrange equally sized images in a grid under an optional header (resized to the grid's width).

    Args:
        tiles: {name: [h, w, 3] uint8}, all the same size.
        header: optional [H, W, 3] uint8 (e.g. the depth colour map).
        columns: tiles per row.
        label: write each tile's name in its corner.
    Returns:
        [H', W', 3] uint8.
    """
    from PIL import Image, ImageDraw

    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    shapes = {t.shape for t in tiles.values()}
    if len(shapes) != 1:
        raise ValueError(f"contact_sheet tiles differ in size: {sorted(shapes)}")
    h, w, _ = next(iter(shapes))
    cols = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // cols)
    grid = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (name, img) in enumerate(tiles.items()):
        x, y = (i % cols) * w, (i // cols) * h
        grid.paste(Image.fromarray(img), (x, y))
        if label:
            draw.rectangle((x, y, x + 8 * len(name) + 8, y + 16), fill=(0, 0, 0))
            draw.text((x + 4, y + 2), name, fill=(255, 255, 255))
    if header is None:
        return np.asarray(grid)
    head = Image.fromarray(header)
    head = head.resize((grid.width, max(1, round(head.height * grid.width / head.width))), Image.BILINEAR)
    sheet = Image.new("RGB", (grid.width, head.height + grid.height), (255, 255, 255))
    sheet.paste(head, (0, 0))
    sheet.paste(grid, (0, head.height))
    return np.asarray(sheet)


def write_png(path: str | os.PathLike, image: np.ndarray | Tensor) -> Path:
    """Write [H, W, 3] uint8 (or a [3, H, W] float tensor in [0, 1]) as PNG, atomically."""
    from PIL import Image

    if isinstance(image, Tensor):
        image = (image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def write_previews(
    out_dir: str | os.PathLike,
    mesh: Mesh | None = None,
    points: Tensor | None = None,
    colours: Tensor | None = None,
    distance: Tensor | None = None,
    views=VIEWS,
    size: tuple[int, int] = (640, 360),
    prefix: str = "preview",
    columns: int = 3,
    cmap: str = "turbo",
    percentiles: tuple[float, float] = (2.0, 98.0),
    **render_options,
) -> dict[str, Path]:
    """Render views to ``<prefix>_<view>.png``, the depth colour map (depth_files.colorize with ``cmap`` and
    ``percentiles``) to ``<prefix>_depth.png`` and a contact sheet (depth map on top, views below) to
    ``<prefix>_sheet.png``.

    Returns:
        {"preview_<view>" | "preview_depth" | "preview_sheet": path}.
    """
    out_dir = Path(out_dir)
    images = render_views(mesh=mesh, points=points, colours=colours, views=views, size=size, **render_options)
    files = {f"preview_{name}": write_png(out_dir / f"{prefix}_{name}.png", img) for name, img in images.items()}
    header = None
    if distance is not None:
        header = colorize(distance, cmap, tuple(percentiles))
        files["preview_depth"] = write_png(out_dir / f"{prefix}_depth.png", header)
    files["preview_sheet"] = write_png(out_dir / f"{prefix}_sheet.png", contact_sheet(images, header, columns))
    return files
