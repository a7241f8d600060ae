"""The Gradescope autograder zip (``python -m autograder gradescope``): does its
``run_autograder``, run in a folder laid out as Gradescope's ``/autograder``, grade a
submission exactly as ``grade`` does and always leave a valid ``results.json``?

The toy course (tests/fixtures/toy) stands in for a lab. Expected scores come from ``grade``
run on the same notebook (the oracle) or from the source's points, never typed in.
``setup.sh`` (it installs PyTorch from the network) is only checked for syntax here; the
tests run ``run_autograder`` with this test's Python (``GRADESCOPE_PYTHON``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from test_export import check_gradescope_schema
from toy import TOY_ROOT, answered, read_csv, with_solution

from autograder import cli
from autograder.course import Course
from autograder.grade import Settings, grade_batch
from autograder.gradescope import CONFIG, EXECUTABLE, LIMITS, build, lay_out, local_command
from autograder.notebooks import AUTOGRADED_KINDS

pytestmark = pytest.mark.timeout(300)
TOY = Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "gradescope-toy.zip"
    build(TOY, "toy", path, limits=LIMITS)
    return path


def run_in(folder: Path, python: str = sys.executable) -> dict:
    """Run ``run_autograder`` in a laid-out ``folder``; return its results.json."""
    command, env = local_command(folder, python)
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=240)
    results = folder / "results" / "results.json"
    assert results.is_file(), done.stdout + done.stderr
    return json.loads(results.read_text())


def run_autograder(
    bundle: Path, folder: Path, submitted: dict[str, bytes], python: str = sys.executable
) -> dict:
    lay_out(bundle, folder, submitted)
    return run_in(folder, python)


def notebook_bytes(notebook) -> bytes:
    return nbformat.writes(notebook).encode()


def test_a_correct_notebook_gets_every_autograded_point(bundle, tmp_path):
    """Does a correct toy notebook score every autograded point, one test per autograded cell,
    with the written answer left to Gradescope's manual grading and named in the output?"""
    value = run_autograder(bundle, tmp_path, {"toy.ipynb": notebook_bytes(answered())})
    lab = TOY.load("toy")
    graded = [cell for cell in lab.questions if cell.kind in AUTOGRADED_KINDS]
    written = [cell for cell in lab.questions if cell not in graded]
    assert graded and written
    check_gradescope_schema(value)
    assert {t["name"]: t["max_score"] for t in value["tests"]} == {
        cell.grade_id: cell.points for cell in graded
    }
    assert all(t["score"] == t["max_score"] for t in value["tests"])
    assert value["score"] == sum(cell.points for cell in graded)
    assert "Graded toy.ipynb" in value["output"]
    assert all(cell.grade_id in value["output"] for cell in written)
    assert "BEGIN HIDDEN" not in json.dumps(value)


def test_it_grades_as_grade_does(bundle, tmp_path):
    """Are the tests' scores and messages those ``grade`` gives the same notebook (one that
    passes the visible check and fails a hidden test)?"""
    wrong = with_solution(
        answered(), "toy_double_solution", "def double(x):\n    return 2 * abs(x)"
    )
    value = run_autograder(bundle, tmp_path / "gs", {"toy.ipynb": notebook_bytes(wrong)})
    folder = tmp_path / "plain"
    folder.mkdir()
    nbformat.write(wrong, folder / "student.ipynb")
    settings = Settings(course=TOY, lab="toy", limits=LIMITS)
    grade_batch([folder], tmp_path / "out", settings, progress=False, log=lambda *_: None)
    rows = [r for r in read_csv(tmp_path / "out" / "grades.csv") if r["status"] != "manual"]
    assert {t["name"]: t["score"] for t in value["tests"]} == {
        r["question"]: float(r["score"]) for r in rows
    }
    assert any(float(r["score"]) < float(r["max_score"]) for r in rows)
    assert value["score"] == sum(float(r["score"]) for r in rows)


def test_no_notebook_scores_0_and_says_what_to_upload(bundle, tmp_path):
    value = run_autograder(bundle, tmp_path, {"notes.txt": b"hello"})
    assert value["score"] == 0 and value["tests"] == []
    assert "No notebook" in value["output"] and "toy.ipynb" in value["output"]


def test_of_several_notebooks_the_one_named_like_the_lab_is_graded(bundle, tmp_path):
    """Is toy.ipynb graded, and the other notebook named as not graded?"""
    blank = nbformat.v4.new_notebook()
    submitted = {"toy.ipynb": notebook_bytes(answered()), "scratch.ipynb": notebook_bytes(blank)}
    value = run_autograder(bundle, tmp_path, submitted)
    assert value["score"] == sum(t["max_score"] for t in value["tests"]) > 0
    assert "Graded toy.ipynb; not graded: scratch.ipynb" in value["output"]


def test_a_symbolic_link_to_the_solutions_is_not_followed(bundle, tmp_path):
    """A submission that is a link to the lab's source (solutions and hidden tests, which
    the grader could read): unreadable, 0 points, rather than the solutions' marks?"""
    lay_out(bundle, tmp_path, {})
    source = tmp_path / "source" / "course" / "autograder" / "source" / "toy" / "toy.ipynb"
    (tmp_path / "submission" / "toy.ipynb").symlink_to(source)
    value = run_in(tmp_path)
    assert value["score"] == 0 and value["tests"]
    assert all("symbolic link" in test["output"] for test in value["tests"])


