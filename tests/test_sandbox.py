"""Does the sandbox keep a student's kernel away from the grader's files, network and processes?

Each test runs a small notebook through ``execute(..., sandbox=...)`` and checks from the host
what a cell could see or leave behind. Tests of Linux namespaces skip, saying why, only where
the probe says this machine cannot create them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyter_client import BlockingKernelClient
from nbformat import v4

from autograder import sandbox
from autograder.execute import (
    _LAUNCHER,
    Execution,
    Limits,
    _LimitedKernelManager,
    _shutdown,
    execute,
    kernel_env,
)
from autograder.grade import FILE_CAP_ERRORS, limits_hit
from autograder.sandbox import MODE_VARIABLE, SandboxError, SandboxSpec

LIMITS = Limits(cell_timeout=20, notebook_timeout=90, memory_mb=2048, threads=1)

pytestmark = pytest.mark.timeout(180)


def _namespaces_here(spec: SandboxSpec) -> tuple[bool, str]:
    usable, details = sandbox.probe(*sandbox._identity(spec))
    return usable, str(details)


@pytest.fixture
def namespaces(monkeypatch):
    """Skip unless this machine can put a kernel in namespaces (``auto`` mode)."""
    monkeypatch.setenv(MODE_VARIABLE, "auto")
    usable, why = _namespaces_here(SandboxSpec())
    if not usable:
        pytest.skip(f"Linux namespaces are unavailable here: {why}")


@pytest.fixture
def base():
    """A world-readable folder outside the kernel's reach unless a test says otherwise.

    Under /tmp, created by hand (pytest's tmp_path sits in a 0700 folder that uid 65534 could
    not enter anyway, which would make every hiding check pass for the wrong reason).
    """
    folder = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def workspace_in(base: Path) -> tuple[Path, Path, dict]:
    """A grading-like workspace: (root, cwd, env) with HOME and TMPDIR inside the root."""
    root = base / "workspace"
    for sub in ("work", "home", "tmp"):
        (root / sub).mkdir(parents=True)
    env = kernel_env({"HOME": str(root / "home"), "TMPDIR": str(root / "tmp")})
    return root, root / "work", env


def run(cells: list[str], spec: SandboxSpec, base: Path, **kwargs) -> Execution:
    root, cwd, env = workspace_in(base)
    spec = dataclasses.replace(spec, workspace=root)
    notebook = v4.new_notebook(cells=[v4.new_code_cell(source) for source in cells])
    limits = kwargs.pop("limits", LIMITS)
    return execute(
        notebook,
        cwd=cwd,
        env=env,
        limits=limits,
        sandbox=spec,
        kernel_log=base / "kernel.log",
        **kwargs,
    )


def statuses(execution: Execution) -> list[str]:
    return [execution.runs[index].status for index in sorted(execution.runs)]


def why(execution: Execution) -> str:
    lines = [
        f"{i}: {r.status} {r.ename} {r.evalue[:300]}" for i, r in sorted(execution.runs.items())
    ]
    return "\n".join(lines)


def host_processes(needle: bytes) -> list[int]:
    """Live processes on the host whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def test_hidden_paths_are_unreadable_but_the_workspace_is_not(namespaces, base):
    """Can a cell read a hidden folder or file by absolute path, undo the mounts, or write
    outside its workspace, while its own workspace and a sibling that is not hidden work?"""
    secret_dir, key, public = base / "source", base / "key.txt", base / "public.txt"
    secret_dir.mkdir()
    (secret_dir / "answers.txt").write_text("the answers")
    key.write_text("the key")
    public.write_text("public")
    for path in (secret_dir / "answers.txt", key, public):
        path.chmod(0o644)
    spec = SandboxSpec(hidden=(secret_dir, key), private_tmp=False)
    secret = secret_dir / "answers.txt"
    cells = [
        f"print(open({str(secret)!r}).read())",
        f"import os\nassert os.listdir({str(secret_dir)!r}) == []",
        f"assert open({str(key)!r}).read() == ''",
        f"assert open({str(public)!r}).read() == 'public'",
        "open('mine.txt', 'w').write('mine')\nassert open('mine.txt').read() == 'mine'",
        f"open({str(base / 'planted.txt')!r}, 'w').write('planted')",
        # undo the hiding: unmount in place, or from a user+mount namespace of one's own
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"assert libc.umount2({str(secret_dir)!r}.encode(), 2) != 0",
        "import subprocess\n"
        f"out = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'umount -l {secret_dir}; "
        f"cat {secret}'], capture_output=True, text=True)\n"
        "assert 'the answers' not in out.stdout, out.stdout",
    ]
    execution = run(cells, spec, base)
    expected = ["error", "ok", "ok", "ok", "ok", "error", "ok", "ok"]
    assert statuses(execution) == expected, why(execution)
    assert execution.runs[0].ename in ("FileNotFoundError", "PermissionError")
    assert (base / "workspace" / "work" / "mine.txt").read_text() == "mine"
    assert not (base / "planted.txt").exists()
    assert secret.read_text() == "the answers"  # hidden from the kernel, not from the host


