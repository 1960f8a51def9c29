"""DVC: time of a `dvc repro` with nothing to do, in a temp git copy of the project; the demo's end-to-end time.

``python benchmarks/bench_dvc.py [--quick]``. The project's dvc.yaml, params.yaml (training stages shrunk to tiny
sizes, as in tests/test_pipeline.py), pipelines/, lesionseg/ and .dvc/ are copied into a temp git repository; the
pipeline runs once for real (with ``--quick`` only up to ``subsets``, the data stages), then ``dvc repro`` is timed
with nothing to do. ``DVC_NO_ANALYTICS=1``; MLflow logs to a temp SQLite store.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import yaml

BIN = Path(sys.executable).parent
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.org"}
DEMO_SECONDS = c.HERE / "demo_repro_seconds.txt"
NOOP_RUNS = 5

# tests/conftest.py TINY_PARAMS: tiny data and networks, the demo's stage structure
TINY = {
    "synthesize": {"seed": 5, "sham_fraction": 0.25, "rat": {"cases": 10, "matrix": 40, "n_slices": 8},
                   "mouse": {"cases": 16, "matrix": 48, "n_slices": 12}},
    "prepare": {"clip_percentiles": [0.5, 99.5],
                "rat": {"target_spacing": [1.0, 2.0, 1.0], "shape": [16, 8, 16]},
                "mouse": {"target_spacing": [0.8, 1.0, 0.8], "shape": [16, 8, 16]}},
    "split": {"seed": 7, "fractions": [0.7, 0.1, 0.2], "n_size_bins": 2},
    "subsets": {"seed": 11, "sizes": [4, 6], "n_size_bins": 2},
    "networks": {"ratlesnetv2": {"filters": 4}, "unet": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
                 "dynunet": {"filters": [4, 8, 16]},
                 "unetr": {"img_size": [16, 16, 16], "feature_size": 4, "hidden_size": 32, "mlp_dim": 64,
                           "num_heads": 2}},
    "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "loss": "dice", "patience": 5, "seed": 0,
              "num_threads": 1, "patch_size": None, "device": "cpu", "amp": False},
    "pretrain": {"models": ["ratlesnetv2"], "augment": False, "train": {"epochs": 2}},
    "finetune": {"source": "pretrain", "models": ["ratlesnetv2"], "strategies": ["scratch", "partial"],
                 "sample_sizes": [4], "augment": ["noaug"],
                 "partial_freeze_depth": {"ratlesnetv2": 5, "unet": 3, "dynunet": 3, "unetr": 14}, "train": {}},
    "baseline": {"models": ["unet"], "sample_sizes": [4], "augment": ["aug"]},
    "tune": {"model": "ratlesnetv2", "sample_sizes": [4], "n_trials": 2, "timeout_s": None, "lr_min": 0.001,
             "lr_max": 0.05, "tune_augment": False, "pruner": "median", "pruner_startup_trials": 1,
             "pruner_warmup_epochs": 0, "pruner_percentile": 25.0, "pruner_threshold": 0.0, "sampler_seed": 0,
             "storage": "tuning/journal.log", "heartbeat_s": 30, "train": {"epochs": 2}},
    "evaluate": {"n_overlays": 1},
    "report": {"n_boot": 200, "seed": 0},
}


def tiny_params() -> dict:
    """The project's params.yaml with every section the tiny set has replaced (other sections kept)."""
    params = yaml.safe_load((c.ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        if key in params or key in ("report",):
            params[key] = copy.deepcopy(value)
    return params


def make_repo(root: Path) -> dict[str, str]:
    for name in ("dvc.yaml", "MLproject", "conda.yaml", ".gitignore", ".dvcignore"):
        if (c.ROOT / name).exists():
            shutil.copy(c.ROOT / name, root / name)
    for name in ("pipelines", "lesionseg", ".dvc"):
        shutil.copytree(c.ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp",
                                                                                 "config.local"))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {**os.environ, **GIT_ENV, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    for key in ("DVC_EXP_NAME", "DVC_ROOT", "DVC_STAGE"):
        env.pop(key, None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return env


def dvc(args: list[str], root: Path, env: dict[str, str], timeout: int = 900) -> tuple[float, str, int]:
    t = time.perf_counter()
    out = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t, out.stdout + out.stderr, out.returncode


def profile_noop(root: Path, env: dict[str, str], target: list[str]) -> list[str]:
    """cProfile of one no-op `dvc repro` (in-process via ``python -m cProfile``), top by cumulative time."""
    stats = root.parent / "dvc_noop.prof"
    dvc_main = "import sys; from dvc.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([c.PYTHON, "-m", "cProfile", "-o", str(stats), "-c", dvc_main, "repro", *target], cwd=root,
                   env=env, capture_output=True, timeout=300)
    if not stats.exists():
        return ["(profiling failed)"]
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(stats), stream=buf).strip_dirs().sort_stats("cumulative").print_stats(25)
    text = buf.getvalue()
    return ["```", *[ln.rstrip() for ln in text[text.find("   ncalls"):].strip().splitlines()], "```"]


def run(quick: bool) -> tuple[str, list[dict]]:
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_dvc_"))
    root = tmp / "repo"
    root.mkdir()
    notes: list[str] = []
    try:
        env = make_repo(root)
        first_target = ["subsets"] if quick else []
        t_first, out, rc = dvc(["repro", *first_target], root, env)
        n_stages = out.count("Running stage")
        if rc != 0:  # the training stages failed: fall back to the data stages
            tail = " / ".join(out.strip().splitlines()[-3:])[:300]
            notes.append(f"- The full tiny `dvc repro` failed (rc {rc}: {tail}); timing `dvc repro subsets` only.")
            first_target = ["subsets"]
            t_first, out, rc = dvc(["repro", "subsets"], root, env)
            n_stages = out.count("Running stage")
            if rc != 0:
                raise RuntimeError(f"dvc repro subsets failed: {out[-500:]}")
        targets = [first_target] if first_target else [[], ["subsets"]]
        noop: dict[str, list[float]] = {" ".join(t) or "(all)": [] for t in targets}
        noop["status"] = []
        dvc(["repro", *first_target], root, env)  # warm-up (state db, page cache)
        for _ in range(NOOP_RUNS):
            for t in targets:
                secs, out, rc = dvc(["repro", *t], root, env)
                if "Running stage" in out or rc != 0:
                    notes.append(f"- `dvc repro {' '.join(t)}` was not a no-op: {out.strip().splitlines()[-1:]}")
                noop[" ".join(t) or "(all)"].append(secs)
            noop["status"].append(dvc(["status"], root, env)[0])
        t_version = dvc(["--version"], root, env)[0]
        lock_stages = list((yaml.safe_load((root / "dvc.lock").read_text()) or {}).get("stages", {}))
        worst = max(c.med(v) for k, v in noop.items() if k != "status")
        prof = profile_noop(root, env, first_target) if worst >= 5 else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for key, values in noop.items():
        cmd = "dvc status" if key == "status" else f"dvc repro {'' if key == '(all)' else key}".strip()
        what = {"(all)": f"all {len(lock_stages)} stages in dvc.lock",
                "subsets": "synthesize, prepare@target, split@target, subsets",
                "status": "every stage of dvc.yaml"}.get(key, key)
        target = "-" if key == "status" else ("met" if c.med(values) < 5 else "**missed**")
        rows.append([f"`{cmd}`", what, f"**{c.med(values):.2f}**", c.spread(values), target])
    rows.append(["`dvc --version`", "CLI start-up alone", f"{t_version:.2f}", "-", "-"])
    if DEMO_SECONDS.exists():
        demo = f"**{float(DEMO_SECONDS.read_text().split()[0]):.0f} s** (from `benchmarks/demo_repro_seconds.txt`)"
    else:
        demo = "not measured by this script (write the seconds to `benchmarks/demo_repro_seconds.txt`)"
    first_what = "`dvc repro subsets` (data stages)" if first_target else "`dvc repro` (every stage, tiny sizes)"
    lines = [
        "## DVC: `dvc repro` with nothing to do",
        "",
        "`python benchmarks/bench_dvc.py" + (" --quick`" if quick else "`") +
        f" (took {time.perf_counter() - started:.0f} s). A temp git copy of the project (dvc.yaml, pipelines/, "
        "lesionseg/, .dvc/, params.yaml with tests/test_pipeline.py's tiny sizes); `DVC_NO_ANALYTICS=1`.",
        "",
        f"- First {first_what}: {t_first:.0f} s, {n_stages} stages run.",
        f"- Then {NOOP_RUNS} interleaved runs of each command below after one untimed warm-up; median and range "
        "(s). Target for a no-op `dvc repro`: < 5 s.",
        "",
        *c.table(["command", "checks", "s (median)", "range", "target"], rows),
        "",
        *notes,
        f"- Full demo `dvc repro` end to end (params.yaml as committed): {demo}.",
        "",
    ]
    if prof:
        lines += ["cProfile of one no-op `dvc repro` (cumulative):", "", *prof, ""]
    summary = [c.figure("no-op `dvc repro" + ("" if k == "(all)" else f" {k}") + "`",
                        f"{c.med(v):.2f} s" + (f" ({len(lock_stages)} stages)" if k == "(all)" else ""),
                        "< 5 s", c.med(v) < 5, finding="cProfile of one no-op `dvc repro` in the DVC section.")
               for k, v in noop.items() if k != "status"]
    summary.append(c.figure("full demo `dvc repro` end to end", demo.replace("**", "")))
    return "\n".join(lines), summary


def main() -> None:
    args = c.cli(__doc__.splitlines()[0], "dvc")
    text, summary = run(args.quick)
    c.emit(text, args.out, summary)


if __name__ == "__main__":
    main()
