"""Rebuild a registered model version: the git commit, the DVC stage, and whether the data still match."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lesionseg.errors import ConfigError
from lesionseg.layout import Layout
from lesionseg.tracking.lineage import lock_hashes, read_lock


@dataclass
class Plan:
    """What rebuilds one version, and how its recorded data hashes compare with the workspace's dvc.lock."""

    model_uri: str
    commit: str
    stage: str | None
    exp_name: str
    workdir: str
    commands: list[str]
    data_checks: list[tuple[str, str, str]] = field(default_factory=list)  # (path, recorded, current)

    def render(self) -> str:
        lines = [f"# {self.model_uri}: trained at git commit {self.commit}"]
        for path, recorded, current in self.data_checks:
            state = "matches" if recorded == current else f"DIFFERS (now {current or 'absent'})"
            lines.append(f"# data {path}: {recorded} {state}")
        return "\n".join(lines + self.commands)


def _parse_uri(model_uri: str) -> tuple[str, str]:
    if not model_uri.startswith("models:/") or model_uri.count("/") != 2:
        raise ConfigError(f"{model_uri}: expected models:/NAME/VERSION, e.g. models:/lesionseg-mouse/3")
    name, version = model_uri[len("models:/"):].split("/")
    return name, version


def reproduce_plan(model_uri: str, project_root: Path) -> Plan:
    """Read the version's tags and its run's tags, and write the commands that rebuild it."""
    name, version = _parse_uri(model_uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        raise ConfigError(f"{model_uri}: no such registered model version") from None
    tags = client.get_run(mv.run_id).data.tags
    commit, out, exp_name = tags.get("git_commit", "unknown"), tags.get("dvc_out", ""), tags.get("dvc_exp_name", "")
    lock = read_lock(Layout.at(project_root).dvc_lock)
    stage = lock[out][0] if out in lock else None
    workdir = f"../lesionseg-{name}-v{version}"
    commands = [f"git worktree add {workdir} {commit}", f"cd {workdir}"]
    if exp_name:
        commands.append(f"dvc exp apply {exp_name}")
    commands += ["dvc pull", f"dvc repro {stage}" if stage else "dvc repro"]
    recorded = {k[len("data_hash."):]: v for k, v in mv.tags.items() if k.startswith("data_hash.")}
    current = lock_hashes(lock, list(recorded))
    checks = [(path, md5, current.get(f"data_hash.{path}", "")) for path, md5 in sorted(recorded.items())]
    return Plan(model_uri, commit, stage, exp_name, workdir, commands, checks)


def run_plan(plan: Plan, project_root: Path) -> None:
    """Execute the plan's commands (a new git worktree; the current workspace is not touched)."""
    workdir = (project_root / plan.workdir).resolve()
    steps = [c for c in plan.commands if not c.startswith("cd ")]
    for command in steps:
        cwd = project_root if command.startswith("git worktree") else workdir
        print(f"$ {command}", flush=True)
        subprocess.run(command, shell=True, cwd=cwd, check=True)
