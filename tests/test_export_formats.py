"""Mesh files read back by modules.export.ply (PLY) and by readers we did not write: assimp, the Khronos glTF
validator (and Blender when IMMERSIVEDEPTH_BPY_PYTHON is set): counts, colours, normals, UVs, textures, axes, camera,
size."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.axes import axes_matrix
from modules.export.fbx import FbxError, read_fbx_nodes, summarize_fbx
from modules.export.mesh import Mesh, erp_grid_mesh
from modules.export.mesh_io import (
    assimp_info,
    assimp_read,
    read_ply,
    spherical_uvs,
    srgb_to_linear,
    write_mesh_fbx,
    write_mesh_glb,
    write_mesh_obj,
    write_mesh_ply,
)

H, W = 8, 16
ROOT = Path(__file__).resolve().parents[1]
VALIDATOR_MODULES = Path(os.environ.get("IMMERSIVEDEPTH_GLTF_VALIDATOR", ROOT / ".ci" / "node" / "node_modules"))


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    g = torch.Generator().manual_seed(1)
    d = 1.5 + torch.rand(H, W, generator=g) * 0.1
    return erp_grid_mesh(d, torch.rand(3, H, W, generator=g))


@pytest.fixture(scope="module")
def texture() -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def room():
    """A synthetic room (seed 0) at 64x128: scene, mesh with its colours, and the panorama as texture."""
    scene = make_room(0)
    rgb, distance = render_erp(scene, 64)
    tex = torch.from_numpy(rgb).permute(2, 0, 1).float()
    return scene, erp_grid_mesh(torch.from_numpy(distance), tex), tex


def no_partial_files(folder: Path) -> bool:
    return not any(".part" in p.name for p in folder.iterdir())


def from_axes(xyz: np.ndarray, axes: str) -> np.ndarray:
    return xyz @ axes_matrix(axes)  # inverse rotation: p_opencv = M^T p_axes


def test_ply_read_back_with_normals_in_every_axes(mesh, tmp_path):
    for axes in ("gltf", "blender_z_up", "opencv"):
        path = write_mesh_ply(tmp_path / f"mesh_{axes}.ply", mesh, axes=axes)
        info = read_ply(path)
        assert info["elements"] == {"vertex": mesh.num_vertices, "face": mesh.num_faces}
        assert info["properties"]["vertex"] == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue"]
        v = info["data"]["vertex"]
        xyz = from_axes(np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64), axes)
        assert np.allclose(xyz, mesh.vertices.numpy(), atol=1e-6)
        n = from_axes(np.stack([v["nx"], v["ny"], v["nz"]], 1).astype(np.float64), axes)
        assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
        assert ((n * xyz).sum(1) < 0).all()  # facing the camera at the origin
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1)
        assert np.abs(rgb / 255.0 - mesh.colours.numpy()).max() <= 0.5 / 255 + 1e-6
        assert np.array_equal(np.stack(info["data"]["face"]["vertex_indices"]), mesh.faces.numpy())
        assert assimp_info(path)["faces"] == mesh.num_faces
    gl = read_ply(tmp_path / "mesh_gltf.ply")["data"]["vertex"]
    zup = read_ply(tmp_path / "mesh_blender_z_up.ply")["data"]["vertex"]
    cv = read_ply(tmp_path / "mesh_opencv.ply")["data"]["vertex"]
    assert np.allclose(gl["y"], -cv["y"]) and np.allclose(gl["z"], -cv["z"])
    assert np.allclose(zup["z"], -cv["y"]) and np.allclose(zup["y"], cv["z"])  # Z up, Y forward
    assert no_partial_files(tmp_path)


def test_obj_read_back_with_colours_normals_and_texture(mesh, texture, tmp_path):
    files = write_mesh_obj(tmp_path / "mesh.obj", mesh, texture=texture)
    assert set(files) == {"obj", "mtl", "texture"} and all(p.is_file() for p in files.values())
    assert "map_Kd mesh_texture.png" in files["mtl"].read_text()
    info = assimp_read(files["obj"])
    assert info.num_unique_positions == mesh.num_vertices and info.num_faces == mesh.num_faces
    assert info.has_colours and info.has_uvs and info.has_normals and info.textures == ("mesh_texture.png",)
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
    assert np.array_equal(np.array([[c[2] for c in f] for f in faces]), corner_v)  # vn index = v index
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
    files = write_mesh_obj(tmp_path / "plain.obj", m, normals=False)
    assert "texture" not in files
    info = assimp_read(files["obj"])
    assert not info.has_colours and not info.has_normals and info.num_faces == m.num_faces


def gltf_validate(path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Khronos glTF validator (npm gltf-validator) needs it")
    if not (VALIDATOR_MODULES / "gltf-validator").is_dir():
        pytest.fail(f"gltf-validator not found in {VALIDATOR_MODULES}: npm install --prefix .ci/node gltf-validator")
    out = subprocess.run([node, str(ROOT / "tools" / "gltf_validate.js"), str(path), str(VALIDATOR_MODULES)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_textured_glb_passes_khronos_validator(room, tmp_path):
    _, m, tex = room
    path = write_mesh_glb(tmp_path / "mesh.glb", m, texture=tex)
    report = gltf_validate(path)
    errors = [msg for msg in report["issues"]["messages"] if msg["severity"] == 0]
    assert report["issues"]["numErrors"] == 0, errors
    assert report["info"]["hasTextures"] and report["info"]["totalTriangleCount"] == m.num_faces
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]
    assert prim.attributes.TEXCOORD_0 is not None and prim.attributes.NORMAL is not None
    assert prim.attributes.COLOR_0 is None  # the texture is the colour (COLOR_0 would multiply it)
    base = gltf.materials[prim.material].pbrMetallicRoughness.baseColorTexture
    assert base is not None and gltf.images[gltf.textures[base.index].source].mimeType == "image/jpeg"


def test_glb_read_back_with_camera_normals_and_uvs(mesh, texture, tmp_path):
    import pygltflib

    path = write_mesh_glb(tmp_path / "mesh.glb", mesh, texture=texture)
    info = assimp_read(path)
    assert info.num_unique_positions == mesh.num_vertices and info.num_faces == mesh.num_faces
    assert info.has_uvs and info.has_normals and info.num_cameras == 1
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

    pos = accessor(prim.attributes.POSITION, np.float32, 3).astype(np.float64) * [1, -1, -1]  # back to OpenCV
    idx = accessor(prim.indices, np.uint32, 1).reshape(-1, 3)
    # the same triangles (seam vertices are duplicates of mesh vertices)
    assert np.allclose(pos[idx], mesh.vertices.numpy()[mesh.faces.numpy()], atol=1e-6)
    nrm = accessor(prim.attributes.NORMAL, np.float32, 3).astype(np.float64) * [1, -1, -1]
    assert np.allclose(np.linalg.norm(nrm, axis=1), 1, atol=1e-5) and ((nrm * pos).sum(1) < 0).all()
    uv = accessor(prim.attributes.TEXCOORD_0, np.float32, 2)
    ref_uv, ref_face_uv = spherical_uvs(mesh.vertices.numpy().astype(np.float64), mesh.faces.numpy())
    assert np.allclose(uv[idx][..., 0], ref_uv[ref_face_uv][..., 0], atol=1e-6)
    assert np.allclose(uv[idx][..., 1], 1 - ref_uv[ref_face_uv][..., 1], atol=1e-6)  # glTF v from the top
    # untextured: linear vertex colours instead
    plain = pygltflib.GLTF2().load(str(write_mesh_glb(tmp_path / "plain.glb", mesh)))
    blob = plain.binary_blob()
    gltf = plain
    prim = plain.meshes[0].primitives[0]
    col = accessor(prim.attributes.COLOR_0, np.float32, 3)
    assert np.allclose(col, srgb_to_linear(mesh.colours.numpy().astype(np.float64)), atol=1e-6)
    assert no_partial_files(tmp_path)


def test_glb_points_only(tmp_path):
    pts = Mesh(torch.rand(50, 3) + 1.0, torch.zeros(0, 3, dtype=torch.long), torch.rand(50, 3))
    path = write_mesh_glb(tmp_path / "points.glb", pts, camera=False)
    info = assimp_read(path)
    assert info.num_vertices == 50 and info.num_cameras == 0 and info.has_colours


def test_fbx_read_back_by_assimp(mesh, texture, tmp_path):
    files = write_mesh_fbx(tmp_path / "mesh.fbx", mesh, texture=texture)
    path = files["fbx"]
    assert path.read_bytes()[:18] == b"Kaydara FBX Binary" and files["texture"].is_file()
    info = assimp_read(path)
    assert info.num_faces == mesh.num_faces and info.num_unique_positions == mesh.num_vertices
    assert info.has_colours and info.has_uvs and info.has_normals
    assert info.textures == ("mesh_texture.png",)  # the material's diffuse colour is the texture
    # metres in the file (UnitScaleFactor 100 cm per unit), glTF axes (Y up)
    expected = np.unique((mesh.vertices.numpy() * [1, -1, -1]).astype(np.float32), axis=0)
    got = np.unique(info.positions.astype(np.float32), axis=0)
    assert np.allclose(got, expected, atol=1e-5)
    assert ((info.normals * info.positions).sum(1) < 0).all()  # facing the camera
    written = set(map(tuple, np.round(mesh.colours.numpy() * 255).astype(int)))
    read = set(map(tuple, np.round(info.colours[:, :3] * 255).astype(int)))
    assert read == written
    counts = assimp_info(path)  # assimp joins identical corners: seam and pole corners keep their own UVs
    assert counts["meshes"] == 1 and counts["faces"] == mesh.num_faces and counts["cameras"] == 0
    assert mesh.num_vertices < counts["vertices"] < 1.5 * mesh.num_vertices
    assert no_partial_files(tmp_path)


def _settings(path: Path) -> dict:
    nodes = read_fbx_nodes(path.read_bytes())
    props = next(c for c in next(n for n in nodes if n.name == "GlobalSettings").children if c.name == "Properties70")
    return {p.props[0]: p.props[4] for p in props.children}


def test_fbx_axes_are_declared(mesh, tmp_path):
    for axes, up in (("gltf", (1, 1)), ("blender_z_up", (2, 1)), ("opencv", (1, -1))):
        path = write_mesh_fbx(tmp_path / f"{axes}.fbx", mesh, axes=axes)["fbx"]
        s = _settings(path)
        assert (s["UpAxis"], s["UpAxisSign"]) == up and s["UnitScaleFactor"] == 100.0
        # the declared up vector, taken back to OpenCV axes, is -y (up in the project's frame)
        up_vec = np.zeros(3)
        up_vec[s["UpAxis"]] = s["UpAxisSign"]
        assert np.allclose(from_axes(up_vec[None], axes)[0], [0, -1, 0])
        got = np.unique(assimp_read(path).positions.astype(np.float32), axis=0)
        want = np.unique((mesh.vertices.numpy() @ axes_matrix(axes).T).astype(np.float32), axis=0)
        assert np.allclose(got, want, atol=1e-5)


def test_fbx_is_compact(room, tmp_path):
    """float32 layers, compressed arrays, colours per control point: bytes per triangle small enough that the
    1024x512 mesh (2 * 1024 * 512 triangles) stays under 40 MB (measured at full size in tools/bench_export.py)."""
    _, m, tex = room
    path = write_mesh_fbx(tmp_path / "room.fbx", m, texture=tex)["fbx"]
    per_face = path.stat().st_size / m.num_faces
    assert per_face * 2 * 1024 * 512 <= 40e6, per_face
    geom = next(c for c in next(n for n in read_fbx_nodes(path.read_bytes(), decode_arrays=False)
                                if n.name == "Objects").children if c.name == "Geometry")
    layers = {c.name: {g.name: g.props[0] for g in c.children if g.props and isinstance(g.props[0], tuple)}
              for c in geom.children if c.name.startswith("LayerElement")}
    assert layers["LayerElementNormal"]["Normals"][:2] == ("array", "f")
    assert layers["LayerElementColor"]["Colors"] == ("array", "f", 4 * m.num_vertices)  # not per face corner
    assert layers["LayerElementUV"]["UV"][1] == "f"
    assert layers["LayerElementUV"]["UVIndex"][2] == 3 * m.num_faces
    s = summarize_fbx(path)
    assert (s.num_vertices, s.num_faces, s.num_normals, s.num_colours, s.num_uv_indices) == (
        m.num_vertices, m.num_faces, m.num_vertices, m.num_vertices, 3 * m.num_faces)
    assert s.texture == "room_texture.png"


def test_fbx_summary_rejects_truncated_file(mesh, tmp_path):
    path = write_mesh_fbx(tmp_path / "mesh.fbx", mesh)["fbx"]
    data = path.read_bytes()
    (tmp_path / "cut.fbx").write_bytes(data[: len(data) // 2])
    with pytest.raises(FbxError, match="cut.fbx"):
        summarize_fbx(tmp_path / "cut.fbx")
    (tmp_path / "junk.fbx").write_bytes(b"not an fbx" * 10)
    with pytest.raises(FbxError, match="magic"):
        summarize_fbx(tmp_path / "junk.fbx")


def _wall_normals(scene, points: np.ndarray, tol: float = 1e-3):
    """Analytic inward normals of the room's walls at points on them (OpenCV axes); NaN elsewhere."""
    lo, hi = np.array(scene.lo), np.array(scene.hi)
    n = np.full_like(points, np.nan)
    inside = np.all((points > lo - tol) & (points < hi + tol), axis=1)
    for axis in range(3):
        for bound, sign in ((lo[axis], 1.0), (hi[axis], -1.0)):
            on = inside & (np.abs(points[:, axis] - bound) < tol)
            n[on] = 0.0
            n[on, axis] = sign
    return n


