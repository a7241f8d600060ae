"""Kernels forked from a Python that has already imported what a lab needs.

Every submission gets two fresh kernels, and a fresh Python spends most of its start on
imports: PyTorch alone takes 2 to 3 s on a 2-core machine, its compiler stack (which the
first optimizer imports) 2 s more, the lab's helpers and matplotlib another second. Grading
is CPU-bound, so that would be paid twice per submission. A *template* is a Python started
once per grading process with a kernel's environment: it imports modules (what the lab's
set-up cells and provided files import), never runs a cell, and forks one process per
kernel. The child does exactly what the kernel command would do after its interpreter
started (its own session, environment, folder and log, then the same launcher code: memory
cap, sandbox, ipykernel), so it is a fresh process: nothing passes from one kernel to the
next, and the student's kernel is sandboxed as before.

The student's template imports third-party modules only (never the course's files; those a
student has are imported from the student's own folder), the judge's also the course's
helpers and the judge runtime. Templates die with the process that started them
(``PR_SET_PDEATHSIG``), and their kernels with them. Where fork, ``prctl`` or pidfds are
missing (not Linux), or ``AUTOGRADER_FORK=off``, kernels start as usual; a template that
fails only means a usual start.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import multiprocessing.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Environment variables that differ between submissions: set in each child, not part of
# what makes a template.
PER_KERNEL_ENV = ("PYTHONPATH", "LAB_DATA", "HOME", "TMPDIR", "JPY_PARENT_PID")
PER_KERNEL_PREFIX = "AUTOGRADER_"

# Run by the template's Python (``python -c``): import, then fork a kernel per request line.
# A child does what a kernel command (``python -c LAUNCHER -f CONNECTION``) would do after
# the interpreter's start: its own session, standard streams and environment, its
# PYTHONPATH in front, then the launcher code.
_TEMPLATE = r"""
import ctypes, importlib, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader ends the template, not Ctrl-C
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
if sys.path and sys.path[0] == "":
    del sys.path[0]
template = os.getpid()
requests, replies = os.fdopen(0, "r"), os.fdopen(os.dup(1), "w")
failed = []
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except BaseException as error:
        failed.append(f"{name}: {type(error).__name__}: {error}"[:300])


exits = sys.argv[3]  # the folder where a kernel's exit status is written: <pid>


def reap(*_):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            with open(os.path.join(exits, f"{pid}.part"), "w") as stream:
                stream.write(str(os.waitstatus_to_exitcode(status)))
            os.replace(os.path.join(exits, f"{pid}.part"), os.path.join(exits, str(pid)))
        except (OSError, ValueError):
            pass


signal.signal(signal.SIGCHLD, reap)


def child(request):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the template gone: this kernel too
    if os.getppid() != template:
        os._exit(1)
    null = os.open(os.devnull, os.O_RDONLY)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_NOFOLLOW if request["log"] else 0)
    log = os.open(request["log"] or os.devnull, flags, 0o600)  # never through a link
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 1 << 16)  # nothing of the template's stays open
    os.environ.clear()
    os.environ.update(request["env"])
    if "tempfile" in sys.modules:  # it caches the folder it chose: the template's TMPDIR
        sys.modules["tempfile"].tempdir = None
    os.chdir(request["cwd"])
    front = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in front if p not in sys.path]
    sys.argv = ["-c", *request["argv"]]
    exec(compile(request["code"], "<kernel launcher>", "exec"), {"__name__": "__main__"})


replies.write(json.dumps({"ready": True, "failed": failed}) + "\n")
replies.flush()
for line in requests:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(request)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 0
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
"""


def supported() -> bool:
    """Whether kernels can be forked from a template here (Linux: fork, prctl, pidfd)."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "pidfd_open")
        and hasattr(signal, "pidfd_send_signal")
        and os.environ.get("AUTOGRADER_FORK", "on").lower() not in ("0", "off", "no")
    )


class TemplateError(RuntimeError):
    """The template could not fork a kernel (the caller starts one the usual way)."""


class ForkedProcess:
    """A ``subprocess.Popen``-like handle on a kernel a template forked (not our child).

    Exit and signals go through a pidfd, so a reused pid can never be signalled by mistake.
    The exit status is the template's to collect: it writes it to ``exits/<pid>``, which
    ``exit_status`` reads; ``returncode`` is -1 once the kernel ended.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, exits: Path | None = None) -> None:
        self.pid = pid
        self.exits = exits
        self._status: int | None = None
        self.returncode: int | None = None
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd, self.returncode = None, -1

    def poll(self) -> int | None:
        if self.returncode is None and self._fd is not None and self._exited(0):
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._fd is not None:
            if not self._exited(timeout):
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self._ended()
        return self.returncode if self.returncode is not None else -1

    def _exited(self, timeout: float | None) -> bool:
        """Whether the pidfd turns readable (the process ended) within ``timeout`` seconds
        (``poll``, not ``select``: a long grading run may hold descriptors past 1024)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def send_signal(self, signum: int) -> None:
        if self.poll() is None and self._fd is not None:
            try:
                signal.pidfd_send_signal(self._fd, signum)
            except ProcessLookupError:
                self._ended()

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _ended(self) -> None:
        self.returncode = -1
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def exit_status(self, wait: float = 2.0) -> int | None:
        """The ended kernel's exit status as ``Popen.returncode`` gives it (negative: killed
        by that signal), from the template; None while it runs or when not known within
        ``wait`` seconds (the template writes it when it reaps the kernel, just after)."""
        if self._status is not None or self.poll() is None or self.exits is None:
            return self._status
        path = self.exits / str(self.pid)
        deadline = time.monotonic() + wait
        while True:
            try:
                self._status = int(path.read_text())
                path.unlink(missing_ok=True)
                return self._status
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


