"""The ``lesionseg`` command: parse, then call one library function per subcommand."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from lesionseg.errors import LesionsegError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (a function, so tests can build and use it)."""
    parser = argparse.ArgumentParser(prog="lesionseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic rat or mouse T2w dataset (nnU-Net v2 raw layout)")
    synth.add_argument("--domain", choices=["rat", "mouse"], required=True)
    synth.add_argument("--cases", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--sham-fraction", type=float, default=0.25)
    synth.add_argument("--matrix", type=int, default=None, help="in-plane matrix (default: the domain's paper size)")
    synth.add_argument("--n-slices", type=int, default=None)
    synth.set_defaults(func=_synth)

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
    return parser


def _synth(args: argparse.Namespace) -> None:
    from lesionseg.data.synthetic import synthesize_dataset

    out = synthesize_dataset(args.domain, args.cases, args.seed, args.out, sham_fraction=args.sham_fraction,
                             matrix=args.matrix, n_slices=args.n_slices)
    print(f"wrote {args.cases} {args.domain} cases to {out}")


def _validate(args: argparse.Namespace) -> None:
    from lesionseg.data.dataset import validate_dataset

    cases = validate_dataset(args.dataset)
    n_sham = sum(c.group == "sham" for c in cases)
    print(f"{args.dataset}: OK, {len(cases)} cases ({len(cases) - n_sham} MCAo, {n_sham} sham)")


def _render(args: argparse.Namespace) -> None:
    from lesionseg.visualize import render_dataset_case

    print(f"wrote {render_dataset_case(args.dataset, args.case_id, args.out, n_slices=args.n_slices)}")


def _import_weights(args: argparse.Namespace) -> None:
    from lesionseg.tracking.weights import import_weights

    result = import_weights(args.path, args.arch, {"filters": args.filters} if args.arch == "ratlesnetv2" else {},
                            args.name, args.project)
    print(f"registered {args.path} as {result['registered_model']} v{result['version']} (run {result['run_id']}); "
          f"{result['load_report']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; our errors print as one line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LesionsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
