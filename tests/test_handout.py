"""The student handout (``python -m autograder handout``): what students get works, and holds
no solution or hidden test.

The toy course (tests/fixtures/toy) is small enough to check by hand: its solutions and hidden
tests are the literal strings below. The real labs are checked against their sources' solution
and hidden-test regions, read here with nbformat, line by line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from toy import TOY_ROOT, answered

from autograder import cli
from autograder.course import COURSE_ROOT, REPO_ROOT, Course
from autograder.execute import Limits
from autograder.gradescope import LIMITS as gradescope_limits
from autograder.handout import HandoutError, _regions, build
from autograder.notebooks import (
    HIDDEN_BEGIN,
    HIDDEN_END,
    PROTECTED_KINDS,
    SOLUTION_BEGIN,
    SOLUTION_END,
    LabError,
    hidden_lines,
    marked_regions,
    restore,
)
from autograder.release import generate

pytestmark = pytest.mark.timeout(300)

# The toy's solutions and hidden tests, as its source notebook has them.
TOY_SECRETS = (
    "return SCALE * x",
    "return x * x",
    "double(-3)",
    "square(-4)",
    "square(0.5)",
    "same sign is positive",
)


def toy_course(release_dir: Path, extra: tuple[Path, ...] = ()) -> Course:
    """The toy course, its committed release in ``release_dir``."""
    (release_dir / "toy.ipynb").write_text(generate(Course(root=TOY_ROOT), "toy"))
    return Course(root=TOY_ROOT, release_dir=release_dir, student_files=extra)


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def python_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` run in ``folder`` (so its own ``autograder`` package is imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def lab_handout(tmp_path_factory) -> Path:
    """The real course's handout."""
    out = tmp_path_factory.mktemp("handout") / "lab"
    build(Course(), out)
    return out


def readable_text(name: str, data: bytes) -> str:
    """A file as a person reads it: a notebook's cell sources, else its text."""
    if name.endswith(".ipynb"):
        return "\n".join(c.source for c in nbformat.reads(data.decode(), 4).cells)
    return data.decode()


def solution_and_hidden_lines(lab: str) -> set[str]:
    """Lines of the source's solution and hidden-test regions that the release does not show
    (40 characters or more, so that a line is this lab's, not any program's)."""
    release = readable_text(".ipynb", (REPO_ROOT / f"{lab}.ipynb").read_bytes())
    secret = set()
    for cell in nbformat.read(COURSE_ROOT / "source" / lab / f"{lab}.ipynb", 4).cells:
        inside = False
        for line in cell.source.splitlines():
            if "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= 40 and line.strip() not in release:
                secret.add(line.strip())
            elif "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                inside = True
    return secret


def test_the_labs_handout_holds_what_students_need_and_no_solution(lab_handout):
    files = files_under(lab_handout)
    labs = Course().labs()
    assert labs == ["lab1_pruning", "lab3_quant_prune"]
    for lab in labs:
        committed = (REPO_ROOT / f"{lab}.ipynb").read_bytes()
        assert files[f"{lab}.ipynb"] == committed
        assert files[f"autograder/released/{lab}.ipynb"] == committed
    for helper in (REPO_ROOT / "helpers").glob("*.py"):
        assert files[f"helpers/{helper.name}"] == helper.read_bytes()
    for needed in ("pyproject.toml", "environment.yml", "Makefile", "data/README.md"):
        assert files[needed] == (REPO_ROOT / needed).read_bytes()
    readme = (COURSE_ROOT / "handout_readme.md").read_text()
    assert "/content/HANDOUT_NAME.zip" in readme  # the Colab cell's paths name the zip
    assert files["README.md"].decode() == readme.replace("HANDOUT_NAME", "lab")
    assert {"autograder/validate.py", "autograder/__main__.py"} <= set(files)
    top = {name.split("/")[0] for name in files}
    assert not top & {"tests", "benchmarks", "docs", "runs", ".ci", "gpu_kit"}
    assert not any(name.startswith("autograder/source") or "__pycache__" in name for name in files)
    # no line of a solution or hidden test, anywhere
    for lab in labs:
        secret = solution_and_hidden_lines(lab)
        assert len(secret) > 50  # the oracle sees the solutions
        for name, data in files.items():
            text = readable_text(name, data)
            if name.endswith(".ipynb"):
                assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN" not in text, name
            shown = [line for line in secret if line in text]
            assert not shown, f"{name} shows {lab}'s {shown[:3]}"
    # the zip holds the same files, under one folder named like the handout
    with zipfile.ZipFile(f"{lab_handout}.zip") as archive:
        zipped = {i.filename: archive.read(i) for i in archive.infolist()}
    assert zipped == {f"lab/{name}": data for name, data in files.items()}