def test_every_mesh_file_has_normals_matching_the_walls(room, tmp_path):
    scene, m, tex = room
    read = {}
    ply = read_ply(write_mesh_ply(tmp_path / "m.ply", m))["data"]["vertex"]
    read["ply"] = (np.stack([ply[k] for k in "xyz"], 1), np.stack([ply[k] for k in ("nx", "ny", "nz")], 1))
    obj = write_mesh_obj(tmp_path / "m.obj", m, texture=tex)["obj"].read_text().splitlines()
    read["obj"] = tuple(np.array([[float(t) for t in ln.split()[1:4]] for ln in obj if ln.startswith(tag)])
                        for tag in ("v ", "vn "))
    for name, path in (("glb", write_mesh_glb(tmp_path / "m.glb", m, texture=tex)),
                       ("fbx", write_mesh_fbx(tmp_path / "m.fbx", m, texture=tex)["fbx"])):
        info = assimp_read(path)
        read[name] = (info.positions, info.normals)
    for name, (pos, nrm) in read.items():
        pos, nrm = from_axes(np.asarray(pos, np.float64), "gltf"), from_axes(np.asarray(nrm, np.float64), "gltf")
        ref = _wall_normals(scene, pos)
        on_wall = np.isfinite(ref).all(1)
        assert on_wall.sum() > 0.5 * len(pos), name
        cos = (nrm[on_wall] * ref[on_wall]).sum(1) / np.linalg.norm(nrm[on_wall], axis=1)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        assert np.median(angle) < 2.0, (name, np.median(angle))


