"""The student handout: everything a student needs, and nothing a student must not see.

``python -m autograder handout --out DIR`` (``make handout``) writes the folder ``DIR`` and the
same files as ``DIR.zip``:

- the released notebooks (``<lab>.ipynb``), refused when a committed release is stale;
- the course's student files (``helpers/``), the install files (``pyproject.toml``,
  ``environment.yml``, ``Makefile``, ``.gitignore``), ``data/README.md`` and its manifest;
- the ``autograder`` package without ``source/``, so that students can run ``validate``, with
  an unedited copy of each released notebook (``autograder/released/``) to check against;
- ``README.md``: the students' guide (``autograder/handout_readme.md``).

Nothing else: no sources, tests, benchmarks or results. Before writing, every file is searched
for the sources' solutions and hidden tests (a long line of one, anywhere in a line, or three
lines in a row, or a whole region of fewer lines, that the release does not show; lines compared
without comments and spaces); a hit stops the handout and names the file and the line.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.course import COURSE_ROOT, RELEASED, REPO_ROOT, Course
from autograder.notebooks import (
    HIDDEN_BEGIN,
    HIDDEN_END,
    SOLUTION_BEGIN,
    SOLUTION_END,
    marked_regions,
    source_text,
)

# Files of the repository a student gets as they are (paths relative to the repository).
REPO_FILES = (
    "pyproject.toml",
    "environment.yml",
    "Makefile",
    ".gitignore",
    "data/README.md",
    "data/manifest.json",
)
STUDENT_README = COURSE_ROOT / "handout_readme.md"
NAME = "HANDOUT_NAME"  # in STUDENT_README: the handout's folder (and zip) name
LONG_LINE = 32  # characters without spaces: a line this long from a solution is distinctive
RUN = 3  # lines in a row: a shorter run of solution lines may be ordinary code
MAX_SHOWN = 10  # leaks named in the error
PACKAGE = Path(__file__).parent  # the autograder package
ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # every zip entry's time, so that a handout is reproducible


class HandoutError(RuntimeError):
    """The handout cannot be written (a stale release, a leak)."""


class OutputExists(HandoutError):
    """The output folder or zip is there already (nothing is overwritten)."""


@dataclass
class Handout:
    folder: Path
    archive: Path
    files: list[str]  # paths relative to ``folder``


def build(course: Course, out: Path, replace: bool = False) -> Handout:
    """Write the handout of every lab of ``course`` to ``out`` and ``out``.zip; ``replace``: an
    earlier handout there (and only a handout) is replaced."""
    from autograder.release import committed_matches

    out = Path(out).resolve()
    archive = out.with_name(out.name + ".zip")
    taken = [p for p in (out, archive) if p.exists() and not (p.is_dir() and not any(p.iterdir()))]
    if taken and not replace:
        raise OutputExists(
            f"{' and '.join(map(str, taken))} exist(s) already; remove, replace (--replace) "
            "or pick --out"
        )
    strangers = [p for p in taken if not _is_handout(p, out.name)]
    if strangers:
        raise OutputExists(f"{strangers[0]} is not a handout: not replaced; pick --out")
    labs = course.labs()
    if not labs:
        raise HandoutError(f"no labs under {course.root / 'source'}")
    files: dict[str, bytes] = {}
    for lab in labs:
        same, fresh = committed_matches(course, lab)
        if not same:
            raise HandoutError(
                f"{course.release_path(lab)} is not a fresh release of its source: run "
                "`make release` (it also checks the release) before making the handout"
            )
        files[f"{lab}.ipynb"] = files[f"autograder/{RELEASED}/{lab}.ipynb"] = fresh.encode()
    try:
        files.update(course.student_tree())
    except FileNotFoundError as error:
        raise HandoutError(str(error)) from None
    files.update(package_files("autograder/"))
    for name in REPO_FILES:
        files[name] = (REPO_ROOT / name).read_bytes()
    files["README.md"] = STUDENT_README.read_text().replace(NAME, out.name).encode()
    leaks = find_leaks(course, labs, files)
    if len(leaks) > MAX_SHOWN:
        leaks = [*leaks[:MAX_SHOWN], f"... and {len(leaks) - MAX_SHOWN} more"]
    if leaks:
        raise HandoutError(
            "the handout would show solutions or hidden tests:\n  " + "\n  ".join(leaks)
        )
    _write(files, out, archive)
    return Handout(out, archive, sorted(files))


def _code_lines(text: str) -> list[str]:
    """The lines that say something, compared as code: without comments (``#`` outside
    strings, by Python's tokenizer) and without spaces; blank lines dropped."""
    return [code for code, _ in _lines_as_written(text)]


def _lines_as_written(text: str) -> list[tuple[str, str]]:
    """(``_code_lines``'s form, the line as written, stripped) for each line that says
    something: the first is compared, the second named in a leak."""
    pairs = (("".join(_without_comment(line).split()), line.strip()) for line in text.split("\n"))
    return [(code, written) for code, written in pairs if code]


def _without_comment(line: str) -> str:
    if "#" not in line:
        return line
    try:
        for token in tokenize.generate_tokens(io.StringIO(line.strip()).readline):
            if token.type == tokenize.COMMENT:
                return line.strip()[: token.start[1]]
    except (tokenize.TokenError, SyntaxError):  # an unclosed bracket or string: keep it all
        pass
    return line


def _regions(source: str) -> list[str]:
    """The solution and hidden-test regions of a cell's source, delimiter lines excluded."""
    lines = source.split("\n")
    regions = []
    for begin, end in ((SOLUTION_BEGIN, SOLUTION_END), (HIDDEN_BEGIN, HIDDEN_END)):
        for numbers in marked_regions(source, begin, end):
            inner = [lines[n - 1] for n in numbers[1:]]
            regions.append("\n".join(line for line in inner if end not in line))
    return regions


def _windows(lines: list[str]) -> set:
    """Every run of 1 to RUN lines in a row, as tuples."""
    return {tuple(lines[i : i + k]) for k in range(1, RUN + 1) for i in range(len(lines) - k + 1)}


def _signatures(lines: list[str]) -> set:
    """What identifies a region: each long line, each run of RUN lines, and a region of fewer
    lines (Lab 1's one-line value answer) as a whole."""
    long = {(line,) for line in lines if len(line) >= LONG_LINE}
    runs = {tuple(lines[i : i + RUN]) for i in range(len(lines) - RUN + 1)}
    whole = {tuple(lines)} if 0 < len(lines) < RUN else set()
    return long | runs | whole


def find_leaks(course: Course, labs: list[str], files: dict[str, bytes]) -> list[str]:
    """``<file>: <lab>'s solution or hidden test: <the line(s)>`` for each place in ``files``
    that shows one, and ``<file>: holds <marker>`` for a notebook with a region marker."""
    secret: dict = {}
    for lab in labs:
        shown, shown_lines = set(), []
        for cell in nbformat.reads(files[f"{lab}.ipynb"].decode(), as_version=4).cells:
            lines = _code_lines(source_text(cell))
            shown |= _windows(lines)
            shown_lines += lines
        for cell in course.load(lab).notebook.cells:
            for region in _regions(source_text(cell)):
                for signature in _signatures(_code_lines(region)) - shown:
                    if len(signature) == 1 and any(signature[0] in line for line in shown_lines):
                        continue  # the release quotes it (a hint in the prose)
                    secret.setdefault(signature, lab)
    single = [signature[0] for signature in secret if len(signature) == 1]
    leaks = []
    for name, data in sorted(files.items()):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if name.endswith(".ipynb"):
            text = "\n".join(source_text(cell) for cell in nbformat.reads(text, 4).cells)
            for marker in (SOLUTION_BEGIN, HIDDEN_BEGIN):
                if marker in text:
                    leaks.append(f"{name}: holds {marker!r}")
        pairs = _lines_as_written(text)
        lines = [code for code, _ in pairs]
        for index, line in enumerate(lines):
            for k in range(1, RUN + 1):
                signature = tuple(lines[index : index + k])
                if len(signature) == k and signature in secret:
                    what = " / ".join(written for _, written in pairs[index : index + k])
                    leaks.append(f"{name}: {secret[signature]}'s solution or hidden test: {what}")
            for signature in single:  # one line inside a longer one (prose, a backquote)
                if signature in line and signature != line:
                    what = pairs[index][1]
                    leaks.append(
                        f"{name}: {secret[(signature,)]}'s solution or hidden test: {what}"
                    )
    return leaks


def _is_handout(path: Path, name: str) -> bool:
    """Whether ``path`` (a folder or a zip) is a handout this command wrote."""
    if path.is_dir():
        return (path / "autograder" / RELEASED).is_dir()
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.startswith(f"{name}/autograder/{RELEASED}/") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _write(files: dict[str, bytes], out: Path, archive: Path) -> None:
    """Write the folder and the zip beside ``out`` (an earlier folder there is replaced as a
    whole); nothing is left half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        folder = scratch / out.name
        packed = scratch / archive.name
        for name, data in sorted(files.items()):
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        write_zip(packed, files, prefix=f"{out.name}/")
        if out.is_dir():
            os.replace(out, scratch / "earlier")  # empty, or a handout (checked by build)
        os.replace(folder, out)
        os.replace(packed, archive)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def package_files(prefix: str) -> dict[str, bytes]:
    """The ``autograder`` package's modules (no sources, no data), named ``prefix + file``."""
    return {prefix + path.name: path.read_bytes() for path in sorted(PACKAGE.glob("*.py"))}


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "", executable=()) -> None:
    """Write ``files`` (name: bytes) to the zip ``path`` as ``prefix + name``, byte for byte the
    same for the same files (fixed entry times); names in ``executable`` get mode 755."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in sorted(files.items()):
            entry = zipfile.ZipInfo(prefix + name, date_time=ZIP_TIME)
            entry.external_attr = (0o755 if name in executable else 0o644) << 16
            zipped.writestr(entry, data, zipfile.ZIP_DEFLATED)
