"""Input listing, output names, fingerprints and all-or-nothing staging (no pipeline runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.dataset.listing import InputListingError, list_inputs, output_names
from modules.runtime.fingerprint import config_fingerprint_document, input_fingerprint, panorama_fingerprint
from modules.runtime.staging import is_complete, read_marker, remove_stale_staging, staged_output


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------------ listing


def test_folder_is_listed_recursively_sorted_with_extension_filter(tmp_path):
    a = touch(tmp_path / "b" / "pano.JPG")
    b = touch(tmp_path / "a" / "rgb.png")
    touch(tmp_path / "a" / "distance.npy")
    touch(tmp_path / ".hidden" / "x.png")
    touch(tmp_path / ".y.png")
    listing = list_inputs(tmp_path, extensions=[".png", ".jpg"])
    assert listing.paths == (b, a)
    assert not listing.single


def test_non_recursive_folder_without_images_is_an_error(tmp_path):
    touch(tmp_path / "a" / "rgb.png")
    with pytest.raises(InputListingError, match="names no panorama"):
        list_inputs(tmp_path, extensions=[".png"], recursive=False)


def test_glob_takes_matches_literally(tmp_path):
    p1 = touch(tmp_path / "s1" / "rgb.png")
    p2 = touch(tmp_path / "s2" / "rgb.png")
    touch(tmp_path / "s2" / "notes.txt")
    listing = list_inputs(str(tmp_path / "*" / "rgb.png"))
    assert listing.paths == (p1, p2)
    everything = list_inputs(str(tmp_path / "**" / "*"))
    assert tmp_path / "s2" / "notes.txt" in everything.paths  # globs are not filtered by extension


def test_list_file_relative_paths_comments_and_missing_entries(tmp_path):
    p = touch(tmp_path / "data" / "one.png")
    lst = tmp_path / "data" / "tour.txt"
    lst.write_text(f"# a tour\n\none.png\n{tmp_path / 'missing.png'}\none.png\n")
    listing = list_inputs(lst)
    assert listing.paths == (p, tmp_path / "missing.png")  # duplicate removed, missing kept (reported later)


def test_single_file_and_missing_path(tmp_path):
    p = touch(tmp_path / "x.png")
    listing = list_inputs(p)
    assert listing.single and listing.paths == (p,)
    with pytest.raises(InputListingError, match="no such file"):
        list_inputs(tmp_path / "nope")


def test_output_folder_inside_input_folder_is_not_listed(tmp_path):
    p = touch(tmp_path / "in" / "a.png")
    touch(tmp_path / "in" / "out" / "a" / "distance_preview.png")
    listing = list_inputs(tmp_path / "in", extensions=[".png"], exclude=[tmp_path / "in" / "out"])
    assert listing.paths == (p,)
    # an output folder that contains the input folder does not hide the inputs
    assert list_inputs(tmp_path / "in" / "out", extensions=[".png"], exclude=[tmp_path]).paths


# ------------------------------------------------------------------------------------------------------ names


def test_names_use_stem_then_parent_folders_on_clash():
    names = output_names(["/d/tour/room1/rgb.png", "/d/tour/room2/rgb.png", "/d/other/unique.jpg"])
    assert names == ["room1-rgb", "room2-rgb", "unique"]
    deeper = output_names(["/x/a/s/rgb.png", "/x/b/s/rgb.png"])
    assert deeper == ["a-s-rgb", "b-s-rgb"]


def test_names_same_stem_same_folder_get_numbered_and_are_sanitised():
    names = output_names(["/d/a.png", "/d/a.jpg", "/d/we ird#.png"])
    assert sorted(names[:2]) == ["a", "a-2"]
    assert names[2] == "we_ird_"
    assert output_names(["/d/.hidden.png"]) == ["_hidden"]
    assert len(set(output_names([f"/d/{i}/rgb.png" for i in range(5)]))) == 5


# ------------------------------------------------------------------------------------------------------ fingerprints


def test_config_fingerprint_drops_ignored_keys_and_absent_sections():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"predictor": {"device": "cuda", "nested": {"device": "cpu", "k": 1}}, "runtime": {"x": 1}})
    doc = config_fingerprint_document(cfg, ["predictor", "refinement"], ["device"])
    assert doc == {"predictor": {"nested": {"k": 1}}}
    other = OmegaConf.create({"predictor": {"device": "cpu", "nested": {"k": 1}}})
    same = config_fingerprint_document(other, ["predictor"], ["device"])
    assert panorama_fingerprint(doc, {}) == panorama_fingerprint(same, {})
    changed = OmegaConf.create({"predictor": {"nested": {"k": 2}}})
    changed_doc = config_fingerprint_document(changed, ["predictor"], [])
    assert panorama_fingerprint(doc, {}) != panorama_fingerprint(changed_doc, {})


def test_input_fingerprint_stat_and_content(tmp_path):
    p = touch(tmp_path / "a.png", b"abc")
    q = touch(tmp_path / "b.png", b"abc")
    assert input_fingerprint(p, "content") == input_fingerprint(q, "content")
    assert input_fingerprint(p, "stat") != input_fingerprint(q, "stat")
    before = input_fingerprint(p, "stat")
    p.write_bytes(b"abcd")
    assert input_fingerprint(p, "stat") != before
    assert input_fingerprint(tmp_path / "missing.png", "stat")["missing"]
    with pytest.raises(ValueError, match="batch.fingerprint.input"):
        input_fingerprint(p, "md5")


# ------------------------------------------------------------------------------------------------------ staging


def write_marked(folder: Path, fingerprint: str, names=("a.npy",)) -> None:
    for n in names:
        (folder / n).write_bytes(b"data")
    (folder / "meta.json").write_text(json.dumps({"complete": True, "fingerprint": fingerprint,
                                                  "outputs": [*names, "meta.json"]}))


def test_staged_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out" / "pano"
    with pytest.raises(RuntimeError):
        with staged_output(final) as staging:
            (staging / "a.npy").write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert list((tmp_path / "out").iterdir()) == []
    with staged_output(final) as staging:
        write_marked(staging, "fp1")
        assert not final.exists()
    assert is_complete(final, "fp1") and not is_complete(final, "fp2")
    with staged_output(final) as staging:  # replaces the old folder as a whole
        write_marked(staging, "fp2", names=("b.npy",))
    assert is_complete(final, "fp2") and not (final / "a.npy").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pano"]


def test_staged_files_into_existing_folder_replace_old_outputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "core_exp_runner.log").write_text("log")
    with staged_output(run, into_existing=True) as staging:
        write_marked(staging, "fp1", names=("a.npy", "old.ply"))
    with staged_output(run, into_existing=True) as staging:
        write_marked(staging, "fp2", names=("a.npy",))
    assert sorted(p.name for p in run.iterdir()) == ["a.npy", "core_exp_runner.log", "meta.json"]
    assert read_marker(run)["fingerprint"] == "fp2"
    with pytest.raises(KeyboardInterrupt):
        with staged_output(run, into_existing=True) as staging:
            (staging / "a.npy").write_bytes(b"new")
            raise KeyboardInterrupt
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    assert (run / "a.npy").read_bytes() == b"data" and is_complete(run, "fp2")


def test_unmarked_or_incomplete_folders_are_not_trusted(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.npy").write_bytes(b"x")
    assert not is_complete(d, "fp")
    (d / "meta.json").write_text(json.dumps({"complete": False, "fingerprint": "fp", "outputs": []}))
    assert not is_complete(d, "fp")
    (d / "meta.json").write_text("{truncated")
    assert not is_complete(d, "fp")
    write_marked(d, "fp")
    (d / "a.npy").unlink()
    assert not is_complete(d, "fp")


def test_stale_staging_folders_are_removed(tmp_path):
    for name in (".pano.partial-host-1", ".partial-host-2", ".pano.old-host-3", "pano", ".hydra"):
        (tmp_path / name).mkdir()
    removed = remove_stale_staging(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "pano"]
