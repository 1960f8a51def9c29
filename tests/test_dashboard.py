"""optuna-dashboard on the project's tuning journal lists the fingerprinted studies over its JSON API."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import cell_spec, ctx, tune_cfg
from lesionseg.tuning import open_study
from servers import free_port, get_when_up, stop

DASHBOARD = shutil.which("optuna-dashboard", path=f"{Path(sys.executable).parent}") or shutil.which("optuna-dashboard")
pytestmark = pytest.mark.skipif(DASHBOARD is None,
                                reason="optuna-dashboard is not installed (pip install 'lesionseg[dashboard]')")


def _get_json(url: str, server: subprocess.Popen) -> Any:
    return json.loads(get_when_up(url, server, timeout_s=60))


def test_dashboard_lists_the_tuning_study_of_the_journal(tiny_project, tiny_params):
    cfg = tune_cfg(tiny_params)
    study = open_study(cell_spec(tiny_params, "ratlesnetv2", "full", 4, "noaug", tiny_project, stage="tune"), cfg,
                       ctx(tiny_project))
    study.optimize(lambda trial: trial.suggest_float("lr", cfg.lr_min, cfg.lr_max, log=True), n_trials=2)
    journal = tiny_project / cfg.storage
    port = free_port()
    server = subprocess.Popen([DASHBOARD, str(journal), "--host", "127.0.0.1", "--port", str(port),
                               "--server", "wsgiref", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listed = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        assert [s["study_name"] for s in listed] == [study.study_name]
        assert study.study_name.startswith("finetune-ratlesnetv2-n4-r0-")
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{listed[0]['study_id']}", server)
    finally:
        stop(server, timeout_s=20)
    assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
    assert detail["directions"] == ["maximize"] and journal.is_file()
