"""README agrees with the configs: every group's options and its default as config.yaml sets it."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def config_defaults() -> dict[str, str]:
    out = {}
    for item in yaml.safe_load((ROOT / "configs" / "config.yaml").read_text())["defaults"]:
        if isinstance(item, dict):
            (group, option), = item.items()
            if not group.startswith("optional"):
                out[group] = option
    return out


def test_config_table_lists_every_option_and_the_true_default():
    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, flags=re.M))
    defaults = config_defaults()
    for group, default in defaults.items():
        assert group in rows, f"README's config table has no row for {group}"
        options = [o.strip() for o in rows[group].split(",")]
        bold = [o.strip("*") for o in options if o.startswith("**")]
        assert bold == [default], f"{group}: README marks {bold} as default, config.yaml has {default}"
        files = {p.stem for p in (ROOT / "configs" / group).glob("*.yaml")}
        assert {o.strip("*") for o in options} == files, f"{group}: README lists {options}, configs/ has {files}"


def test_named_defaults_match_the_configs():
    text = (ROOT / "README.md").read_text()
    assert f"alignment={config_defaults()['alignment']}, the default" in text
    assert "(alignment=grid, the default)" not in text
    ico = yaml.safe_load((ROOT / "configs" / "projection" / "icosahedron.yaml").read_text())
    assert f"padding_factor (default {ico['padding_factor']})" in text
    assert f"`face_size` ({ico['face_size']})" in text and f"`padding_factor` ({ico['padding_factor']})" in text
