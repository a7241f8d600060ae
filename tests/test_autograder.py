"""Does the autograder release, grade and report the toy assignment the way DESIGN.md says?

The toy (tests/fixtures/toy/source/toy/toy.ipynb) is a tiny nbgrader assignment: a locked
set-up cell, two solution cells each followed by a test cell with a hidden region (3 and 2
points), and a written answer (1 point). Most grading checks share one batch of adversarial
submissions, graded once with --jobs 2.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import errno
import hashlib
import html
import io
import json
import os
import re
import shutil
import signal
import struct
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from toy import (
    QUESTIONS,
    TOY_LIMITS,
    TOY_ROOT,
    TOY_SOURCE,
    answered,
    cell_by_id,
    read_csv,
    source_nb,
    with_solution,
)

from autograder import cli, execute, grade, report
from autograder.course import REPO_ROOT, Course
from autograder.execute import CellRun
from autograder.grade import (
    Settings,
    Submission,
    discover,
    grade_batch,
    lock_output,
    one_per_student,
    results_dir,
)
from autograder.notebooks import (
    Unreadable,
    load_lab,
    normalise_notebook,
    read_submission,
    restore,
)
from autograder.release import committed_matches, generate
from autograder.run import extract_figures, run_lab

FULL = {"toy_double": 3, "toy_square": 2, "toy_q_why": 0}
LIMITS = TOY_LIMITS
# Where a cheat looks for the source notebook: relative and absolute paths.
SOURCE_GLOBS = (str(TOY_SOURCE), "../../**/source/toy/toy.ipynb", str(TOY_ROOT) + "/**/*.ipynb")
GRADEBOOK_MARK = Path("/tmp/autograder-test-gradebook")  # the batch's --out (fixed: a cheat
# must know the absolute path, as a student on a shared grading machine might)
# A signal from inside: os.kill(os.getpid(), SIGKILL) is ignored where the sandbox makes the
# kernel its pid namespace's first process.
CRASH = "import ctypes; ctypes.string_at(0)"
DETACHED_MARK = 303.1234  # seconds a detached child sleeps: found in /proc if it survived

pytestmark = pytest.mark.timeout(600)


def toy_course(release_dir: Path | None = None) -> Course:
    return Course(root=TOY_ROOT, release_dir=release_dir or TOY_ROOT, student_files=())


def settings() -> Settings:
    return Settings(course=toy_course(), lab="toy", limits=LIMITS)


def write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        nbformat.write(content, path)
    return path


def grades_by_student(out: Path) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for row in read_csv(out / "grades.csv"):
        table.setdefault(row["student"], {})[row["question"]] = row
    return table


def scores(table: dict, student: str) -> dict[str, int]:
    return {q: int(float(row["score"])) for q, row in table[student].items()}


def statuses(table: dict, student: str) -> dict[str, str]:
    return {q: row["status"] for q, row in table[student].items()}


@pytest.fixture(scope="module")
def release_text() -> str:
    return generate(toy_course(), "toy")


# --------------------------------------------------------------------------- release


def test_release_removes_solutions_and_hidden_tests(release_text):
    """Does generate_assignment leave stubs, visible checks only, and no outputs?"""
    notebook = nbformat.reads(release_text, as_version=4)
    text = json.dumps(notebook)
    assert "BEGIN HIDDEN" not in text and "double(-3)" not in text and "square(-4)" not in text
    assert "return SCALE * x" not in text and "BEGIN SOLUTION" not in text
    assert "raise NotImplementedError()" in cell_by_id(notebook, "toy_double_solution").source
    assert "double(2) == 4" in cell_by_id(notebook, "toy_double").source
    assert cell_by_id(notebook, "toy_q_why").source == "YOUR ANSWER HERE"
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in notebook.cells
        if c.cell_type == "code"
    )
    assert release_text == normalise_notebook(notebook)


def test_release_cli_writes_a_deterministic_notebook(release_text, tmp_path):
    """Does `release` (checks on) write the same bytes as another fresh release?"""
    code = cli.main(["release", "--course", str(TOY_ROOT), "--release-dir", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "toy.ipynb").read_text() == release_text
    assert not (TOY_ROOT / "release").exists() and not (TOY_ROOT / "gradebook.db").exists()
    assert (
        cli.main(
            ["release", "--check-only", "--course", str(TOY_ROOT), "--release-dir", str(tmp_path)]
        )
        == 0
    )
    (tmp_path / "toy.ipynb").write_text(release_text.replace("Toy lab", "Toy lab!"))
    course = toy_course(tmp_path)
    assert committed_matches(course, "toy", fresh=release_text) == (False, release_text)


def test_release_is_refused_when_tests_do_not_separate_solution_and_blank(tmp_path, capsys):
    """Does `release` refuse, naming the cells, when a test passes blank or fails solved?"""
    course_root = tmp_path / "course"
    shutil.copytree(TOY_ROOT, course_root)
    path = course_root / "source" / "toy" / "toy.ipynb"
    notebook = nbformat.read(path, as_version=4)
    weak = cell_by_id(notebook, "toy_double")
    weak.source = "assert True"
    solution = cell_by_id(notebook, "toy_square_solution")
    solution.source = solution.source.replace("return x * x", "return x + x")
    nbformat.write(notebook, path)
    out = tmp_path / "released"
    code = cli.main(["release", "--course", str(course_root), "--release-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "toy_double" in err and "toy_square" in err and "refused" in err
    assert not (out / "toy.ipynb").exists()


def test_set_up_cells_that_fail_stop_the_batch_before_anyone_is_graded(tmp_path, capsys):
    """The lab's locked set-up cells fail (as they do under a profile whose data grading's
    workspaces lack): every submission would fail there and be stored as the grader's own
    failure, so ``grade`` stops first (exit 2), saying which cell error, and stores nothing;
    ``release``, whose check grades the solution, refuses with that message (exit 1)."""
    course_root = tmp_path / "course"
    shutil.copytree(TOY_ROOT, course_root)
    path = course_root / "source" / "toy" / "toy.ipynb"
    notebook = nbformat.read(path, as_version=4)
    cell_by_id(notebook, "toy_setup").source += "\nraise FileNotFoundError('no CIFAR-10 here')"
    nbformat.write(notebook, path)
    folder = tmp_path / "submissions"
    write(folder, "a.ipynb", answered())
    write(folder, "b.ipynb", answered())
    out = tmp_path / "out"
    args = ["grade", "--course", str(course_root), "--lab", "toy", str(folder), "--out", str(out)]
    code = cli.main([*args, "--profile", "quick", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the set-up cells of toy fail under the quick profile" in err
    assert "FileNotFoundError: no CIFAR-10 here" in err and "grade under smoke" in err
    assert "nobody was graded" in err
    assert not list(results_dir(out, "toy").glob("*.json"))
    released = tmp_path / "released"  # release's own check grades too: refused, no traceback
    code = cli.main(["release", "--course", str(course_root), "--release-dir", str(released)])
    err = capsys.readouterr().err
    assert code == 1 and "toy: the release cannot be checked: the set-up cells" in err
    assert not (released / "toy.ipynb").exists()


def test_file_and_folder_names_that_are_not_utf8_are_graded_under_escaped_names(tmp_path):
    """An LMS download unpacked with Latin-1 names: a notebook ``J\\xfcrgen.ipynb`` and a
    student folder ``Ren\\xe9/`` holding no notebook. The batch runs (it used to stop on the
    first name with a traceback), and both students are in the grades as ``J\\xfcrgen`` and
    ``Ren\\xe9``, distinct from a UTF-8 ``J\u00fcrgen.ipynb`` beside them."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    raw = os.fsencode(folder)
    with open(os.path.join(raw, b"J\xfcrgen.ipynb"), "w") as stream:
        nbformat.write(answered(), stream)
    write(folder, "J\u00fcrgen.ipynb", answered())
    os.mkdir(os.path.join(raw, b"Ren\xe9"))
    with open(os.path.join(raw, b"Ren\xe9", b"notes-\xe9.txt"), "w") as stream:
        stream.write("no notebook")
    out = tmp_path / "out"
    args = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", str(folder), "--out", str(out)]
    assert cli.main([*args, "--no-progress", "--memory-mb", str(LIMITS.memory_mb)]) == 0
    table = grades_by_student(out)
    assert set(table) == {"J\\xfcrgen", "J\u00fcrgen", "Ren\\xe9"}
    assert scores(table, "J\\xfcrgen") == scores(table, "J\u00fcrgen") == FULL
    assert all(row["status"] == "unreadable" for row in table["Ren\\xe9"].values())
    stored = results_dir(out, "toy") / (grade.safe_name("Ren\\xe9") + ".json")
    result = json.loads(stored.read_text())
    assert "it holds notes-\\xe9.txt" in result["rows"][0]["message"]


def test_a_full_disk_stops_grade_with_a_message_and_keeps_what_was_stored(
    tmp_path, capsys, monkeypatch
):
    """The output folder fills up after the first student's result is stored: ``grade`` stops
    with exit 2 saying so (no traceback), the first result is kept, and a rerun once there is
    room grades only the second."""
    folder = tmp_path / "submissions"
    write(folder, "a.ipynb", answered())
    write(folder, "b.ipynb", answered())
    out = tmp_path / "out"
    args = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", str(folder), "--out", str(out)]
    args += ["--no-progress", "--jobs", "1", "--memory-mb", str(LIMITS.memory_mb)]
    real = grade.write_json_atomic
    stored = []

    def fills_up(path, value):
        if stored:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        stored.append(path)
        real(path, value)

    monkeypatch.setattr(grade, "write_json_atomic", fills_up)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "grading stopped: No space left on device" in err and "run the same command" in err
    assert "Traceback" not in err
    assert [p.name for p in results_dir(out, "toy").glob("*.json")] == ["a.json"]
    monkeypatch.setattr(grade, "write_json_atomic", real)
    assert cli.main(args) == 0
    assert "graded 1, kept 1 graded before" in capsys.readouterr().out


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}).encode(), "format 3"),
        (
            nbformat.writes(
                nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
            ).encode(),
            "no nbgrader metadata",
        ),
        (b"[" * 5000 + b"]" * 5000, "nested more than 100"),  # json.loads: RecursionError
        (
            b'{"nbformat": 4, "cells": [{"cell_type": "raw", "source": "", "metadata": '
            + b'{"a": ' * 300
            + b"1"
            + b"}" * 300
            + b"}]}",
            "nested more than 100",  # parses, but no notebook nests so deep
        ),
    ],
)
def test_unreadable_submissions_say_why(content, reason):
    """Is each kind of unreadable file reported in words, not as a crash?"""
    with pytest.raises(Unreadable, match=reason):
        read_submission(content)


