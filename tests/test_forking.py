"""Are judge kernels forked from a template fresh processes, and is grading unchanged by it?

A template (``autograder.forking``) imports modules once and forks a kernel per request. These
tests start real kernels from a template through the grader's kernel manager and check what a
kernel sees (its own environment, folder and memory cap; modules imported before it existed;
nothing left by an earlier kernel), that kernels die with their template, that a broken
template only means a normal start, and that a toy batch scores the same forked or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from toy import QUESTIONS, TOY_ROOT, answered, with_solution

from autograder import forking
from autograder.course import Course
from autograder.execute import Limits, _LimitedKernelManager, kernel_env
from autograder.grade import Settings, grade_batch

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not forking.supported(), reason="forking needs Linux with pidfd"),
]

# tempfile caches its folder on first use: the template's, unless each kernel forgets it
PRELOADED = "import os, tempfile\nIMPORTED_BY = os.getpid()\nCALLS = []\ntempfile.gettempdir()\n"
REPORT = """
import json, os, resource, sys, tempfile
already = "preloaded" in sys.modules
import preloaded
preloaded.CALLS.append(os.getpid())
print(json.dumps({
    "already": already, "imported_by": preloaded.IMPORTED_BY, "pid": os.getpid(),
    "ppid": os.getppid(), "calls": preloaded.CALLS, "cwd": os.getcwd(),
    "lab_data": os.environ.get("LAB_DATA"), "memory": resource.getrlimit(resource.RLIMIT_AS)[0],
    "file": resource.getrlimit(resource.RLIMIT_FSIZE),
    "session": os.getsid(0), "tmp": tempfile.gettempdir(),
}))
"""


@pytest.fixture
def lib(tmp_path) -> Path:
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "preloaded.py").write_text(PRELOADED)
    return folder


def run_kernel(km: _LimitedKernelManager, cwd: Path, env: dict, code: str) -> dict:
    """Start ``km``'s kernel in ``cwd``, run ``code``, return the JSON it printed."""

    async def go() -> dict:
        printed = []
        await km.start_kernel(env=env, cwd=str(cwd))
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=120)

            def hook(msg):
                if msg["msg_type"] == "stream":
                    printed.append(msg["content"]["text"])

            reply = await client.execute_interactive(code, timeout=120, output_hook=hook)
            assert reply["content"]["status"] == "ok", reply["content"]
        finally:
            client.stop_channels()
            await km.shutdown_kernel(now=True)
        return json.loads("".join(printed))

    return asyncio.run(go())


def test_each_kernel_is_a_fresh_fork_with_its_own_environment(tmp_path, lib):
    """Modules come imported from the template, but each kernel starts from the template's
    state (a list one kernel appends to is empty in the next), in its own session, folder,
    environment, memory cap and file-size cap."""
    env = kernel_env({"PYTHONPATH": str(lib)})
    template = forking.Template(env, ("preloaded",), lib)
    try:
        seen = []
        for number in range(2):
            cwd = tmp_path / f"work{number}"
            cwd.mkdir()
            km = _LimitedKernelManager(
                kernel_name="python3", memory_bytes=6 << 30, file_bytes=5 << 20, template=template
            )
            (cwd / "tmp").mkdir()
            run_env = {**env, "LAB_DATA": str(cwd / "data"), "TMPDIR": str(cwd / "tmp")}
            seen.append(run_kernel(km, cwd, run_env, REPORT))
        for number, report in enumerate(seen):
            assert report["already"], "the module was not imported by the template"
            assert report["imported_by"] == template.process.pid != report["pid"]
            assert report["ppid"] == template.process.pid
            assert report["calls"] == [report["pid"]], "state leaked from an earlier kernel"
            assert report["cwd"] == str((tmp_path / f"work{number}").resolve())
            assert report["lab_data"] == str(tmp_path / f"work{number}" / "data")
            assert report["memory"] == 6 << 30
            assert report["file"] == [5 << 20, 5 << 20]
            assert report["session"] == report["pid"], "the kernel is not in its own session"
            assert report["tmp"] == str(tmp_path / f"work{number}" / "tmp"), "the template's"
        assert seen[0]["pid"] != seen[1]["pid"]
        assert template.failed_imports == []
    finally:
        template.close()


def test_kernels_die_with_their_template(tmp_path, lib):
    template = forking.Template(kernel_env({"PYTHONPATH": str(lib)}), ("preloaded",), lib)
    try:
        process = template.fork(
            "import time\ntime.sleep(600)", [], kernel_env(), str(tmp_path), str(tmp_path / "log")
        )
        time.sleep(1)
        assert process.poll() is None
        template.process.kill()
        assert process.wait(timeout=20) == -1, "the kernel outlived its template"
    finally:
        template.close()


