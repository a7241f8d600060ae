"""Does a grading batch killed mid-way leave no kernels behind and finish, losing nothing,
when the same command is run again? And when only the grading process gets the signal
(SIGTERM: a clean stop; SIGKILL), do its workers, templates and kernels end too?

`python -m autograder grade --jobs 2` runs on six toy submissions (tests/fixtures/toy) as a
subprocess in its own session, is SIGKILLed as a whole process group once some but not all
results are stored while a kernel is running, and is then run again. The run's processes are
recognised by the test's temporary folder: the command runs there (its workers inherit that
working folder) with TMPDIR inside it, which holds the kernels' workspaces (their working
folders), the kernel templates' folders and the connection files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from toy import QUESTIONS, TOY_LIMITS, TOY_ROOT, answered, read_csv, with_solution

from autograder import cli, forking, grade
from autograder.cli import stop_on_signals
from autograder.course import Course
from autograder.execute import Limits
from autograder.grade import Settings, discover, internal_error_result, write_json_atomic

pytestmark = pytest.mark.timeout(240)


def write_submissions(folder: Path) -> list[str]:
    """Six toy submissions, from full marks to unreadable; returns the student ids."""
    folder.mkdir()
    notebooks = {
        "correct": answered(),
        "hidden_fail": with_solution(
            answered(), "toy_double_solution", "def double(x):\n    return 2 * abs(x)"
        ),
        "visible_fail": with_solution(
            answered(), "toy_double_solution", "def double(x):\n    return x"
        ),
        "not_answered": with_solution(
            answered(), "toy_square_solution", "def square(x):\n    raise NotImplementedError()"
        ),
        "exits": with_solution(answered(), "toy_square_solution", "import os\nos._exit(1)"),
    }
    for student, notebook in notebooks.items():
        nbformat.write(notebook, folder / f"{student}.ipynb")
    (folder / "empty.ipynb").write_bytes(b"")
    return sorted([*notebooks, "empty"])


def stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, parent pid, ... (OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def parent_of(pid: int) -> int:
    return int(stat_fields(pid)[1])


def processes_of_run(root: Path) -> dict[int, str]:
    """Live processes (not zombies) whose working folder or command line is under ``root``,
    other than this one: pid -> command line."""
    prefix = str(root) + os.sep
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            state = stat_fields(pid)[0]
            command = command_line(pid)
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and (prefix in command or (cwd + os.sep).startswith(prefix)):
            found[pid] = command
    return found


def described(pid: int) -> str:
    """One line on a process: pid, state, parent, working folder and the start of its command
    line (a forked kernel's is its template's, so the folder tells which it is)."""
    try:
        fields = stat_fields(pid)
        cwd = os.readlink(f"/proc/{pid}/cwd")
        command = command_line(pid)
    except OSError as error:
        return f"{pid}: {error}"
    return f"{pid}: state {fields[0]}, parent {fields[1]}, in {cwd}: {command[:60]!r}"


def kernels(processes: dict[int, str], root: Path) -> dict[int, str]:
    """The kernels among them: started with a connection file under ``root``, or (forked
    from a template, ``autograder.forking``, so with the template's command line) working
    in a submission's workspace (``<TMPDIR>/autograder-.../work``)."""
    connection = f" -f {root}{os.sep}"
    found = {}
    for pid, command in processes.items():
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        in_workspace = cwd.name == "work" and cwd.parent.name.startswith("autograder-")
        if connection in command or in_workspace:
            found[pid] = command
    return found


def grade_command(tmp_path: Path, students: list[str]) -> tuple[list[str], dict[str, str]]:
    """The `grade` command over the submissions (two workers) and its environment, with
    TMPDIR inside ``tmp_path``."""
    command = [
        sys.executable, "-m", "autograder", "grade", "--course", str(TOY_ROOT), "--lab", "toy",
        *(str(tmp_path / "submissions" / f"{s}.ipynb") for s in students),
        "--out", str(tmp_path / "out"), "--jobs", "2", "--timeout", "20",
        "--notebook-timeout", "60", "--memory-mb", str(TOY_LIMITS.memory_mb), "--threads", "1",
        "--no-progress",
    ]  # fmt: skip
    (tmp_path / "tmp").mkdir()
    return command, {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}


def start_until_a_kernel_runs(
    tmp_path: Path, command: list[str], env: dict[str, str], total: int
) -> subprocess.Popen:
    """Start the batch in a session of its own (its output into ``stdout.txt`` and
    ``stderr.txt``);
    return once some but not all results are stored while a kernel of the run is alive (the
    caller kills it)."""
    stored = tmp_path / "out" / ".results" / "toy"
    began = time.monotonic()
    with open(tmp_path / "stdout.txt", "w") as stdout, open(tmp_path / "stderr.txt", "w") as err:
        batch = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=err,
            start_new_session=True,
        )
    try:
        while True:
            assert batch.poll() is None, "the batch ended before it could be interrupted"
            assert time.monotonic() - began < 120, "no result within 120 s"
            done = len(list(stored.glob("*.json"))) if stored.is_dir() else 0
            assert done < total, "every submission was graded before the kill"
            if done >= 1 and kernels(processes_of_run(tmp_path), tmp_path):
                return batch
            time.sleep(0.05)
    except BaseException:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait(timeout=30)
        raise