def test_an_oversized_submission_is_unreadable_without_being_read(tmp_path, monkeypatch):
    """A file over MAX_SUBMISSION_MB: is it scored unreadable, saying how to fix it, without
    being parsed; is the stored digest the file's sha256; and does it count as graded for the
    next run (not graded again)?"""
    path = tmp_path / "huge.ipynb"
    nbformat.write(answered(), path)
    monkeypatch.setattr(grade, "MAX_SUBMISSION_MB", 0)  # every file is over the cap
    monkeypatch.setattr(grade, "read_submission", None)  # must not be called
    submission = Submission("huge", path, str(path), 0.0)
    result = grade.grade_submission(submission, settings())
    assert result["status"] == "unreadable" and result["score"] == 0
    assert {row["status"] for row in result["rows"]} == {"unreadable"}
    message = result["rows"][0]["message"]
    assert "larger than the 0 MiB a submission may have; clear its outputs" in message
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = tmp_path / "huge.json"
    stored.write_text(json.dumps(result))
    lab_sha = grade.lab_fingerprint(settings().course.load("toy"))
    assert grade.why_grade(grade.read_stored(stored), submission, lab_sha, settings()) == ""


def test_a_file_size_hit_is_graded_again_only_under_a_higher_file_cap(tmp_path):
    """A stored result that hit the file-size cap (``limits_hit`` ``file``): graded again when
    this run's ``file_mb`` is higher or unlimited, kept when it is the same or lower; a result
    that hit only the memory cap is not graded again for a higher ``file_mb``."""
    path = tmp_path / "writer.ipynb"
    nbformat.write(answered(), path)
    submission = Submission("writer", path, str(path), 0.0)
    capped = dataclasses.replace(settings(), limits=dataclasses.replace(LIMITS, file_mb=1))
    stored = grade.grade_submission(submission, capped)
    lab_sha = grade.lab_fingerprint(settings().course.load("toy"))

    def why(hit: list[str], file_mb: int | None) -> str:
        again = dataclasses.replace(LIMITS, file_mb=file_mb)
        old = {**stored, "limits_hit": hit}
        return grade.why_grade(old, submission, lab_sha, dataclasses.replace(capped, limits=again))

    assert stored["limits"]["file_mb"] == 1 and why([], 1) == ""
    assert why(["file"], 2) == why(["file"], None) == "limits"
    assert why(["file"], 1) == "" and why(["memory"], 2) == ""


def test_an_oversized_notebook_in_a_zip_is_cut_at_the_cap_and_refused(tmp_path, monkeypatch):
    """A zip entry over the cap: is no more than the cap and one byte extracted (a zip bomb
    cannot fill the disk), and is it then scored unreadable for being too large?"""
    monkeypatch.setattr(grade, "MAX_SUBMISSION_MB", 0)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("erin.ipynb", b"{" + b" " * (4 << 20) + b"}")  # 4 MiB, compresses
    (tmp_path / "scratch").mkdir()
    (found,) = discover([archive], "toy", tmp_path / "scratch")
    assert found.student == "erin" and found.path.stat().st_size == 1
    result = grade.grade_submission(found, settings())
    assert result["status"] == "unreadable"
    assert "a submission may have" in result["rows"][0]["message"]


def test_a_zip_that_would_fill_the_disk_stops_the_run_before_it_does(tmp_path, monkeypatch):
    """A zip of many notebooks, each under the size cap, that would leave less than
    DISK_RESERVE_MB free (here: 3 MiB more than that are free, and the zip holds three 2 MiB
    notebooks): refused from its declared sizes, naming the zip, before anything is
    extracted; grade exits 2 and writes no result."""
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for student in ("ann", "bob", "cy"):
            bundle.writestr(f"{student}.ipynb", b"{" + b" " * (2 << 20) + b"}")
    real = shutil.disk_usage

    def nearly_full(path):
        usage = real(path)
        return usage._replace(free=(grade.DISK_RESERVE_MB + 3) << 20)

    monkeypatch.setattr(grade.shutil, "disk_usage", nearly_full)
    (tmp_path / "scratch").mkdir()
    with pytest.raises(grade.UsageError, match=r"class.zip: its notebooks would leave less than"):
        discover([archive], "toy", tmp_path / "scratch")
    extracted = sum(p.stat().st_size for p in (tmp_path / "scratch").rglob("*") if p.is_file())
    assert extracted == 0  # refused before writing, not once the disk is down to the reserve
    out = tmp_path / "out"
    args = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", str(archive), "--out", str(out)]
    assert cli.main(args) == 2
    assert not list(out.glob(".results/*/*.json"))
    monkeypatch.setattr(grade.shutil, "disk_usage", real)
    assert [s.student for s in discover([archive], "toy", tmp_path / "scratch")] == [
        "ann",
        "bob",
        "cy",
    ]