def test_a_forked_processs_exit_status_comes_from_its_template(tmp_path, lib):
    """The template reaps its children: does ``exit_status`` give what ``Popen`` would (an
    exit code, or minus the signal), and None while the process runs?"""
    template = forking.Template(kernel_env({"PYTHONPATH": str(lib)}), ("preloaded",), lib)
    try:
        codes = {
            "import os\nos._exit(3)": 3,
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)": -9,
            "import ctypes\nctypes.string_at(0)": -11,
        }
        for code, expected in codes.items():
            process = template.fork(code, [], kernel_env(), str(tmp_path), str(tmp_path / "log"))
            process.wait(timeout=20)
            assert process.exit_status() == expected, code
        running = template.fork(
            "import time\ntime.sleep(600)", [], kernel_env(), str(tmp_path), str(tmp_path / "log")
        )
        assert running.exit_status() is None
        running.kill()
        running.wait(timeout=20)
        assert running.exit_status() == -9
        assert list((template.root / "exits").iterdir()) == []  # each read once, then removed
    finally:
        template.close()


def test_a_forked_process_never_writes_its_log_through_a_link(tmp_path, lib):
    """A log path that is a symbolic link (a student's code could put one where a kernel's
    log goes) is not followed: the forked process does not start, and the link's target is
    neither created nor written."""
    template = forking.Template(kernel_env({"PYTHONPATH": str(lib)}), ("preloaded",), lib)
    target, link = tmp_path / "elsewhere", tmp_path / "kernel.log"
    link.symlink_to(target)
    try:
        process = template.fork("print('x' * 100)", [], kernel_env(), str(tmp_path), str(link))
        process.wait(timeout=20)
        assert process.exit_status() != 0
        assert not target.exists()
        plain = template.fork(
            "print('written')", [], kernel_env(), str(tmp_path), str(tmp_path / "log")
        )
        plain.wait(timeout=20)
        assert plain.exit_status() == 0
        assert (tmp_path / "log").read_text() == "written\n"
    finally:
        template.close()


def test_a_failed_import_is_reported_and_the_kernel_still_starts(tmp_path, lib):
    env = kernel_env({"PYTHONPATH": str(lib)})
    template = forking.Template(env, ("no_such_module_here", "preloaded"), lib)
    try:
        km = _LimitedKernelManager(kernel_name="python3", template=template)
        report = run_kernel(km, tmp_path, env, REPORT)
        assert report["already"]
        assert template.failed_imports and "no_such_module_here" in template.failed_imports[0]
    finally:
        template.close()


def test_a_dead_template_means_a_normal_start(tmp_path, lib):
    env = kernel_env({"PYTHONPATH": str(lib)})
    template = forking.Template(env, ("preloaded",), lib)
    template.process.send_signal(signal.SIGKILL)
    template.process.wait(timeout=20)
    try:
        km = _LimitedKernelManager(kernel_name="python3", template=template)
        report = run_kernel(km, tmp_path, env, REPORT)
        assert not report["already"] and report["imported_by"] == report["pid"]
        assert km.template is None
    finally:
        template.close()


def test_template_for_reuses_one_template_and_close_all_ends_it(tmp_path, lib):
    env = kernel_env({"PYTHONPATH": str(lib), "AUTOGRADER_RPC_DIR": "/a", "LAB_DATA": "/b"})
    first = forking.template_for(env, ("preloaded",), lib)
    other_run = {**env, "AUTOGRADER_RPC_DIR": "/c", "LAB_DATA": "/d"}  # per-kernel values
    assert forking.template_for(other_run, ("preloaded",), lib) is first
    forking.close_all()
    assert first.process.poll() is not None and not first.root.exists()


