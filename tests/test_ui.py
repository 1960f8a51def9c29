"""The MLflow UI in headless Chromium: runs table and registry page show what users compare."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lesionseg.tracking.registry import CHAMPION, TARGET_MODEL, set_alias

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900", "--virtual-time-budget=20000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(tracking_uri: str) -> tuple[subprocess.Popen, str]:
    """`mlflow ui` on 127.0.0.1, as `lesionseg ui` starts it; returns the process and base URL."""
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("mlflow ui did not start")


def render(url: str, out_png: Path) -> str:
    """Screenshot ``url`` to ``out_png`` and return the rendered DOM."""
    profile = out_png.parent / f"profile-{out_png.stem}"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*common, f"--screenshot={out_png}", url], capture_output=True, timeout=120)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout


@pytest.mark.slow
def test_runs_table_and_registry_page_render(two_versions, tmp_path):
    root, (v1, v2) = two_versions
    set_alias(TARGET_MODEL, CHAMPION, v1["version"])
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient().get_experiment_by_name("lesionseg-finetune").experiment_id
    proc, url = start_ui(os.environ["MLFLOW_TRACKING_URI"])
    try:
        runs_dom = render(f"{url}/#/experiments/{experiment_id}/runs", tmp_path / "runs.png")
        registry_dom = render(f"{url}/#/models/{TARGET_MODEL}", tmp_path / "registry.png")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert (tmp_path / "runs.png").stat().st_size > 20_000
    assert "unet/scratch-d0/n4/noaug" in runs_dom, "run names say model/strategy/n"
    assert "@champion" in registry_dom or "champion" in registry_dom
    assert f"Version {v2['version']}" in registry_dom
