"""Listing evaluation pairs: flat folder, rgb/ + depth/ folders, list files, and their errors."""

import pytest

from modules.errors import UserError
from modules.evaluation.dataset import DatasetError, MissingPartnerError, list_eval_pairs


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_flat_folder(tmp_path):
    _touch(tmp_path / "b.jpg"), _touch(tmp_path / "b_depth.npy")
    _touch(tmp_path / "a.png"), _touch(tmp_path / "a_depth.png")
    _touch(tmp_path / "notes.txt")
    pairs = list_eval_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].rgb == tmp_path / "a.png" and pairs[0].gt == tmp_path / "a_depth.png"
    assert pairs[1].gt == tmp_path / "b_depth.npy"


def test_subfolder_layout_with_stanford_names(tmp_path):
    _touch(tmp_path / "rgb" / "x.png"), _touch(tmp_path / "depth" / "x.exr")
    _touch(tmp_path / "rgb" / "cam_frame_domain_rgb.png"), _touch(tmp_path / "depth" / "cam_frame_domain_depth.png")
    pairs = list_eval_pairs(tmp_path)
    assert [(p.name, p.gt.name) for p in pairs] == [
        ("rgb/cam_frame_domain_rgb", "cam_frame_domain_depth.png"),
        ("rgb/x", "x.exr"),
    ]


def test_missing_partner_errors(tmp_path):
    _touch(tmp_path / "a.png"), _touch(tmp_path / "a_depth.png"), _touch(tmp_path / "lonely.jpg")
    with pytest.raises(MissingPartnerError, match="1 image\\(s\\) without ground truth: lonely.jpg"):
        list_eval_pairs(tmp_path)
    (tmp_path / "lonely.jpg").unlink()
    _touch(tmp_path / "ghost_depth.npy")
    with pytest.raises(MissingPartnerError, match="without an image: ghost_depth.npy"):
        list_eval_pairs(tmp_path)


def test_scene_folders(tmp_path):
    _touch(tmp_path / "room_b" / "rgb.png"), _touch(tmp_path / "room_b" / "distance.npy")
    _touch(tmp_path / "room_a" / "rgb.jpg"), _touch(tmp_path / "room_a" / "depth.exr")
    _touch(tmp_path / "room_a" / "scene.json"), _touch(tmp_path / "notes" / "readme.txt")
    pairs = list_eval_pairs(tmp_path)
    assert [(p.name, p.rgb.name, p.gt.name) for p in pairs] == [
        ("room_a", "rgb.jpg", "depth.exr"),
        ("room_b", "rgb.png", "distance.npy"),
    ]
    _touch(tmp_path / "room_c" / "rgb.png")
    with pytest.raises(MissingPartnerError, match="room_c/ \\(no distance or depth file\\)"):
        list_eval_pairs(tmp_path)


def test_list_file_relative_paths(tmp_path):
    _touch(tmp_path / "data" / "img one.png"), _touch(tmp_path / "data" / "gt1.npy")
    _touch(tmp_path / "data" / "img2.jpg"), _touch(tmp_path / "elsewhere" / "gt2.png")
    absolute = tmp_path / "elsewhere" / "gt2.png"
    lst = tmp_path / "lists" / "test.txt"
    lst.parent.mkdir()
    lst.write_text(f"# split\n'../data/img one.png' ../data/gt1.npy\n\n../data/img2.jpg {absolute}\n")
    pairs = list_eval_pairs(lst)
    assert [p.rgb.resolve() for p in pairs] == [(tmp_path / "data" / "img one.png"), (tmp_path / "data" / "img2.jpg")]
    assert pairs[1].gt == absolute
    assert pairs[0].name == "../data/img one"


def test_list_file_errors(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a.png b.png c.png\n")
    with pytest.raises(DatasetError, match="l.txt:1: expected '<rgb path> <gt path>', got 3"):
        list_eval_pairs(lst)
    _touch(tmp_path / "a.png")
    lst.write_text("a.png a_gt.npy\n")
    with pytest.raises(MissingPartnerError, match="line 1: .*a_gt.npy"):
        list_eval_pairs(lst)
    lst.write_text("# nothing\n")
    with pytest.raises(DatasetError, match="names no pairs"):
        list_eval_pairs(lst)


def test_empty_or_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="no images found"):
        list_eval_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        list_eval_pairs(tmp_path / "nowhere")
    assert isinstance(info.value, UserError)  # the runner reports it without a traceback
