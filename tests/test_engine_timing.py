"""A stage's last line carries its wall time and the time outside training steps and validation; a stage that
succeeded skips the interpreter's teardown, yet every atexit handler (MLflow's among them) still runs
(lesionseg/tracking/quiet.py, pipelines/_stage.py)."""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = f"import sys; sys.path.insert(0, {str(ROOT / 'pipelines')!r}); import _stage\n"


def test_steps_and_validation_seconds_add_up_over_fits(tmp_path):
    from lesionseg.config import TrainConfig
    from lesionseg.training.fit import steps_and_validation_seconds
    from test_training import _fit

    before = steps_and_validation_seconds()
    _, state = _fit(tmp_path / "a", TrainConfig(epochs=2, iterations_per_epoch=2, lr=1e-2))
    spent = sum(h["epoch_seconds"] + h["val_seconds"] for h in state.history)
    assert steps_and_validation_seconds() - before == spent > 0


def test_process_seconds_count_from_process_creation_and_timing_says_it():
    code = STAGE + "import time; time.sleep(0.5); print(_stage.quiet.process_seconds()); print(_stage.quiet.timing())"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    elapsed = time.monotonic() - started
    assert 0.5 <= float(out[0]) <= elapsed + 0.05  # includes interpreter start and imports, not only the sleep
    assert out[1].startswith("; ") and "(fit 0.0 s, outside " in out[1]


def test_a_stage_that_succeeds_runs_every_atexit_handler_and_one_that_fails_keeps_its_exit_code(tmp_path):
    flag = tmp_path / "handler-ran"
    code = STAGE + (f"import atexit, pathlib; atexit.register(pathlib.Path({str(flag)!r}).write_text, 'ok')\n"
                    "def main():\n    print('stage: done', end='')\n    if sys.argv[1:] == ['fail']: raise RuntimeError('x')\n"
                    "_stage.run(main)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout, flag.read_text()) == (0, "stage: done", "ok")  # unflushed output kept
    flag.unlink()
    failed = subprocess.run([sys.executable, "-c", code, "fail"], capture_output=True, text=True)
    assert failed.returncode == 1 and flag.read_text() == "ok"


def test_run_called_inside_another_program_leaves_its_exit_to_it():
    """A test (or any program) that calls run() with a main of its own module keeps its own exit and exit code."""
    code = STAGE + "import types; f = types.FunctionType((lambda: None).__code__, {}); f.__module__ = 'other'\n" \
                   "_stage.run(f); sys.exit(3)\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 3