def test_a_handout_checks_against_the_release_as_the_sources_would(tmp_path):
    """In a handout (no sources) ``validate`` reads the released copy: the same questions,
    points and restored cells as the source, and the same changes found in a notebook."""
    instructors, handout = Course(), Course(root=tmp_path)
    (tmp_path / "released").mkdir()
    for lab in instructors.labs():
        shutil.copy(REPO_ROOT / f"{lab}.ipynb", tmp_path / "released")
    assert handout.labs() == [] and handout.checkable_labs() == instructors.labs()
    for lab in instructors.labs():
        source, released = instructors.spec(lab), handout.spec(lab)
        assert released.path == tmp_path / "released" / f"{lab}.ipynb"
        assert [(c.grade_id, c.kind, c.points) for c in released.questions] == [
            (c.grade_id, c.kind, c.points) for c in source.questions
        ]
        assert [c.release_source for c in released.cells if c.kind in PROTECTED_KINDS] == [
            c.release_source for c in source.cells if c.kind in PROTECTED_KINDS
        ]
        notebook = nbformat.read(REPO_ROOT / f"{lab}.ipynb", 4)
        assert restore(notebook, released).changes == restore(notebook, source).changes == {}
        test = next(c for c in source.cells if c.kind == "test")
        notebook.cells[test.index].source += "\nassert True  # edited"
        assert set(restore(notebook, released).changes) == {test.grade_id}
        assert set(restore(notebook, source).changes) == {test.grade_id}
        with pytest.raises(LabError, match="student handout"):
            handout.load(lab)


def test_students_validate_in_the_handout_and_cannot_grade_there(tmp_path):
    (tmp_path / "release").mkdir()
    out = tmp_path / "toy-handout"
    build(toy_course(tmp_path / "release"), out)
    for name, data in files_under(out).items():
        text = data.decode()
        assert not [s for s in TOY_SECRETS if s in text], name
    imported = python_in(out, "-c", "import autograder; print(autograder.__file__)")
    assert imported.stdout.strip() == str(out / "autograder" / "__init__.py")

    blank = python_in(out, "-m", "autograder", "validate", "toy.ipynb", "--timeout", "20")
    assert blank.returncode == 1, blank.stderr
    assert "FAIL     toy_double" in blank.stdout and "NotImplementedError" in blank.stdout
    nbformat.write(answered(), out / "mine.ipynb")  # the solutions: passes the visible checks
    good = python_in(out, "-m", "autograder", "validate", "mine.ipynb", "--timeout", "20")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS     toy_double" in good.stdout and "PASS     toy_square" in good.stdout

    graded = python_in(out, "-m", "autograder", "grade", "--lab", "toy", "mine.ipynb", "--out", "g")
    assert graded.returncode == 2 and "student handout" in graded.stderr
    made = subprocess.run(["make", "-s", "test"], cwd=out, capture_output=True, text=True)
    assert made.returncode == 2 and "instructors' target" in made.stderr
    assert not (out / ".venv").exists()  # stopped before installing anything


def test_a_leak_stops_the_handout_and_writes_nothing(tmp_path):
    (tmp_path / "release").mkdir()
    notes = tmp_path / "notes.md"
    notes.write_text('# Answers\n\nassert square(-4) == 16, "square(-4) should be 16."\n')
    out = tmp_path / "toy-handout"
    with pytest.raises(HandoutError, match=r"notes.md: toy's solution or hidden test: assert sq"):
        build(toy_course(tmp_path / "release", extra=(notes,)), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "release"]


