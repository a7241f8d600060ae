"""Gradescope: an autograder zip that grades each submission with this grader.

``python -m autograder gradescope --lab LAB`` (instructors) writes ``gradescope-<LAB>.zip``, to
upload as a Gradescope programming assignment's autograder. Gradescope unpacks it into
``/autograder/source``, runs ``setup.sh`` once when it builds the image and
``run_autograder`` for every submission. The zip holds:

- ``setup.sh``: a Python >= 3.11 (``python3`` when it is one, else one installed with uv:
  Gradescope's Ubuntu 22.04 image has 3.10), a virtual environment in ``/autograder/venv``,
  PyTorch's CPU build (``TORCH_INDEX_URL``, default PyTorch's CPU wheels) and the course,
  with torch, torchvision and torchao pinned to the versions installed where the zip was built;
  then ``/autograder/source`` is made readable by root only (a student's kernel runs as
  another user where the container allows no namespaces: ``autograder.sandbox``);
- ``run_autograder``: ``python -m autograder.gradescope`` in ``course/``; should that die
  (out of memory, say) without writing ``results.json``, it writes one itself that says so;
- ``gradescope.json``: the lab, profile, limits and visibility chosen when building;
- ``course/``: what grading needs: ``pyproject.toml``, the student files (``helpers/``), the
  ``autograder`` package and this lab's source notebook (solutions and hidden tests: the zip
  is the instructors'; Gradescope never shows it to students).

``run`` (what ``run_autograder`` calls) finds the student's notebook in
``/autograder/submission`` (the one named ``<LAB>.ipynb`` when there are several), grades it
with ``grade_batch`` exactly as ``grade`` does, and writes ``/autograder/results/results.json``
with ``export.gradescope_result``: one test per autograded cell, its output the grader's
message (written answers are left to Gradescope's manual questions; the output names them).
A submission without a notebook, or a grader failure, still gets a ``results.json`` (score 0)
whose output says what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from autograder.course import REPO_ROOT, Course
from autograder.execute import Limits
from autograder.notebooks import AUTOGRADED_KINDS

CONFIG = "gradescope.json"
ROOT_VARIABLE = "GRADESCOPE_ROOT"  # /autograder unless set (the tests set it)
PYTHON_VARIABLE = "GRADESCOPE_PYTHON"  # <root>/venv/bin/python unless set
# Gradescope's defaults (its documentation): a 10-minute timeout for the whole run, 768 MB of
# memory and half a CPU. The limits below keep a hanging notebook inside those 10 minutes, so
# that the student still sees which cells passed; the memory must be raised (see README).
LIMITS = Limits(cell_timeout=120, notebook_timeout=420, memory_mb=8192, threads=1)

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (written by
# `python -m autograder gradescope`). It needs the network.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
VENV="$ROOT/venv"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
found=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
        "$candidate" -m venv "$VENV" 2>/dev/null; then
        found="$candidate"
        break
    fi
    rm -rf "$VENV"
done
if [ -z "$found" ]; then
    echo "no Python >= 3.11 with venv here: installing one with uv"
    pip_uv() { python3 -m pip install --quiet "$@" uv; }
    # --break-system-packages: an image whose python3 refuses pip (PEP 668, Ubuntu 24.04)
    pip_uv || pip_uv --break-system-packages || {
        apt-get update && apt-get install -y python3-pip && { pip_uv || pip_uv --break-system-packages; }
    }
    # a Python outside /root, so that a kernel run as nobody can start it
    UV_PYTHON_INSTALL_DIR=/opt/uv-python python3 -m uv venv --seed --python 3.11 "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# the versions the zip was built and checked with (`autograder gradescope` pins them)
"$VENV/bin/python" -m pip install --quiet @TORCH_PINS@ \
    ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$VENV/bin/python" -m pip install --quiet -e "$ROOT/source/course" @COURSE_PINS@
"$VENV/bin/python" -c 'import autograder.gradescope, helpers, torch; print("torch", torch.__version__)'
# the solutions and hidden tests: root only (a kernel without namespaces runs as nobody)
chmod -R go-rwx "$ROOT/source"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission (written by `python -m autograder gradescope`).
ROOT="${GRADESCOPE_ROOT:-/autograder}"
PYTHON="${GRADESCOPE_PYTHON:-$ROOT/venv/bin/python}"
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
rm -f "$RESULTS"
cd "$ROOT/source/course" && "$PYTHON" -m autograder.gradescope --root "$ROOT"
status=$?
if [ ! -s "$RESULTS" ]; then
    if [ "$status" -eq 137 ]; then
        why="it was killed (exit status 137), most likely for using more memory than the autograder's limit"
    else
        why="it stopped with exit status $status"
    fi
    printf '{"score": 0, "output": "The autograder could not grade this submission: %s. This is not a mark on your work: tell your instructor.", "tests": []}\n' "$why" >"$RESULTS"
fi
"""