def test_the_network_and_the_hosts_tmp_are_out_of_reach(namespaces, base):
    """Can a cell reach a TCP server on the host's 127.0.0.1 or see the host's /tmp, while
    its workspace (itself under /tmp) stays usable? Which isolation does the grader report?"""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the server is reachable from the host
    (base / "host-only.txt").write_text("host")
    (base / "host-only.txt").chmod(0o644)
    cells = [
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)",
        f"import os\nassert not os.path.exists({str(base / 'host-only.txt')!r})",
        "open('here.txt', 'w').write('here')\nimport os\nassert os.getpid() == 1",
    ]
    try:
        execution = run(cells, SandboxSpec(), base)
    finally:
        server.close()
    assert statuses(execution) == ["error", "ok", "ok"], why(execution)
    assert execution.runs[0].ename in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert (base / "workspace" / "work" / "here.txt").exists()
    isolation = sandbox.describe(SandboxSpec())
    assert isolation.startswith("namespaces: user, mount, ipc, net, pid"), isolation


ESCAPE = """\
import os
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{marker}"])
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_setsid_double_fork_dies_with_the_kernel(mode, base, monkeypatch):
    """Does a process that left the kernel's session (setsid, double fork) outlive
    execute(), with namespaces (auto) and without them (off, the fallback)?"""
    monkeypatch.setenv(MODE_VARIABLE, mode)
    if mode == "auto" and not _namespaces_here(SandboxSpec())[0]:
        pytest.skip("Linux namespaces are unavailable here")
    marker = f"1000.{random.randrange(10**8):08d}"
    needle = b"sleep\x00" + marker.encode()
    seen: list[int] = []

    def look(index: int, cell_run) -> None:
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            seen.extend(host_processes(needle))
            time.sleep(0.05)

    execution = run([ESCAPE.format(marker=marker)], SandboxSpec(), base, on_cell=look)
    assert statuses(execution) == ["ok"], why(execution)
    assert seen, "the escaped process never ran, so the test proves nothing"
    deadline = time.monotonic() + 5
    while host_processes(needle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes(needle) == []
    expected = "fallback:" if mode == "off" else "namespaces:"
    assert sandbox.describe(SandboxSpec()).startswith(expected)


GRADER = """\
import sys
from pathlib import Path
from nbformat import v4
from autograder.execute import Limits, execute, kernel_env
from autograder.sandbox import SandboxSpec
root = Path(sys.argv[1])
cells = [v4.new_code_cell(sys.argv[2]), v4.new_code_cell("import time\\ntime.sleep(60)")]
execute(v4.new_notebook(cells=cells), cwd=root / "work", env=kernel_env({}),
        limits=Limits(cell_timeout=90), sandbox=SandboxSpec(workspace=root))