def test_refuses_empty_or_non_finite(tmp_path):
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        write_mesh_ply(tmp_path / "e.ply", empty)
    bad = Mesh(torch.tensor([[0.0, 0, 1], [1, 0, 1], [0, float("nan"), 1]]), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="non-finite"):
        write_mesh_obj(tmp_path / "b.obj", bad)
    with pytest.raises(ValueError, match="axes"):
        write_mesh_ply(tmp_path / "x.ply", Mesh(bad.vertices.nan_to_num(), bad.faces), axes="zup")
    with pytest.raises(ValueError, match="texture"):
        write_mesh_fbx(tmp_path / "t.fbx", Mesh(bad.vertices.nan_to_num(), bad.faces), texture=torch.rand(4, 2, 2))
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
    # images whose colour output feeds the material's shader (Principled Base Color, or the unlit setup of glTF)
    images = []
    for o in meshes:
        for slot in o.material_slots:
            nodes = slot.material.node_tree.nodes if slot.material and slot.material.node_tree else []
            for n in nodes:
                if n.type == "TEX_IMAGE" and n.image is not None and n.outputs["Color"].is_linked:
                    images.append(list(n.image.size))
    # 1st and 99th percentile of the vertices' height (floor and ceiling; skirt vertices are excluded): Z up
    zs = [(o.matrix_world @ v.co).z for o in meshes for v in o.data.vertices]
    out[f] = {"faces": sum(len(o.data.polygons) for o in meshes),
              "colours": all(len(o.data.color_attributes) > 0 for o in meshes),
              "uvs": all(len(o.data.uv_layers) > 0 for o in meshes),
              "images": images,
              "cameras": sum(o.type == "CAMERA" for o in bpy.data.objects),
              "size": max(max(o.dimensions) for o in meshes),
              "z_range": [sorted(zs)[len(zs) // 100], sorted(zs)[-len(zs) // 100]]}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.skipif(
    not os.environ.get("IMMERSIVEDEPTH_BPY_PYTHON"),
    reason="set IMMERSIVEDEPTH_BPY_PYTHON to a Python with bpy (pip install bpy) to check Blender imports",
)
def test_files_open_in_blender(room, tmp_path):
    """Blender opens every file at its true size, upright (floor below the camera at z = -camera height), and the
    FBX / GLB / OBJ materials show the panorama texture."""
    scene, m, tex = room
    paths = [
        write_mesh_fbx(tmp_path / "mesh.fbx", m, texture=tex)["fbx"],
        write_mesh_glb(tmp_path / "mesh.glb", m, texture=tex),
        write_mesh_obj(tmp_path / "mesh.obj", m, texture=tex)["obj"],
        write_mesh_ply(tmp_path / "mesh.ply", m, axes="blender_z_up"),
    ]
    script = tmp_path / "check.py"
    script.write_text(BLENDER_SCRIPT)
    out = subprocess.run(
        [os.environ["IMMERSIVEDEPTH_BPY_PYTHON"], str(script), "--", *map(str, paths)],
        capture_output=True, text=True, timeout=300,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    extent = float((m.vertices.max(0).values - m.vertices.min(0).values).max())
    for p in paths:
        r = result[str(p)]
        assert r["faces"] == m.num_faces
        assert r["size"] == pytest.approx(extent, rel=0.02)  # true size: FBX units are declared
        assert r["z_range"][0] == pytest.approx(-scene.hi[1], abs=0.01)  # floor below: upright
        assert r["z_range"][1] == pytest.approx(-scene.lo[1], abs=0.01)  # ceiling above
    for p in paths[:3]:
        assert result[str(p)]["uvs"] and result[str(p)]["images"] == [[tex.shape[2], tex.shape[1]]], p
    assert result[str(paths[0])]["colours"] and result[str(paths[3])]["colours"]
    assert result[str(paths[1])]["cameras"] == 1
