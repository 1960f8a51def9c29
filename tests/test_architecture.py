"""The house rules, checked: layers import only downward, only tracking/ and tuning.py touch MLflow, and
dvc.yaml declares every module and params key each stage's entry point reads."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_PARAMS

PACKAGE = ROOT / "lesionseg"
# Lower layers never import higher ones. evaluation.metrics is pure maths on arrays and sits with data, so
# that training can score validation with the same Dice the evaluation reports; postprocess (lesion components
# on arrays) sits there too, so that tracking chooses it and inference applies it with one definition.
LAYERS = [
    {"errors", "arm", "config", "layout", "supervisor", "process", "warmstart"},
    {"data", "evaluation.metrics", "postprocess"},
    {"evaluation"},  # scores folders of segmentations: never runs a network (so never imports inference)
    {"networks"},
    {"training"},
    {"inference"},
    {"tracking"},
    {"tuning", "report", "cluster"},
    {"cli"},
]
MLFLOW_ALLOWED = ("tracking", "tuning")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _layer(module: str) -> int:
    rel = module.removeprefix("lesionseg.")
    for rank, names in enumerate(LAYERS):
        if rel in names:
            return rank
    for rank, names in enumerate(LAYERS):
        if rel.split(".")[0] in names:
            return rank
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_import_only_downward(path):
    own = _layer(_module_name(path)) if path.name != "__init__.py" or path.parent != PACKAGE else 0
    upward = [m for m in _imports(path) if m.startswith("lesionseg.") and _file_of(m)
              and _layer(m) > own]
    assert not upward, f"{path.relative_to(ROOT)} imports upward: {upward}"


@pytest.mark.parametrize("path", _package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_tracking_and_tuning_import_mlflow(path):
    rel = _module_name(path).removeprefix("lesionseg.")
    if rel.split(".")[0] in MLFLOW_ALLOWED:
        return
    assert not [m for m in _imports(path) if m == "mlflow" or m.startswith("mlflow.")], rel


def import_closure(entry: Path) -> set[str]:
    """Files of the lesionseg modules ``entry`` imports, transitively, with their parent packages."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        for module in _imports(path):
            if not module.startswith("lesionseg"):
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                target = _file_of(".".join(parts[:depth]))
                if target and target not in seen:
                    seen.add(target)
                    todo.append(target)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _entry(stage: dict) -> Path:
    definition = stage.get("do", stage)
    return ROOT / definition["cmd"].split()[1]


@pytest.mark.parametrize("name", list(_stages()))
def test_stage_deps_are_exactly_the_modules_its_entry_point_imports(name):
    stage = _stages()[name]
    definition = stage.get("do", stage)
    entry = _entry(stage)
    declared = set()
    for dep in (d for d in definition["deps"] if d.startswith(("lesionseg", "pipelines"))):
        folder = ROOT / dep
        declared |= ({p.relative_to(ROOT).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
                     if folder.is_dir() else {dep})
    needed = import_closure(entry) | {entry.relative_to(ROOT).as_posix(), "pipelines/_stage.py"}
    needed |= import_closure(ROOT / "pipelines" / "_stage.py")
    missing, extra = sorted(needed - declared), sorted(declared - needed)
    assert not missing and not extra, (
        f"dvc.yaml stage {name}: missing deps {missing}, stale deps {extra}; its code deps should read:\n"
        + yaml.safe_dump(sorted(needed)))


# --- params: each stage reads only the keys dvc.yaml lists ------------------------------------------------


def _keep(params: dict, keys: list[str]) -> dict:
    """``params`` with only the dotted ``keys`` (whole sections or sub-keys)."""
    out: dict = {}
    for key in keys:
        node, target = params, out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
            target = target.setdefault(part, {})
        target[parts[-1]] = node[parts[-1]]
    return out


STUBS = {  # the one library call each entry point ends in, and what the stub returns
    "synthesize": ("synthesize_studies", lambda *a, **k: a[3]),
    "import_bruker": ("import_bruker", lambda *a, **k: a[1]),
    "import_nifti": ("import_nifti", lambda *a, **k: a[1]),
    "prepare": ("prepare_dataset", lambda *a, **k: a[1] / "manifest.json"),
    "split": ("write_json", lambda *a, **k: None),
    "subsets": ("write_json", lambda *a, **k: None),
    "pretrain": ("train_tracked", lambda *a, **k: {"best_val_dice": 0.0, "best_epoch": 0, "run_id": "",
                                                   "registered_model": "", "version": ""}),
    "finetune": ("train_tracked", lambda *a, **k: {"best_val_dice": 0.0, "best_epoch": 0, "run_id": "",
                                                   "version": ""}),
    "tune": ("tune_and_retrain", lambda *a, **k: {"best_params": {}, "best_value": 0.0, "trials": {},
                                                   "final": {"version": ""}}),
    "evaluate": ("evaluate_and_log", lambda *a, **k: ({}, [])),
    "report": ("build_report", lambda *a, **k: {"headline": {}, "findings": []}),
}


def _resolved_stages(project: Path) -> list[tuple[str, str, list[str]]]:
    """(stage name, command, params keys) of every stage, as DVC itself resolves dvc.yaml for ``project``."""
    from dvc.repo import Repo

    repo = Repo.init(project, no_scm=True, force=True)
    out = []
    for stage in repo.index.stages:
        keys = [k for dep in stage.deps if hasattr(dep, "params") for k in (dep.params or [])]
        out.append((stage.addressing, stage.cmd, keys))
    return out


def _call_entry(project: Path, command: str, params: dict, monkeypatch) -> list:
    """Run the entry point of ``command`` on ``params`` with its final library call stubbed; its arguments."""
    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout

    script = Path(command.split()[1])
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    module = importlib.import_module(script.stem)
    calls: list = []
    name, result = STUBS["finetune" if script.stem == "finetune" else script.stem]
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append((a, k)) or result(*a, **k))
    if hasattr(module, "config"):  # an entry point that reads no params (import) has none
        monkeypatch.setattr(module, "config", lambda: ProjectConfig(params))
    monkeypatch.setattr(module, "LAYOUT", Layout.at(project))
    from lesionseg.tracking.context import RunContext

    for hook, value in (("context", lambda: RunContext(Layout.at(project))), ("log_study_report", lambda *a, **k: ""),
                        ("choose_challenger", lambda runs: None), ("store", type("S", (), {"connect": print}))):
        if hasattr(module, hook):
            monkeypatch.setattr(module, hook, value)
    monkeypatch.setattr(sys, "argv", [str(script), *command.split()[2:]])
    module.main()
    return calls


def test_each_stage_reads_only_the_params_dvc_yaml_lists(tiny_project, monkeypatch):
    (tiny_project / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    for stage, command, keys in _resolved_stages(tiny_project):
        full = _call_entry(tiny_project, command, TINY_PARAMS, monkeypatch)
        trimmed = _call_entry(tiny_project, command, _keep(TINY_PARAMS, keys), monkeypatch)
        assert trimmed == full, f"{stage} reads params that dvc.yaml does not list (it lists {keys})"


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.py")), ids=lambda p: p.name)
def test_stage_entry_points_stay_thin(path):
    """A stage builds config and layout and calls one library function: 30 lines at most."""
    assert len(path.read_text().splitlines()) <= 30, f"{path.name} has grown past 30 lines: move logic to lesionseg/"
