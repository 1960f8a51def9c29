"""What every stage entry point shares: the project's config and layout, its run context, one-line errors."""
import atexit
import os
import sys
import time
from pathlib import Path
_DONE = []  # run(main) returned: exit without the interpreter's teardown of torch/MONAI/MLflow (~3 s under load)


def _fast_exit():  # registered first, so it runs after every other atexit handler (MLflow's, tempdir cleanups)
    if _DONE:
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


atexit.register(_fast_exit)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python pipelines/X.py` also runs in an env (MLflow's conda) without `pip -e`
from lesionseg.config import load_config  # noqa: E402
from lesionseg.errors import bug_report, user_error_line  # noqa: E402
from lesionseg.layout import Layout  # noqa: E402
from lesionseg.tracking.quiet import quiet_library_warnings; quiet_library_warnings()  # noqa: E402, E702 (before MLflow loads)
LAYOUT = Layout.at(ROOT)
_LOADED = time.time()

def config():  # the project's params.yaml, typed
    return load_config(LAYOUT.params_file)


def context():  # what `mlflow run` (MLFLOW_RUN_ID) and `dvc exp run` (DVC_EXP_NAME) told this process
    from lesionseg.tracking.context import RunContext
    return RunContext(LAYOUT, os.environ.get("MLFLOW_RUN_ID") or None, os.environ.get("DVC_EXP_NAME", ""))


def timing() -> str:  # "; 41.2 s (fit 36.9 s, outside 4.3 s)": wall since process creation, fit = steps + validation
    from lesionseg.training.fit import steps_and_validation_seconds
    wall, fit = process_seconds(), steps_and_validation_seconds()
    return f"; {wall:.1f} s (fit {fit:.1f} s, outside {wall - fit:.1f} s)"


def process_seconds() -> float:  # since the kernel created this process (/proc), else since this module loaded
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _LOADED


def run(main) -> None:  # errors a user caused (errors.user_error_line), and a 401/403 from an authenticated MLflow server, print as one line
    try:
        main()
        if getattr(main, "__module__", None) == "__main__":  # a stage's process, not a test calling run() in its own
            _DONE.append(True)  # only a success skips the teardown; an error exits the usual way, with its code
    except Exception as err:
        from lesionseg.tracking.refusals import permission_error
        line = user_error_line(err) or permission_error(err)
        if line is None:  # a bug: its traceback, then a line that says so
            sys.exit(bug_report(err))
        sys.exit(f"error: {line}")
