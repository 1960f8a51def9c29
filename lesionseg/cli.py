"""The ``lesionseg`` command: parse, then call one library function per subcommand."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from lesionseg.errors import ConfigError, bug_report, user_error_line

MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
EXIT_BUG = 70  # sysexits EX_SOFTWARE: an exception that is not a user's error


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (argparse prints the whole usage first); its subcommands'
    parsers are of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (a function, so tests can build and use it)."""
    parser = OneLineParser(prog="lesionseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic rat or mouse T2w dataset (nnU-Net v2 raw layout)")
    synth.add_argument("--domain", choices=["rat", "mouse"], required=True)
    synth.add_argument("--cases", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--sham-fraction", type=float, default=0.25)
    synth.add_argument("--matrix", type=int, default=None, help="in-plane matrix (default: the domain's paper size)")
    synth.add_argument("--n-slices", type=int, default=None)
    synth.add_argument("--case-prefix", default=None, help="case (subject) ids PREFIX_000...; default: the domain")
    synth.add_argument("--format", choices=["nifti", "bruker"], default="nifti",
                       help="nifti: the nnU-Net raw layout; bruker: one ParaVision study per animal, masks in labels/")
    synth.set_defaults(func=_synth)

    bruker = sub.add_parser("import-bruker", help="convert ParaVision studies (folders or .zip) to the nnU-Net raw "
                                                  "layout in subject RAS (brkraw)")
    bruker.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="a study, a folder of studies, or a .zip")
    bruker.add_argument("--out", type=Path, required=True)
    bruker.add_argument("--protocol", default="T2", help="regular expression for the T2w scan's protocol name")
    bruker.add_argument("--scan", type=int, default=None, help="scan id (E number) instead of --protocol")
    bruker.add_argument("--labels", type=Path, default=None,
                        help="masks CASE.nii.gz or CASE.seg.nrrd (ITK-SNAP, 3D Slicer), optional cases.csv of groups")
    bruker.add_argument("--subject-type", default=None, help="override the recorded subject type, e.g. Quadruped")
    bruker.add_argument("--subject-pose", default=None, help="override the recorded position, e.g. Head_Prone")
    bruker.set_defaults(func=_import_bruker)

    validate = sub.add_parser("validate", help="check a dataset in the nnU-Net v2 raw layout; writes nothing")
    validate.add_argument("dataset", type=Path)
    validate.set_defaults(func=_validate)

    render = sub.add_parser("render", help="draw slices of one case with its lesion outline to a PNG")
    render.add_argument("dataset", type=Path)
    render.add_argument("case_id")
    render.add_argument("-o", "--out", type=Path, required=True)
    render.add_argument("--n-slices", type=int, default=4)
    render.set_defaults(func=_render)

    weights = sub.add_parser("import-weights", help="register published weights (e.g. the authors' RatLesNetV2)")
    weights.add_argument("path", type=Path)
    weights.add_argument("--arch", default="ratlesnetv2")
    weights.add_argument("--name", default="ratlesnetv2-rat", help="registered model name")
    weights.add_argument("--filters", type=int, default=32)
    weights.add_argument("--project", type=Path, default=Path.cwd(), help="project root (for the MLflow store)")
    weights.set_defaults(func=_import_weights)

    tune = sub.add_parser("tune", help="Optuna study of freeze_depth and lr at one sample size")
    tune.add_argument("--sample-size", type=int, required=True)
    tune.add_argument("--repeat", type=int, default=0)
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    tune.add_argument("--storage", default=None, help="Optuna storage (journal path or postgresql+psycopg2://...)")
    tune.add_argument("--join", action="store_true",
                      help="only run trials of an existing study (e.g. from another machine); no final retrain")
    tune.add_argument("--project", type=Path, default=Path.cwd(), help="project root with params.yaml")
    tune.set_defaults(func=_tune)

    predict = sub.add_parser("predict", help="segment NIfTI scans with a trained model")
    predict.add_argument("inputs", nargs="+", type=Path)
    predict.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or model.pt")
    predict.add_argument("-o", "--out", type=Path, required=True)
    predict.add_argument("--project", type=Path, default=Path.cwd(), help="project root (for the MLflow store)")
    predict.set_defaults(func=_predict)

    evaluate = sub.add_parser("evaluate", help="score a folder of segmentations against a folder of labels "
                                                "(any tool's CASE.nii.gz on each scan's grid), as nnU-Net does")
    evaluate.add_argument("--pred", type=Path, required=True, help="folder of predicted masks CASE.nii.gz")
    evaluate.add_argument("--ref", type=Path, required=True,
                          help="folder of manual labels CASE.nii.gz, or an nnU-Net raw dataset (its labelsTr/)")
    evaluate.add_argument("-o", "--out", type=Path, required=True, help="where per_case.csv and summary.json go")
    evaluate.set_defaults(func=_evaluate)

    promote = sub.add_parser("promote", help="compare a candidate with @champion on new animals; maybe promote")
    promote.add_argument("--model", default="lesionseg-mouse")
    promote.add_argument("--candidate", default="@challenger", help="@ALIAS or a version number")
    promote.add_argument("--dry-run", action="store_true", help="show the decision, move nothing")
    promote.add_argument("--data", type=Path, default=None,
                         help="acceptance dataset (nnU-Net raw layout; default data/raw/<promote.acceptance>)")
    promote.add_argument("--project", type=Path, default=Path.cwd(), help="project root with params.yaml")
    promote.set_defaults(func=_promote)

    reproduce = sub.add_parser("reproduce", help="the commands that rebuild a registered model version")
    reproduce.add_argument("model_uri", help="models:/NAME/VERSION")
    reproduce.add_argument("--run", action="store_true", help="execute them in a fresh git worktree")
    reproduce.add_argument("--project", type=Path, default=Path.cwd())
    reproduce.set_defaults(func=_reproduce)

    study = sub.add_parser("study", help="the study as a whole").add_subparsers(dest="study_command", required=True)
    run = study.add_parser("run", help="run the pipeline's stale DVC stages in parallel on Dask")
    run.add_argument("--workers", type=int, default=None, help="local worker processes (default: cores / threads)")
    run.add_argument("--scheduler", default=None, help="join an existing Dask cluster, e.g. tcp://HOST:8786")
    run.add_argument("--project", type=Path, default=Path.cwd())
    run.set_defaults(func=_study_run)
    full = study.add_parser("full-overrides", help="print the `dvc exp run -S ...` command of params-full.yaml "
                                                   "(the paper-scale study)")
    full.add_argument("--name", default="full-study", help="the DVC experiment's name")
    full.add_argument("--project", type=Path, default=Path.cwd())
    full.set_defaults(func=_study_full_overrides)

    ui = sub.add_parser("ui", help="start the MLflow UI on the project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--project", type=Path, default=Path.cwd())
    ui.set_defaults(func=_ui)
    return parser