OWNER_FILE = ".autograder-owner"


def _process_state(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from ``/proc``, or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # the stat file's fields 3 and 22


def owned_tempdir(prefix: str) -> Path:
    """A new temporary folder (``mkdtemp``) that records this process as its owner, so that
    ``sweep_stale`` can tell when it was left behind by a grader that was killed."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    state = _process_state(os.getpid())
    (root / OWNER_FILE).write_text(f"{os.getpid()} {state[1] if state else '-'}")
    return root


def pid_exists(pid: int) -> bool:
    """Whether a process (a zombie included) has this pid, another user's too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return True


def _owner_alive(record: str) -> bool:
    pid_text, started = record.split()
    pid = int(pid_text)
    if not pid_exists(pid):
        return False
    state = _process_state(pid)
    if state is None:
        return True
    return state[0] != "Z" and started in ("-", state[1])  # not a zombie, not a reused pid


def sweep_stale(folder: Path | None = None) -> list[Path]:
    """Remove the ``autograder-*`` temporary folders whose owning process is gone (a grader
    killed with SIGKILL cannot clean up after itself). Folders of live processes, and any
    folder without an owner record, are left alone. Returns the folders removed."""
    removed = []
    for path in sorted(Path(folder or tempfile.gettempdir()).glob("autograder-*")):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            stale = not _owner_alive((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class Template:
    """One template Python (see the module doc); ``fork`` is thread-safe.

    ``env``: the kernels' environment (what differs per kernel is left out); ``preload``:
    modules to import; ``lib``: a folder to copy and import ``preload`` from, or None.
    """

    def __init__(
        self, env: dict[str, str], preload: tuple[str, ...], lib: Path | None = None
    ) -> None:
        self.owner = os.getpid()
        self.root = owned_tempdir("autograder-template-")
        for folder in ("home", "tmp", "exits"):
            (self.root / folder).mkdir()
        own_env = stable_env(env)
        own_env.update({"HOME": str(self.root / "home"), "TMPDIR": str(self.root / "tmp")})
        if lib is not None:
            shutil.copytree(lib, self.root / "lib")
            own_env["PYTHONPATH"] = str(self.root / "lib")
        self.failed_imports: list[str] = []
        self._ready = False
        self._lock = threading.Lock()
        # From the calling (main) thread: PR_SET_PDEATHSIG follows the thread that forked.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _TEMPLATE,
                str(os.getpid()),
                json.dumps(list(preload)),
                str(self.root / "exits"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=own_env,
            cwd=self.root,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _reply(self) -> dict:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise TemplateError(f"the kernel template exited (status {self.process.poll()})")
        return json.loads(line)

    def fork(
        self, code: str, argv: list[str], env: dict[str, str], cwd: str, log: str
    ) -> ForkedProcess:
        """A new process that runs ``python -c code *argv`` in ``cwd`` with ``env`` (its
        output appended to the file ``log``, or dropped), with ``preload`` imported."""
        request = {"code": code, "argv": list(argv), "env": env, "cwd": cwd, "log": log}
        with self._lock:
            try:
                if not self._ready:
                    self.failed_imports = self._reply().get("failed", [])
                    self._ready = True
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                return ForkedProcess(int(self._reply()["pid"]), self.root / "exits")
            except (OSError, ValueError, KeyError) as error:
                raise TemplateError(f"the kernel template failed: {error}") from error

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the template (its kernels die with it) and remove its folder."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


# A student's and a judge's per lab; each holds an imported PyTorch (about half a GiB).
MAX_TEMPLATES = 4
_templates: dict[str, Template] = {}


def stable_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without what differs from one kernel to the next."""
    return {
        k: v
        for k, v in env.items()
        if k not in PER_KERNEL_ENV and not k.startswith(PER_KERNEL_PREFIX)
    }


def _key(env: dict[str, str], preload: tuple[str, ...], lib: Path | None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([sorted(stable_env(env).items()), list(preload)]).encode())
    # the files' contents, not their times: each submission's workspace writes its own copy
    # of the same files (keyed by time, every submission started a judge template of its own,
    # 5 s of imports, and pushed the student's template out: MAX_TEMPLATES)
    for path in sorted(lib.rglob("*")) if lib is not None else []:
        if path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"{path.relative_to(lib)}\0{content}\0".encode())
    return digest.hexdigest()


def template_for(
    env: dict[str, str], preload: tuple[str, ...], lib: Path | None = None
) -> Template | None:
    """The template for kernels with this environment, started on first use (from the
    calling thread: call it from the main thread). None where forking is not supported."""
    if not supported() or not preload:
        return None
    key = _key(env, preload, lib)
    template = _templates.get(key)
    if template is not None and not template.alive:
        _templates.pop(key).close()
        template = None
    if template is None:
        while len(_templates) >= MAX_TEMPLATES:
            _templates.pop(next(iter(_templates))).close()
        _close_at_exit()
        template = _templates[key] = Template(env, preload, lib)
    return template


def close_all() -> None:
    """End every template this process started (at the end of a batch, and at exit)."""
    while _templates:
        template = _templates.popitem()[1]
        if template.owner == os.getpid():  # not a forked parent's (its own to close)
            template.close()


_closing_for: int | None = None


def _close_at_exit() -> None:
    """Have this process end its templates when it exits. A multiprocessing worker (the
    grader's pool) leaves through ``os._exit``, which skips ``atexit`` but runs the
    finalizers multiprocessing registers in that process: without one, its templates' folders
    stayed behind."""
    global _closing_for
    if _closing_for != os.getpid():
        _closing_for = os.getpid()
        multiprocessing.util.Finalize(None, close_all, exitpriority=0)


atexit.register(close_all)
