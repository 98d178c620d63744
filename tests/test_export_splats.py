"""3DGS splat PLY: property layout, counts, stored activations, camera-facing flat discs, opacity from confidence."""

import math

import numpy as np
import pytest
import torch

from modules.export.splats import (
    SH_C0,
    erp_splats,
    quaternion_to_matrix,
    read_splats_ply,
    read_splats_web,
    splat_ply_properties,
    write_splats_ply,
    write_splats_web,
)
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.geometry.spherical import erp_directions

from splat_raster import cube_rotations, transmittance

H, W = 8, 16


def inputs():
    g = torch.Generator().manual_seed(3)
    d = 1.0 + torch.rand(H, W, generator=g)
    return d, torch.rand(3, H, W, generator=g), torch.rand(H, W, generator=g)


def test_property_layout_and_counts(tmp_path):
    d, rgb, conf = inputs()
    d[0, :3] = float("nan")
    d[5, 5] = 0.0
    path = write_splats_ply(tmp_path / "splats.ply", erp_splats(d, rgb, conf), sh_degree=3)
    props = read_splats_ply(path)
    expected = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(45)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    assert list(props) == expected == splat_ply_properties(3)
    assert all(v.dtype == np.float32 and len(v) == H * W - 4 for v in props.values())
    raw = path.read_bytes()
    assert b"format binary_little_endian 1.0" in raw[:200]
    assert all(np.isfinite(v).all() for v in props.values())
    sh0 = read_splats_ply(write_splats_ply(tmp_path / "sh0.ply", erp_splats(d, rgb, conf)))  # default degree 0
    assert list(sh0) == splat_ply_properties(0) and not any(k.startswith("f_rest") for k in sh0)
    assert (tmp_path / "sh0.ply").stat().st_size < 0.3 * path.stat().st_size
    assert len(splat_ply_properties(1)) == 17 + 9 and len(splat_ply_properties(2)) == 17 + 24
    with pytest.raises(ValueError, match="sh_degree"):
        write_splats_ply(tmp_path / "bad.ply", erp_splats(d, rgb), sh_degree=4)


def test_stored_values_invert_to_inputs(tmp_path):
    d, rgb, conf = inputs()
    sp = erp_splats(d, rgb, conf, min_opacity=0.2, max_opacity=0.9)
    props = read_splats_ply(write_splats_ply(tmp_path / "s.ply", sp, sh_degree=3))
    means = np.stack([props[k] for k in "xyz"], 1)
    assert np.allclose(means, (erp_directions(H, W) * d[..., None]).reshape(-1, 3).numpy(), atol=1e-5)
    colour = np.stack([props[f"f_dc_{i}"] for i in range(3)], 1) * SH_C0 + 0.5
    assert np.allclose(colour, rgb.permute(1, 2, 0).reshape(-1, 3).numpy(), atol=1e-5)
    opacity = 1 / (1 + np.exp(-props["opacity"]))
    assert np.allclose(opacity, 0.2 + 0.7 * conf.reshape(-1).numpy(), atol=1e-5)
    assert np.allclose(np.exp(np.stack([props[f"scale_{i}"] for i in range(3)], 1)), sp.scales.numpy(), rtol=1e-5)
    assert not any(props[f"f_rest_{i}"].any() for i in range(45))


