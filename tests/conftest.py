"""Shared fixtures: a tiny but real project (synthetic raw data -> prepared -> splits -> subsets)."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
torch.set_num_threads(1)


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module (the benchmarks are scripts, not a package), registered in ``sys.modules``
    so its dataclasses resolve."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TINY_PARAMS = {
    "datasets": {"synthetic": {"rat": {"domain": "rat", "cases": 10, "seed": 5, "matrix": 40, "n_slices": 8},
                               "mouse": {"domain": "mouse", "cases": 16, "seed": 5, "matrix": 48, "n_slices": 12},
                               "mouse-acceptance": {"domain": "mouse", "cases": 6, "seed": 6, "matrix": 48,
                                                    "n_slices": 12, "case_prefix": "mouseacc"}},
                 "bruker": {}, "nifti": {}},
    "data": {"source": "rat", "target": "mouse"},
    "prepare": {"clip_percentiles": [0.5, 99.5],
                "rat": {"target_spacing": [1.0, 2.0, 1.0], "shape": [16, 8, 16]},
                "mouse": {"target_spacing": [0.8, 1.0, 0.8], "shape": [16, 8, 16]}},
    "split": {"seed": 7, "fractions": [0.7, 0.1, 0.2], "n_size_bins": 2},
    "subsets": {"seed": 11, "sizes": [4, 6], "n_size_bins": 2},
    "networks": {"ratlesnetv2": {"filters": 4}, "unet": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
                 "dynunet": {"filters": [4, 8, 16]},
                 "unetr": {"img_size": [16, 16, 16], "feature_size": 4, "hidden_size": 32, "mlp_dim": 64,
                           "num_heads": 2}},
    "train": {"epochs": 2, "iterations_per_epoch": 2, "batch_size": 2, "lr": 0.01, "loss": "dicece",
              "patience_steps": 20, "seed": 0, "num_threads": 1, "patch_size": None, "device": "cpu", "amp": False},
    "study": {"repeats": [0, 1]},
    "pretrain": {"models": ["ratlesnetv2"], "augment": False, "train": {"epochs": 2}},
    "finetune": {"source": "models/pretrained", "source_network": {}, "models": ["ratlesnetv2"], "strategies": ["partial"],
                 "sample_sizes": [4], "augment": ["noaug"],
                 # every lr differs from train.lr and each other, so a stage reading one dvc.yaml omits is caught
                 "arms": {"scratch": {"lr": 0.02}, "full": {"lr": 0.03},
                          "partial": {"lr": 0.015, "freeze_depth": {"ratlesnetv2": 5, "unet": 3, "dynunet": 3,
                                                                    "unetr": 14}}}, "train": {}},
    "baseline": {"models": ["unet"], "sample_sizes": [4], "augment": ["aug"]},
    "tune": {"model": "ratlesnetv2", "sample_sizes": [4], "repeats": [0], "n_trials": 3, "timeout_s": None, "lr_min": 0.001,
             "lr_max": 0.05, "tune_augment": False, "pruner": "median", "pruner_startup_trials": 1,
             "pruner_warmup_epochs": 0, "pruner_percentile": 25.0, "pruner_threshold": 0.0, "sampler_seed": 0,
             "storage": "tuning/journal.log", "heartbeat_s": 30, "train": {"epochs": 2}},
    "evaluate": {"n_overlays": 1},
    "report": {"comparisons": [
        {"treatment": {"model": "ratlesnetv2", "strategy": "partial"}, "control": {"model": "ratlesnetv2",
                                                                                     "strategy": "scratch"}},
        {"treatment": {"model": "unet", "strategy": "scratch", "augment": True},
         "control": {"model": "ratlesnetv2", "strategy": "scratch", "augment": False}}],
        "alpha": 0.05, "equivalence_margin": 0.03},
    "promote": {"alpha": 0.05, "min_dice_gain": 0.0, "hd95_margin_mm": 0.5, "min_dice_first": 0.0,
                "acceptance": "mouse-acceptance"},
}


def build_tiny_data(root: Path, params: dict) -> None:
    """Run the data stages' library functions into ``root`` (what dvc repro would do)."""
    from lesionseg.data.io import write_json
    from lesionseg.data.preprocess import load_manifest, prepare_dataset
    from lesionseg.data.splits import lesion_balanced_subsets, split_cases
    from lesionseg.data.synthetic import synthesize_dataset

    syn = params["datasets"]["synthetic"]
    for domain in ("rat", "mouse"):
        d = syn[domain]
        synthesize_dataset(domain, d["cases"], d["seed"], root / "data" / "raw" / domain,
                           sham_fraction=d.get("sham_fraction", 0.25), matrix=d["matrix"], n_slices=d["n_slices"])
        prep = params["prepare"][domain]
        prepare_dataset(root / "data" / "raw" / domain, root / "data" / "processed" / domain,
                        target_spacing=prep["target_spacing"], shape=prep["shape"])
        cases = load_manifest(root / "data" / "processed" / domain)["cases"]
        split = split_cases(cases, fractions=tuple(params["split"]["fractions"]), seed=params["split"]["seed"],
                            n_size_bins=params["split"]["n_size_bins"])
        write_json(root / "data" / "splits" / f"{domain}.json", split)
    acc = syn["mouse-acceptance"]
    synthesize_dataset("mouse", acc["cases"], acc["seed"], root / "data" / "raw" / "mouse-acceptance",
                       sham_fraction=acc.get("sham_fraction", 0.25), matrix=acc["matrix"], n_slices=acc["n_slices"],
                       case_prefix=acc["case_prefix"])
    cases = load_manifest(root / "data" / "processed" / "mouse")["cases"]
    train_ids = yaml.safe_load((root / "data" / "splits" / "mouse.json").read_text())["train"]
    for r in params["study"]["repeats"]:
        subsets = lesion_balanced_subsets(cases, train_ids, params["subsets"]["sizes"],
                                          seed=params["subsets"]["seed"] + r, n_size_bins=params["subsets"]["n_size_bins"])
        for size, ids in subsets.items():
            write_json(root / "data" / "splits" / "subsets" / f"r{r}-n{size}.json", ids)
    # Source weights for the tuning tests: an initialised (untrained) network in the pretrain stage's format;
    # test_tracking.py covers real pretraining.
    from lesionseg.networks import build_network

    torch.manual_seed(0)
    net = build_network("ratlesnetv2", **params["networks"]["ratlesnetv2"])
    (root / "models" / "pretrained" / "ratlesnetv2").mkdir(parents=True)
    torch.save({"model": net.state_dict()}, root / "models" / "pretrained" / "ratlesnetv2" / "model.pt")


