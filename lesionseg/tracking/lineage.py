"""Where a run's code and data came from: git commit/dirty flag, DVC stage/experiment, dvc.lock hashes."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from lesionseg.layout import Layout


def _git(project_root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_tags(project_root: str | Path) -> dict[str, str]:
    """``git_commit`` and ``git_dirty``: tracked files changed, other than the records a run itself rewrites
    (dvc.lock, cache-less metrics and report: :attr:`Layout.run_records`); DVC outputs are git-ignored."""
    layout = Layout.at(project_root)
    root = layout.root
    commit = _git(root, "rev-parse", "HEAD") or "unknown"
    excluded = [f":(exclude){layout.relative(r)}" for r in layout.run_records]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return {"git_commit": commit, "git_dirty": "unknown" if status is None else str(bool(status)).lower()}


def read_lock(lock_file: str | Path) -> dict[str, tuple[str, str]]:
    """``{out path: (stage, md5)}`` of every stage's outputs in ``dvc.lock`` (empty when there is none yet).

    Reads the lock file directly: it is DVC's documented, stable YAML record of what each stage produced,
    and DVC's Python API has no call that returns recorded hashes without recomputing them.
    """
    lock = Path(lock_file)
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    # `if st`: a stage entry another process (lesionseg study run) is writing may read back empty
    return {out["path"]: (name, out.get("md5", "")) for name, st in stages.items() if st
            for out in st.get("outs", [])}


def lock_hashes(lock: Mapping[str, tuple[str, str]], paths: Sequence[str]) -> dict[str, str]:
    """``data_hash.<path>`` tags for those of ``paths`` (relative, as dvc.lock writes them) that it records."""
    return {f"data_hash.{p}": lock[p][1] for p in paths if p in lock}


def data_paths(layout: Layout, domain: str, pretrained: str | Path | None, *, subsets: bool = True) -> list[str]:
    """The DVC-tracked inputs of a training run, relative to the project root."""
    paths = [layout.processed(domain), layout.split_file(domain)] + ([layout.subsets_dir] if subsets else [])
    if pretrained:
        paths.append(Path(pretrained).parent)
    return [layout.relative(p) for p in paths]


def dvc_tags(stage: str, exp_name: str = "") -> dict[str, str]:
    """The DVC stage name and, inside ``dvc exp run``, the experiment name (the caller reads DVC_EXP_NAME)."""
    return {"dvc_stage": stage, "dvc_exp_name": exp_name}