EXECUTABLE = ("setup.sh", "run_autograder")
# Pinned in setup.sh to the versions installed where the zip is built (where `make release`
# checked the labs): an image rebuilt later gets the same PyTorch, not the newest. The first
# two come from PyTorch's index (TORCH_INDEX_URL), torchao with the course from PyPI.
TORCH_PACKAGES = ("torch", "torchvision")
COURSE_PACKAGES = ("torchao",)


def pins(names: tuple[str, ...]) -> str:
    """``name==version`` of each installed package (without a local label such as ``+cu130``:
    ``torch==2.5.1`` accepts ``2.5.1+cpu`` from PyTorch's CPU index)."""
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            raise BundleError(f"{name} is not installed here: install the course first") from None
    return " ".join(found)


def setup_script() -> str:
    """``setup.sh`` with this environment's versions pinned."""
    return SETUP_SH.replace("@TORCH_PINS@", pins(TORCH_PACKAGES)).replace(
        "@COURSE_PINS@", pins(COURSE_PACKAGES)
    )


class BundleError(RuntimeError):
    """The autograder zip cannot be written (an unknown lab, the output exists)."""


@dataclass
class Bundle:
    files: list[str]  # names in the zip
    points: float  # the autograded cells' points: the assignment's "Autograder Points"
    written: list[tuple[str, float]]  # (grade_id, points) of the answers graded by hand