def cell_spec(params: dict, model: str, strategy: str, sample_size: int, augment: str, root: Path, **kwargs):
    """A study cell's RunSpec for the project at ``root``, built the way the finetune/tune stages build it."""
    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout
    from lesionseg.training.spec import finetune_spec

    cfg = ProjectConfig(params)
    train = cfg.train_for("tune" if kwargs.get("stage") == "tune" else "finetune")
    return finetune_spec(model, strategy, sample_size, augment, network=cfg.networks.of(model), train=train,
                         finetune=cfg.finetune, target=cfg.data.role("target"), layout=Layout.at(root), **kwargs)


def source_spec(params: dict, model: str, root: Path):
    """The pretrain stage's RunSpec for the project at ``root``."""
    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout
    from lesionseg.training.spec import pretrain_spec

    cfg = ProjectConfig(params)
    return pretrain_spec(model, cfg.networks.of(model), cfg.train_for("pretrain"), cfg.pretrain, cfg.data.role("source"),
                         Layout.at(root))


def ctx(root: Path):
    """The run context of the project at ``root`` (no launcher, no DVC experiment)."""
    from lesionseg.layout import Layout
    from lesionseg.tracking.context import RunContext

    return RunContext(Layout.at(root))


def tune_cfg(params: dict):
    """The typed ``tune`` section of ``params``."""
    from lesionseg.config import ProjectConfig

    return ProjectConfig(params).tune


def _restoring_mlflow_uris():
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` (the library's ``store.connect`` calls both) set process
    globals and export ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` into ``os.environ`` behind any
    monkeypatch, so a later test would talk to an earlier test's store or a server that is gone (CI saw both).
    Restore both variables and reset MLflow's globals (private names, checked on MLflow 3.17; no public reset)."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow" in sys.modules:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


# after every test, and after every module (its module-scoped fixtures, e.g. a server's client, set them too)
_mlflow_uris_after_each_test = pytest.fixture(autouse=True)(_restoring_mlflow_uris)
_mlflow_uris_after_each_module = pytest.fixture(autouse=True, scope="module")(_restoring_mlflow_uris)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A directory holding data/ of a tiny project, built once per session."""
    root = tmp_path_factory.mktemp("tiny-data")
    build_tiny_data(root, TINY_PARAMS)
    return root


@pytest.fixture
def tiny_project(tiny_data, tmp_path, monkeypatch) -> Path:
    """A fresh project dir (copy of the tiny data + params.yaml) with its own MLflow SQLite store."""
    root = tmp_path / "project"
    shutil.copytree(tiny_data / "data", root / "data")
    shutil.copytree(tiny_data / "models", root / "models")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # mlflow.set_registry_uri exports it
    return root


@pytest.fixture
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def two_versions(tiny_project, tiny_params):
    """Two registered lesionseg-mouse versions trained on the tiny project (v1: 1 epoch, v2: 2 epochs)."""
    from lesionseg.tracking.registry import TARGET_MODEL
    from lesionseg.tracking.run import train_tracked

    root = tiny_project
    results = []
    for epochs, name in ((1, "a"), (2, "b")):
        spec = cell_spec(tiny_params, "unet", "scratch", 4, "noaug", root)
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
        results.append(train_tracked(spec, ctx(root), root / "models" / "finetune" / name, root / "checkpoints" / name,
                                     register_as=TARGET_MODEL, progress=False))
    return root, results