def short_run_of_solution_lines(lab: str, length: int = 3) -> list[str]:
    """The first ``length`` code lines in a row, each under 40 characters, of a solution."""
    notebook = nbformat.read(COURSE_ROOT / "source" / lab / f"{lab}.ipynb", 4)
    for cell in notebook.cells:
        for region in cell.source.split("### BEGIN SOLUTION")[1:]:
            code = region.split("### END SOLUTION")[0].splitlines()
            code = [line for line in code if line.strip() and not line.strip().startswith("#")]
            for start in range(len(code) - length + 1):
                run = code[start : start + length]
                if all(len(line.strip()) < 40 for line in run):
                    return run
    raise AssertionError(f"{lab}: no {length} short solution lines in a row")


@pytest.mark.parametrize("lab", ["lab1_pruning", "lab3_quant_prune"])
def test_a_real_solution_pasted_into_a_helper_stops_the_handout(tmp_path, lab):
    """Three short lines in a row of a lab's solution (no line long enough to be found on
    its own), pasted into a student file, are found, and nothing is written."""
    leaky = tmp_path / "utils.py"
    leaky.write_text("def helper():\n" + "\n".join(short_run_of_solution_lines(lab)) + "\n")
    course = Course(student_files=(REPO_ROOT / "helpers", leaky))
    with pytest.raises(HandoutError, match=rf"utils.py: {lab}'s solution or hidden test"):
        build(course, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utils.py"]


def solution_lines(grade_id: str) -> list[str]:
    """A Lab 1 solution region's code lines, stripped (comment lines dropped)."""
    notebook = nbformat.read(COURSE_ROOT / "source" / "lab1_pruning" / "lab1_pruning.ipynb", 4)
    (cell,) = [
        c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    ]
    region = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
    return [
        line.strip()
        for line in region.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def respaced(line: str) -> str:
    """``a = b`` as ``a=b``: the same code, other spacing."""
    return line.replace(" = ", "=")


@pytest.mark.parametrize(
    "form",
    [
        lambda lines: lines,  # as it is
        lambda lines: [respaced(lines[0])],  # other spacing
        lambda lines: [lines[0] + "  # keeps 10 of 25"],  # a comment added
        lambda lines: [f"Answer: `{lines[0]}`, as the scan shows"],  # quoted in prose
    ],
    ids=["as-is", "respaced", "commented", "in-prose"],
)
def test_a_short_solution_region_pasted_into_a_helper_stops_the_handout(tmp_path, form):
    """A solution region of one short line (Lab 1's answer ``target_sparsity = ...``, fewer
    than 3 lines, none long) is found as a whole, also respaced, commented or quoted in prose;
    the same name with the release's placeholder is not a leak (the real handout is written:
    test above)."""
    (answer,) = solution_lines("lab1_target_sparsity_solution")
    assert answer.startswith("target_sparsity =") and len(answer) < 40
    leaky = tmp_path / "utils.py"
    leaky.write_text("x = 1\n" + "\n".join(form([answer])) + "\n")
    with pytest.raises(
        HandoutError, match=r"utils.py: lab1_pruning's solution .*target_sparsity ?="
    ):
        build(Course(student_files=(REPO_ROOT / "helpers", leaky)), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utils.py"]


def test_a_two_line_solution_without_its_comment_stops_the_handout(tmp_path):
    """get_input_channel_importance's solution is two lines, the first with a trailing
    comment: pasted without that comment it is still found."""
    lines = solution_lines("lab1_get_input_channel_importance_solution")
    assert len(lines) == 2 and "#" in lines[0]
    leaky = tmp_path / "utils.py"
    leaky.write_text(
        "def importance(weight):\n"
        + "\n".join("    " + line.split("#")[0].rstrip() for line in lines)
        + "\n"
    )
    with pytest.raises(HandoutError, match=r"utils.py: lab1_pruning's solution .*importance"):
        build(Course(student_files=(REPO_ROOT / "helpers", leaky)), tmp_path / "out")


def test_a_stale_release_a_missing_file_or_an_output_in_the_way_is_refused_or_replaced(
    tmp_path, capsys
):
    (tmp_path / "release").mkdir()
    course = toy_course(tmp_path / "release")
    stale = tmp_path / "release" / "toy.ipynb"
    stale.write_text(stale.read_text().replace("Toy lab", "Toy lab, edited"))
    with pytest.raises(HandoutError, match="make release"):
        build(course, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    gone = toy_course(tmp_path / "release", extra=(tmp_path / "helpers",))
    with pytest.raises(HandoutError, match="a student file of the course is missing: .*helpers"):
        build(gone, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    args = ["handout", "--course", str(TOY_ROOT), "--release-dir", str(tmp_path / "release")]
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "exist(s) already" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "out"), "--replace"]) == 2
    assert "out is not a handout: not replaced" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "out.zip").exists()

    fresh = tmp_path / "fresh"
    assert cli.main([*args, "--out", str(fresh)]) == 0
    assert (fresh / "toy.ipynb").is_file() and (tmp_path / "fresh.zip").is_file()
    first = files_under(fresh)
    (fresh / "stale.txt").write_text("from an earlier handout")
    assert cli.main([*args, "--out", str(fresh)]) == 2  # not without --replace
    assert cli.main([*args, "--out", str(fresh), "--replace"]) == 0
    assert files_under(fresh) == first  # replaced as a whole: stale.txt is gone
    (tmp_path / "fresh.zip").write_bytes(b"my own notes, not a zip")
    assert cli.main([*args, "--out", str(fresh), "--replace"]) == 2
    assert "fresh.zip is not a handout" in capsys.readouterr().err
    assert (tmp_path / "fresh.zip").read_bytes() == b"my own notes, not a zip"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_readmes_limits_are_the_graders():
    """The students' README quotes the limits of ``make check`` and of Gradescope: are they
    the ones the code uses?"""
    readme = (COURSE_ROOT / "handout_readme.md").read_text()
    text = " ".join(readme.split())
    local, gradescope = Limits(), gradescope_limits
    assert (
        f"{local.cell_timeout:.0f} s per cell, {local.notebook_timeout:.0f} s per notebook, "
        f"{local.memory_mb // 1024} GiB of memory" in text
    )
    assert (
        f"allows {gradescope.cell_timeout:.0f} s per cell and "
        f"{gradescope.notebook_timeout:.0f} s per notebook" in text
    )


def test_the_readmes_colab_cell_does_nothing_off_colab(tmp_path):
    """Left in a submitted notebook, the students' Colab cell must not act when graded."""
    readme = (COURSE_ROOT / "handout_readme.md").read_text()
    (cell,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert 'if "google.colab" in sys.modules:' in cell
    probe = cell + "\nimport json\nprint(json.dumps([os.getcwd(), sys.path[0], os.listdir()]))"
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [str(tmp_path), "", []]  # "" is -c's own first entry


def test_on_windows_the_command_says_what_to_do_instead_of_failing_an_import():
    """On Windows (os.name faked) the entry point stops before importing the Unix-only
    modules, with a message; at exit the probe prints whether autograder.cli was imported."""
    probe = (
        "import atexit, os, runpy, sys\n"
        "atexit.register(lambda: print('autograder.cli' in sys.modules))\n"
        "os.name = 'nt'\n"
        "runpy.run_module('autograder', run_name='__main__')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, "validate", "x.ipynb"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1 and "On Windows, run it in WSL" in ran.stderr
    assert ran.stdout.strip() == "False"


def test_marked_regions_delimiters_included_and_an_unclosed_one_runs_to_the_end():
    """Counted by hand: lines 2-4 and 8-9 are hidden, 5-7 the solution; the leak search
    reads the regions' inner lines, the unclosed hidden region included."""
    source = "\n".join(
        ["a", HIDDEN_BEGIN, "b", HIDDEN_END, SOLUTION_BEGIN, "y", SOLUTION_END, HIDDEN_BEGIN, "d"]
    )
    assert hidden_lines(source) == {2, 3, 4, 8, 9}
    assert marked_regions(source, SOLUTION_BEGIN, SOLUTION_END) == [[5, 6, 7]]
    assert sorted(_regions(source)) == ["b", "d", "y"]
