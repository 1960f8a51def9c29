"""The registered pyfunc behind `mlflow models serve`: bad requests get HTTP 400 with one line, good ones a mask."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml

from conftest import TINY_PARAMS, cell_spec, ctx
from servers import free_port, get_when_up, stop

MODEL = "lesionseg-mouse"
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+[\w.-]+")
GOOD_VOLUME = np.random.default_rng(1).random((16, 8, 12)).round(3).tolist()
BAD_REQUESTS = {  # case -> (inputs, the message; None: any one line from the library)
    "2d volume": ({"volume": [[1.0, 2.0], [3.0, 4.0]], "spacing": [0.8, 1.0, 0.8]},
                  "volume: expected (X,Y,Z) or (B,X,Y,Z), got shape (2, 2)"),
    "string volume": ({"volume": "abc", "spacing": [0.8, 1.0, 0.8]}, "volume: expected numbers, got a string"),
    "nan voxel": ({"volume": [[[1.0, float("nan")]]], "spacing": [0.8, 1.0, 0.8]},
                  "volume: contains NaN or Inf; replace them before sending"),
    "zero spacing": ({"volume": GOOD_VOLUME, "spacing": [0.0, 1.0, 0.8]},
                     "spacing: expected positive finite numbers (mm), got 0"),
    "short spacing": ({"volume": GOOD_VOLUME, "spacing": [0.8, 1.0]},
                      "spacing: expected [sx, sy, sz] in mm, got shape (2,)"),
    "spacing in micrometres": ({"volume": GOOD_VOLUME, "spacing": [1e4, 1e4, 1e4]},
                               "spacing: [10000.0, 10000.0, 10000.0] mm puts a (16, 8, 12) volume on 2.4e+15 voxels "
                               "of the model's [0.8, 1.0, 0.8] mm grid (limit 6.71e+07); is the spacing in mm?"),
    "blank volume": ({"volume": np.zeros((16, 8, 12)).tolist(), "spacing": [0.8, 1.0, 0.8]}, None),
    "misspelt field": ({"volume": GOOD_VOLUME, "spacings": [0.8, 1.0, 0.8]},
                       "request: unknown fields ['spacings']; expected "
                       '{"inputs": {"volume": [...], "spacing": [sx, sy, sz]}}'),
}


def _post(url: str, inputs: dict[str, Any]) -> tuple[int, str]:
    """POST ``{"inputs": inputs}``; returns (status, body), also for an HTTP error."""
    request = urllib.request.Request(url, data=json.dumps({"inputs": inputs}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def served_model(tiny_data, tmp_path_factory) -> Iterator[str]:
    """One tiny model trained and registered in a fresh project, served by `mlflow models serve`; yields the
    /invocations URL."""
    from lesionseg.tracking.run import train_tracked

    root = tmp_path_factory.mktemp("serving") / "project"
    shutil.copytree(tiny_data, root)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        result = train_tracked(cell_spec(TINY_PARAMS, "unet", "scratch", 4, "noaug", root), ctx(root),
                               root / "models" / "finetune" / "a", root / "checkpoints" / "a", register_as=MODEL,
                               progress=False)
        port = free_port()
        bin_dir = Path(sys.executable).parent
        server = subprocess.Popen(
            [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{result['version']}",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        get_when_up(f"http://127.0.0.1:{port}/ping", server)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        stop(server)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_400_with_one_line_and_no_paths(served_model, case):
    inputs, line = BAD_REQUESTS[case]
    status, body = _post(served_model, inputs)
    assert status == 400, body[:500]
    error = json.loads(body)
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    if line is None:
        assert error["message"] and "\n" not in error["message"] and not error["message"].startswith("Encountered")
    else:
        assert error["message"] == line
    assert "stack_trace" not in error and "Traceback" not in body
    assert ".py" not in body and "/work" not in body and not ABSOLUTE_PATH.search(body), body[:500]


@pytest.mark.slow
def test_good_request_still_gets_a_mask(served_model):
    status, body = _post(served_model, {"volume": GOOD_VOLUME, "spacing": [0.8, 1.0, 0.8]})
    assert status == 200, body[:500]
    mask = np.asarray(json.loads(body)["predictions"])
    assert mask.shape == (16, 8, 12) and set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
def test_batch_with_one_spacing_per_volume(served_model):
    batch = np.random.default_rng(2).random((2, 12, 9, 14)).round(3).tolist()
    status, body = _post(served_model, {"volume": batch, "spacing": [[0.5, 1.0, 0.5], [0.8, 1.0, 0.8]]})
    assert status == 200, body[:500]
    assert np.asarray(json.loads(body)["predictions"]).shape == (2, 12, 9, 14)