def test_discs_face_the_camera_with_pixel_footprint():
    d, rgb, _ = inputs()
    sp = erp_splats(d, rgb, footprint_scale=0.5, thickness_ratio=0.05)
    R = quaternion_to_matrix(sp.quats)  # the reference 3DGS build_rotation convention (w, x, y, z)
    ray = sp.means / sp.means.norm(dim=1, keepdim=True)
    assert torch.allclose(R[:, :, 2], ray, atol=1e-5)  # thin axis along the ray
    assert torch.allclose(R[:, 1, 0], torch.zeros(H * W), atol=1e-6)  # first axis horizontal (east)
    assert torch.allclose(torch.det(R), torch.ones(H * W), atol=1e-5)
    assert torch.allclose(sp.normals, -ray, atol=1e-6)
    lat = (0.5 - (torch.arange(H) + 0.5) / H) * math.pi
    dist = d.reshape(-1)
    east = dist * 2 * math.pi / W * torch.cos(lat).repeat_interleave(W) * 0.5
    down = dist * math.pi / H * 0.5
    assert torch.allclose(sp.scales[:, 0], east, rtol=1e-5)
    assert torch.allclose(sp.scales[:, 1], down, rtol=1e-5)
    assert torch.allclose(sp.scales[:, 2], 0.05 * torch.minimum(east, down), rtol=1e-5)
    sp2 = erp_splats(d, rgb, stride=2)
    assert sp2.num_splats == (H // 2) * (W // 2)
    assert torch.allclose(sp2.scales[:, 1], d[::2, ::2].reshape(-1) * math.pi / H * 2 * 1.0, rtol=1e-5)  # default 1


def test_gltf_axes_rotate_everything():
    d, rgb, _ = inputs()
    cv, gl = erp_splats(d, rgb), erp_splats(d, rgb, axes="gltf")
    flip = torch.tensor([1.0, -1.0, -1.0])
    assert torch.allclose(gl.means, cv.means * flip)
    assert torch.allclose(quaternion_to_matrix(gl.quats), flip[:, None] * quaternion_to_matrix(cv.quats), atol=1e-5)


def test_blender_z_up_axes_rotate_everything():
    d, rgb, _ = inputs()
    cv, zup = erp_splats(d, rgb), erp_splats(d, rgb, axes="blender_z_up")
    M = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert torch.allclose(zup.means, cv.means @ M.T, atol=1e-6)
    assert torch.allclose(quaternion_to_matrix(zup.quats), M @ quaternion_to_matrix(cv.quats), atol=1e-5)
    with pytest.raises(ValueError, match="axes"):
        erp_splats(d, rgb, axes="zup")


def test_web_splat_format_round_trip(tmp_path):
    d, rgb, conf = inputs()
    sp = erp_splats(d, rgb, conf)
    path = write_splats_web(tmp_path / "s.splat", sp)
    assert path.stat().st_size == 32 * sp.num_splats
    got = read_splats_web(path)
    # records are sorted (largest, most opaque first): match them by position
    order = np.lexsort(got["means"].T)
    ref = np.lexsort(sp.means.numpy().T)
    assert np.allclose(got["means"][order], sp.means.numpy()[ref], atol=1e-6)
    assert np.allclose(got["scales"][order], sp.scales.numpy()[ref], rtol=1e-6)
    assert np.abs(got["colours"][order] - sp.colours.numpy()[ref]).max() <= 0.5 / 255 + 1e-6
    assert np.abs(got["opacities"][order] - sp.opacities.numpy()[ref]).max() <= 0.5 / 255 + 1e-6
    q_ref = sp.quats.numpy()[ref]
    q_got = got["quats"][order] / np.linalg.norm(got["quats"][order], axis=1, keepdims=True)
    assert np.abs(np.abs((q_got * q_ref).sum(1)) - 1).max() < 2e-3  # 8-bit quaternions: same rotation
    with pytest.raises(ValueError, match="32-byte"):
        (tmp_path / "bad.splat").write_bytes(b"x" * 33)
        read_splats_web(tmp_path / "bad.splat")


def _background(quantities, size: int) -> np.ndarray:
    means, scales, quats, opacities = quantities
    return np.stack([transmittance(means, scales, quats, opacities, R, size) for R in cube_rotations()])


def test_splats_render_opaque_from_the_capture_point(tmp_path):
    """A closed synthetic room (64x128 panorama) rendered from the capture point onto a cube (six 90 deg views of
    64x64: about twice the panorama's pixel density, as a viewer on a screen). A pixel shows background when more
    than 1 % of its colour comes from behind every splat (transmittance > 0.01)."""
    rgb, distance = render_erp(make_room(0), 64)
    d = torch.from_numpy(distance).double()
    c = torch.from_numpy(rgb).permute(2, 0, 1).double()
    sp = erp_splats(d, c)  # the defaults
    T = _background((sp.means.numpy(), sp.scales.numpy(), sp.quats.numpy(), sp.opacities.numpy()), 64)
    assert (T > 0.01).mean() < 0.005, (T > 0.01).mean()
    web = read_splats_web(write_splats_web(tmp_path / "room.splat", sp))  # what a web viewer gets (8-bit)
    T = _background((web["means"], web["scales"], web["quats"], web["opacities"]), 64)
    assert (T > 0.01).mean() < 0.005
    thin = erp_splats(d, c, footprint_scale=0.5)  # the old default: a see-through grid
    T = _background((thin.means.numpy(), thin.scales.numpy(), thin.quats.numpy(), thin.opacities.numpy()), 64)
    assert (T > 0.01).mean() > 0.5


def test_without_confidence_and_bad_input(tmp_path):
    d, rgb, _ = inputs()
    assert torch.allclose(erp_splats(d, rgb, max_opacity=0.8).opacities, torch.tensor(0.8))
    with pytest.raises(ValueError, match="rgb"):
        erp_splats(d, rgb[:, :4])
    with pytest.raises(ValueError, match="opacity"):
        erp_splats(d, rgb, min_opacity=0.9, max_opacity=0.5)
    with pytest.raises(ValueError, match="no valid pixel"):
        erp_splats(torch.full((H, W), float("inf")), rgb)
    with pytest.raises(FileNotFoundError):
        read_splats_ply(tmp_path / "missing.ply")