def _damaged_zips(folder: Path) -> dict[str, Path]:
    """Zips of two notebooks: cut short, with a wrong CRC, one entry that says it is
    encrypted, one entry that declares 100 bytes and holds 1 MB."""
    data = b"{" + b" " * (1 << 20) + b"}"
    made = {}
    for kind in ("cut", "crc", "encrypted", "lying"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("ann.ipynb", data)
            bundle.writestr("bob.ipynb", data)
        raw = bytearray(buffer.getvalue())
        if kind == "cut":
            raw = raw[: len(raw) // 2]
        elif kind == "crc":
            raw[40:80] = bytes(40)  # inside ann's compressed bytes
        elif kind == "encrypted":  # bit 0 of the flags, in the local and the central header
            for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
                at = raw.index(signature) + offset
                raw[at] |= 1
        else:
            size = struct.pack("<I", len(data))
            assert raw.count(size) == 4  # ann's and bob's, local and central headers
            raw = raw.replace(size, struct.pack("<I", 100))
        made[kind] = folder / f"{kind}.zip"
        made[kind].write_bytes(bytes(raw))
    return made


def test_a_damaged_zip_stops_the_run_saying_so_and_a_students_is_theirs(tmp_path, capsys):
    """The instructor's zip cut short, damaged, encrypted or lying about its sizes: grade
    exits 2 naming the zip and what is wrong, and writes no result (a traceback before).
    The same zip as one student's upload: that student is unreadable, saying why, and the
    others are graded."""
    (tmp_path / "zips").mkdir()
    zips = _damaged_zips(tmp_path / "zips")
    why = {
        "cut": "not a readable zip",
        "crc": "ann.ipynb cannot be extracted",
        "encrypted": "ann.ipynb is encrypted (password-protected)",
        "lying": "ann.ipynb cannot be extracted (Bad CRC-32",
    }
    for kind, archive in zips.items():
        out = tmp_path / f"out-{kind}"
        args = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", str(archive), "--out", str(out)]
        assert cli.main([*args, "--no-progress"]) == 2, kind
        assert f"{archive}: " in capsys.readouterr().err, kind
        assert not list(out.glob(".results/*/*.json")), kind
        with pytest.raises(grade.UsageError, match=re.escape(why[kind])):
            discover([archive], "toy", tmp_path / "zips")
    folder = tmp_path / "in"
    write(folder, "ann.ipynb", answered())
    (folder / "cy").mkdir()
    shutil.copy(zips["crc"], folder / "cy" / "upload.zip")
    found = {s.student: s for s in discover([folder], "toy", tmp_path / "zips")}
    assert set(found) == {"ann", "cy"} and "zip is damaged" in found["cy"].refused


def test_bulk_zips_as_lms_and_tools_write_them(tmp_path):
    """A bulk zip holding a student's own zip (graded as that student's), names separated by
    backslashes, a name in UTF-8 without the flag, a wrapper folder beside an index file; and
    a folder given as nbgrader's submitted/ with one student holding two labs."""
    notebook = nbformat.writes(answered()).encode()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as bundle:
        bundle.writestr("work/toy.ipynb", notebook)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("download/index.html", b"<html></html>")
        bundle.writestr("download/carol/carol.zip", inner.getvalue())
        bundle.writestr("download\\dan\\toy.ipynb", notebook)  # no / at all: Windows
        bundle.writestr("download/bob/toy.ipynb", notebook)
        bundle.writestr(zipfile.ZipInfo("download/J\u00fcrgen/toy.ipynb"), notebook)
    raw = bytearray(archive.read_bytes())  # the UTF-8 flag cleared (bit 11), as some tools do
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at != -1:
            raw[at + offset + 1] &= ~0x08 & 0xFF
            at = raw.find(signature, at + 4)
    archive.write_bytes(bytes(raw))
    with zipfile.ZipFile(archive) as bundle:  # read as cp437: garbled
        assert "download/J\u251c\u255drgen/toy.ipynb" in bundle.namelist()
    (tmp_path / "scratch").mkdir()
    found = {s.student: s for s in discover([archive], "toy", tmp_path / "scratch")}
    assert not any(s.refused for s in found.values()), found
    assert {"carol", "bob", "J\u00fcrgen"} <= set(found)
    assert found["carol"].origin == f"{archive}!download/carol/carol.zip!work/toy.ipynb"
    windows = tmp_path / "win.zip"
    with zipfile.ZipFile(windows, "w") as bundle:
        bundle.writestr("dan\\toy.ipynb", notebook)
        bundle.writestr("eve\\toy.ipynb", notebook)
    assert sorted(s.student for s in discover([windows], "toy", tmp_path / "scratch")) == [
        "dan",
        "eve",
    ]
    submitted = tmp_path / "submitted"
    write(submitted / "alice" / "toy", "toy.ipynb", answered())
    write(submitted / "alice" / "other", "other.ipynb", answered())
    assert {s.student for s in discover([submitted], "toy", tmp_path / "scratch")} == {"alice"}


def test_a_students_zip_that_cannot_be_stored_here_is_theirs_not_the_batchs(tmp_path):
    """A student's zip holding a name that is both a file and a folder, a name too long for
    the file system, or a name flagged UTF-8 that is not: that student is unreadable, saying
    why, and everyone else is found (each stopped the whole batch with a traceback). An
    entry dated 0 (zero DOS date) takes the zip's own time."""
    notebook = nbformat.writes(answered()).encode()
    folder = tmp_path / "in"
    write(folder, "ann.ipynb", answered())
    bad = {
        "conflict": [("x/toy.ipynb", notebook), ("x/toy.ipynb/timestamp.txt", b"now")],
        "long": [("a" * 300 + ".ipynb", notebook)],
    }
    for student, entries in bad.items():
        (folder / student).mkdir()
        with zipfile.ZipFile(folder / student / "up.zip", "w") as bundle:
            for name, data in entries:
                bundle.writestr(name, data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("al!ce/toy.ipynb", notebook)
    raw = bytearray(buffer.getvalue().replace(b"al!ce", b"al\xffce"))
    at = raw.index(b"PK\x01\x02") + 8  # the central header's flags: say UTF-8
    raw[at + 1] |= 0x08
    (folder / "utf").mkdir()
    (folder / "utf" / "up.zip").write_bytes(bytes(raw))
    dated = zipfile.ZipInfo("toy.ipynb", date_time=(1980, 0, 0, 0, 0, 0))
    (folder / "zero").mkdir()
    with zipfile.ZipFile(folder / "zero" / "up.zip", "w") as bundle:
        bundle.writestr(dated, notebook)
    (tmp_path / "scratch").mkdir()
    found = {s.student: s for s in discover([folder], "toy", tmp_path / "scratch")}
    assert set(found) == {"ann", "conflict", "long", "utf", "zero"}
    for student in bad.keys() | {"utf"}:
        assert "cannot be read as a zip of notebooks" in found[student].refused, student
    assert not found["zero"].refused
    assert found["zero"].timestamp == (folder / "zero" / "up.zip").stat().st_mtime


def test_restore_puts_back_deleted_edited_and_stripped_cells():
    """Are protected cells restored from the source, with what changed, in the right place?"""
    lab = load_lab(TOY_SOURCE, "toy")
    student = answered()
    student.cells = [
        c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "toy_double"
    ]
    cell_by_id(student, "toy_setup").source += "\nSCALE = 3"
    del cell_by_id(student, "toy_square").metadata["nbgrader"]
    student.cells.insert(3, nbformat.v4.new_code_cell("scratch = 1"))  # after double's solution
    restored = restore(student, lab)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in restored.notebook.cells]
    assert ids.index("toy_double") == ids.index("toy_square_solution") - 1  # before the next
    assert ids.index("toy_double") > ids.index("toy_double_solution")
    assert set(restored.changes) == {"toy_double", "toy_setup", "toy_square"}
    assert "deleted" in restored.changes["toy_double"][0]
    assert "SCALE = 3" in restored.changes["toy_setup"][0]
    assert "metadata was removed" in restored.changes["toy_square"][0]
    double = restored.notebook.cells[ids.index("toy_double")]
    assert "BEGIN HIDDEN TESTS" in double.source  # hidden tests are back for grading
    assert "SCALE = 3" not in restored.notebook.cells[ids.index("toy_setup")].source


def test_restore_accepts_the_instructors_own_notebook():
    """Is the source notebook itself (hidden tests present) not counted as tampered?"""
    assert restore(source_nb(), load_lab(TOY_SOURCE, "toy")).changes == {}


def test_students_come_from_file_names_and_nbgrader_trees(tmp_path):
    """Is the student id the file name, or the folder in submitted/<student>/<lab>/?"""
    write(tmp_path, "in/alice.ipynb", "{}")
    write(tmp_path, "in/submitted/bob/toy/toy.ipynb", "{}")
    write(tmp_path, "in/submitted/bob/toy/timestamp.txt", "2026-11-20 10:00:00.000000 UTC")
    write(tmp_path, "in/.ipynb_checkpoints/alice-checkpoint.ipynb", "{}")
    found = {s.student: s for s in discover([tmp_path / "in"], "toy", tmp_path)}
    assert set(found) == {"alice", "bob"}
    assert time.gmtime(found["bob"].timestamp)[:3] == (2026, 11, 20)


def test_a_notebook_in_a_folder_belongs_to_the_folder_below_the_one_named(tmp_path):
    """One folder per student (LMS downloads): a notebook in ``mallory/`` is mallory's
    whatever its name; a wrapper folder holding the student folders is looked through; a
    folder holding a single student's folder is not (that student keeps their name)."""
    write(tmp_path, "in/ann.ipynb", "{}")
    write(tmp_path, "in/bob/toy.ipynb", "{}")
    write(tmp_path, "in/mallory/bob.ipynb", "{}")
    write(tmp_path, "in/cy/attempt1/notes.ipynb", "{}")
    write(tmp_path, "wrapped/export/s1/toy.ipynb", "{}")
    write(tmp_path, "wrapped/export/s2/mine.ipynb", "{}")
    write(tmp_path, "single/submitted/dan/toy/toy.ipynb", "{}")
    found = discover([tmp_path / "in"], "toy", tmp_path)
    assert sorted(s.student for s in found) == ["ann", "bob", "cy", "mallory"]
    assert {s.student for s in discover([tmp_path / "wrapped"], "toy", tmp_path)} == {"s1", "s2"}
    assert [s.student for s in discover([tmp_path / "single"], "toy", tmp_path)] == ["dan"]


def test_a_students_zip_cannot_name_another_student(tmp_path, release_text):
    """mallory/mallory.zip holds submitted/bob/toy/toy.ipynb (blank) dated 2099: is it
    graded as mallory's, and bob's own notebook as bob's, full marks?"""
    folder = tmp_path / "in"
    write(folder, "bob/toy.ipynb", answered())
    (folder / "mallory").mkdir()
    with zipfile.ZipFile(folder / "mallory" / "mallory.zip", "w") as bundle:
        bundle.writestr("submitted/bob/toy/toy.ipynb", release_text)
        bundle.writestr("submitted/bob/toy/timestamp.txt", "2099-01-01 00:00:00.000 UTC")
    report = grade_batch(
        [folder], tmp_path / "out", settings(), progress=False, log=lambda *_: None
    )
    assert sorted(report.graded) == ["bob", "mallory"] and report.ignored == []
    table = grades_by_student(tmp_path / "out")
    assert scores(table, "bob") == FULL
    assert scores(table, "mallory") == {q: 0 for q in QUESTIONS}


def test_a_students_zip_too_large_is_theirs_to_lose_not_the_batchs(tmp_path, monkeypatch):
    """A student's zip whose notebooks exceed the cap in all (each under it): that student is
    unreadable, saying why; the others are graded."""
    monkeypatch.setattr(grade, "MAX_SUBMISSION_MB", 1)
    folder = tmp_path / "in"
    write(folder, "ann.ipynb", answered())
    (folder / "bomb").mkdir()
    with zipfile.ZipFile(folder / "bomb" / "up.zip", "w", zipfile.ZIP_DEFLATED) as bundle:
        for index in range(3):
            bundle.writestr(f"n{index}.ipynb", b"{" + b" " * (800 << 10) + b"}")
    (tmp_path / "scratch").mkdir()
    found = {s.student: s for s in discover([folder], "toy", tmp_path / "scratch")}
    assert set(found) == {"ann", "bomb"} and "MiB in all" in found["bomb"].refused
    extracted = sum(p.stat().st_size for p in (tmp_path / "scratch").rglob("*") if p.is_file())
    assert extracted == 0  # the bomb is refused from its declared sizes (ann's is not a zip)
    out = tmp_path / "out"
    args = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", str(folder), "--out", str(out)]
    assert cli.main([*args, "--no-progress"]) == 0
    totals = {row["student"]: row for row in read_csv(out / "totals.csv")}
    assert totals["bomb"]["status"] == "unreadable"
    assert scores(grades_by_student(out), "ann") == FULL


def test_different_students_never_share_a_file_name():
    """Ids that cleaning would merge (a space and an underscore, two emoji, a long common
    beginning, case) get distinct file names; a plain lowercase id keeps its own."""
    ids = ["alice smith", "alice_smith", "\N{GRINNING FACE}", "\N{SMILING FACE WITH SUNGLASSES}"]
    ids += ["x" * 130 + "a", "x" * 130 + "b", "Alice", "alice", "!!!", "student", ".hidden"]
    names = [grade.safe_name(student) for student in ids]
    assert len({name.casefold() for name in names}) == len(ids)
    assert grade.safe_name("alice_smith") == "alice_smith"
    for name in names:
        assert re.fullmatch(r"[\w.@+~-]{1,120}", name, flags=re.ASCII), name
        assert not name.startswith((".", "_"))


def test_the_newest_of_two_submissions_wins():
    """With two files for one student, is the newer one kept and the other reported?"""
    old = Submission("dave", Path("a/dave.ipynb"), "a/dave.ipynb", 100.0)
    new = Submission("dave", Path("b/dave.ipynb"), "b/dave.ipynb", 200.0)
    kept, ignored = one_per_student([new, old], "toy")
    assert kept == [new] and len(ignored) == 1 and "a/dave.ipynb" in ignored[0]
    assert "(older; graded b/dave.ipynb)" in ignored[0]


def test_a_students_notebook_of_this_lab_goes_before_newer_copies_and_other_labs():
    """A student's folder holding more than this lab's notebook: another lab's (by name, or
    in nbgrader's ``<student>/<other>/`` folder) is never graded while there is another one,
    ``<lab>.ipynb`` goes before a newer copy, and among the rest the newest wins. Each other
    notebook is reported with why."""

    def made(student: str, path: str, when: float) -> Submission:
        return Submission(student, Path("in", student, path), f"in/{student}/{path}", when)

    given = [
        made("alice", "toy.ipynb", 1.0),
        made("alice", "other.ipynb", 2.0),  # the course's other lab, newer
        made("bob", "toy.ipynb", 1.0),
        made("bob", "toy-Copy1.ipynb", 2.0),  # a newer copy
        made("carol", "toy/toy.ipynb", 1.0),  # nbgrader's submitted/<student>/<lab>/ tree
        made("carol", "other/other.ipynb", 2.0),
        made("carol", "other/notes.ipynb", 3.0),  # in the other lab's folder
        made("dave", "other.ipynb", 1.0),  # only another lab's: graded (unreadable, says so)
        made("erin", "first.ipynb", 1.0),
        made("erin", "second.ipynb", 2.0),
        made("fay", "toy.ipynb", 1.0),
        made("fay", "sub/toy.ipynb", 2.0),  # two named like the lab: the newest
    ]
    kept, ignored = one_per_student(list(reversed(given)), "toy", ["toy", "other"])
    assert {s.student: s.origin for s in kept} == {
        "alice": "in/alice/toy.ipynb",
        "bob": "in/bob/toy.ipynb",
        "carol": "in/carol/toy/toy.ipynb",
        "dave": "in/dave/other.ipynb",
        "erin": "in/erin/second.ipynb",
        "fay": "in/fay/sub/toy.ipynb",
    }
    assert sorted(ignored) == [
        "alice: ignored in/alice/other.ipynb (other's notebook, not toy's; "
        "graded in/alice/toy.ipynb)",
        "bob: ignored in/bob/toy-Copy1.ipynb (not named toy.ipynb; graded in/bob/toy.ipynb)",
        "carol: ignored in/carol/other/notes.ipynb (other's notebook, not toy's; "
        "graded in/carol/toy/toy.ipynb)",
        "carol: ignored in/carol/other/other.ipynb (other's notebook, not toy's; "
        "graded in/carol/toy/toy.ipynb)",
        "erin: ignored in/erin/first.ipynb (older; graded in/erin/second.ipynb)",
        "fay: ignored in/fay/toy.ipynb (older; graded in/fay/sub/toy.ipynb)",
    ]


def test_a_student_folder_without_a_notebook_gets_a_row_saying_what_it_holds(tmp_path):
    """A PDF instead of the notebook, an empty folder, only macOS debris: in a folder and in
    a bulk zip, each such student gets an unreadable row naming what was handed in (they
    vanished before), kept as graded on the next run."""
    folder = tmp_path / "in"
    write(folder / "alice", "toy.ipynb", answered())
    (folder / "dave").mkdir()
    (folder / "dave" / "toy.pdf").write_bytes(b"%PDF")
    (folder / "dave" / "notes").mkdir()
    (folder / "dave" / "notes" / "a.txt").write_text("x")
    (folder / "erin").mkdir()
    (folder / "frank").mkdir()
    (folder / "frank" / ".DS_Store").write_bytes(b"")
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder).as_posix())
        bundle.writestr("erin/", b"")  # an empty folder, as zip tools record it
    (tmp_path / "scratch").mkdir()
    for given in (folder, archive):
        found = {s.student: s for s in discover([given], "toy", tmp_path / "scratch")}
        assert set(found) == {"alice", "dave", "erin", "frank"}, given
        assert not found["alice"].refused
        assert "no notebook in the submission (it holds notes/a.txt, toy.pdf)" in (
            found["dave"].refused
        )
        assert "(it holds no file)" in found["erin"].refused
        assert "(it holds no file)" in found["frank"].refused
    # one student's upload (Gradescope): its folders are not students
    upload = discover([folder], "toy", tmp_path / "scratch", empty_folders=False)
    assert [s.student for s in upload] == ["alice"]
    out = tmp_path / "out"
    batch = grade_batch([folder], out, settings(), progress=False, log=lambda *_: None)
    assert sorted(batch.graded) == ["alice", "dave", "erin", "frank"]
    table = grades_by_student(out)
    assert scores(table, "alice") == FULL
    assert set(statuses(table, "dave").values()) == {"unreadable"}
    (dave,) = [r for r in grade.load_results(out) if r["student"] == "dave"]
    assert "toy.pdf" in dave["rows"][0]["message"]
    again = grade_batch([folder], out, settings(), progress=False, log=lambda *_: None)
    assert not again.graded and "dave" in again.skipped