"""


def test_the_kernel_dies_with_a_killed_grader(namespaces, base):
    """When the grading process itself is killed (SIGKILL: no clean-up of its own), do the
    kernel and a process it started with setsid die too? (The launcher watches the grader the
    same way without namespaces.)"""
    root, _, _ = workspace_in(base)
    marker = f"1000.{random.randrange(10**8):08d}"
    needle = b"sleep\x00" + marker.encode()
    grader = subprocess.Popen(
        [sys.executable, "-c", GRADER, str(root), ESCAPE.format(marker=marker)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not host_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_processes(needle), "the escaped process never ran"
        assert host_processes(str(root).encode()), "no kernel runs"
    finally:
        grader.kill()
        grader.wait()
    deadline = time.monotonic() + 10
    while (host_processes(needle) or host_processes(str(root).encode())) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert host_processes(needle) == []
    assert host_processes(str(root).encode()) == []


# Runs the launcher (``enter``) as a grader's child would, and holds its kernel process just
# before it asks to die with the launcher (its first PR_SET_PDEATHSIG after the fork) until the
# test has killed the launcher. argv: the launcher's config, a folder for the markers.
HELD_LAUNCHER = """\
import os, signal, sys, time
from pathlib import Path
from autograder import sandbox
folder = Path(sys.argv[2])
launcher, real, held = os.getpid(), sandbox._prctl, []
def prctl(option, value):
    if os.getpid() != launcher and option == sandbox.PR_SET_PDEATHSIG and not held:
        held.append(True)
        (folder / "window").touch()
        while not (folder / "killed").exists():
            time.sleep(0.01)
    return real(option, value)