def assert_nothing_left_running(tmp_path: Path) -> None:
    """Within 15 s no process of the run is left (any left are killed, then reported)."""
    deadline = time.monotonic() + 15  # ipykernel notices a dead parent within about a second
    left = processes_of_run(tmp_path)
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = processes_of_run(tmp_path)
    survivors = [described(pid) for pid in left]
    for pid in left:  # do not leak them into other tests, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the kill: {survivors}"


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_a_killed_batch_leaves_no_kernels_and_resumes_without_regrading(tmp_path):
    """Killed (SIGKILL, whole group) with some results stored: are no kernels left running,
    and does the same command then finish the batch, keep (and say it kept) what was stored
    before, and write one row per question per student with totals that add up?"""
    students = write_submissions(tmp_path / "submissions")
    out = tmp_path / "out"
    command, env = grade_command(tmp_path, students)
    stored = out / ".results" / "toy"
    first = start_until_a_kernel_runs(tmp_path, command, env, len(students))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)

    before = {path.name: path.read_bytes() for path in stored.glob("*.json")}
    assert 1 <= len(before) < len(students)
    assert_nothing_left_running(tmp_path)

    second = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150
    )
    assert second.returncode == 0, second.stderr
    assert f"graded {len(students) - len(before)}, kept {len(before)} graded before" in (
        second.stdout
    )
    after = {path.name: path.read_bytes() for path in stored.glob("*.json")}
    assert sorted(after) == [f"{s}.json" for s in students]
    for name, content in before.items():
        assert after[name] == content, f"{name} was graded again"
        assert json.loads(after[name])["graded_at"] == json.loads(content)["graded_at"]

    rows = read_csv(out / "grades.csv")
    assert sorted((r["student"], r["question"]) for r in rows) == sorted(
        (s, q) for s in students for q in QUESTIONS
    )
    totals = {r["student"]: r for r in read_csv(out / "totals.csv")}
    assert sorted(totals) == students
    for student in students:
        mine = [r for r in rows if r["student"] == student]
        assert float(totals[student]["score"]) == pytest.approx(
            sum(float(r["score"]) for r in mine)
        )
        assert float(totals[student]["max_score"]) == sum(float(r["max_score"]) for r in mine)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_grader_killed_alone_stops_its_workers_and_kernels(tmp_path, signum):
    """Only the grading process gets the signal (`kill PID`, `timeout`, the OOM killer), not
    its workers. SIGTERM: does it stop as Ctrl-C does (exit 143, says so, results kept)?
    SIGKILL: do its workers notice and end? Either way: within seconds no worker, template
    or kernel is left (they used to grade the queued submissions orphaned, then wait forever
    holding PyTorch), and the folders they leave are the next run's to remove."""
    students = write_submissions(tmp_path / "submissions")
    command, env = grade_command(tmp_path, students)
    batch = start_until_a_kernel_runs(tmp_path, command, env, len(students))
    os.kill(batch.pid, signum)
    try:
        batch.wait(timeout=60)
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert batch.returncode == (128 + signum if signum == signal.SIGTERM else -signum)
    if signum == signal.SIGTERM:
        stderr = (tmp_path / "stderr.txt").read_text()
        assert "stopped by SIGTERM: the students graded so far are kept" in stderr
    assert_nothing_left_running(tmp_path)
    stored = list((tmp_path / "out" / ".results" / "toy").glob("*.json"))
    assert 1 <= len(stored) < len(students), "the workers graded on after the grader died"

    left = sorted((tmp_path / "tmp").glob("autograder-*"))
    assert forking.sweep_stale(tmp_path / "tmp") == left  # owned by dead processes, all
    assert not list((tmp_path / "tmp").glob("autograder-*"))