def test_a_batch_of_another_labs_notebooks_stops_before_grading(tmp_path, capsys):
    """``--lab lab1_pruning`` given Lab 3's notebooks: exit 2 naming Lab 3, no result stored
    (the whole class would have scored 0). It takes a majority: one Lab 1 notebook among
    them does not hide the mistake, one Lab 3 notebook among Lab 1's is graded as usual, and
    so is a single notebook on its own."""
    course = Course()
    lab1 = course.load("lab1_pruning")
    lab3_release = (REPO_ROOT / "lab3_quant_prune.ipynb").read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    for student in ("ann", "bob", "cy"):
        (folder / f"{student}.ipynb").write_bytes(lab3_release)
    (folder / "junk.ipynb").write_text("not a notebook")
    (folder / "dee.ipynb").write_bytes((REPO_ROOT / "lab1_pruning.ipynb").read_bytes())
    out = tmp_path / "out"
    args = ["grade", "--lab", "lab1_pruning", str(folder), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "3 of the 5 notebooks to grade are lab3_quant_prune's, 1 are lab1_pruning's" in err
    assert "grade them with --lab lab3_quant_prune" in err and "--any-lab" in err
    assert not list(out.glob(".results/*/*.json"))
    for student in ("ann", "bob"):
        (folder / f"{student}.ipynb").write_bytes((REPO_ROOT / "lab1_pruning.ipynb").read_bytes())
    grade.check_lab(discover([folder], "lab1_pruning", tmp_path), lab1, course)  # 3 to 1: fine
    found = discover([folder], "lab1_pruning", tmp_path)
    grade.check_lab([s for s in found if s.student == "cy"], lab1, course)  # one alone


def test_any_lab_and_a_rerun_with_results_kept_grade_other_labs_notebooks(tmp_path):
    """A course of two labs (the toy and a copy with other grade_ids): ``--any-lab`` grades a
    batch that is mostly the other lab's, and once results of the lab are stored, late
    notebooks of the other lab are those students' mistakes, graded (unreadable), not a
    wrong ``--lab``."""
    root = tmp_path / "course"
    shutil.copytree(TOY_ROOT, root)
    other = json.loads((TOY_ROOT / "source" / "toy" / "toy.ipynb").read_text())
    for cell in other["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta:
            meta["grade_id"] = meta["grade_id"].replace("toy_", "two_")
    (root / "source" / "two").mkdir()
    (root / "source" / "two" / "two.ipynb").write_text(json.dumps(other))
    folder = tmp_path / "in"
    write(folder, "ann.ipynb", answered())
    (folder / "bob.ipynb").write_text(json.dumps(other))
    (folder / "cy.ipynb").write_text(json.dumps(other))
    out = tmp_path / "out"
    args = ["grade", "--course", str(root), "--lab", "toy", "--out", str(out), "--no-progress"]
    assert cli.main([*args, str(folder)]) == 2
    assert cli.main([*args, "--any-lab", str(folder)]) == 0
    assert statuses(grades_by_student(out), "bob")["toy_double"] == "unreadable"
    (folder / "dee.ipynb").write_text(json.dumps(other))
    (folder / "eve.ipynb").write_text(json.dumps(other))
    assert cli.main([*args, str(folder)]) == 0  # ann's result says toy was right
    assert set(grades_by_student(out)) == {"ann", "bob", "cy", "dee", "eve"}


def test_a_readable_notebook_of_the_lab_goes_before_an_empty_or_broken_one(tmp_path):
    """An empty ``toy.ipynb`` beside a good ``toy (1).ipynb``, a newer broken file beside an
    older good one: the good one is graded."""
    good = tmp_path / "good.ipynb"
    nbformat.write(answered(), good)
    empty = tmp_path / "toy.ipynb"
    empty.write_bytes(b"")
    lab_ids = set(settings().course.load("toy").by_id)
    given = [
        Submission("ann", empty, "ann/toy.ipynb", 2.0),
        Submission("ann", good, "ann/toy (1).ipynb", 1.0),
    ]
    kept, ignored = one_per_student(given, "toy", ["toy"], lab_ids)
    assert [s.origin for s in kept] == ["ann/toy (1).ipynb"]
    assert "not a readable notebook with a cell of toy" in ignored[0]
    assert [s.origin for s in one_per_student(given, "toy")[0]] == ["ann/toy.ipynb"]  # by name


# --------------------------------------------------------------------------- grading


@pytest.fixture(scope="module")
def batch(tmp_path_factory, release_text):
    """One batch of adversarial toy submissions, graded with --jobs 2 through the CLI."""
    folder = tmp_path_factory.mktemp("submissions")
    out = GRADEBOOK_MARK
    shutil.rmtree(out, ignore_errors=True)
    correct = answered()
    write(folder, "solution.ipynb", source_nb())
    write(folder, "correct.ipynb", correct)
    write(folder, "blank.ipynb", release_text)
    deleted = copy.deepcopy(correct)
    deleted.cells.remove(cell_by_id(deleted, "toy_double"))
    write(folder, "deleted_test.ipynb", deleted)
    write(folder, "edited_test.ipynb", with_solution(correct, "toy_double", "pass"))
    edited_wrong = with_solution(correct, "toy_double", "pass")
    cell_by_id(edited_wrong, "toy_double_solution").source = "def double(x):\n    return x + 2"
    write(folder, "edited_wrong.ipynb", edited_wrong)
    stripped = copy.deepcopy(correct)
    del cell_by_id(stripped, "toy_square").metadata["nbgrader"]
    write(folder, "stripped_metadata.ipynb", stripped)
    write(
        folder,
        "loop.ipynb",
        with_solution(
            correct, "toy_double_solution", "def double(x):\n    while True:\n        pass"
        ),
    )
    write(
        folder,
        "exits.ipynb",
        with_solution(correct, "toy_square_solution", "import os\nos._exit(1)"),
    )
    write(
        folder,
        "segfaults.ipynb",
        with_solution(correct, "toy_square_solution", "import ctypes\nctypes.string_at(0)"),
    )
    write(
        folder,
        "exits_137.ipynb",
        with_solution(correct, "toy_square_solution", "import os\nos._exit(137)"),
    )
    for student, ending in (("dies_in_a_test", "os._exit(3)"), ("crashes_in_a_test", CRASH)):
        write(
            folder,
            f"{student}.ipynb",
            with_solution(
                correct, "toy_double_solution", f"def double(x):\n    import os\n    {ending}"
            ),
        )
    write(
        folder,
        "memory_bomb.ipynb",
        with_solution(correct, "toy_double_solution", "hog = bytearray(64 * 2**30)"),
    )
    write(
        folder,
        "names_its_input.ipynb",
        with_solution(
            correct,
            "toy_double_solution",
            "def double(x):\n    if x < 0:\n        raise ValueError(f'got {x!r}')\n"
            "    return SCALE * x",
        ),
    )
    write(
        folder,
        "noisy.ipynb",
        with_solution(
            correct,
            "toy_double_solution",
            "def double(x):\n    warnings.warn('double is deprecated', DeprecationWarning)\n"
            "    warnings.warn('careful')\n    print('to stderr', file=sys.stderr)\n"
            "    print(f'double got {x!r}')\n    return SCALE * x",
        ),
    )
    write(
        folder,
        "uses_its_user_and_tmp.ipynb",
        with_solution(
            correct,
            "toy_double_solution",
            "import getpass, os, tempfile\n"
            "def double(x):\n"
            "    assert getpass.getuser() == os.environ['USER'] == 'student', getpass.getuser()\n"
            "    handle, path = tempfile.mkstemp()\n"
            "    assert path.startswith(os.environ['TMPDIR']), path\n"
            "    return SCALE * x",
        ),
    )
    write(
        folder,
        "hidden_fail.ipynb",
        with_solution(correct, "toy_double_solution", "def double(x):\n    return 2 * abs(x)"),
    )
    write(
        folder,
        "visible_fail.ipynb",
        with_solution(correct, "toy_double_solution", "def double(x):\n    return x"),
    )
    write(folder, "empty.ipynb", b"")
    write(folder, "not_json.ipynb", b"this is not a notebook")
    write(
        folder,
        "old_format.ipynb",
        json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}),
    )
    plain = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c.source) for c in correct.cells if c.cell_type == "code"]
    )
    write(folder, "no_metadata.ipynb", plain)
    # Cheats: each pairs a wrong double (x + 2) with an attack that used to make tests pass.
    cheat = "def double(x):\n    return x + 2\n"
    attacks = {
        "patches_builtins": "import builtins, math\nbuiltins.abs = lambda x: 0\n"
        "math.isclose = lambda *a, **k: True\nbuiltins.AssertionError = type(None)\n",
        "strips_asserts": "get_ipython().input_transformers_cleanup.append(\n"
        "    lambda lines: [l.replace('assert ', 'pass  # ') for l in lines])\n",
        "reads_history": "def double(x):\n    import re\n"
        "    seen = [m for c in In for m in re.findall(r'double\\((-?\\d+)\\) == (-?\\d+)', c)]\n"
        "    table = {int(a): int(b) for a, b in seen}\n    return table.get(x, x + 2)\n",
        "reads_source": f"import glob, re\nfound = ''\nfor p in {sorted(SOURCE_GLOBS)!r}:\n"
        "    for f in glob.glob(p, recursive=True):\n"
        "        try:\n            found += open(f).read()\n"
        "        except OSError:\n            pass\n"
        "if 'return SCALE * x' in found:\n    def double(x):\n        return SCALE * x\n",
        "writes_gradebook": "import glob, json, os\n"
        f"for p in glob.glob({str(GRADEBOOK_MARK) + '/**/*.json'!r}, recursive=True):\n"
        "    try:\n        r = json.load(open(p)); r['score'] = 99\n        json.dump(r, open(p, 'w'))\n"
        "    except OSError:\n        pass\n"
        f"os.makedirs({str(GRADEBOOK_MARK / '.results' / 'toy')!r}, exist_ok=True)\n",
    }
    for name, attack in attacks.items():
        body = cheat + attack if name != "reads_history" else attack
        write(folder, f"{name}.ipynb", with_solution(correct, "toy_double_solution", body))
    write(
        folder,
        "detached_child.ipynb",
        with_solution(
            correct,
            "toy_square_solution",
            "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
            f"'import os, time; os.setsid(); time.sleep({DETACHED_MARK})'], "
            "start_new_session=True)\ndef square(x):\n    return x * x\n",
        ),
    )
    write(
        folder,
        "replaces_request_folder.ipynb",
        with_solution(
            correct,
            "toy_square_solution",
            "import os\nrpc = os.path.join(os.path.dirname(os.getcwd()), 'rpc')\n"
            "os.rename(rpc, rpc + '-old')\nos.mkdir(rpc)\ndef square(x):\n    return x * x\n",
        ),
    )
    printer = copy.deepcopy(correct)
    printer.cells.insert(
        3, nbformat.v4.new_code_cell("print('x' * 100_000_000)\nimport sys\nsys.exit()")
    )
    write(folder, "prints_100mb.ipynb", printer)
    flooder = copy.deepcopy(correct)
    flooder.cells.insert(
        3,
        nbformat.v4.new_code_cell(
            "for i in range(40):\n    try:\n        raise ValueError(f'{i} ' + 'x' * 10**6)\n"
            "    except ValueError:\n        get_ipython().showtraceback()\n"
            "raise RuntimeError('the last one')"
        ),
    )
    write(folder, "floods_errors.ipynb", flooder)
    victim = tmp_path_factory.mktemp("victim") / "written_by_the_grader"
    write(
        folder,
        "sabotages_the_grader.ipynb",
        with_solution(
            correct,
            "toy_double_solution",
            "import os\nfrom ipykernel.connect import get_connection_file\n"
            "os.remove(get_connection_file())\n"
            "log = os.path.join(os.path.dirname(os.getcwd()), 'kernel.log')\n"
            f"os.remove(log)\nos.symlink({str(victim)!r}, log)\n"
            "def double(x):\n    return SCALE * x\n",
        ),
    )
    args = [
        "grade",
        "--course",
        str(TOY_ROOT),
        "--lab",
        "toy",
        str(folder),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--timeout",
        "8",
        "--notebook-timeout",
        "60",
        "--memory-mb",
        str(LIMITS.memory_mb),
        "--threads",
        "1",
        "--no-progress",
    ]
    began = time.monotonic()
    assert cli.main(args) == 0
    seconds = time.monotonic() - began
    return {
        "folder": folder,
        "out": out,
        "table": grades_by_student(out),
        "args": args,
        "seconds": seconds,
        "victim": victim,
    }


