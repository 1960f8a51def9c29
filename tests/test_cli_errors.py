"""One error policy: a bad argument to any subcommand ends in one line on stderr, a non-zero exit, no traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lesionseg.networks.registry import build_network

README = Path(__file__).resolve().parents[1] / "README.md"


def _bad_nifti(tmp: Path) -> Path:
    (tmp / "bad").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (tmp / "bad" / sub).mkdir()
    (tmp / "bad" / "imagesTr" / "m_000_0000.nii.gz").write_bytes(b"\x1f\x8b truncated")
    (tmp / "bad" / "labelsTr" / "m_000.nii.gz").write_bytes(b"\x1f\x8b truncated")
    return tmp / "bad"


# (subcommand arguments, what the one line must say); {tmp} is a fresh empty folder
BAD_ARGUMENTS = [
    ("synth --domain cat --cases 2 --out {tmp}/o", "invalid choice: 'cat'"),            # unknown choice
    ("synth --domain rat --cases x --out {tmp}/o", "invalid int value: 'x'"),           # wrong type
    ("synth --domain rat --cases 2 --out {tmp}/o --matrix 8", "matrix: 8 is not"),      # out of range
    ("synth --domain rat --cases 2 --out {tmp}/o --sham-fraction 2", "sham_fraction"),  # out of range
    ("synth --domain rat --out {tmp}/o", "required: --cases"),                          # missing argument
    ("render {tmp}/missing c0 -o {tmp}/x.png", "file not found"),                      # missing path
    ("import-weights {tmp}/missing.pt", "no such weights file"),                       # missing path
    ("import-weights {bad} --arch resnet --project {tmp}", "network='resnet' is not one of"),  # unknown network
    ("tune --sample-size 8 --project {tmp}", "params.yaml: not found"),                # not a project
    ("promote --project {tmp}", "params.yaml: not found"),                             # not a project
    ("predict {bad} --model {tmp}/missing.pt -o {tmp}/out --project {tmp}", "no such file, nor a"),  # bad model
    ("reproduce not-a-uri --project {tmp}", "expected models:/NAME/VERSION"),          # bad URI
    ("evaluate --pred {tmp}/none --ref {tmp} -o {tmp}/o", "none: folder not found"),   # missing path
    ("study run --project {tmp}", "DVC cannot read the pipeline"),                      # not a DVC repo
    ("ui --port x", "invalid int value: 'x'"),                                          # wrong type
    ("nosuchcommand", "invalid choice: 'nosuchcommand'"),                               # unknown subcommand
]


@pytest.mark.parametrize("arguments, says", BAD_ARGUMENTS, ids=[a.split()[0] + "-" + s[:24] for a, s in BAD_ARGUMENTS])
def test_bad_argument_is_one_line_without_traceback(tmp_path, arguments, says):
    bad = _bad_nifti(tmp_path)
    (tmp_path / "project").mkdir()
    argv = arguments.format(tmp=tmp_path / "project", bad=bad / "imagesTr" / "m_000_0000.nii.gz").split()
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    done = subprocess.run([sys.executable, "-m", "lesionseg.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path / "project", env=env, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    assert not list((tmp_path / "project").glob("o*")), "a failed command left output behind"


def test_validate_lists_each_problem_on_its_own_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lesionseg.cli", "validate", str(_bad_nifti(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    first, *problems = done.stderr.splitlines()
    assert first.startswith("error: ") and f"({len(problems)} problems)" in first
    assert sum("cannot read NIfTI" in p for p in problems) == 2


def _readme_message(row_name: str) -> str:
    match = re.search(rf"^\| {re.escape(row_name)} \| `(.+)` \|$", README.read_text(), re.MULTILINE)
    assert match, f"README's bad-input table has no row {row_name!r}"
    return match.group(1)


def test_readme_quotes_the_message_the_code_prints():
    with pytest.raises(ValueError) as err:
        build_network("resnet")
    assert str(err.value) == _readme_message("unknown model name")


# --- a bug is not bad input: it keeps its traceback and says so ----------------------------------------------

PROGRAMMING_ERROR = """
import sys
import lesionseg.cli as cli
cli._validate = lambda args: cli.ConfigError.__init__(None + 1)   # a bug in a subcommand: None + 1
sys.exit(cli.main(["validate", "anything"]))
"""


def test_a_programming_error_keeps_its_traceback_and_asks_for_a_report(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROGRAMMING_ERROR], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(README.parent)})
    assert done.returncode == 70, done.stderr
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "TypeError: this is a bug in lesionseg, not a problem with your input: please report it with the "
        "traceback above")
    assert "error: " not in done.stderr


def test_only_our_errors_and_argument_checks_are_one_line():
    """LesionsegError and a `raise ValueError/TypeError` in lesionseg (an argument check) are the user's; the same
    types raised by the interpreter inside lesionseg's code (a wrong keyword, None + 1) are bugs."""
    import lesionseg
    from lesionseg.errors import ConfigError, user_error_line

    def raised(code: str) -> BaseException:
        inside = str(Path(lesionseg.__file__).parent / "not_a_module.py")  # a frame in the package's folder
        try:
            exec(compile(code, inside, "exec"), {})
        except Exception as err:  # noqa: BLE001 - the test wants any
            return err
        raise AssertionError("no exception")

    assert user_error_line(ConfigError("params.yaml: x is wrong; fix it")) == "params.yaml: x is wrong; fix it"
    with pytest.raises(ValueError) as check:
        build_network("resnet")
    assert user_error_line(check.value).startswith("network='resnet' is not one of")
    assert user_error_line(raised("None + 1")) is None
    assert user_error_line(raised("def f(a): pass\nf(b=1)")) is None
    assert user_error_line(raised("int('x')")) is None
    assert user_error_line(KeyError("k")) is None


def test_a_stage_with_a_bug_exits_with_the_traceback_and_the_bug_line(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(README.parent / "pipelines"))
    from _stage import run

    with pytest.raises(SystemExit) as done:
        run(lambda: [].pop())
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "IndexError: pop from empty list" in err
    assert str(done.value.code).startswith("IndexError: this is a bug in lesionseg")
