"""Each ground-truth reader on a small file written in its dataset's format (scale and invalid values honoured)."""

import cv2
import numpy as np
import OpenEXR
import pytest
import torch

from modules.evaluation.readers import READERS, GroundTruthError, get_reader


def _write_png16(path, values):
    assert cv2.imwrite(str(path), np.asarray(values, dtype=np.uint16))
    return path


def _write_exr(path, channels):
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in channels.items()}) as f:
        f.write(str(path))
    return path


def test_stanford2d3d_png(tmp_path):
    # 1/512 m per unit, 65535 = missing
    path = _write_png16(tmp_path / "s.png", [[512, 1024, 65535], [256, 0, 65534]])
    values, valid = READERS["stanford2d3d"](path)
    assert values.dtype == torch.float32 and values.shape == (2, 3)
    assert valid.tolist() == [[True, True, False], [True, False, True]]
    assert values[valid].tolist() == pytest.approx([1.0, 2.0, 0.5, 65534 / 512])
    assert float(values[0, 2]) == 0.0  # invalid pixels hold 0
    assert READERS["stanford2d3d"](path).quantity == "distance"


def test_matterport3d_png(tmp_path):
    # 1/4000 m per unit (0.25 mm), 0 = no reading; 65535 is a valid 16.38 m
    path = _write_png16(tmp_path / "m.png", [[4000, 0], [10000, 65535]])
    values, valid = READERS["matterport3d"](path)
    assert valid.tolist() == [[True, False], [True, True]]
    assert values[valid].tolist() == pytest.approx([1.0, 2.5, 65535 / 4000])


def test_structured3d_png(tmp_path):
    # millimetres, 0 = no reading
    path = _write_png16(tmp_path / "d.png", [[1000, 2500, 0]])
    values, valid = READERS["structured3d"](path)
    assert valid.tolist() == [[True, True, False]]
    assert values[valid].tolist() == pytest.approx([1.0, 2.5])


def test_npy(tmp_path):
    array = np.array([[[1.5, np.nan], [0.0, -2.0], [np.inf, 3.25]]], dtype=np.float64)  # [1, 3, 2]
    np.save(tmp_path / "d.npy", array)
    values, valid = READERS["npy"](tmp_path / "d.npy")
    assert values.shape == (3, 2) and values.dtype == torch.float32
    assert valid.tolist() == [[True, False], [False, False], [False, True]]
    assert values[valid].tolist() == [1.5, 3.25]


def test_exr_single_channel_with_inf_holes(tmp_path):
    depth = np.array([[1.25, np.inf], [0.5, 7.0]], dtype=np.float32)
    path = _write_exr(tmp_path / "d.exr", {"depth": depth})
    values, valid = READERS["exr"](path)
    assert valid.tolist() == [[True, False], [True, True]]
    assert values[valid].tolist() == [1.25, 0.5, 7.0]


def test_exr_picks_channel(tmp_path):
    z = np.full((2, 3), 2.0, np.float32)
    other = np.full((2, 3), 9.0, np.float32)
    path = _write_exr(tmp_path / "multi.exr", {"Z": z, "A": other})
    assert torch.all(READERS["exr"](path).values == 2.0)
    assert torch.all(get_reader("exr", channel="A")(path).values == 9.0)
    with pytest.raises(GroundTruthError, match="no channel 'Q'"):
        get_reader("exr", channel="Q")(path)
    path2 = _write_exr(tmp_path / "ambiguous.exr", {"foo": z, "bar": other})
    with pytest.raises(GroundTruthError, match="cannot tell the depth channel"):
        READERS["exr"](path2)


def test_registry_and_overrides(tmp_path):
    with pytest.raises(GroundTruthError, match="known formats: exr, matterport3d, npy, stanford2d3d, structured3d"):
        get_reader("kitti")
    reader = get_reader("Matterport3D", quantity="depth")
    assert reader.quantity == "depth" and reader.metres_per_unit == 1 / 4000
    assert READERS["matterport3d"].quantity == "distance"  # the registry entry is unchanged


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        READERS["stanford2d3d"](tmp_path / "missing.png")
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(GroundTruthError, match="rgb.png: expected a single-channel 16-bit PNG"):
        READERS["structured3d"](rgb)
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    with pytest.raises(GroundTruthError, match="junk.exr"):
        READERS["exr"](tmp_path / "junk.exr")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    with pytest.raises(GroundTruthError, match=r"cube.npy: expected a numeric \[H, W\]"):
        READERS["npy"](tmp_path / "cube.npy")
