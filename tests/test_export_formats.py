"""Mesh files read back: PLY (plyfile), OBJ / GLB / FBX (assimp), counts, colours, axes, camera, UVs."""

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.export.mesh import Mesh, erp_grid_mesh
from modules.export.mesh_io import (
    AssimpError,
    assimp_info,
    assimp_read,
    read_ply,
    srgb_to_linear,
    write_mesh_fbx,
    write_mesh_glb,
    write_mesh_obj,
    write_mesh_ply,
)

H, W = 8, 16


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    g = torch.Generator().manual_seed(1)
    d = 1.5 + torch.rand(H, W, generator=g) * 0.1
    return erp_grid_mesh(d, torch.rand(3, H, W, generator=g))


def no_partial_files(folder: Path) -> bool:
    return not any(".part" in p.name for p in folder.iterdir())


def test_ply_read_back(mesh, tmp_path):
    path = write_mesh_ply(tmp_path / "mesh.ply", mesh)
    info = read_ply(path)
    assert info["elements"] == {"vertex": mesh.num_vertices, "face": mesh.num_faces}
    assert info["properties"]["vertex"] == ["x", "y", "z", "red", "green", "blue"]
    v = info["data"]["vertex"]
    assert np.allclose(np.stack([v["x"], v["y"], v["z"]], 1), mesh.vertices.numpy(), atol=1e-6)
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1)
    assert np.abs(rgb / 255.0 - mesh.colours.numpy()).max() <= 0.5 / 255 + 1e-6
    faces = np.stack(info["data"]["face"]["vertex_indices"])
    assert np.array_equal(faces, mesh.faces.numpy())
    gl = read_ply(write_mesh_ply(tmp_path / "mesh_gl.ply", mesh, axes="gltf"))["data"]["vertex"]
    assert np.allclose(gl["y"], -v["y"]) and np.allclose(gl["z"], -v["z"]) and np.allclose(gl["x"], v["x"])
    assert assimp_info(path)["faces"] == mesh.num_faces
    assert no_partial_files(tmp_path)


def test_obj_read_back_with_colours_and_texture(mesh, tmp_path):
    tex = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    files = write_mesh_obj(tmp_path / "mesh.obj", mesh, texture=tex)
    assert set(files) == {"obj", "mtl", "texture"} and all(p.is_file() for p in files.values())
    assert "map_Kd mesh_texture.png" in files["mtl"].read_text()
    info = assimp_read(files["obj"])
    assert info.num_unique_positions == mesh.num_vertices and info.num_faces == mesh.num_faces
    assert info.has_colours and info.has_uvs
    lines = files["obj"].read_text().splitlines()
    verts = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    assert verts.shape == (mesh.num_vertices, 6)
    assert np.allclose(verts[:, :3], mesh.vertices.numpy() * [1, -1, -1], atol=1e-5)  # Y up by default
    assert np.allclose(verts[:, 3:], mesh.colours.numpy(), atol=1e-4)
    uvs = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("vt ")])
    faces = [[tuple(int(i) - 1 for i in c.split("/")) for c in ln.split()[1:]] for ln in lines if ln.startswith("f ")]
    assert len(faces) == mesh.num_faces
    corner_v = np.array([[c[0] for c in f] for f in faces])
    corner_t = np.array([[c[1] for c in f] for f in faces])
    assert np.array_equal(corner_v, mesh.faces.numpy())
    u = uvs[corner_t, 0]
    assert (u.max(1) - u.min(1)).max() < 0.5  # seam triangles use u + 1 instead of wrapping across the image
    # non-pole corners: u = lon / 2pi + 0.5 (mod 1), v = lat / pi + 0.5
    p = mesh.vertices.numpy()[corner_v]
    not_pole = np.hypot(p[..., 0], p[..., 2]) > 1e-6
    lon = np.arctan2(p[..., 0], p[..., 2])
    lat = np.arcsin(-p[..., 1] / np.linalg.norm(p, axis=-1))
    du = np.mod(u - (lon / (2 * np.pi) + 0.5) + 0.5, 1.0) - 0.5
    assert np.abs(du[not_pole]).max() < 1e-5
    assert np.abs(uvs[corner_t, 1] - (lat / np.pi + 0.5)).max() < 1e-5
    assert no_partial_files(tmp_path)


def test_obj_without_colours(tmp_path):
    m = erp_grid_mesh(torch.full((H, W), 1.0))
    files = write_mesh_obj(tmp_path / "plain.obj", m)
    assert "texture" not in files
    info = assimp_read(files["obj"])
    assert not info.has_colours and info.num_faces == m.num_faces