def test_every_student_has_exactly_one_row_per_question(batch):
    """Is grades.csv complete and free of duplicates, with totals matching?"""
    rows = read_csv(batch["out"] / "grades.csv")
    assert list(rows[0]) == ["student", "lab", "question", "score", "max_score", "status"]
    students = {p.stem for p in batch["folder"].glob("*.ipynb")}
    pairs = [(r["student"], r["question"]) for r in rows]
    assert sorted(pairs) == sorted((s, q) for s in students for q in QUESTIONS)
    totals = {r["student"]: r for r in read_csv(batch["out"] / "totals.csv")}
    assert set(totals) == students
    for student, questions in batch["table"].items():
        assert float(totals[student]["score"]) == sum(float(r["score"]) for r in questions.values())
        assert totals[student]["max_score"] == "6"


def test_solution_and_correct_answers_get_full_marks(batch):
    for student in ("solution", "correct"):
        assert scores(batch["table"], student) == FULL
        assert statuses(batch["table"], student) == {
            "toy_double": "ok",
            "toy_square": "ok",
            "toy_q_why": "manual",
        }


def test_blank_release_scores_zero(batch):
    assert scores(batch["table"], "blank") == {q: 0 for q in QUESTIONS}
    assert statuses(batch["table"], "blank")["toy_double"] == "ok"


def test_tampered_test_cells_are_restored_and_still_earn_their_points(batch):
    """Deleted, edited or metadata-stripped test cells: restored, flagged, graded."""
    table = batch["table"]
    for student, question in [
        ("deleted_test", "toy_double"),
        ("edited_test", "toy_double"),
        ("stripped_metadata", "toy_square"),
    ]:
        assert scores(table, student) == FULL, student
        assert statuses(table, student)[question] == "tampered", student
    assert scores(table, "edited_wrong")["toy_double"] == 0  # the restored test still fails it
    assert statuses(table, "edited_wrong")["toy_double"] == "tampered"
    result = json.loads((results_dir(batch["out"], "toy") / "edited_test.json").read_text())
    assert "edited" in result["changes"]["toy_double"][0]


def test_failures_say_whether_a_visible_check_or_a_hidden_test_failed(batch):
    """Is the reason given in words, with the test's message but not its source?"""
    rows = {
        student: json.loads((results_dir(batch["out"], "toy") / f"{student}.json").read_text())
        for student in ("hidden_fail", "visible_fail")
    }
    hidden = rows["hidden_fail"]["rows"][0]
    visible = rows["visible_fail"]["rows"][0]
    assert hidden["score"] == 0 and visible["score"] == 0
    assert hidden["message"] == "failed a hidden test: AssertionError: double(-3) should be -6."
    assert visible["message"].startswith("failed a visible check: AssertionError: double(2)")
    assert scores(batch["table"], "hidden_fail")["toy_square"] == 2