def _predict(args: argparse.Namespace) -> None:
    from lesionseg.inference import predict_files
    from lesionseg.tracking import store
    from lesionseg.tracking.pyfunc import load_segmenter

    if not Path(args.model).is_file():
        if not args.model.startswith(MODEL_URI_SCHEMES):  # checked before the store is opened (or created)
            raise ConfigError(f"--model {args.model}: no such file, nor a {'/'.join(MODEL_URI_SCHEMES)} URI; "
                              "give a model.pt path or e.g. models:/lesionseg-mouse@champion")
        store.connect(args.project)
    table = predict_files(load_segmenter(args.model), args.inputs, args.out)
    print(table[["input", "lesion_volume_mm3"]].to_string(index=False))
    print(f"wrote {len(table)} masks and volumes.csv to {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from lesionseg.evaluation.evaluate import evaluate_folder

    table, summary = evaluate_folder(args.pred, args.ref, per_case_csv=args.out / "per_case.csv",
                                     summary_json=args.out / "summary.json")
    n_lesion = int((table["group"] == "MCAo").sum())
    print(f"{len(table)} cases ({n_lesion} with a lesion): dice_lesion {summary['dice_lesion']:.4f}, "
          f"sham_fp_rate {summary['sham_fp_rate']:.2f}; wrote {args.out / 'per_case.csv'} and summary.json")


def _promote(args: argparse.Namespace) -> None:
    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.tracking import store
    from lesionseg.tracking.promotion import format_decision, promote, require_registered

    layout = Layout.at(args.project)
    rule = load_config(layout.params_file).promote
    store.connect(layout.root)
    require_registered(args.model)
    decision, table = promote(args.model, args.candidate, rule, args.data or layout.raw(rule.acceptance),
                              log_path=layout.promotions_log, dry_run=args.dry_run)
    print(format_decision(decision, table))
    if args.dry_run:
        print("(dry run: nothing was changed)")


def _reproduce(args: argparse.Namespace) -> None:
    from lesionseg.tracking import store
    from lesionseg.tracking.reproduce import reproduce_plan, run_plan

    if not args.model_uri.startswith("models:/"):  # checked before the store is opened (or created)
        raise ConfigError(f"{args.model_uri}: expected models:/NAME/VERSION, e.g. models:/lesionseg-mouse/3")
    store.connect(args.project)
    plan = reproduce_plan(args.model_uri, args.project.resolve())
    print(plan.render())
    if args.run:
        run_plan(plan, args.project.resolve())


def _study_run(args: argparse.Namespace) -> None:
    from lesionseg.cluster import run_study

    run_study(args.project, workers=args.workers, scheduler=args.scheduler).raise_for_failures()


def _study_full_overrides(args: argparse.Namespace) -> None:
    from lesionseg.config import full_study_command

    print(full_study_command(args.project, args.name))


def _ui(args: argparse.Namespace) -> None:
    import os

    from lesionseg.tracking import store

    uri, base = store.default_tracking_uri(args.project), f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {base} (pick 'Model training' at the top left once; the browser remembers it)")
    store.connect(args.project)
    for name, url in store.experiment_urls(base).items():
        print(f"  {name}: {url}")
    os.execvp("mlflow", ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])