sandbox._prctl = prctl
sandbox.enter(sys.argv[1])
(folder / "started").touch()
time.sleep(float(sys.argv[3]))
"""


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_launcher_killed_while_its_kernel_starts_leaves_no_kernel(mode, base, monkeypatch):
    """The launcher dies (SIGKILL) after forking the kernel and before the kernel has asked
    to die with it: does the kernel notice and stop instead of starting with no one to kill
    it? (In a PID namespace getppid() reads 0, so it cannot tell from its parent pid.)"""
    monkeypatch.setenv(MODE_VARIABLE, mode)
    if mode == "auto" and not _namespaces_here(SandboxSpec())[0]:
        pytest.skip("Linux namespaces are unavailable here")
    root, cwd, env = workspace_in(base)
    launch = sandbox.prepare(SandboxSpec(workspace=root), cwd, env)
    marker = f"1000.{random.randrange(10**8):08d}"
    launcher = subprocess.Popen(
        [sys.executable, "-c", HELD_LAUNCHER, json.dumps(launch.config), str(root), marker],
        cwd=cwd,
    )
    try:
        deadline = time.monotonic() + 30
        while not (root / "window").exists() and time.monotonic() < deadline:
            assert launcher.poll() is None, "the launcher ended before forking its kernel"
            time.sleep(0.01)
        assert (root / "window").exists(), "the kernel never reached PR_SET_PDEATHSIG"
        launcher.kill()
        launcher.wait()
        (root / "killed").touch()
        deadline = time.monotonic() + 5
        while host_processes(marker.encode()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (root / "started").exists(), "the kernel started with its launcher gone"
        assert host_processes(marker.encode()) == []
    finally:
        launcher.kill()
        for pid in host_processes(marker.encode()):
            os.kill(pid, signal.SIGKILL)
    assert launch.isolation.startswith("fallback:" if mode == "off" else "namespaces:")


def test_a_fork_bomb_fails_its_cell_and_leaves_nothing(namespaces, base):
    """Does a fork bomb end with an error in its own cell, the next cell still run, and no
    process of it survive execute()?"""
    cap = 32
    capped = f"os.getuid() != 0 and resource.getrlimit(resource.RLIMIT_NPROC)[0] <= {cap}"
    cells = [
        f"import os, resource\nassert {capped}",
        # the bomb only goes off under the cap: never let a test take the machine down
        f"if {capped}:\n    while True:\n        os.fork()",
        "print('still here')",
    ]
    began = time.monotonic()
    execution = run(cells, SandboxSpec(max_processes=cap), base)
    assert execution.runs[0].status == "ok", why(execution)
    assert execution.runs[1].status == "error", why(execution)
    assert execution.runs[1].ename == "BlockingIOError"
    assert execution.runs[2].status == "ok", why(execution)
    assert time.monotonic() - began < 60
    assert host_processes(str(base / "workspace").encode()) == []


def test_interrupts_memory_cap_and_dead_kernels_still_work(namespaces, base):
    """Inside the sandbox, is a cell past its time limit interrupted (the next cell runs), a
    memory bomb a MemoryError, and a kernel that exits reported as dead?"""
    cells = [
        "import time\ntime.sleep(100)",
        "x = 1",
        "block = bytearray(3 << 30)",
        "import os\nos._exit(3)",
        "print('never')",
    ]
    limits = Limits(cell_timeout=3, notebook_timeout=60, memory_mb=1024, threads=1)
    execution = run(cells, SandboxSpec(), base, limits=limits)
    assert statuses(execution) == ["timeout", "ok", "error", "dead", "not_run"], why(execution)
    assert execution.runs[2].ename == "MemoryError"


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_file_past_the_size_cap_fails_and_the_notebook_goes_on(mode, base, monkeypatch):
    """With ``file_mb=1``, in the sandbox and in the fallback: do 2 MiB writes by Python,
    ``torch.save`` and ``numpy.save`` fail (a file of 1 MiB exactly, at the cap, still passes),
    does each failure read as the ``file`` limit (``FILE_CAP_ERRORS``, so that a higher
    ``--file-mb`` regrades it), does the last cell run, and is a run without the cap
    unaffected?"""
    monkeypatch.setenv(MODE_VARIABLE, mode)
    if mode == "auto" and not _namespaces_here(SandboxSpec())[0]:
        pytest.skip("Linux namespaces are unavailable here")
    cells = [
        "import numpy, torch\nopen('at_cap.bin', 'wb').write(bytes(1 << 20))",
        "open('big.bin', 'wb').write(bytes(2 << 20))",
        "torch.save(torch.zeros(1 << 19), 'big.pt')",
        "numpy.save('big.npy', numpy.zeros(1 << 18))",
        "x = 1",
    ]
    limits = dataclasses.replace(LIMITS, memory_mb=8192)  # PyTorch maps more than 2 GiB
    execution = run(cells, SandboxSpec(), base, limits=dataclasses.replace(limits, file_mb=1))
    assert statuses(execution) == ["ok", "error", "error", "error", "ok"], why(execution)
    assert execution.runs[1].evalue.startswith(f"[Errno {errno.EFBIG}]"), why(execution)
    for index in (1, 2, 3):
        failed = execution.runs[index]
        assert FILE_CAP_ERRORS.search(f"{failed.ename}: {failed.evalue}"), why(execution)
    assert limits_hit(execution) == ["file"]
    shutil.rmtree(base / "workspace")
    uncapped = run(cells, SandboxSpec(), base, limits=dataclasses.replace(limits, file_mb=None))
    assert statuses(uncapped) == ["ok"] * 5, why(uncapped)
    assert limits_hit(uncapped) == []


@pytest.mark.parametrize(("inherited_mb", "expected_mb"), [(None, 8), (2, 2)])
def test_the_launcher_keeps_its_caps_under_the_hard_limit_it_inherits(inherited_mb, expected_mb):
    """A grader run under a hard file-size limit lower than the cap asked for (``ulimit -Hf``):
    does the kernel's launcher lower its cap to that limit (the kernel would not start with an
    error otherwise), and set the cap as asked when nothing lower is inherited?"""
    assert "del cap\n" in _LAUNCHER  # else the code below would start a kernel and wait
    code = _LAUNCHER.format(limit=0, file_limit=8 << 20, sandbox="").split("del cap\n")[0]
    code += "print(list(resource.getrlimit(resource.RLIMIT_FSIZE)))"

    def inherit() -> None:
        if inherited_mb is not None:
            limit = inherited_mb << 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    printed = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=inherit, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == [expected_mb << 20] * 2


def test_a_client_outside_connects_through_the_connection_file(namespaces, base):
    """Can a process outside the sandbox (the judge) connect to the sandboxed kernel with
    ``BlockingKernelClient(connection_file=km.connection_file)``, is ``km.kernel_pid`` that
    kernel, does SIGINT to it or to ``km.launcher_pid`` interrupt a cell, and is it gone after
    ``_shutdown``?"""
    root, cwd, env = workspace_in(base)
    km = _LimitedKernelManager(kernel_name="python3", sandbox=SandboxSpec(workspace=root))

    async def start() -> None:  # as execute() does: the judge connects once the kernel is up
        await km.start_kernel(
            cwd=str(cwd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        own = km.client()
        own.start_channels()
        try:
            await own.wait_for_ready(timeout=60)
        finally:
            own.stop_channels()

    asyncio.run(start())
    try:
        assert Path(km.connection_file).parent == root / ".kernel"
        client = BlockingKernelClient(connection_file=km.connection_file)
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            texts: list[str] = []

            def keep(msg: dict) -> None:
                if msg["msg_type"] == "stream":
                    texts.append(msg["content"]["text"])

            code = "import os\nprint(os.getuid(), os.getpid())"
            reply = client.execute_interactive(code, timeout=30, output_hook=keep)
            assert reply["content"]["status"] == "ok"
            kernel_pid = km.kernel_pid
            assert kernel_pid and kernel_pid != km.launcher_pid
            assert b"ipykernel" in Path(f"/proc/{kernel_pid}/cmdline").read_bytes()
            for target in (kernel_pid, km.launcher_pid):
                # stop_on_error=False: after the first KeyboardInterrupt the kernel would
                # otherwise abort requests reaching it while it clears its queue (the second
                # cell's reply says "aborted", with no ename: the likeliest cause of a failure
                # seen once in CI under load, not reproduced by hand)
                busy = client.execute("import time\ntime.sleep(60)", stop_on_error=False)
                # interrupt once the kernel runs the cell, not after a fixed time: an idle
                # kernel ignores SIGINT, and on a loaded machine the cell can start late
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    msg = client.get_iopub_msg(timeout=60)
                    if msg["msg_type"] == "execute_input" and (
                        msg["parent_header"].get("msg_id") == busy
                    ):
                        break
                time.sleep(0.5)
                os.kill(target, signal.SIGINT)
                reply = client.get_shell_msg(timeout=20)
                assert reply["parent_header"]["msg_id"] == busy
                assert reply["content"].get("ename") == "KeyboardInterrupt", reply["content"]
        finally:
            client.stop_channels()
        uid, pid = "".join(texts).split()
        expected_uid = sandbox.NOBODY if os.geteuid() == 0 else os.geteuid()
        assert (int(uid), int(pid)) == (expected_uid, 1)  # pid 1: its own PID namespace
    finally:
        asyncio.run(_shutdown(SimpleNamespace(kc=None), km))
    assert host_processes(str(root).encode()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the kernel as uid 0, which needs root")
def test_the_non_root_path_hides_and_isolates_too(namespaces, base):
    """With the kernel keeping the grader's uid (as for a non-root grader: a user namespace
    of its own instead of uid 65534), are hidden files, the host's network and writes outside
    the workspace still out of reach?"""
    secret = base / "secret.txt"
    secret.write_text("secret")
    outside = base / "outside.txt"
    outside.write_text("outside")
    spec = SandboxSpec(hidden=(secret,), uid=0, private_tmp=False)
    cells = [
        f"assert open({str(secret)!r}).read() == ''",
        f"assert open({str(outside)!r}).read() == 'outside'",
        f"open({str(outside)!r}, 'w').write('changed')",
        "import socket\nassert [name for _, name in socket.if_nameindex()] == ['lo']",
        "import os\nassert os.getpid() == 1 and os.getuid() == 0",
        "open('mine.txt', 'w').write('mine')",
    ]
    execution = run(cells, spec, base)
    assert statuses(execution) == ["ok", "ok", "error", "ok", "ok", "ok"], why(execution)
    assert execution.runs[2].ename == "OSError" and "Read-only" in execution.runs[2].evalue
    assert outside.read_text() == "outside"
    assert sandbox.describe(spec).startswith("namespaces: user, mount, ipc, net, pid; uid 0")


def test_require_fails_loudly_without_namespaces(monkeypatch):
    """When namespaces are unavailable, does ``require`` raise a clear error before any kernel
    starts, ``auto`` say it fell back, and a misspelt mode get refused?"""
    monkeypatch.setattr(sandbox, "probe", lambda *args: (False, "simulated: no user namespaces"))
    spec = SandboxSpec()
    monkeypatch.setenv(MODE_VARIABLE, "require")
    with pytest.raises(SandboxError, match="simulated"):
        sandbox.check(spec)
    with pytest.raises(SandboxError, match="simulated"):
        _LimitedKernelManager(kernel_name="python3", sandbox=spec)
    monkeypatch.setenv(MODE_VARIABLE, "auto")
    assert sandbox.describe(spec).startswith("fallback: no namespaces (simulated")
    monkeypatch.setenv(MODE_VARIABLE, "sometimes")
    with pytest.raises(SandboxError, match="off, auto, require"):
        sandbox.check(spec)


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="a root grader's fallback needs root")
OWN_IDS = range(sandbox.FALLBACK_ID_BASE, 2**31 - 1)  # a fallback kernel's own uid and gid
PLAIN_USER = sandbox.FALLBACK_ID_BASE  # for _cannot_drop: any uid that is not 0 or an owner


@ROOT_ONLY
def test_a_root_grader_without_namespaces_hands_the_kernel_to_a_user_of_its_own(base, monkeypatch):
    """Without namespaces, does a root grader still prepare the kernel to run as another
    user, its workspace handed over and its connection in the workspace, and say so? The
    uid is the kernel's own, drawn at random (not 65534, shared by every kernel graded side
    by side): the next kernel gets another; 65534 where those ids are not mapped."""
    monkeypatch.setenv(MODE_VARIABLE, "off")
    monkeypatch.setattr(sandbox, "_cannot_drop", lambda *args: None)
    root, cwd, env = workspace_in(base)
    launch = sandbox.prepare(SandboxSpec(workspace=root), cwd, env)
    own = launch.uid
    assert own in OWN_IDS and launch.config["drop"] and launch.runtime == root / ".kernel"
    assert (launch.config["uid"], launch.config["gid"]) == (own, own)
    assert {p.stat().st_uid for p in [root, *root.rglob("*")]} == {own}
    assert {p.stat().st_gid for p in [root, *root.rglob("*")]} == {own}
    assert "; each kernel a uid of its own (drawn at random, >= 1900000000); nproc 256" in (
        launch.isolation
    )

    shutil.rmtree(root)
    root, cwd, env = workspace_in(base)
    following = [sandbox.prepare(SandboxSpec(workspace=root), cwd, env).uid for _ in range(3)]
    assert all(uid in OWN_IDS for uid in following) and len({own, *following}) == 4

    monkeypatch.setattr(sandbox, "_mapped", lambda kind, number: number == sandbox.NOBODY)
    assert sandbox.prepare(SandboxSpec(workspace=root), cwd, env).uid == sandbox.NOBODY


@ROOT_ONLY
def test_what_a_fallback_kernel_left_in_the_shared_scratch_folders_is_removed(base, monkeypatch):
    """Its uid is its own: everything that uid owns at the top of /tmp, /var/tmp and /dev/shm
    goes after the kernel (a folder with its contents, a link without its target); what
    others own stays, and so does its workspace, handed to that uid and at the top of /tmp
    as grading makes it (the grader reads it afterwards). Under 65534 (shared) nothing goes."""
    monkeypatch.setenv(MODE_VARIABLE, "off")
    monkeypatch.setattr(sandbox, "_cannot_drop", lambda *args: None)
    root = top = Path(tempfile.mkdtemp(prefix="autograder-leftover-test-", dir="/tmp"))
    for sub in ("work", "home", "tmp"):
        (root / sub).mkdir()
    env = kernel_env({"HOME": str(root / "home"), "TMPDIR": str(root / "tmp")})
    launch = sandbox.prepare(SandboxSpec(workspace=root), root / "work", env)
    own, tag = launch.uid, f"leftover-test-{os.getpid()}"
    target = base / "target.txt"
    target.write_text("not the kernel's")
    made = [Path("/tmp", tag), Path("/dev/shm", tag), Path("/tmp", tag + "-dir")]
    made[0].write_text("x")
    made[1].write_bytes(b"x" * 1024)
    (made[2] / "inner").mkdir(parents=True)
    link = Path("/tmp", tag + "-link")
    link.symlink_to(target)
    others = Path("/tmp", tag + "-others")
    others.write_text("someone else's")
    try:
        for path in [*made, made[2] / "inner"]:
            os.chown(path, own, own)
        os.chown(link, own, own, follow_symlinks=False)
        shared = dataclasses.replace(
            launch, uid=sandbox.NOBODY, config={**launch.config, "uid": sandbox.NOBODY}
        )
        assert shared.remove_leftovers() == 0
        assert launch.remove_leftovers() >= 4
        assert not any(p.exists() or p.is_symlink() for p in [*made, link])
        assert target.read_text() == "not the kernel's" and others.exists()
        assert root.stat().st_uid == own and (root / "work").is_dir()  # the workspace stays
    finally:
        for path in [*made, link, others, top]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


@ROOT_ONLY
def test_a_root_graders_kernel_without_namespaces_cannot_read_write_or_signal(base, monkeypatch):
    """The launcher's fallback half, run as a kernel runs it: after it returns, is the process
    its own user, unable to read a root-only file, write a root-owned one, signal the grader,
    or signal or read another grading process's kernel (its uid, its workspace 0700)?
    (Only modules loaded before the switch are used: this machine's Python may lie where
    that uid cannot enter, which is why the grader checks that before choosing the switch.)"""
    monkeypatch.setenv(MODE_VARIABLE, "off")
    monkeypatch.setattr(sandbox, "_cannot_drop", lambda *args: None)
    secret, outside = base / "secret.txt", base / "outside.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    outside.write_text("outside")
    neighbour_id = sandbox.FALLBACK_ID_BASE - 1  # another kernel (outside the draw)
    neighbours = base / "neighbour"
    neighbours.mkdir(mode=0o700)
    (neighbours / "answer.ipynb").write_text("{}")
    os.chown(neighbours, neighbour_id, neighbour_id)
    os.chown(neighbours / "answer.ipynb", neighbour_id, neighbour_id)
    neighbour = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time\nos.setgid({neighbour_id})\n"
            f"os.setuid({neighbour_id})\ntime.sleep(60)",
        ]
    )
    root, cwd, env = workspace_in(base)
    launch = sandbox.prepare(SandboxSpec(workspace=root), cwd, env)
    connection = launch.runtime / "kernel.json"
    connection.write_text("{}")
    probe = f"""