def build(
    course: Course,
    lab: str,
    out: Path,
    limits: Limits = LIMITS,
    profile: str = "smoke",
    visibility: str = "visible",
    replace: bool = False,
) -> Bundle:
    """Write the Gradescope autograder zip for ``lab`` to ``out``."""
    from autograder.handout import package_files, write_zip

    out = Path(out)
    if out.exists() and not replace:
        raise BundleError(f"{out} exists already; remove it, pass --replace or pick --out")
    spec = course.load(lab)
    source = spec.path
    files = {"setup.sh": setup_script().encode(), "run_autograder": RUN_AUTOGRADER.encode()}
    config = {
        "lab": lab,
        "profile": profile,
        "visibility": visibility,
        "limits": asdict(limits),
        "student_files": [path.name for path in course.student_files],
    }
    files[CONFIG] = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    try:
        files.update(course.student_tree("course/"))
    except FileNotFoundError as error:
        raise BundleError(str(error)) from None
    files.update(package_files("course/autograder/"))
    files["course/autograder/nbgrader_config.py"] = course.config_file.read_bytes()
    files[f"course/autograder/source/{lab}/{lab}.ipynb"] = source.read_bytes()
    files["course/pyproject.toml"] = (REPO_ROOT / "pyproject.toml").read_bytes()
    files["course/README.md"] = (
        f"The grading side of the course lab {lab}, for Gradescope: see setup.sh and "
        "run_autograder beside this folder, and autograder/gradescope.py.\n"
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    write_zip(partial, files, executable=EXECUTABLE)
    os.replace(partial, out)
    graded = [cell for cell in spec.questions if cell.kind in AUTOGRADED_KINDS]
    written = [(cell.grade_id, cell.points) for cell in spec.questions if cell not in graded]
    return Bundle(sorted(files), sum(cell.points for cell in graded), written)


def _pick(found: list, lab: str) -> tuple[object | None, str]:
    """The submission to grade among ``found`` (``grade.Submission``), and a note for the
    student; None when there is none to grade (the note says why)."""
    wanted = f"{lab}.ipynb"
    names = [Path(s.origin.split("!")[-1]).name for s in found]
    if not found:
        return None, f"No notebook in your submission: upload {wanted}."
    if len(found) == 1:
        return found[0], f"Graded {names[0]}."
    named = [s for s, name in zip(found, names, strict=True) if name == wanted]
    if len(named) == 1:
        others = ", ".join(sorted(n for n in names if n != wanted))
        return named[0], f"Graded {wanted}; not graded: {others}."
    listed = ", ".join(sorted(names))
    return None, f"Your submission has {len(found)} notebooks ({listed}): upload only {wanted}."


def _failure(output: str, visibility: str) -> dict:
    return {"score": 0, "output": output, "visibility": visibility, "tests": []}


def run(root: Path, log=print) -> dict:
    """Grade the submission under ``root`` (Gradescope's ``/autograder``); write and return
    ``root/results/results.json`` (see the module doc)."""
    from autograder import forking
    from autograder.export import gradescope_result
    from autograder.grade import Settings, discover, grade_batch
    from autograder.tables import write_text_atomic

    config = json.loads((root / "source" / CONFIG).read_text())
    lab, visibility = config["lab"], config.get("visibility", "visible")
    results = root / "results" / "results.json"
    scratch = forking.owned_tempdir("autograder-gradescope-")
    try:
        try:
            (scratch / "in").mkdir()
            found = discover([root / "submission"], lab, scratch / "in", empty_folders=False)
            chosen, note = _pick(found, lab)
            if chosen is None:
                value = _failure(note, visibility)
            else:
                course = Course(student_files=tuple(REPO_ROOT / n for n in config["student_files"]))
                settings = Settings(
                    course=course,
                    lab=lab,
                    limits=Limits(**config["limits"]),
                    profile=config["profile"],
                    hidden=(root / "source", root / "submission", root / "results"),
                )
                out = scratch / "graded"
                batch = grade_batch([chosen], out, settings, progress=False, log=log)
                (result,) = [r for r in batch.results if r["lab"] == lab]
                value = gradescope_result([result], False, visibility, written=False)
                value["output"] = f"{note}\n{value['output']}"
        except Exception as error:  # noqa: BLE001 (the student gets a result that says so)
            traceback.print_exc()
            value = _failure(
                "The autograder failed on this submission (an error in the grader, not in your "
                f"notebook: {type(error).__name__}: {error}). Tell your instructor.",
                visibility,
            )
        write_text_atomic(results, json.dumps(value, indent=1) + "\n")
        return value
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def lay_out(bundle: Path, root: Path, submitted: dict[str, bytes]) -> None:
    """Lay out ``root`` as Gradescope's ``/autograder`` for one submission: the zip unpacked
    in ``source/``, ``submitted`` (file name: content) in ``submission/``."""
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    (root / "submission").mkdir(parents=True)
    for name, data in submitted.items():
        (root / "submission" / name).write_bytes(data)


def local_command(root: Path, python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run a laid-out ``root``'s ``run_autograder`` here, as
    Gradescope runs it, with ``python`` in place of the venv ``setup.sh`` makes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({ROOT_VARIABLE: str(root), PYTHON_VARIABLE: python})
    return ["bash", str(root / "source" / "run_autograder")], env


def try_locally(bundle: Path, submitted: dict[str, bytes]) -> dict:
    """Run ``bundle``'s ``run_autograder`` on one submission in a scratch ``/autograder``
    (this Python, the zip's own code) and return its ``results.json``."""
    root = Path(tempfile.mkdtemp(prefix="gradescope-try-"))
    try:
        lay_out(bundle, root, submitted)
        command, env = local_command(root)
        subprocess.run(command, cwd=root, env=env, check=False)  # its log goes to the terminal
        return json.loads((root / "results" / "results.json").read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.gradescope",
        description="Grade the submission in ROOT/submission into ROOT/results/results.json "
        "(what the Gradescope bundle's run_autograder runs).",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get(ROOT_VARIABLE) or "/autograder"),
        help="Gradescope's folder (default: $GRADESCOPE_ROOT, else /autograder)",
    )
    args = parser.parse_args(argv)
    value = run(args.root.resolve())
    print(f"score {value['score']:g}: {value['output']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