def test_a_value_left_unanswered_reads_not_answered_not_a_name_error():
    """A solution cell that defines a value (``target_sparsity = ...``) and still raises
    NotImplementedError leaves the name undefined: its test's NameError is "not answered
    yet", as for a function; a NameError with every solution cell run is explained as one."""
    cell = nbformat.v4.new_code_cell("assert target_sparsity > 0")
    missing = CellRun("error", 0.1, "NameError", "name 'target_sparsity' is not defined")
    blank = [CellRun("ok"), CellRun("error", 0.1, "NotImplementedError", "")]
    message = grade.failure_message(cell, missing, "test", blank)
    assert message == "not answered yet: a solution cell still raises NotImplementedError"
    message = grade.failure_message(cell, missing, "test", [CellRun("ok")])
    assert message.startswith("failed: NameError: name 'target_sparsity' is not defined")
    assert "did the cell that should define it run without an error?" in message


def test_a_name_missing_after_a_crashed_solution_cell_names_that_cells_error():
    """A solution cell with a SyntaxError defines nothing, and its test fails with a
    NameError: does the message give the solution cell's own error, which is what to fix?"""
    cell = nbformat.v4.new_code_cell("assert calibrate(None, [], 1) == 0")
    missing = CellRun("error", 0.1, "NameError", "name 'calibrate' is not defined")
    broken = CellRun("error", 0.1, "SyntaxError", "expected ':' (3471.py, line 3)\nmore")
    message = grade.failure_message(cell, missing, "test", [CellRun("ok"), broken])
    assert message.startswith("failed: NameError: name 'calibrate' is not defined")
    assert message.endswith(
        "(the cell that should define it failed: SyntaxError: expected ':' (3471.py, line 3))"
    )


def test_unreadable_submissions_get_zero_rows(batch):
    for student in ("empty", "not_json", "old_format", "no_metadata"):
        assert statuses(batch["table"], student) == {q: "unreadable" for q in QUESTIONS}
        assert scores(batch["table"], student) == {q: 0 for q in QUESTIONS}


def test_an_infinite_loop_times_out_and_other_cells_keep_their_scores(batch):
    assert statuses(batch["table"], "loop")["toy_double"] == "timeout"
    assert scores(batch["table"], "loop") == {**FULL, "toy_double": 0}


def test_a_dying_kernel_keeps_earlier_scores(batch):
    """os._exit(1) in the second solution: the first question keeps its points."""
    assert scores(batch["table"], "exits") == {**FULL, "toy_square": 0}
    assert statuses(batch["table"], "exits")["toy_square"] == "error"
    assert statuses(batch["table"], "exits")["toy_double"] == "ok"


@pytest.mark.parametrize(
    ("student", "cause", "memory"),
    [
        ("exits", "it exited with status 1 (os._exit()", False),
        ("segfaults", "it crashed (SIGSEGV)", True),
        ("exits_137", "it exited with status 137 (os._exit()", False),
    ],
)
def test_a_dead_kernel_says_how_it_ended(batch, student, cause, memory):
    """The kernel's exit status (through the sandbox's launcher, and from the template that
    forked it) names the cause; only a signal, which the memory cap or the system's
    out-of-memory killer may have sent, counts as a memory limit for regrading."""
    result = json.loads((results_dir(batch["out"], "toy") / f"{student}.json").read_text())
    (square,) = [row for row in result["rows"] if row["question"] == "toy_square"]
    assert f"the kernel died while running this cell: {cause}" in square["message"]
    assert ("memory" in result["limits_hit"]) is memory
    assert scores(batch["table"], student) == {**FULL, "toy_square": 0}


@pytest.mark.parametrize(
    ("student", "cause", "memory"),
    [
        ("dies_in_a_test", "it exited with status 3 (os._exit()", False),
        ("crashes_in_a_test", "it crashed (SIGSEGV)", True),
    ],
)
def test_a_kernel_ended_by_a_tests_call_says_how_and_stops_the_notebook(
    batch, student, cause, memory
):
    """The student's function ends its kernel while the judge calls it: the test's row names
    the cause from the exit status (not the judge's guess), the notebook stops there, and a
    signal counts as a memory limit for regrading, as in the student's own cells."""
    result = json.loads((results_dir(batch["out"], "toy") / f"{student}.json").read_text())
    rows = {row["question"]: row for row in result["rows"]}
    assert rows["toy_double"]["message"].startswith(
        f"the student's kernel died while running double: {cause}"
    ), rows["toy_double"]["message"]
    assert execute.JUDGE_DIED_GUESS not in rows["toy_double"]["message"]
    how = execute.how_it_ended(-signal.SIGSEGV if memory else 3)
    assert rows["toy_square"]["message"] == (
        f"not run: the student's kernel died during a test: {how}; later cells were not run"
    )
    assert ("memory" in result["limits_hit"]) is memory
    assert scores(batch["table"], student) == {q: 0 for q in QUESTIONS}


def test_how_a_kernel_ended_is_read_from_its_exit_status():
    """Negative statuses are signals (Popen's convention; the sandbox's launcher ends by its
    kernel's signal), so an os._exit(137) is an exit status of its own, not a SIGKILL."""
    assert execute.ending_signal(-9) == 9
    assert execute.ending_signal(137) is None
    assert execute.ending_signal(None) is None
    assert "exited with status 137" in execute.how_it_ended(137)
    assert "crashed (SIGABRT)" in execute.how_it_ended(-6)
    assert "ended by SIGTERM" in execute.how_it_ended(-15)
    assert "exit status is unknown" in execute.how_it_ended(None)


def test_a_memory_bomb_fails_only_its_own_question(batch):
    assert scores(batch["table"], "memory_bomb") == {**FULL, "toy_double": 0}


def test_a_kernel_has_a_user_name_and_its_own_temporary_folder(batch):
    """getpass.getuser() answers (the fallback's uids have no account; the grader's user name
    is not passed on) and tempfile writes in the workspace's TMPDIR, not the template's."""
    assert scores(batch["table"], "uses_its_user_and_tmp") == FULL


def test_warnings_and_stderr_cost_nothing(batch):
    assert scores(batch["table"], "noisy") == FULL
    assert statuses(batch["table"], "noisy")["toy_double"] == "ok"


def test_feedback_leaves_out_prints_under_tests_but_not_error_messages(batch):
    """As the README says: what the student's function prints while a test calls it stays out
    of the feedback page (test cells' outputs are left out), but an error it raises is the
    verdict's message, so a message that names its argument shows a hidden test's input."""
    page = (batch["out"] / "feedback" / "noisy" / "toy.html").read_text()
    page = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "print(f'double got {x!r}')" in page  # their code is there ...
    assert "double got 2" not in page and "double got -3" not in page  # ... not its prints
    rows = json.loads((results_dir(batch["out"], "toy") / "names_its_input.json").read_text())
    (row,) = [row for row in rows["rows"] if row["question"] == "toy_double"]
    assert row["message"] == "failed a hidden test: ValueError: got -3"


CHEATS = ("patches_builtins", "strips_asserts", "reads_history", "reads_source", "writes_gradebook")


@pytest.mark.parametrize("student", CHEATS)
def test_cheats_gain_nothing(batch, student):
    """A wrong double plus an attack on the tests (patched builtins, asserts stripped by an
    input transformer, hidden tests read from In, the source notebook read by path, results
    rewritten): exactly the wrong answer's score."""
    assert scores(batch["table"], student) == {**FULL, "toy_double": 0}


def test_replacing_the_graders_request_folder_is_flagged_tampered(batch):
    """The judge refuses a request folder put in the place of its own; the tests after that
    score 0 as ``tampered`` (an attack on the grader, for a person to look at), not as a
    failed test."""
    assert scores(batch["table"], "replaces_request_folder") == {**FULL, "toy_square": 0}
    assert statuses(batch["table"], "replaces_request_folder") == {
        "toy_double": "ok",
        "toy_square": "tampered",
        "toy_q_why": "manual",
    }
    result = json.loads(
        (results_dir(batch["out"], "toy") / "replaces_request_folder.json").read_text()
    )
    square = next(row for row in result["rows"] if row["question"] == "toy_square")
    assert "request folder" in square["message"] and "was replaced" in square["message"]
    assert result["status"] == "tampered"


def test_results_written_by_a_student_are_not_kept(batch):
    """Does every stored result equal its grades.csv rows (no score rewritten to 99)?"""
    for path in results_dir(batch["out"], "toy").glob("*.json"):
        result = json.loads(path.read_text())
        assert result["score"] <= result["max_score"] == 6
        assert {r["question"]: r["score"] for r in result["rows"]} == {
            q: float(row["score"]) for q, row in batch["table"][result["student"]].items()
        }


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_nothing_is_left_running(batch):
    """After the batch: no detached child (setsid) and no kernel of the batch alive?"""
    assert scores(batch["table"], "detached_child") == FULL
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(DETACHED_MARK)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(DETACHED_MARK)) == []
    assert [p for p in _processes_mentioning("ipykernel") if "autograder-" in p] == []


def test_huge_output_and_sys_exit_cost_nothing(batch):
    """100 MB printed and sys.exit() in a cell: full marks, feedback of bounded size."""
    assert scores(batch["table"], "prints_100mb") == FULL
    page = batch["out"] / "feedback" / "prints_100mb" / "toy.html"
    assert page.stat().st_size < 10 * 2**20
    assert "output beyond" in page.read_text()


def test_past_the_output_cap_one_error_is_kept_the_last():
    """The capped client alone, fed kernel messages: past a 1,000-byte cap, five large errors
    and then the cell's own leave one error (the last, in the first one's place), the output
    before the cap, and one notice; an error's value is clipped to ERROR_CLIP characters."""
    client = execute._CappedClient(nbformat.v4.new_notebook(), output_bytes=1000)
    client.reset_execution_trackers()
    client.clear_before_next_output = False
    client._output_used, client._output_cut, client._error_kept = {}, set(), {}

    def message(kind: str, content: dict) -> dict:
        header = {"msg_type": kind}
        return {
            "msg_type": kind,
            "header": header,
            "parent_header": {"msg_id": "m"},
            "content": content,
        }

    def error(name: str, value: str) -> dict:
        return message("error", {"ename": name, "evalue": value, "traceback": [value[:50]]})

    outs: list = []
    client.output(outs, message("stream", {"name": "stdout", "text": "before\n"}), None, 0)
    for i in range(5):
        client.output(outs, error("ValueError", f"{i} " + "x" * 50_000), None, 0)
    client.output(outs, error("RuntimeError", "the last one"), None, 0)
    kinds = [(o.output_type, o.get("ename") or o.get("text")) for o in outs]
    assert kinds[0] == ("stream", "before\n") and kinds[1] == ("error", "RuntimeError")
    assert len(outs) == 3 and "output beyond 1,000 bytes dropped" in outs[2]["text"]
    first = execute._clipped_error({"evalue": "x" * 50_000, "traceback": ["y" * 50_000]})
    assert len(first["evalue"]) == execute.ERROR_CLIP + len(" ...")
    assert sum(map(len, first["traceback"])) <= execute.ERROR_CLIP + len(" ...")


