"""Previews: offscreen renders are not blank and differ per view; depth colour map; contact sheet."""

import numpy as np
import pytest
import torch
from PIL import Image

from modules.export.mesh import erp_grid_mesh
from modules.export.pointcloud import erp_points
from modules.export.previews import (
    PreviewUnavailableError,
    contact_sheet,
    render_views,
    write_previews,
)

H, W = 16, 32


def coloured_sphere():
    d = torch.full((H, W), 2.0)
    rgb = torch.zeros(3, H, W)
    rgb[0, :, : W // 2] = 1.0  # left half red, right half blue, top rows green
    rgb[2, :, W // 2 :] = 1.0
    rgb[:, : H // 4] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    return d, rgb


def render_or_skip(**kwargs):
    try:
        return render_views(**kwargs)
    except PreviewUnavailableError as e:  # no EGL on this machine: the error is the documented behaviour
        pytest.skip(str(e))


def test_mesh_views_not_blank_and_distinct():
    d, rgb = coloured_sphere()
    images = render_or_skip(mesh=erp_grid_mesh(d, rgb), views=("front", "left", "right", "outside"), size=(64, 48))
    assert set(images) == {"front", "left", "right", "outside"}
    for img in images.values():
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img.reshape(-1, 3).std(0).max() > 5  # not a blank image
    left, right = images["left"].reshape(-1, 3).mean(0), images["right"].reshape(-1, 3).mean(0)
    assert left[0] > left[2] + 50 and right[2] > right[0] + 50  # lon < 0 (red) on the left, blue on the right
    assert (images["outside"] == 255).all(-1).any()  # the scene seen from outside leaves background visible


def test_point_cloud_view():
    d, rgb = coloured_sphere()
    pts, cols = erp_points(d, rgb)
    images = render_or_skip(points=pts, colours=cols, views=("front",), size=(48, 32), point_size=6.0)
    assert (images["front"] != 255).any()


def test_contact_sheet():
    tiles = {"a": np.zeros((10, 20, 3), np.uint8), "b": np.full((10, 20, 3), 200, np.uint8)}
    sheet = contact_sheet(tiles, header=np.zeros((5, 10, 3), np.uint8), columns=2)
    assert sheet.shape == (20 + 10, 40, 3)  # header 5x10 scaled to width 40, one row of tiles
    plain = contact_sheet(tiles, columns=2, label=False)
    assert (plain[:, 20:] == 200).all() and (plain[:, :20] == 0).all()  # tile "b" to the right of tile "a"
    with pytest.raises(ValueError, match="differ"):
        contact_sheet({"a": np.zeros((4, 4, 3), np.uint8), "b": np.zeros((5, 4, 3), np.uint8)})


def test_write_previews_files(tmp_path):
    d, rgb = coloured_sphere()
    try:
        mesh = erp_grid_mesh(d, rgb)
        files = write_previews(tmp_path, mesh=mesh, distance=d, views=("front", "above"), size=(40, 30))
    except PreviewUnavailableError as e:
        pytest.skip(str(e))
    assert set(files) == {"preview_front", "preview_above", "preview_depth", "preview_sheet"}
    sheet = np.asarray(Image.open(files["preview_sheet"]))
    assert sheet.shape[1] == 80 and sheet.shape[0] == 40 + 30  # header resized to the grid's width, then tiles
    depth = np.asarray(Image.open(files["preview_depth"]))
    assert depth.shape == (H, W, 3) and depth.reshape(-1, 3).std(0).max() == 0  # constant distance: one colour
    assert not any(".part" in p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="exactly one"):
        render_views()
    with pytest.raises(ValueError, match="unknown preview view"):
        render_views(mesh=erp_grid_mesh(d, rgb), views=("sideways",))