def test_a_batch_scores_the_same_forked_or_not(tmp_path, monkeypatch):
    """Forked or not, the same scores; forked, one student's and one judge's template for the
    whole batch, although each submission's workspace writes its own copy of the student
    files (a template keyed by their times started a judge template per submission)."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(answered(), folder / "correct.ipynb")
    wrong = "def double(x):\n    return 2 * abs(x)"
    nbformat.write(with_solution(answered(), "toy_double_solution", wrong), folder / "wrong.ipynb")
    provided = tmp_path / "toy_helpers.py"  # a student file: copied into every workspace
    provided.write_text("ANSWER = 42\n")
    settings = Settings(
        course=Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=(provided,)),
        lab="toy",
        limits=Limits(cell_timeout=60, notebook_timeout=300, threads=1),
    )
    started = []

    class Recorded(forking.Template):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(forking, "Template", Recorded)
    rows, isolation = {}, {}
    for mode in ("off", "on"):
        monkeypatch.setenv("AUTOGRADER_FORK", mode)
        batch = grade_batch([folder], tmp_path / f"out-{mode}", settings, progress=False, log=id)
        rows[mode] = {
            r["student"]: [(x["question"], x["score"], x["status"]) for x in r["rows"]]
            for r in batch.results
        }
        isolation[mode] = {r["isolation"] for r in batch.results}
    assert rows["on"] == rows["off"]
    assert [q for q, _, _ in rows["on"]["correct"]] == QUESTIONS
    assert rows["on"]["correct"][0][1] > rows["on"]["wrong"][0][1]
    assert len(started) == 2, "a student's and a judge's template (forking on), none with it off"
    assert all(t.process.poll() is not None for t in started), "a template outlived its batch"
    assert isolation["on"] == isolation["off"], "the forked student's kernel is isolated the same"


def test_a_parallel_batch_leaves_no_template_folder_behind(tmp_path, monkeypatch):
    # The pool's workers start their own templates and leave through os._exit (no atexit).
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ("one", "two"):
        nbformat.write(answered(), folder / f"{name}.ipynb")
    settings = Settings(
        course=Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=()),
        lab="toy",
        limits=Limits(cell_timeout=60, notebook_timeout=300, threads=1),
    )
    monkeypatch.setenv("AUTOGRADER_FORK", "on")
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("autograder-template-*"))
    batch = grade_batch([folder], tmp_path / "out", settings, jobs=2, progress=False, log=id)
    assert sorted(r["student"] for r in batch.results) == ["one", "two"]
    assert all(r["isolation"] for r in batch.results)
    left = [
        path
        for path in set(scratch.glob("autograder-template-*")) - before
        if not owned_by_a_live_process(path)  # a grader running beside this test keeps its own
    ]
    assert not left, f"template folders left behind: {sorted(left)}"


def owned_by_a_live_process(folder: Path) -> bool:
    """Whether a template folder belongs to another process still running (another grader on
    this machine), or is gone already; the batch's workers have all exited when this is
    asked, and one owned by this process (the batch's parent) was left behind by it."""
    try:
        record = (folder / forking.OWNER_FILE).read_text()
    except FileNotFoundError:  # removed meanwhile, or just made and not yet marked
        return True
    return int(record.split()[0]) != os.getpid() and forking._owner_alive(record)


def test_folders_of_a_killed_grader_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    """A grader killed with SIGKILL cannot clean up: does the next sweep remove its template
    and submission folders, while keeping a live process's and an unmarked folder, and
    catching an owner record whose pid now belongs to another process?"""
    import os
    import subprocess
    import sys

    code = (
        "import os, time\n"
        "from autograder import forking\n"
        "t = forking.Template(dict(os.environ), ())\n"
        "print(t.root, forking.owned_tempdir('autograder-'), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    grader = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    left = [Path(p) for p in grader.stdout.readline().split()]
    grader.kill()
    grader.wait(timeout=30)
    grader.stdout.close()
    assert len(left) == 2 and all(p.parent == tmp_path and p.is_dir() for p in left)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = forking.owned_tempdir("autograder-")  # this process's: alive
    unmarked = tmp_path / "autograder-unmarked"
    unmarked.mkdir()
    reused = tmp_path / "autograder-reused"
    reused.mkdir()
    started = forking._process_state(os.getpid())[1]
    (reused / forking.OWNER_FILE).write_text(f"{os.getpid()} {int(started) + 1}")

    assert sorted(forking.sweep_stale()) == sorted([*left, reused])
    assert not any(p.exists() for p in [*left, reused])
    assert live.is_dir() and unmarked.is_dir()
    assert forking.sweep_stale() == []


def test_grading_starts_with_a_sweep(tmp_path, monkeypatch):
    """Does a batch remove what a killed grader left, and say so?"""
    import subprocess
    import sys

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = forking.owned_tempdir("autograder-")
    (stale / forking.OWNER_FILE).write_text(f"{dead.pid} -")
    (tmp_path / "submissions").mkdir()
    settings = Settings(
        course=Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=()), lab="toy"
    )
    lines = []
    grade_batch(
        [tmp_path / "submissions"], tmp_path / "out", settings, progress=False, log=lines.append
    )
    assert not stale.exists()
    assert "removed 1 temporary folder(s) left by a grader that was killed" in lines
