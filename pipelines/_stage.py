"""What every stage entry point shares: the project's config and layout, its run context, one-line errors."""
import os
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python pipelines/X.py` also runs in an env (MLflow's conda) without `pip -e`
from lesionseg.config import load_config, load_runtime  # noqa: E402
from lesionseg.layout import Layout  # noqa: E402
LAYOUT = Layout.at(ROOT)
from lesionseg.warmstart import delegate; delegate(ROOT, load_runtime(LAYOUT.params_file), ROOT / "pipelines")  # noqa: E402, E702 (a warm server's worker runs the stage, if one listens)
from lesionseg.process import FastExit, timing  # noqa: E402, F401 (timing: for the training stages)
EXIT = FastExit.register()  # before any library's atexit handler, so it runs after all of them
from lesionseg.errors import bug_report, user_error_line  # noqa: E402
from lesionseg.tracking.quiet import quiet_library_warnings; quiet_library_warnings()  # noqa: E402, E702 (before MLflow loads)
def config():  # the project's params.yaml, typed
    return load_config(LAYOUT.params_file)
def context():  # what `mlflow run` (MLFLOW_RUN_ID) and `dvc exp run` (DVC_EXP_NAME) told this process
    from lesionseg.tracking.context import RunContext
    return RunContext(LAYOUT, os.environ.get("MLFLOW_RUN_ID") or None, os.environ.get("DVC_EXP_NAME", ""))
def run(main) -> None:  # errors a user caused (errors.user_error_line), and a 401/403 from an authenticated MLflow server, print as one line
    try:
        main()
        if getattr(main, "__module__", None) == "__main__":  # a stage's process, not a test calling run() in its own
            EXIT.arm()  # only a success skips the teardown; an error exits the usual way, with its code
    except Exception as err:
        from lesionseg.tracking.refusals import permission_error
        line = user_error_line(err) or permission_error(err)
        if line is None:  # a bug: its traceback, then a line that says so
            sys.exit(bug_report(err))
        sys.exit(f"error: {line}")