import os
seen = [os.getuid(), os.getgid(), os.getgroups()]
for act in (lambda: open({str(secret)!r}).read(), lambda: open({str(outside)!r}, "w"),
            lambda: os.kill({os.getpid()}, 0), lambda: os.kill({neighbour.pid}, 0),
            lambda: open({str(neighbours / "answer.ipynb")!r}).read(),
            lambda: open({str(cwd / "mine.txt")!r}, "w")):
    try:
        act()
        seen.append("allowed")
    except OSError as error:
        seen.append(error.errno)
print(seen, flush=True)
"""
    try:
        done = subprocess.run(
            [sys.executable, "-c", launch.code(str(connection)) + probe],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        neighbour.kill()
        neighbour.wait()
    assert done.returncode == 0, done.stderr
    own = launch.uid
    assert own in OWN_IDS and own != neighbour_id
    expected = [own, own, [], errno.EACCES, errno.EACCES, errno.EPERM, errno.EPERM]
    assert done.stdout.strip() == str([*expected, errno.EACCES, "allowed"])
    assert connection.stat().st_uid == own
    assert outside.read_text() == "outside"


@ROOT_ONLY
def test_a_python_out_of_nobodys_reach_keeps_the_kernel_root_and_says_why(base, monkeypatch):
    """When uid 65534 cannot enter a folder on the way to Python (no bind mount can help
    without namespaces), does the kernel stay root, the line saying which folder?"""
    monkeypatch.setenv(MODE_VARIABLE, "off")
    locked = base / "locked"
    (locked / "python" / "bin").mkdir(parents=True)
    locked.chmod(0o700)
    monkeypatch.setattr(sandbox, "_python_paths", lambda: [str(locked / "python" / "bin")])
    root, cwd, env = workspace_in(base)
    launch = sandbox.prepare(SandboxSpec(workspace=root), cwd, env)
    assert not launch.config["drop"] and launch.uid is None and launch.runtime is None
    assert re.search(
        rf"as root \(uid \d+ cannot enter {locked}\); no process cap", launch.isolation
    )
    locked.chmod(0o755)
    assert sandbox._cannot_drop(PLAIN_USER, PLAIN_USER, root) is None


@ROOT_ONLY
def test_a_kernel_run_by_nobody_without_namespaces_grades_as_usual(base, monkeypatch):
    """A whole kernel (ipykernel, PyTorch) as its own uid (no account of that number: no
    name, no home in /etc/passwd) without namespaces: where this machine's Python is within
    that uid's reach (a container's /usr, Gradescope's venv)."""
    monkeypatch.setenv(MODE_VARIABLE, "off")
    blocked = sandbox._cannot_drop(PLAIN_USER, PLAIN_USER, base / "workspace")
    if blocked:
        pytest.skip(f"this machine's Python is out of a plain user's reach: {blocked}")
    secret = base / "secret.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    left = [Path("/tmp", f"left-by-kernel-{os.getpid()}"), Path("/dev/shm", f"left-{os.getpid()}")]
    cells = [
        "import os\nassert os.getuid() == os.getgid() >= 1_900_000_000",
        f"open({str(secret)!r}).read()",
        "import torch\nopen('mine.txt', 'w').write(str(torch.ones(2).sum().item()))",
        f"for path in {[str(p) for p in left]!r}:\n    open(path, 'w').write('left')",
    ]
    limits = dataclasses.replace(LIMITS, memory_mb=8192)  # PyTorch maps more than 2 GiB
    execution = run(cells, SandboxSpec(), base, limits=limits)
    assert statuses(execution) == ["ok", "error", "ok", "ok"], why(execution)
    assert execution.runs[1].ename == "PermissionError"
    assert not any(path.exists() for path in left)  # removed after the kernel
