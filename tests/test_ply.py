"""The project's own PLY writer and reader (no plyfile: it is GPL): round trips, ASCII, big endian, ragged lists,
clear errors on broken files."""

import numpy as np
import pytest

from modules.export.ply import PlyFormatError, ply_bytes, read_ply


def _elements(n=5, f=3):
    rng = np.random.default_rng(0)
    vertex = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("w", "<f8")])
    for k in ("x", "y", "z", "w"):
        vertex[k] = rng.normal(size=n)
    vertex["red"] = rng.integers(0, 256, n)
    face = np.empty(f, dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = rng.integers(0, n, (f, 3))
    return vertex, face


def test_binary_round_trip(tmp_path):
    vertex, face = _elements()
    path = tmp_path / "a.ply"
    path.write_bytes(ply_bytes({"vertex": vertex, "face": face}, comments=["hello"]))
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "property list uchar int vertex_indices" in header and "property double w" in header
    info = read_ply(path)
    assert info["elements"] == {"vertex": 5, "face": 3}
    assert info["properties"] == {"vertex": ["x", "y", "z", "red", "w"], "face": ["vertex_indices"]}
    for k in vertex.dtype.names:
        assert np.array_equal(info["data"]["vertex"][k], vertex[k])
    assert info["data"]["face"]["vertex_indices"].shape == (3, 3)
    assert np.array_equal(info["data"]["face"]["vertex_indices"], face["vertex_indices"])


def test_ascii_and_big_endian_files(tmp_path):
    ascii_ply = (
        "ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property uchar red\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
        "0 1 255\n2.5 -1 0\n3 4 7\n3 0 1 2\n4 0 1 2 0\n"
    )
    (tmp_path / "a.ply").write_text(ascii_ply)
    info = read_ply(tmp_path / "a.ply")
    v, f = info["data"]["vertex"], info["data"]["face"]
    assert np.allclose(v["x"], [0, 2.5, 3]) and v["red"].tolist() == [255, 0, 7]
    assert [list(r) for r in f["vertex_indices"]] == [[0, 1, 2], [0, 1, 2, 0]]  # ragged lists kept

    vertex = np.array([(1.5, 7)], dtype=[("x", ">f4"), ("n", ">i2")])
    header = b"ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty float x\nproperty short n\nend_header\n"
    (tmp_path / "b.ply").write_bytes(header + vertex.tobytes())
    v = read_ply(tmp_path / "b.ply")["data"]["vertex"]
    assert v["x"][0] == 1.5 and v["n"][0] == 7


def test_ragged_binary_lists(tmp_path):
    header = (b"ply\nformat binary_little_endian 1.0\nelement face 2\nproperty list uchar int vertex_indices\n"
              b"property uchar tag\nend_header\n")
    body = bytes([3]) + np.array([0, 1, 2], "<i4").tobytes() + bytes([9])
    body += bytes([4]) + np.array([3, 4, 5, 6], "<i4").tobytes() + bytes([8])
    (tmp_path / "r.ply").write_bytes(header + body)
    f = read_ply(tmp_path / "r.ply")["data"]["face"]
    assert [list(r) for r in f["vertex_indices"]] == [[0, 1, 2], [3, 4, 5, 6]] and f["tag"].tolist() == [9, 8]


def test_broken_files_are_named(tmp_path):
    vertex, face = _elements()
    data = ply_bytes({"vertex": vertex, "face": face})
    (tmp_path / "cut.ply").write_bytes(data[:-7])
    with pytest.raises(PlyFormatError, match="cut.ply.*truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "no.ply").write_bytes(b"solid stl\n")
    with pytest.raises(PlyFormatError, match="no.ply.*not a PLY"):
        read_ply(tmp_path / "no.ply")
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_ply(tmp_path / "missing.ply")