def test_sigterm_and_sighup_interrupt_a_batch_but_nohup_is_respected():
    """Within ``stop_on_signals``: does SIGTERM raise KeyboardInterrupt (the clean stop of
    Ctrl-C) and record itself, does a second one get the default action, does a SIGHUP that
    was ignored (nohup) stay ignored while one that was not interrupts, and are the previous
    handlers back afterwards?"""
    before = signal.getsignal(signal.SIGTERM)
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_on_signals() as received:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs before this returns
            assert received == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second one kills
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, ignored)
    assert signal.getsignal(signal.SIGTERM) is before

    # a SIGHUP not ignored, whatever this process inherited (pytest itself run under nohup)
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with stop_on_signals() as received:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)
            assert received == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, inherited)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_a_dead_worker_costs_nobody_their_grade(tmp_path):
    """A grading worker killed mid-batch (the OOM killer, say) breaks the whole pool: are the
    unfinished submissions graded again in new workers, so that every student ends with a
    real result and none with an internal error (they all used to)? And is a stored internal
    error regraded by the next run, the others kept?"""
    students = write_submissions(tmp_path / "submissions")
    command, env = grade_command(tmp_path, students)
    batch = start_until_a_kernel_runs(tmp_path, command, env, len(students))
    try:
        processes = processes_of_run(tmp_path)
        server = [
            p for p, c in processes.items() if "forkserver" in c and parent_of(p) == batch.pid
        ]
        workers = [p for p in processes if server and parent_of(p) == server[0]]
        assert len(workers) == 2, f"two workers expected: {processes}"
        os.kill(workers[0], signal.SIGKILL)
        assert batch.wait(timeout=180) == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert "a grading worker died; grading the" in (tmp_path / "stdout.txt").read_text()
    stored = tmp_path / "out" / ".results" / "toy"
    results = {p.stem: json.loads(p.read_text()) for p in stored.glob("*.json")}
    assert sorted(results) == students
    assert [s for s, r in results.items() if r["internal_error"]] == []
    assert results["correct"]["score"] == max(r["score"] for r in results.values()) > 0
    assert results["empty"]["status"] == "unreadable"
    assert_nothing_left_running(tmp_path)

    broken = internal_error_result(
        next(
            s
            for s in discover([tmp_path / "submissions"], "toy", tmp_path)
            if s.student == "correct"
        ),
        Settings(Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=()), "toy", Limits()),
        "the grading worker process died (a test)",
    )
    write_json_atomic(stored / "correct.json", broken)
    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150
    )
    assert again.returncode == 0, again.stderr
    assert f"graded 1, kept {len(students) - 1} graded before" in again.stdout
    regraded = json.loads((stored / "correct.json").read_text())
    assert not regraded["internal_error"]
    assert regraded["score"] == results["correct"]["score"]


def test_grade_names_the_students_the_grader_failed_on(tmp_path, monkeypatch, capsys):
    """When the grader itself fails on a student (here: grading raises), is the student
    stored as an internal error with 0 points, the batch still exit 0 (the contract), and
    does `grade` say who it failed on and that a rerun grades them again?"""
    write_submissions(tmp_path / "submissions")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the grader")

    monkeypatch.setattr(grade, "grade_submission", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    argv = ["grade", "--course", str(TOY_ROOT), "--lab", "toy", "--no-progress"]
    argv += [str(tmp_path / "submissions" / "correct.ipynb"), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "the grader itself failed on 1 student(s), stored with 0 points: correct;" in out
    stored = json.loads((tmp_path / "out" / ".results" / "toy" / "correct.json").read_text())
    assert stored["internal_error"] and stored["score"] == 0
    assert "RuntimeError: a bug in the grader" in " ".join(stored["notes"])


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_a_worker_follows_its_grader_out(pidfd):
    """``_follow_grader`` (what each pool worker runs first): does the process end, soon
    after the grader's process is gone and not before, with pidfds and by polling where
    there are none?"""
    grader = subprocess.Popen(["sleep", "60"])
    code = "import os, sys, time\n"
    code += "" if pidfd else "del os.pidfd_open\n"
    code += "from autograder.grade import _follow_grader\n"
    code += "_follow_grader(int(sys.argv[1]))\nprint('following', flush=True)\ntime.sleep(60)\n"
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(grader.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline() == "following\n"
        time.sleep(1.5)
        assert worker.poll() is None, "the worker ended while its grader was alive"
        grader.kill()
        grader.wait()
        assert worker.wait(timeout=5) == 1
    finally:
        grader.kill()
        worker.kill()
        worker.wait()