def test_a_flood_of_error_outputs_is_capped_like_any_output(batch):
    """40 tracebacks of 1 MB each in one cell, then the error that ends it: kept to the cell's
    output cap (past it one error is kept, clipped: the last, the cell's own; the rest are
    dropped with a notice)."""
    result = json.loads((results_dir(batch["out"], "toy") / "floods_errors.json").read_text())
    assert scores(batch["table"], "floods_errors") == FULL  # an ungraded cell failed
    page = batch["out"] / "feedback" / "floods_errors" / "toy.html"
    assert page.stat().st_size < 4 * 2**20, page.stat().st_size
    text = page.read_text()
    assert "output beyond" in text and "39 xxx" not in text
    assert "RuntimeError" in text and "the last one" in text
    assert result["internal_error"] is False


def test_a_student_who_removes_the_grader_files_in_reach_is_graded_as_usual(batch):
    """The student's code removes its kernel's connection file and puts a link to a file of
    the grader's user in place of the kernel log: the judge connects all the same, and
    writes nothing through the link (the grader's kernels never write to the student's
    folder by name after the student's code has run)."""
    assert scores(batch["table"], "sabotages_the_grader") == FULL
    result = json.loads(
        (results_dir(batch["out"], "toy") / "sabotages_the_grader.json").read_text()
    )
    assert result["internal_error"] is False
    assert not batch["victim"].exists()


def test_feedback_shows_scores_but_never_hidden_tests(batch):
    feedback = batch["out"] / "feedback"
    for student in ("solution", "correct", "blank", "edited_test", "exits", "empty"):
        page = (feedback / student / "toy.html").read_text()
        assert "double(-3)" not in page and "square(-4)" not in page and "HIDDEN" not in page
        assert "toy_double" in page
    page = re.sub(r"<[^>]+>", "", (feedback / "correct" / "toy.html").read_text())
    assert "return SCALE * x" in html.unescape(page) and "3 / 3" in page
    assert "NotImplementedError" in (feedback / "blank" / "toy.html").read_text()


def test_rerunning_regrades_only_what_is_missing(batch, tmp_path):
    """Interrupted batch: delete one result, run again; only that student is graded again."""
    out = tmp_path / "out"
    shutil.copytree(batch["out"], out)
    (results_dir(out, "toy") / "blank.json").unlink()
    (out / "grades.csv").unlink()
    report = grade_batch(
        [batch["folder"]], out, settings(), jobs=1, progress=False, log=lambda *_: None
    )
    assert report.graded == ["blank"]
    assert len(report.skipped) == len(list(batch["folder"].glob("*.ipynb"))) - 1
    assert read_csv(out / "grades.csv") == read_csv(batch["out"] / "grades.csv")


def test_a_rerun_after_the_grading_code_changed_keeps_grades_and_says_so(batch, tmp_path):
    """The student files (``helpers/``) changed since the batch was graded: a rerun keeps
    every stored grade (a change there may or may not matter) and warns, naming how many and
    ``--regrade``; with the code as it was graded, no warning."""
    out = tmp_path / "out"
    shutil.copytree(batch["out"], out)
    everyone = len(list(batch["folder"].glob("*.ipynb")))
    as_graded = dataclasses.replace(settings(), course=Course(root=TOY_ROOT, release_dir=TOY_ROOT))
    lines: list[str] = []
    report = grade_batch([batch["folder"]], out, as_graded, progress=False, log=lines.append)
    assert len(report.skipped) == everyone and not any("warning: " in line for line in lines)
    helpers = tmp_path / "helpers"
    shutil.copytree(REPO_ROOT / "helpers", helpers, ignore=shutil.ignore_patterns("__pycache__"))
    (helpers / "extra.py").write_text("FIXED = True\n")
    changed = dataclasses.replace(
        as_graded, course=dataclasses.replace(as_graded.course, student_files=(helpers,))
    )
    lines.clear()
    report = grade_batch([batch["folder"]], out, changed, progress=False, log=lines.append)
    assert report.graded == [] and len(report.skipped) == everyone
    warned = [line for line in lines if "graded before helpers/ or the grader changed" in line]
    assert len(warned) == 1 and "--regrade" in warned[0]
    assert warned[0].startswith(f"warning: {everyone} of the kept results"), warned


def test_a_rerun_with_higher_limits_regrades_who_ran_out_of_them(batch, tmp_path):
    """Raised limits: only the students whose stored run hit that limit are graded again (the
    batch built them: ``loop`` never ends; ``memory_bomb`` asks for 64 GiB; ``segfaults``
    crashes its kernel by a signal, as running out of memory in native code can, and so does
    ``crashes_in_a_test`` while a test calls it; ``exits`` and ``dies_in_a_test`` end theirs
    with ``os._exit``, which no limit explains, and are kept); the others are kept. Lower
    limits keep everyone."""
    out = tmp_path / "out"
    shutil.copytree(batch["out"], out)
    everyone = len(list(batch["folder"].glob("*.ipynb")))

    def rerun(**limits) -> tuple[list[str], list[str]]:
        lines: list[str] = []
        again = dataclasses.replace(settings(), limits=dataclasses.replace(LIMITS, **limits))
        report = grade_batch([batch["folder"]], out, again, progress=False, log=lines.append)
        assert len(report.graded) + len(report.skipped) == everyone
        return sorted(report.graded), lines

    graded, lines = rerun(cell_timeout=LIMITS.cell_timeout + 1)
    assert graded == ["loop"]
    assert (
        "1 graded again: they ran out of time, memory or file size under lower limits"
        in "\n".join(lines)
    )
    assert statuses(grades_by_student(out), "loop")["toy_double"] == "timeout"  # still loops
    assert rerun(notebook_timeout=None)[0] == ["loop"]  # no limit is a higher one
    assert rerun(memory_mb=LIMITS.memory_mb + 1)[0] == [
        "crashes_in_a_test",
        "memory_bomb",
        "segfaults",
    ]
    assert rerun(cell_timeout=2, notebook_timeout=30, memory_mb=2048)[0] == []
    assert read_csv(out / "grades.csv") == read_csv(batch["out"] / "grades.csv")


def test_two_submissions_for_one_student_grade_the_newest(tmp_path, release_text):
    folder = tmp_path / "in"
    old = write(folder, "dave/early/dave.ipynb", answered())
    write(folder, "dave/late/dave.ipynb", release_text)
    write(folder, "erin/toy.ipynb", release_text)
    os.utime(old, (1_000_000, 1_000_000))
    report = grade_batch(
        [folder], tmp_path / "out", settings(), progress=False, log=lambda *_: None
    )
    assert report.graded == ["dave", "erin"] and len(report.ignored) == 1
    assert "early" in report.ignored[0]
    assert scores(grades_by_student(tmp_path / "out"), "dave") == {q: 0 for q in QUESTIONS}


def test_zip_and_nbgrader_submitted_tree_inputs(tmp_path, release_text):
    """Does a zip (LMS bulk download) of an nbgrader submitted/ tree grade per student?"""
    tree = tmp_path / "submitted"
    write(tree, "erin/toy/toy.ipynb", answered())
    write(tree, "erin/toy/timestamp.txt", "2026-11-20 10:00:00.000000 UTC")
    write(tree, "frank/toy/toy.ipynb", release_text)
    archive = tmp_path / "bulk.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in tree.rglob("*"):
            if path.is_file():
                bundle.write(path, path.relative_to(tmp_path).as_posix())
        bundle.writestr("gina.ipynb", nbformat.writes(answered()))
    out = tmp_path / "out"
    grade_batch([archive], out, settings(), jobs=2, progress=False, log=lambda *_: None)
    table = grades_by_student(out)
    assert set(table) == {"erin", "frank", "gina"}
    assert scores(table, "erin") == FULL and scores(table, "gina") == FULL
    assert scores(table, "frank") == {q: 0 for q in QUESTIONS}


def test_grade_usage_errors_exit_2(tmp_path):
    base = ["grade", "--course", str(TOY_ROOT), "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main([*base, "--lab", "toy", str(tmp_path / "missing.ipynb")]) == 2
    assert cli.main([*base, "--lab", "nope", str(TOY_SOURCE)]) == 2
    (tmp_path / "file").write_text("")  # an output folder that cannot be made
    where = ["--out", str(tmp_path / "file" / "o")]
    assert cli.main([*base, *where, "--lab", "toy", str(TOY_SOURCE)]) == 2


def test_a_second_grade_into_the_same_folder_stops_at_once(tmp_path, capsys):
    """While one `grade` holds the output folder, does another stop with exit 2, naming the
    holder and grading nothing; and may it go on once the first has ended?"""
    out = tmp_path / "out"
    first = lock_output(out)  # as a running grade holds it
    argv = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(out)]
    argv += ["--no-progress", str(TOY_SOURCE)]
    try:
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"another grade or export run (pid {os.getpid()}, started " in err
        assert not (out / ".results").exists()
    finally:
        first.close()
    assert cli.main(argv) == 0
    assert "graded 1," in capsys.readouterr().out