def _tune(args: argparse.Namespace) -> None:
    import dataclasses

    from lesionseg.config import load_config
    from lesionseg.layout import Layout
    from lesionseg.tracking.registry import TARGET_MODEL
    from lesionseg.tracking.context import RunContext
    from lesionseg.training.spec import tune_base_spec
    from lesionseg.tuning import open_study, run_trials, tune_and_retrain

    layout = Layout.at(args.project)
    cfg = load_config(layout.params_file)
    tune = dataclasses.replace(cfg.tune, storage=args.storage or cfg.tune.storage)
    base = tune_base_spec(tune.model, args.sample_size, network=cfg.finetune.network(tune.model, cfg.networks.of(tune.model)),
                          train=cfg.train_for("tune"), finetune=cfg.finetune, target=cfg.data.role("target"),
                          layout=layout, repeat=args.repeat)
    context = RunContext(layout)
    if args.join:
        run_trials(open_study(base, tune, context), base, tune, context)
        return
    outcome = tune_and_retrain(base, tune, cfg.train_for("finetune"), context, workers=args.workers,
                               register_as=TARGET_MODEL)
    print(f"best {outcome['best_params']} val Dice {outcome['best_value']:.3f}; trials {outcome['trials']}")
    from lesionseg.tuning import display_storage

    print(f"study {outcome['study']}: browse its trials with `optuna-dashboard {display_storage(tune.storage)}` "
          "(pip install 'lesionseg[dashboard]')")


def _synth(args: argparse.Namespace) -> None:
    from lesionseg.data.paravision import synthesize_studies
    from lesionseg.data.synthetic import synthesize_dataset

    write = synthesize_studies if args.format == "bruker" else synthesize_dataset
    prefix = {"case_prefix": args.case_prefix} if args.case_prefix else {}
    out = write(args.domain, args.cases, args.seed, args.out, sham_fraction=args.sham_fraction,
                matrix=args.matrix, n_slices=args.n_slices, **prefix)
    kind = " as ParaVision studies" if args.format == "bruker" else ""
    print(f"wrote {args.cases} {args.domain} cases to {out}{kind}")


def _import_bruker(args: argparse.Namespace) -> None:
    from lesionseg.data.bruker import import_bruker

    out = import_bruker(args.sources, args.out, protocol=args.protocol, scan_id=args.scan, labels_dir=args.labels,
                        subject_type=args.subject_type, subject_pose=args.subject_pose)
    print(f"wrote {out} from {len(args.sources)} source(s)")


def _validate(args: argparse.Namespace) -> None:
    from lesionseg.data.dataset import validate_dataset

    cases = validate_dataset(args.dataset)
    n_sham = sum(c.group == "sham" for c in cases)
    print(f"{args.dataset}: OK, {len(cases)} cases ({len(cases) - n_sham} MCAo, {n_sham} sham)")


def _render(args: argparse.Namespace) -> None:
    from lesionseg.evaluation.overlays import render_dataset_case

    print(f"wrote {render_dataset_case(args.dataset, args.case_id, args.out, n_slices=args.n_slices)}")


def _import_weights(args: argparse.Namespace) -> None:
    from lesionseg.tracking.import_weights import import_weights

    result = import_weights(args.path, args.arch, {"filters": args.filters} if args.arch == "ratlesnetv2" else {},
                            args.name, args.project)
    print(f"registered {args.path} as {result['registered_model']} v{result['version']} (run {result['run_id']}); "
          f"{result['load_report']}")


# MLflow 3.17 prints an ANSI-coloured "Add type hints to the `predict` method to enable data validation ..."
# UserWarning when lesionseg's pyfunc class is defined, i.e. in every command that loads a model (predict,
# promote, reproduce...). Our pyfunc validates its input itself (tracking/pyfunc.py: a bad request is one line),
# so a user can do nothing about it. MLflow emits it inside its own `catch_warnings()` + `simplefilter("once")`,
# which overrides any `warnings.filterwarnings` made here; so the display hook drops exactly that message, from
# MLflow's files, and shows every other warning as before.
MLFLOW_TYPE_HINT_WARNING = "Add type hints to the `predict` method to enable data validation"


def _hide_mlflow_type_hint_warning() -> None:
    """Stop showing MLflow's type-hint warning (only that one) in this process; idempotent."""
    import warnings

    show = warnings.showwarning
    if getattr(show, "hides_mlflow_type_hint_warning", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if (issubclass(category, UserWarning) and MLFLOW_TYPE_HINT_WARNING in str(message)
                and "mlflow" in Path(filename).parts):
            return
        show(message, category, filename, lineno, file, line)

    showwarning.hides_mlflow_type_hint_warning = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: our errors print as one line and exit 1; anything else is a bug and
    keeps its traceback, followed by a line that says so (exit 70, sysexits' EX_SOFTWARE)."""
    _hide_mlflow_type_hint_warning()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as err:  # ours, a bad argument, or a 401/403 from an authenticated MLflow server: one line
        from lesionseg.tracking.refusals import permission_error

        line = user_error_line(err) or permission_error(err)
        if line is None:
            print(bug_report(err), file=sys.stderr)
            return EXIT_BUG
        print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
