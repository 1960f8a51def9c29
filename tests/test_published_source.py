"""Published weights as the source: `finetune.source` names the authors' RatLesNetV2 file with its architecture
(32 filters); transfer arms start from it, and its sha256 lands in the run's params and tags and the registered
version's tags. Uses ../shared/pretrained/ (never copied into the project); skipped where it is absent."""
from __future__ import annotations

import copy
import hashlib
import importlib
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import ROOT, TINY_PARAMS

PUBLISHED = ROOT.parent / "shared" / "pretrained" / "ratlesnetv2-heterogeneous-model-1"
pytestmark = pytest.mark.skipif(not PUBLISHED.is_file(), reason=f"{PUBLISHED} is absent (the authors' weights)")


def _params_with_published_source() -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["finetune"].update(source=str(PUBLISHED), source_network={"ratlesnetv2": {"filters": 32}},
                              strategies=["full"])
    params["pretrain"]["models"] = []
    del params["data"]["source"]
    return params


def _stage(name: str, project: Path, params: dict, monkeypatch, *args: str):
    from lesionseg.config import ProjectConfig
    from lesionseg.layout import Layout

    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    module = importlib.import_module(name)
    monkeypatch.setattr(module, "LAYOUT", Layout.at(project))
    monkeypatch.setattr(module, "config", lambda: ProjectConfig(params))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    return module.main()


def test_finetuning_from_the_authors_weights_records_their_sha256(tiny_project, monkeypatch):
    params = _params_with_published_source()
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _stage("finetune", tiny_project, params, monkeypatch, "--model", "ratlesnetv2", "--strategy", "full",
           "--sample-size", "4", "--augment", "noaug", "--repeat", "0")
    sha256 = hashlib.sha256(PUBLISHED.read_bytes()).hexdigest()
    client = MlflowClient()
    version = client.get_model_version("lesionseg-mouse", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["pretrained_sha256"] == sha256 == run.data.tags["pretrained_sha256"]
    assert version.tags["pretrained_sha256"] == sha256
    assert run.data.tags["pretrained_load"].startswith("114 matched, 0 missing, 0 unexpected, 0 shape-mismatched")
    assert run.data.params["network.filters"] == "32"


def test_pretraining_refuses_when_the_source_is_a_weights_file(tiny_project, monkeypatch):
    from lesionseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"set pretrain.models: \[\] in params.yaml"):
        _stage("pretrain", tiny_project, _params_with_published_source(), monkeypatch, "--model", "ratlesnetv2")
