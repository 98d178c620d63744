"""A feature whose extra is missing stops with one line naming the extra (exit 2), before any work; core features
never need an extra. Missing modules are simulated in-process (sys.modules[name] = None makes the import fail)."""

import sys

import pytest

from modules.errors import UserError
from modules.cli import check_config, missing_extras
from modules.extras import EXTRAS, MissingExtraError, require
from test_runner import run_cli


@pytest.fixture
def without(monkeypatch):
    def hide(*modules):
        for m in modules:
            monkeypatch.setitem(sys.modules, m, None)
        if "cmeel_assimp" in modules:  # a command-line tool: hide it from the lookup too
            from modules.export import mesh_io

            def no_assimp(executable=None):
                raise mesh_io.AssimpError("the assimp command-line tool was not found")

            monkeypatch.setattr(mesh_io, "find_assimp", no_assimp)
    return hide


def test_require_names_the_extra(without):
    without("pygltflib")
    with pytest.raises(MissingExtraError, match=r"GLB export needs pygltflib.*pip install 'immersivedepth\[mesh\]'"):
        require("pygltflib", "GLB export")
    assert issubclass(MissingExtraError, UserError)
    assert {extra for extra, _ in EXTRAS.values()} == {"mesh", "previews", "ray", "eval", "remote"}


@pytest.mark.parametrize("overrides, hidden, extra", [
    (["mode=render_dense"], ("pygltflib",), "mesh"),
    (["mode=render_dense", "export.dense.files.formats=[ply,obj]", "export.dense.files.verify=[obj]"],
     ("cmeel_assimp",), "mesh"),
    (["mode=render_dense", "export.dense.files.formats=[ply]", "export.dense.mesh.decimate_faces=100"], ("open3d",),
     "mesh"),
    (["mode=render_dense", "export.dense.files.formats=[ply]", "export.dense.previews.enabled=true"], ("pyvista",),
     "previews"),
    (["runtime=ray"], ("ray",), "ray"),
    (["mode=eval", "mode.gt_format=exr"], ("OpenEXR",), "eval"),
])
def test_config_check_names_the_missing_extra(compose_cfg, without, overrides, hidden, extra):
    cfg = compose_cfg([*overrides, "paths.output_dir=/tmp/unused"])
    assert missing_extras(cfg) == []  # all installed here
    without(*hidden)
    with pytest.raises(MissingExtraError, match=rf"pip install 'immersivedepth\[{extra}\]'"):
        check_config(cfg)


def test_core_modes_need_no_extra(compose_cfg, without):
    without(*EXTRAS)
    for mode in ("predict", "equirect", "voxel"):
        assert missing_extras(compose_cfg([f"mode={mode}", "paths.output_dir=/tmp/unused"])) == []
    # meshes as PLY, OBJ and FBX (own writers) need nothing optional either
    cfg = compose_cfg(["mode=render_dense", "export.dense.files.formats=[ply,obj,fbx]", "paths.output_dir=/tmp/unused"])
    assert missing_extras(cfg) == []


def test_cli_exits_2_with_one_line_naming_the_extra(tiny_scene, tmp_path, without):
    without("pygltflib", "cmeel_assimp")
    out = tmp_path / "dense"
    proc = run_cli(["mode=render_dense", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "pip install 'immersivedepth[mesh]'" in errors[0], errors
    assert not any(out.iterdir())  # stopped before any work


def test_library_calls_name_the_extra_too(without, tmp_path):
    """Called from Python (not the CLI), the optional features stop with the same one-line MissingExtraError."""
    import torch

    from modules.export.mesh import Mesh
    from modules.export.mesh_open3d import poisson_mesh
    from modules.export.mesh_io import write_mesh_glb
    from modules.export.pointcloud import process_point_cloud

    without("open3d", "pygltflib", "pyvista", "OpenEXR")
    mesh = Mesh(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), None)
    with pytest.raises(MissingExtraError, match=r"\[mesh\]"):
        write_mesh_glb(tmp_path / "m.glb", mesh)
    with pytest.raises(MissingExtraError, match=r"\[mesh\]"):
        process_point_cloud(torch.rand(10, 3), None)
    with pytest.raises(MissingExtraError, match=r"\[mesh\]"):
        poisson_mesh(mesh)
    from modules.evaluation.readers import read_exr_channels

    (tmp_path / "gt.exr").write_bytes(b"x")
    with pytest.raises(MissingExtraError, match=r"\[eval\]"):
        read_exr_channels(tmp_path / "gt.exr")
    assert not (tmp_path / "m.glb").exists()