def test_glb_read_back_with_camera(mesh, tmp_path):
    import pygltflib

    path = write_mesh_glb(tmp_path / "mesh.glb", mesh)
    info = assimp_read(path)
    assert info.num_unique_positions == mesh.num_vertices and info.num_faces == mesh.num_faces
    assert info.has_colours and info.num_cameras == 1
    gltf = pygltflib.GLTF2().load(str(path))
    cam_nodes = [n for n in gltf.nodes if n.camera is not None]
    assert len(cam_nodes) == 1 and cam_nodes[0].translation is None and cam_nodes[0].rotation is None
    assert math.isclose(gltf.cameras[0].perspective.yfov, math.radians(90.0), rel_tol=1e-6)
    assert "KHR_materials_unlit" in gltf.extensionsUsed
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]

    def accessor(i, dtype, n):
        a = gltf.accessors[i]
        bv = gltf.bufferViews[a.bufferView]
        return np.frombuffer(blob, dtype, a.count * n, bv.byteOffset + (a.byteOffset or 0)).reshape(a.count, n)

    pos = accessor(prim.attributes.POSITION, np.float32, 3)
    assert np.allclose(pos, mesh.vertices.numpy() * [1, -1, -1], atol=1e-6)  # glTF: +Y up, forward -Z
    col = accessor(prim.attributes.COLOR_0, np.float32, 3)
    assert np.allclose(col, srgb_to_linear(mesh.colours.numpy().astype(np.float64)), atol=1e-6)
    idx = accessor(prim.indices, np.uint32, 1).reshape(-1, 3)
    assert np.array_equal(idx, mesh.faces.numpy())
    assert no_partial_files(tmp_path)


def test_glb_points_only(tmp_path):
    pts = Mesh(torch.rand(50, 3) + 1.0, torch.zeros(0, 3, dtype=torch.long), torch.rand(50, 3))
    path = write_mesh_glb(tmp_path / "points.glb", pts, camera=False)
    info = assimp_read(path)
    assert info.num_vertices == 50 and info.num_cameras == 0 and info.has_colours


def test_fbx_read_back_by_assimp(mesh, tmp_path):
    path = write_mesh_fbx(tmp_path / "mesh.fbx", mesh)
    assert path.read_bytes()[:18] == b"Kaydara FBX Binary"
    info = assimp_read(path)
    assert info.num_faces == mesh.num_faces
    assert info.num_unique_positions == mesh.num_vertices
    assert info.has_colours
    # Y up, centimetres: a file unit is 1 / 100 of a scene unit
    expected = np.unique((mesh.vertices.numpy() * [100, -100, -100]).astype(np.float32), axis=0)
    got = np.unique(info.positions.astype(np.float32), axis=0)
    assert np.allclose(got, expected, atol=1e-3)
    # every written colour comes back (FBX stores colours per face corner)
    written = set(map(tuple, np.round(mesh.colours.numpy() * 255).astype(int)))
    read = set(map(tuple, np.round(info.colours[:, :3] * 255).astype(int)))
    assert read == written
    assert assimp_info(path) == {"meshes": 1, "vertices": mesh.num_vertices, "faces": mesh.num_faces, "cameras": 0}
    assert no_partial_files(tmp_path)


def test_fbx_failure_leaves_no_file(mesh, tmp_path):
    with pytest.raises(AssimpError, match="does not exist"):
        write_mesh_fbx(tmp_path / "mesh.fbx", mesh, assimp_executable=tmp_path / "no_assimp")
    assert list(tmp_path.iterdir()) == []


def test_refuses_empty_or_non_finite(tmp_path):
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        write_mesh_ply(tmp_path / "e.ply", empty)
    bad = Mesh(torch.tensor([[0.0, 0, 1], [1, 0, 1], [0, float("nan"), 1]]), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="non-finite"):
        write_mesh_obj(tmp_path / "b.obj", bad)
    with pytest.raises(ValueError, match="axes"):
        write_mesh_ply(tmp_path / "x.ply", Mesh(bad.vertices.nan_to_num(), bad.faces), axes="zup")
    assert not any(tmp_path.iterdir())


BLENDER_SCRIPT = """
import json, sys, bpy
out = {}
for f in sys.argv[sys.argv.index("--") + 1:]:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    {"fbx": bpy.ops.import_scene.fbx, "glb": bpy.ops.import_scene.gltf, "obj": bpy.ops.wm.obj_import,
     "ply": bpy.ops.wm.ply_import}[
        f.rsplit(".", 1)[1]](filepath=f)
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    out[f] = {"faces": sum(len(o.data.polygons) for o in meshes),
              "colours": all(len(o.data.color_attributes) > 0 for o in meshes),
              "cameras": sum(o.type == "CAMERA" for o in bpy.data.objects),
              "size": max(max(o.dimensions) for o in meshes)}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.skipif(
    not os.environ.get("IMMERSIVEDEPTH_BPY_PYTHON"),
    reason="set IMMERSIVEDEPTH_BPY_PYTHON to a Python with bpy (pip install bpy) to check Blender imports",
)
def test_files_open_in_blender(mesh, tmp_path):
    paths = [
        write_mesh_fbx(tmp_path / "mesh.fbx", mesh),
        write_mesh_glb(tmp_path / "mesh.glb", mesh),
        write_mesh_obj(tmp_path / "mesh.obj", mesh)["obj"],
        write_mesh_ply(tmp_path / "mesh.ply", mesh),
    ]
    script = tmp_path / "check.py"
    script.write_text(BLENDER_SCRIPT)
    out = subprocess.run(
        [os.environ["IMMERSIVEDEPTH_BPY_PYTHON"], str(script), "--", *map(str, paths)],
        capture_output=True, text=True, timeout=300,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    extent = float((mesh.vertices.max(0).values - mesh.vertices.min(0).values).max())
    for p in paths:
        r = result[str(p)]
        assert r["faces"] == mesh.num_faces and r["colours"]
        assert r["size"] == pytest.approx(extent, rel=0.02)  # true size: FBX centimetres are converted back
    assert result[str(paths[1])]["cameras"] == 1
