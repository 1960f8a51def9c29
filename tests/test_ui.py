"""The MLflow UI in headless Chromium: the runs table opens in the model-training view, and the registry page
shows which version holds which alias."""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lesionseg.tracking import store
from lesionseg.tracking.registry import CHAMPION, TARGET_MODEL, set_alias
from servers import free_port, get_when_up, stop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="Debian's chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900", "--virtual-time-budget=20000"]
UI_BUNDLE = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
RUN_NAME = "unet/scratch-d0/n4/noaug"
GENAI_VIEW_MARKERS = ("Observability", "Agent versions", "Training runs")


def start_ui(tracking_uri: str) -> tuple[subprocess.Popen, str]:
    """`mlflow ui` on 127.0.0.1, as `lesionseg ui` starts it; returns the process and base URL."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    try:
        get_when_up(f"{url}/health", proc, timeout_s=90)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def render(url: str, out_png: Path) -> str:
    """Screenshot ``url`` to ``out_png`` and return the rendered DOM."""
    profile = out_png.parent / f"profile-{out_png.stem}"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*common, f"--screenshot={out_png}", url], capture_output=True, timeout=120)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout


def page_text(dom: str) -> str:
    """The visible text of a DOM dump, one space between pieces."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def registry_aliases(dom: str) -> dict[str, set[str]]:
    """Version number -> the aliases shown in its row of a registered model's page."""
    aliases = {}
    for row in dom.split('role="row"')[1:]:
        text = page_text(f"<{row}")
        version = re.search(r"\bVersion (\d+)\b", text)
        if version:
            aliases[version.group(1)] = set(re.findall(r"(?<!\w)@\s*([\w-]+)", text))
    return aliases


def _bundle_defines(literal: str) -> bool:
    """Whether the installed UI's JavaScript contains ``literal``."""
    return any(literal in path.read_text(errors="ignore") for path in UI_BUNDLE.glob("main.*.js"))


def test_the_installed_ui_knows_the_kind_and_view_the_project_uses():
    assert _bundle_defines(f'CUSTOM_MODEL_DEVELOPMENT="{store.MODEL_TRAINING_KIND}"')
    key, value = store.MODEL_TRAINING_VIEW.split("=")
    assert _bundle_defines(f'MACHINE_LEARNING="{value}"') and _bundle_defines(f'get("{key}")')


def test_project_experiments_are_tagged_as_model_training(tiny_project):
    store.connect(tiny_project)
    client = MlflowClient()
    untagged = client.create_experiment("lesionseg-eval")
    client.create_experiment("lesionseg-tune", tags={store.EXPERIMENT_KIND_TAG: "genai_development"})
    store.ensure_experiment("lesionseg-finetune", tiny_project)
    assert store.ensure_experiment("lesionseg-eval", tiny_project) == untagged
    store.ensure_experiment("lesionseg-tune", tiny_project)
    kinds = {name: client.get_experiment_by_name(name).tags.get(store.EXPERIMENT_KIND_TAG)
             for name in ("lesionseg-finetune", "lesionseg-eval", "lesionseg-tune")}
    assert kinds == {"lesionseg-finetune": "custom_model_development", "lesionseg-eval": "custom_model_development",
                     "lesionseg-tune": "genai_development"}


def test_experiment_created_meanwhile_by_another_process_is_used(tiny_project, monkeypatch):
    store.connect(tiny_project)
    created = MlflowClient().create_experiment("lesionseg-finetune")
    lookups = []
    real_lookup = MlflowClient.get_experiment_by_name

    def lookup_before_the_other_process(self, name):
        lookups.append(name)
        return None if len(lookups) == 1 else real_lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_before_the_other_process)
    assert store.ensure_experiment("lesionseg-finetune", tiny_project) == created
    assert MlflowClient().get_experiment(created).tags[store.EXPERIMENT_KIND_TAG] == store.MODEL_TRAINING_KIND


@needs_chromium
@pytest.mark.slow
def test_runs_table_opens_in_model_training_view_and_registry_shows_aliases(two_versions, tmp_path):
    root, (v1, v2) = two_versions
    set_alias(TARGET_MODEL, CHAMPION, v1["version"])
    proc, url = start_ui(os.environ["MLFLOW_TRACKING_URI"])
    try:
        runs_url = store.experiment_urls(url)["lesionseg-finetune"]
        runs_dom = render(runs_url, tmp_path / "runs.png")
        registry_dom = render(f"{url}/#/models/{TARGET_MODEL}", tmp_path / "registry.png")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert (tmp_path / "runs.png").stat().st_size > 20_000
    runs_text = page_text(runs_dom)
    assert runs_text.count(RUN_NAME) == 2, "both runs are in the table, named model/strategy/n/augment"
    assert "Model registry" in runs_text
    assert not [marker for marker in GENAI_VIEW_MARKERS if marker in runs_text], "the GenAI view opened"
    aliases = registry_aliases(registry_dom)
    assert aliases.get(v1["version"]) == {CHAMPION} and CHAMPION not in aliases.get(v2["version"], {CHAMPION})


def test_a_user_who_may_not_tag_the_experiment_still_gets_its_id(tiny_project, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, PERMISSION_DENIED

    store.connect(tiny_project)
    created = MlflowClient().create_experiment("lesionseg-finetune")

    def refuse(self, experiment_id, key, value):
        raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refuse)
    assert store.ensure_experiment("lesionseg-finetune", tiny_project) == created

    def fail(self, experiment_id, key, value):
        raise MlflowException("database is locked", error_code=INTERNAL_ERROR)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", fail)
    with pytest.raises(MlflowException, match="database is locked"):
        store.ensure_experiment("lesionseg-finetune", tiny_project)