def test_grade_says_when_an_input_holds_no_notebook(tmp_path, capsys):
    """An empty folder (a wrong path, say) beside a real submission: is it named?"""
    (tmp_path / "empty").mkdir()
    argv = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(tmp_path / "o")]
    argv += ["--no-progress", str(tmp_path / "empty"), str(TOY_SOURCE)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"warning: no notebook found in {tmp_path / 'empty'}" in out
    assert "no notebook found in" not in out.replace(f"found in {tmp_path / 'empty'}", "")
    assert "graded 1," in out


def test_ids_with_control_characters_are_printed_escaped(tmp_path, capsys):
    """A student folder named with a terminal escape (clear screen) and holding two
    notebooks: does `grade` print its lines with the escape written out, never raw? And does
    `shown` leave a printable id (accents included) as it is, and escape only what is not?"""
    for text in ["alice", "José Núñez", "bob\x1b[2J", "tab\there", "cr\rline", "nul\x00"]:
        printed = grade.shown(text)
        assert printed.isprintable()
        assert printed == text if text.isprintable() else ast.literal_eval(printed) == text
    folder = tmp_path / "class" / "bob\x1b[2J"
    folder.mkdir(parents=True)
    shutil.copy(TOY_SOURCE, folder / "toy.ipynb")
    shutil.copy(TOY_SOURCE, folder / "toy-Copy1.ipynb")
    argv = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--no-progress", str(tmp_path / "class")]) == 0
    said = capsys.readouterr()
    out = said.out + said.err
    assert "\x1b" not in out
    assert "a student with several notebooks: 'bob\\x1b[2J: ignored" in out


def test_a_kernel_that_cannot_start_is_the_graders_failure_not_the_students(tmp_path, capsys):
    """A memory cap too low for any kernel to start: does `grade` stop before grading anyone
    (exit 2, saying so) instead of storing an error for every student that a corrected rerun
    would keep? And where only the students' kernels fail to start (the set-up run cached
    from before), are they stored as the grader's failures, named, and graded by the next
    run with a working cap, without --regrade?"""
    out = tmp_path / "out"
    base = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(out)]
    base += ["--no-progress", "--timeout", "20", "--threads", "1", str(TOY_SOURCE)]
    capsys.readouterr()
    assert cli.main([*base, "--memory-mb", "10"]) == 2
    assert "a grading kernel cannot start here (--memory-mb 10: too low?)" in (
        capsys.readouterr().err
    )
    assert not list(out.glob(".results/toy/*.json")), "nobody should have been graded"

    assert (
        cli.main([*base, "--memory-mb", str(LIMITS.memory_mb)]) == 0
    )  # primes the set-up data (cached)
    graded = json.loads((out / ".results" / "toy" / "source.json").read_text())
    assert not graded["internal_error"] and graded["score"] > 0
    assert cli.main([*base, "--memory-mb", "10", "--regrade"]) == 0
    assert "the grader itself failed on 1 student(s), stored with 0 points: source;" in (
        capsys.readouterr().out
    )
    failed = json.loads((out / ".results" / "toy" / "source.json").read_text())
    assert failed["internal_error"] and failed["score"] == 0
    assert "the kernel did not start" in " ".join(failed["notes"])
    assert cli.main([*base, "--memory-mb", str(LIMITS.memory_mb)]) == 0
    assert "graded 1, kept 0 graded before" in capsys.readouterr().out
    again = json.loads((out / ".results" / "toy" / "source.json").read_text())
    assert not again["internal_error"] and again["score"] == graded["score"]


# --------------------------------------------------------------------------- validate, run


def test_validate_tells_a_student_what_passes(tmp_path, release_text, capsys):
    good = write(tmp_path, "mine.ipynb", answered())
    assert cli.main(["validate", str(good), "--course", str(TOY_ROOT), "--timeout", "20"]) == 0
    out, err = capsys.readouterr()
    assert "PASS     toy_double" in out and "WRITTEN  toy_q_why" in out
    code_cells = sum(1 for cell in answered().cells if cell.cell_type == "code")
    assert "checking mine.ipynb" in err and f"{code_cells}/{code_cells}" in err  # progress
    blank = write(tmp_path, "toy.ipynb", release_text)
    args = ["validate", str(blank), "--course", str(TOY_ROOT), "--timeout", "20", "--no-progress"]
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    assert "checking" not in err
    assert "FAIL     toy_double" in out and "NotImplementedError" in out


def test_validate_says_why_a_file_cannot_be_graded_in_one_sentence(tmp_path, capsys):
    """A truncated notebook: does validate refuse it, say why (the JSON error) and end the
    sentence once (the reason may end with its own question mark)?"""
    path = tmp_path / "mine.ipynb"
    path.write_text(nbformat.writes(answered())[:200])
    assert cli.main(["validate", str(path), "--course", str(TOY_ROOT), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "mine.ipynb cannot be graded: the file is not a notebook: it is not valid JSON" in out
    assert "truncated?" in out and "?." not in out and ".." not in out


def test_run_writes_the_executed_notebook(tmp_path, capsys):
    assert cli.main(["run", "--course", str(TOY_ROOT), "--lab", "toy", "--out", str(tmp_path)]) == 0
    executed = nbformat.read(tmp_path / "toy-smoke.ipynb", as_version=4)
    assert "setup done" in executed.cells[1].outputs[0]["text"]
    assert (tmp_path / "toy-smoke_files").is_dir()
    assert "wall time" in capsys.readouterr().out


def test_run_lab_runs_final_code_last_in_the_same_kernel(tmp_path):
    # benchmarks/lab_results.py reads a lab's figures this way.
    report = run_lab(
        toy_course(), "toy", "smoke", tmp_path, progress=False, final_code="print(double(21))"
    )
    assert report.failed is None, report.failure
    executed = nbformat.read(report.notebook, as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "42"
    assert len(executed.cells) == len(source_nb().cells) + 1


def test_figures_are_extracted_as_png(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 20
    import base64

    output = nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(png).decode()}
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[output])])
    (written,) = extract_figures(notebook, tmp_path / "figs")
    assert written.read_bytes() == png


def test_a_symbolic_link_in_a_submissions_folder_is_not_followed(tmp_path):
    """A notebook in a submissions folder that is a symbolic link to the source (solutions
    and all): is it graded unreadable, without the grader reading what it points to, a linked
    folder not searched, and a link the instructor names on the command line followed?"""
    folder = tmp_path / "in"
    write(folder, "bob.ipynb", answered())
    (folder / "mallory.ipynb").symlink_to(TOY_SOURCE)
    (folder / "eve").symlink_to(TOY_SOURCE.parent)  # a linked folder is not searched
    (tmp_path / "named.ipynb").symlink_to(folder / "bob.ipynb")
    out = tmp_path / "out"
    grade_batch([folder, tmp_path / "named.ipynb"], out, settings(), progress=False, log=print)
    table = grades_by_student(out)
    assert set(table) == {"bob", "mallory", "named"}
    assert set(statuses(table, "mallory").values()) == {"unreadable"}
    assert set(scores(table, "mallory").values()) == {0}
    (stored,) = [r for r in grade.load_results(out) if r["student"] == "mallory"]
    assert all("symbolic link" in row["message"] for row in stored["rows"])
    for student in ("bob", "named"):
        assert scores(table, student) == FULL
    again = grade_batch([folder], out, settings(), progress=False, log=print)
    assert "mallory" in again.skipped and not again.graded  # an unchanged link is kept


def test_a_feedback_page_that_cannot_be_rendered_keeps_the_grade(tmp_path):
    """A notebook nbconvert refuses (a cell id with a space: valid JSON, invalid nbformat) and
    one carrying widget state: is each graded in full, not an internal error, the first page
    the scores and a note saying why the cells are missing, the second the cells without the
    student's widget state (which the page would load from a CDN and show as live HTML)?"""
    bad = answered()
    bad.cells[0]["id"] = "cell 1"
    widget = answered()
    state = {"value": "<img src=x onerror=alert(1)>", "_model_name": "HTMLModel"}
    widget.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"m1": {"model_name": "HTMLModel", "state": state}},
            "version_major": 2,
            "version_minor": 0,
        }
    }
    folder = tmp_path / "in"
    write(folder, "bad.ipynb", json.dumps(bad))
    write(folder, "widget.ipynb", json.dumps(widget))
    out = tmp_path / "out"
    grade_batch([folder], out, settings(), progress=False, log=lambda *_: None)
    table = grades_by_student(out)
    assert scores(table, "bad") == FULL and scores(table, "widget") == FULL
    assert not [r for r in grade.load_results(out) if r.get("internal_error")]
    page = (out / "feedback" / "bad" / "toy.html").read_text()
    assert "cannot be shown here: it does not convert to HTML" in page
    assert "toy_double" in page  # the scores table is there, not the cells and verdicts
    assert "<strong>toy_double: 3 / 3</strong>" not in page
    page = (out / "feedback" / "widget" / "toy.html").read_text()
    assert "<strong>toy_double: 3 / 3</strong>" in page  # the cells, with their verdicts
    assert "onerror" not in page and "widget-state" not in page
    # static: no script of the student's nor of nbconvert's template (cdnjs), no link to one
    assert "<script" not in page.lower() and "cdnjs" not in page


def test_a_feedback_page_that_renders_too_long_is_cut_off():
    """Markdown that keeps nbconvert's parser busy for minutes (100,000 '['): is rendering
    stopped at the deadline, saying so?"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("[" * 100_000)])
    started = time.monotonic()
    body, why = report._render(notebook, 1)
    assert body is None and why == "converting it to HTML took longer than 1 s"
    assert time.monotonic() - started < 30
    fine = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("**hello**")])
    body, why = report._render(fine, 60)
    assert why == "" and "<strong>hello</strong>" in body


def test_a_name_bound_by_except_as_is_not_taken_from_the_student():
    """``except ValueError as error`` binds ``error`` in the test cell: the judge must not ask
    the student's kernel for it before every cell (a student's ``error`` could be a large
    tensor). The real labs' test cells use ``error`` and ``_error`` that way."""
    read, bound = grade._names("try:\n    f()\nexcept ValueError as error:\n    print(error)\n")
    assert {"f", "error"} <= read and "error" in bound and "f" not in bound
    course = Course()
    for lab in ("lab1_pruning", "lab3_quant_prune"):
        names = grade.student_names(course.load(lab))
        assert not {"error", "_error"} & set(names), (lab, names)
