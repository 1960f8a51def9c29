"""Identities travel between machines: the same data and spec under two checkout roots hash the same."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

from conftest import TINY_PARAMS, cell_spec, tune_cfg
from lesionseg.data.preprocess import prepare_dataset
from lesionseg.layout import Layout
from lesionseg.tuning import study_name


def _file_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> md5 of every file (what DVC hashes an output folder by)."""
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkout(tiny_data: Path, root: Path) -> Path:
    """A project at ``root`` with the tiny raw data, prepared there as the prepare stage does."""
    shutil.copytree(tiny_data / "data", root / "data")
    shutil.copytree(tiny_data / "models", root / "models")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    layout = Layout.at(root)
    prep = TINY_PARAMS["prepare"]["mouse"]
    shutil.rmtree(layout.processed("mouse"))
    prepare_dataset(layout.raw("mouse"), layout.processed("mouse"), target_spacing=prep["target_spacing"],
                    shape=prep["shape"], source=layout.relative(layout.raw("mouse")))
    return root


def test_same_data_and_spec_under_two_roots_hash_the_same(tiny_data, tmp_path):
    alice = _checkout(tiny_data, tmp_path / "home" / "alice" / "lesionseg")
    bob = _checkout(tiny_data, tmp_path / "srv" / "bob" / "work" / "lesionseg")
    prepared = [_file_hashes(Layout.at(root).processed("mouse")) for root in (alice, bob)]
    assert prepared[0] == prepared[1] and "manifest.json" in prepared[0]
    assert str(alice) not in (Layout.at(alice).processed("mouse") / "manifest.json").read_text()

    specs = [cell_spec(TINY_PARAMS, "ratlesnetv2", "full", 4, "noaug", root) for root in (alice, bob)]
    assert specs[0].prepared_dir != specs[1].prepared_dir  # the paths differ ...
    assert specs[0].fingerprint() == specs[1].fingerprint()  # ... the identity does not
    assert study_name(specs[0], tune_cfg(TINY_PARAMS)) == study_name(specs[1], tune_cfg(TINY_PARAMS))


def test_the_fingerprint_follows_the_data_not_the_path(tiny_data, tmp_path):
    root = _checkout(tiny_data, tmp_path / "a")
    before = cell_spec(TINY_PARAMS, "ratlesnetv2", "full", 4, "noaug", root).fingerprint()
    manifest = Layout.at(root).processed("mouse") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"crop": "head"', '"crop": "centre"'))
    assert cell_spec(TINY_PARAMS, "ratlesnetv2", "full", 4, "noaug", root).fingerprint() != before
