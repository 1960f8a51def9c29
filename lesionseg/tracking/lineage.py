"""Where a run's code and data came from: git commit/dirty flag, DVC stage/experiment, dvc.lock hashes."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml


def _git(project_root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_tags(project_root: str | Path) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` (tracked files changed; DVC outputs are git-ignored)."""
    root = Path(project_root)
    commit = _git(root, "rev-parse", "HEAD") or "unknown"
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": "unknown" if status is None else str(bool(status)).lower()}


def dvc_lock_hashes(project_root: str | Path, paths: list[str]) -> dict[str, str]:
    """md5 of each of ``paths`` as recorded in ``dvc.lock`` (any stage's outs), keyed ``data_hash.<path>``.

    Reads the lock file directly: it is DVC's documented, stable YAML record of what each stage produced.
    """
    lock = Path(project_root) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    recorded = {out["path"]: out.get("md5", "") for st in stages.values() for out in st.get("outs", [])}
    return {f"data_hash.{p}": recorded[p] for p in paths if p in recorded}


def dvc_tags(stage: str) -> dict[str, str]:
    """The DVC stage name and, inside ``dvc exp run``, the experiment name DVC exports."""
    return {"dvc_stage": stage, "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "")}