def test_several_notebooks_none_named_like_the_lab_score_0_with_their_names(bundle, tmp_path):
    submitted = {"a.ipynb": notebook_bytes(answered()), "b.ipynb": notebook_bytes(answered())}
    value = run_autograder(bundle, tmp_path, submitted)
    assert value["score"] == 0 and value["tests"] == []
    assert "a.ipynb, b.ipynb" in value["output"] and "upload only toy.ipynb" in value["output"]


@pytest.mark.parametrize("status", [137, 3])
def test_a_grader_that_dies_still_leaves_a_results_json(bundle, tmp_path, status):
    """When the grading process dies without writing results.json (137: the OOM killer), does
    run_autograder write a valid one (score 0) that says why?"""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexit {status}\n")
    python.chmod(0o755)
    value = run_autograder(bundle, tmp_path / "root", {"toy.ipynb": b"{}"}, str(python))
    assert value["score"] == 0 and value["tests"] == []
    assert f"exit status {status}" in value["output"]
    assert ("memory" in value["output"]) == (status == 137)


def test_a_grader_error_is_a_result_that_says_so(bundle, tmp_path):
    """A bundle whose lab is missing from its course: does the student get a results.json that
    says the grader failed, not their notebook?"""
    lay_out(bundle, tmp_path, {"toy.ipynb": notebook_bytes(answered())})
    config = tmp_path / "source" / CONFIG
    config.write_text(json.dumps({**json.loads(config.read_text()), "lab": "gone"}))
    value = run_in(tmp_path)
    assert value["score"] == 0 and value["tests"] == []
    assert "error in the grader, not in your notebook" in value["output"]


def test_the_zip_holds_one_lab_runnable_scripts_and_is_reproducible(tmp_path):
    """For a real lab: setup.sh and run_autograder executable and valid bash, only this lab's
    source, the course's helpers and settings; the same zip byte for byte when built again."""
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    assert cli.main(["gradescope", "--lab", "lab1_pruning", "--out", str(first)]) == 0
    assert cli.main(["gradescope", "--lab", "lab1_pruning", "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        archive.extractall(tmp_path / "x")
    assert "course/autograder/source/lab1_pruning/lab1_pruning.ipynb" in names
    assert not [n for n in names if "lab3_quant_prune" in n]
    assert "course/helpers/pruning.py" in names and "course/pyproject.toml" in names
    for script in EXECUTABLE:
        assert modes[script] & 0o111
        subprocess.run(["bash", "-n", str(tmp_path / "x" / script)], check=True)
    config = json.loads((tmp_path / "x" / CONFIG).read_text())
    assert config["lab"] == "lab1_pruning" and config["student_files"] == ["helpers"]
    # PyTorch pinned to what is installed here (what `make release` checked), not the newest
    setup = (tmp_path / "x" / "setup.sh").read_text()
    assert "@TORCH_PINS@" not in setup and "@COURSE_PINS@" not in setup
    for name in ("torch", "torchvision", "torchao"):
        version = metadata.version(name).split("+")[0]
        assert re.search(rf"\b{name}=={re.escape(version)}(\s|$)", setup), name
    assert config["limits"]["notebook_timeout"] == LIMITS.notebook_timeout


def test_wrong_usage_exits_2_and_keeps_what_is_there(tmp_path, capsys):
    out = tmp_path / "taken.zip"
    out.write_bytes(b"mine")
    assert cli.main(["gradescope", "--lab", "lab1_pruning", "--out", str(out)]) == 2
    assert out.read_bytes() == b"mine" and "exists" in capsys.readouterr().err
    assert cli.main(["gradescope", "--lab", "nope", "--out", str(tmp_path / "n.zip")]) == 2
    assert not (tmp_path / "n.zip").exists()


def test_try_prints_what_each_student_would_get(tmp_path, capsys):
    """``gradescope --try`` on a correct and a wrong notebook: is each one's score and every
    test's score the one run_autograder writes for it in a laid-out folder?"""
    right, wrong = tmp_path / "right.ipynb", tmp_path / "wrong.ipynb"
    nbformat.write(answered(), right)
    nbformat.write(
        with_solution(answered(), "toy_double_solution", "def double(x):\n    return 2 * abs(x)"),
        wrong,
    )
    out = tmp_path / "toy.zip"
    args = ["gradescope", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(out)]
    assert cli.main([*args, "--try", str(right), "--try", str(wrong)]) == 0
    printed = capsys.readouterr().out
    for path in (right, wrong):
        value = run_autograder(out, tmp_path / path.stem, {path.name: path.read_bytes()})
        points = sum(test["max_score"] for test in value["tests"])
        assert f"{path}: score {value['score']:g} / {points:g}, test by test:" in printed
        for test in value["tests"]:
            assert f"  {test['name']}: {test['score']:g} / {test['max_score']:g}" in printed
    assert f"{right}: score {points:g} / {points:g}" in printed
    assert f"{wrong}: score {points:g} /" not in printed


def test_try_with_a_missing_notebook_exits_2_before_writing(tmp_path, capsys):
    out = tmp_path / "toy.zip"
    args = ["gradescope", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(out)]
    assert cli.main([*args, "--try", str(tmp_path / "nope.ipynb")]) == 2
    assert not out.exists() and "no such file" in capsys.readouterr().err
