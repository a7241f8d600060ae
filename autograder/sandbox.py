"""Isolate a grading kernel from the grader's machine: Linux namespaces, or a fallback.

``execute(..., sandbox=SandboxSpec(...))`` starts the kernel through a forking launcher
(``enter``, run by the kernel command before ipykernel): the launcher process stays outside,
becomes a child subreaper, forks the kernel, waits for it, turns SIGTERM into SIGKILL and, when
the kernel is gone, kills whatever it left behind, then exits with the kernel's status. It gets
SIGTERM when the grading process dies (``PR_SET_PDEATHSIG``), the kernel SIGKILL when the
launcher dies (a kernel whose launcher died before it could ask for that stops at start-up).
The kernel has a process group of its own; the launcher forwards SIGINT (Jupyter's interrupt)
to it, so interrupting either process works. The grader's ``_shutdown`` kills everything below
the launcher first (``kill_tree``).

Where the machine allows it (``probe``: the same launcher, run once per grading process), the
kernel also gets

- an IPC namespace (no System V shared memory or queues shared with other kernels);
- a PID namespace where it is PID 1, so every process a student starts (``setsid`` and double
  forks included) dies with it, and a fresh ``/proc`` that shows only those;
- a network namespace with only a loopback device: nothing reaches the host's network or the
  host's 127.0.0.1, so the kernel talks to the grader over ZeroMQ ``ipc`` sockets in
  ``<workspace>/.kernel/`` (``Launch.runtime``) instead of TCP;
- a mount namespace: an empty read-only tmpfs over every hidden folder (``/dev/null`` over
  hidden files) and over ``/run`` (sockets of daemons), private size-capped tmpfs on ``/tmp``,
  ``/var/tmp`` and ``/dev/shm``, and every mount read-only except the workspace, those tmpfs
  and ``/proc``. What the kernel needs (its workspace, the Python installation, ``PYTHONPATH``)
  is bound back where a cover would hide it: visible paths win over hidden ancestors;
- no capabilities, an empty bounding set and ``no_new_privs``: the mounts cannot be undone
  (a mount namespace the student creates only holds locked copies of them);
- its own user namespace and ``RLIMIT_NPROC`` (processes and threads, counted per namespace on
  Linux >= 5.14). A grader running as root runs the kernel as uid 65534 (nobody, mapped to
  itself), so outside file permissions apply and the limit binds (root is exempt from it); the
  workspace is handed to that uid (chown) and folders it cannot enter on the way to Python
  are covered and the Python installation bound back. A non-root grader keeps its own uid.

Without namespaces (``AUTOGRADER_SANDBOX=off``, or ``auto`` where the probe fails: Docker's
default seccomp profile, Ubuntu's AppArmor restriction on unprivileged user namespaces) the
launcher still kills every descendant and caps processes at the kernel uid's current count plus
``max_processes`` (the limit counts all of that uid's processes). A root grader (a container,
Gradescope) still runs the kernel as a user of its own, its workspace handed to it, so that it
reads only what any user may, writes only its workspace and world-writable folders, and cannot
signal or trace the grader, the judge or another student's kernel, nor change what an earlier
kernel left in ``/tmp``: a uid and gid drawn at random for each kernel above
``FALLBACK_ID_BASE``, none in use (uid 65534 where those ids are not mapped here).
Nothing is hidden, though, so files meant to stay secret must not be readable by others. Where
that uid cannot enter a folder on the way to Python or to the workspace (no bind mounts here to
work around it), the kernel stays root.
``AUTOGRADER_SANDBOX=require`` turns a machine without namespaces into a ``SandboxError``.
``describe`` says which isolation a spec gets here, as one line.

The launcher half of this file (``enter`` and below) runs in the kernel's process before
ipykernel and uses the standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import json
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODE_VARIABLE = "AUTOGRADER_SANDBOX"  # off | auto (default) | require
MODES = ("off", "auto", "require")
NOBODY = 65534
# Without namespaces a root grader's kernel gets a uid = gid drawn from [BASE, 2**31 - 1):
# above systemd's range for containers' users (524288-1879048191), 247 million ids.
FALLBACK_ID_BASE = 1_900_000_000
FALLBACK_IDS = 2**31 - 1 - FALLBACK_ID_BASE
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # private, size-capped, writable
EMPTIED = ("/run",)  # covered: sockets of daemons (docker, dbus, the user's session)


class SandboxError(RuntimeError):
    """The sandbox was required but cannot be applied on this machine."""


@dataclass(frozen=True)
class SandboxSpec:
    """What the student's kernel must not see or do.

    ``hidden``: folders and files the kernel must not read (absolute; missing ones are
    ignored). ``workspace``: the folder the kernel owns (its cwd, ``lib/``, ``LAB_DATA``,
    ``HOME``, ``TMPDIR`` should lie inside); it stays visible and writable and is handed to
    the kernel's uid; default: the kernel's cwd. ``uid``: the outside uid the kernel runs as;
    default 65534 for a root grader, else the grader's own.
    """

    hidden: tuple[Path, ...] = ()
    max_processes: int = 256
    network: bool = False
    workspace: Path | None = None
    private_tmp: bool = True
    scratch_mb: int = 512  # size of each private tmpfs
    uid: int | None = None


@dataclass(frozen=True)
class Launch:
    """How one kernel is started (from ``prepare``)."""

    config: dict
    isolation: str
    runtime: Path | None  # folder of the connection file and ipc sockets; None: TCP
    uid: int | None  # owner to give the connection file; None: leave it

    def code(self, connection_file: str, parent: int | None = None) -> str:
        """Python code for the kernel command; hands ``connection_file`` to the kernel's uid.
        ``parent``: the pid of the process that starts the launcher, when not this one (a
        kernel template, ``autograder.forking``)."""
        if self.uid is not None:
            os.chown(connection_file, self.uid, self.config["gid"])
        return launcher_code({**self.config, "grader": parent} if parent else self.config)

    def remove_leftovers(self) -> int:
        """After the kernel ended: remove what a fallback kernel left in the shared scratch
        folders (``SCRATCH``: ``/dev/shm`` is memory). Only where its uid was its own (drawn
        for it), so everything that uid owns there is this kernel's; entries at the top of
        each folder, links removed, not followed; its workspace (the grader's to read and
        remove) kept. With namespaces those folders are private and go with the kernel.
        Returns how many entries went."""
        uid = self.uid  # only _without_namespaces draws one at or above the base
        if uid is None or uid < FALLBACK_ID_BASE or self.runtime is None:
            return 0
        workspace = os.path.realpath(self.runtime.parent)  # handed to that uid: the grader's
        removed = 0
        for folder in SCRATCH:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if os.path.realpath(entry.path) == workspace:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed += 1
                except OSError:
                    continue
        return removed


# --------------------------------------------------------------------------- grader side


def sandbox_mode() -> str:
    """``AUTOGRADER_SANDBOX``: off, auto (the default) or require."""
    mode = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SandboxError(f"{MODE_VARIABLE}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def _identity(spec: SandboxSpec) -> tuple[int, int, bool]:
    """(uid, gid, drop): who the kernel runs as; drop: switch from root to that uid."""
    euid = os.geteuid()
    if spec.uid is not None and spec.uid != euid:
        if euid != 0:
            raise SandboxError(f"only root can run the kernel as uid {spec.uid}")
        return spec.uid, spec.uid, True
    if spec.uid is None and euid == 0 and _mapped("uid", NOBODY) and _mapped("gid", NOBODY):
        return NOBODY, NOBODY, True
    return euid, os.getegid(), False


def _without_namespaces(
    spec: SandboxSpec, uid: int, gid: int, drop: bool, workspace: Path
) -> tuple[int, int, str | None]:
    """(uid, gid, blocked) of a kernel without namespaces. A root grader's kernel gets a uid
    and gid of its own, drawn at random and not in use, so that kernels graded side by side
    (``--jobs``) cannot signal, trace or read each other, nor a kernel change files an earlier
    one left in ``/tmp``, as a shared uid 65534 would let them (65534 where those ids are not
    mapped here). ``blocked``: why the kernel stays root (``_cannot_drop``), or None."""
    if not drop:
        return uid, gid, None
    if spec.uid is None:
        for _ in range(8):
            own = FALLBACK_ID_BASE + secrets.randbelow(FALLBACK_IDS)
            if not (_mapped("uid", own) and _mapped("gid", own)):
                break
            if _count_tasks(own) == 0:
                uid, gid = own, own
                break
    return uid, gid, _cannot_drop(uid, gid, workspace)


def _mapped(kind: str, number: int) -> bool:
    try:
        lines = Path(f"/proc/self/{kind}_map").read_text().splitlines()
    except OSError:
        return number == 0
    for line in lines:
        inside, _, count = (int(part) for part in line.split())
        if inside <= number < inside + count:
            return True
    return False


@functools.cache
def probe(uid: int, gid: int, drop: bool) -> tuple[bool, dict | str]:
    """Can a kernel be put in namespaces here as ``uid``? (True, details) or (False, why).

    Runs the launcher once (about 0.1 s) with nothing hidden; cached per process.
    """
    with tempfile.TemporaryDirectory(prefix="autograder-probe-") as folder:
        workspace = Path(folder)
        if drop:
            os.chown(workspace, uid, gid)
        config = _config(SandboxSpec(), workspace, workspace, {}, uid, gid, drop, {}, probe=True)
        try:
            done = subprocess.run(
                [sys.executable, "-c", launcher_code(config)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=folder,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        except (OSError, subprocess.SubprocessError) as error:
            return False, f"the probe did not run: {error}"
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return True, json.loads(lines[-1])
        except ValueError:
            pass
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return False, (errors[-1] if errors else f"the probe exited with {done.returncode}")


def prepare(spec: SandboxSpec, cwd: Path, env: dict[str, str]) -> Launch:
    """Decide how to start one kernel under ``spec`` (raises ``SandboxError`` under require).

    With namespaces this creates ``<workspace>/.kernel`` and, for a root grader, hands the
    workspace to the kernel's uid.
    """
    mode = sandbox_mode()
    uid, gid, drop = _identity(spec)
    details: dict | str = f"{MODE_VARIABLE}=off"
    usable = False
    if mode != "off":
        usable, details = probe(uid, gid, drop)
        if not usable and mode == "require":
            raise _unavailable(details)
    cwd = Path(os.path.realpath(cwd))
    workspace = Path(os.path.realpath(spec.workspace or cwd))
    if not usable:
        uid, gid, blocked = _without_namespaces(spec, uid, gid, drop, workspace)
        isolation = _describe(spec, False, details, drop, uid, blocked)
        if drop and blocked is None:
            runtime = workspace / ".kernel"
            runtime.mkdir(exist_ok=True)
            _chown_tree(workspace, uid, gid)
            config = {"mode": "fallback", "drop": True, "uid": uid, "gid": gid}
            config.update(nproc=_count_tasks(uid) + spec.max_processes, grader=os.getpid())
            return Launch(config, isolation, runtime, uid)
        nproc = 0 if os.geteuid() == 0 else _count_tasks(os.getuid()) + spec.max_processes
        config = {"mode": "fallback", "drop": False, "nproc": nproc, "gid": gid}
        return Launch({**config, "grader": os.getpid()}, isolation, None, None)
    assert isinstance(details, dict)
    runtime = workspace / ".kernel"
    runtime.mkdir(exist_ok=True)
    if drop:
        _chown_tree(workspace, uid, gid)
    config = _config(spec, cwd, workspace, env, uid, gid, drop, details)
    config["grader"] = os.getpid()  # the launcher's parent: checked after PR_SET_PDEATHSIG
    isolation = _describe(spec, True, details, drop, uid, None)
    return Launch(config, isolation, runtime, uid if drop else None)


def check(spec: SandboxSpec) -> str:
    """``describe(spec)``, raising ``SandboxError`` when namespaces are required but missing."""
    uid, gid, drop = _identity(spec)
    if sandbox_mode() == "require":
        usable, details = probe(uid, gid, drop)
        if not usable:
            raise _unavailable(details)
    return describe(spec)


def _unavailable(details: dict | str) -> SandboxError:
    return SandboxError(
        f"{MODE_VARIABLE}=require but this machine cannot put the kernel in Linux namespaces "
        f"({details}); allow user namespaces, run the grader as root outside a restricted "
        f"container, or set {MODE_VARIABLE}=auto"
    )


def describe(spec: SandboxSpec) -> str:
    """One line saying which isolation a kernel started with ``spec`` gets on this machine."""
    uid, gid, drop = _identity(spec)
    workspace = Path(spec.workspace or Path(tempfile.gettempdir(), "autograder-workspace"))
    usable, details = False, f"{MODE_VARIABLE}=off"
    if sandbox_mode() != "off":
        usable, details = probe(uid, gid, drop)
    blocked = None
    if not usable:
        uid, gid, blocked = _without_namespaces(spec, uid, gid, drop, workspace)
    return _describe(spec, usable, details, drop, uid, blocked)


def _describe(
    spec: SandboxSpec,
    usable: bool,
    details: dict | str,
    drop: bool,
    uid: int,
    blocked: str | None,
) -> str:
    """``blocked``: why a kernel without namespaces stays root (``_cannot_drop``), or None."""
    if not usable:
        if drop and blocked is None:
            who = f"uid {uid}" + (" (nobody)" if uid == NOBODY else "")
            if uid >= FALLBACK_ID_BASE:
                who = f"each kernel a uid of its own (drawn at random, >= {FALLBACK_ID_BASE})"
            cap = f"{who}; nproc {spec.max_processes} above that uid's current processes"
        elif os.geteuid() == 0:
            cap = "as root" + (f" ({blocked})" if blocked else "") + "; no process cap"
        else:
            cap = f"nproc {spec.max_processes} above the user's current processes"
        return f"fallback: no namespaces ({details}); {cap}; descendants killed at the end"
    assert isinstance(details, dict)
    kinds = ["user"] if details.get("userns") else []
    kinds += ["mount", "ipc"] + ([] if spec.network else ["net"]) + ["pid"]
    shared = "" if details.get("userns") else f" shared by uid {uid}"
    parts = [
        f"namespaces: {', '.join(kinds)}",
        f"uid {uid}" + (" (nobody)" if drop and uid == NOBODY else ""),
        f"nproc {spec.max_processes}{shared}",
        f"{len(spec.hidden)} hidden paths",
    ]
    if details.get("read_only"):
        parts.append("read-only outside the workspace")
    return "; ".join(parts)


def _config(
    spec: SandboxSpec,
    cwd: Path,
    workspace: Path,
    env: dict[str, str],
    uid: int,
    gid: int,
    drop: bool,
    details: dict,
    probe: bool = False,
) -> dict:
    """The launcher's instructions: which mounts to make, who to become, which limits."""
    hidden = [os.path.realpath(path) for path in spec.hidden]
    wanted = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    wanted += [
        env[key] for key in ("HOME", "TMPDIR", "LAB_DATA") if os.path.isabs(env.get(key, ""))
    ]
    wanted = [os.path.realpath(p) for p in wanted]
    # the interpreter's own paths beat hidden ones; the environment's do not
    needed = _python_paths()
    needed += [p for p in wanted if not any(p == h or _inside(p, h) for h in hidden)]
    needed = [p for p in needed if os.path.exists(p)]
    if drop:  # what the uid cannot enter itself stays out of reach: no use binding it back
        needed = [p for p in needed if _can_search(os.stat(p), uid, gid)]
    writable = [str(workspace)]
    reveals = sorted(set(needed + writable + [str(cwd)]))
    covers: dict[str, str] = {}
    if spec.private_tmp:
        covers.update({p: "scratch" for p in SCRATCH if os.path.isdir(p)})
    covers.update({p: "hide" for p in EMPTIED if os.path.isdir(p)})
    if drop:
        for path in reveals:
            blocked = _blocked_ancestor(path, uid, gid)
            if blocked:
                covers[blocked] = "hide"
    for real in hidden:
        if os.path.lexists(real) and real != "/" and covers.get(real) != "scratch":
            covers[real] = "hide"  # a private tmpfs already hides what a scratch path held
    ordered = sorted(
        ([path, kind] for path, kind in covers.items() if path not in reveals),
        key=lambda item: (item[0].count("/"), item[0]),
    )
    nproc = spec.max_processes
    if drop and not details.get("userns", True):
        nproc += _count_tasks(uid)  # no user namespace of its own: the limit counts all of uid's
    return {
        "mode": "namespaces",
        "uid": uid,
        "gid": gid,
        "drop": drop,
        "network": spec.network,
        "covers": ordered,
        "reveals": reveals,
        "writable": writable,
        "scratch_bytes": int(spec.scratch_mb) << 20,
        "nproc": nproc,
        "cwd": str(cwd),
        "probe": probe,
    }


def _python_paths() -> list[str]:
    """What the kernel's interpreter reads: its prefixes and the site-packages under them."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes = {os.path.realpath(p) for p in prefixes}
    paths = set(prefixes) | {os.path.dirname(os.path.realpath(sys.executable))}
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if real and any(real.startswith(prefix + os.sep) for prefix in prefixes):
            paths.add(real)
    return sorted(paths)


def _can_search(info: os.stat_result, uid: int, gid: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _blocked_ancestor(path: str, uid: int, gid: int) -> str | None:
    """The highest folder above ``path`` that ``uid`` cannot enter, or None."""
    parts = Path(path).parts
    for depth in range(1, len(parts)):
        folder = os.path.join(*parts[:depth])
        try:
            if not _can_search(os.stat(folder), uid, gid):
                return folder
        except OSError:
            return None
    return None


def _cannot_drop(uid: int, gid: int, workspace: Path) -> str | None:
    """Why a kernel without namespaces cannot run as ``uid`` (a folder on the way to Python
    or to ``workspace`` that it cannot enter: nothing can be bound back without a mount
    namespace), or None when it can."""
    for path in [*_python_paths(), str(workspace)]:
        blocked = _blocked_ancestor(path, uid, gid)
        if blocked:
            return f"uid {uid} cannot enter {blocked}"
    return None


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for folder, names, files in os.walk(root):
        for name in names + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _count_tasks(uid: int) -> int:
    """Processes and threads whose real uid is ``uid`` (what ``RLIMIT_NPROC`` counts)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{entry}/status").read_text().splitlines()
            )
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def launcher_code(config: dict) -> str:
    """Python code that loads this file (not the package) and runs ``enter(config)``."""
    return (
        "import importlib.util as _u, sys as _s\n"
        f"_spec = _u.spec_from_file_location('_autograder_sandbox', {os.path.abspath(__file__)!r})\n"
        "_m = _u.module_from_spec(_spec)\n"
        "_s.modules[_spec.name] = _m\n"
        "_spec.loader.exec_module(_m)\n"
        f"_m.enter({json.dumps(config)!r})\n"
        "del _s.modules[_spec.name], _m, _spec, _u, _s\n"
    )


def first_child(pid: int) -> int | None:
    """The oldest live child of ``pid`` (for the launcher: the kernel), or None."""
    found = [child for child, parent, zombie in _process_table() if parent == pid and not zombie]
    started = {}
    for child in found:
        try:
            text = Path(f"/proc/{child}/stat").read_bytes()
            started[child] = int(text[text.rindex(b")") + 2 :].split()[19])
        except (OSError, ValueError, IndexError):
            continue
    return min(started, key=lambda child: (started[child], child)) if started else None


def descendants(pid: int) -> list[int]:
    """Live (not zombie) descendants of ``pid``, parents before children.

    The walk goes through zombies: the dying PID 1 of a namespace is one while its
    namespace's processes are being killed.
    """
    by_parent: dict[int, list[tuple[int, bool]]] = {}
    for child, parent, zombie in _process_table():
        by_parent.setdefault(parent, []).append((child, zombie))
    found, todo = [], [pid]
    while todo:
        for child, zombie in by_parent.get(todo.pop(), []):
            if not zombie:
                found.append(child)
            todo.append(child)
    return found


def _process_table() -> list[tuple[int, int, bool]]:
    """(pid, parent pid, zombie) for every process on the host."""
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text[text.rindex(b")") + 2 :].split()
        table.append((int(entry), int(fields[1]), fields[0] == b"Z"))
    return table


def kill_tree(pid: int, timeout: float = 20.0) -> bool:
    """SIGKILL every descendant of ``pid`` (not ``pid``), again until none is left.

    Meant for the launcher, a subreaper: what a killed process leaves is re-parented to it,
    so the next pass finds it. True when none is left (processes take a moment to die).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = descendants(pid)
        if not found:
            return True
        if time.monotonic() > deadline:
            return False
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        if pid == os.getpid():
            _reap()
        time.sleep(0.01)


def _reap() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


# --------------------------------------------------------------------------- launcher side

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
_LIBC = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        _LIBC.unshare.argtypes = [ctypes.c_int]
        _LIBC.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return _LIBC


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    libc = _libc()
    result = libc.mount(_bytes(source), _bytes(target), _bytes(kind), flags, _bytes(data or None))
    _check(result, f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc().prctl(option, value, 0, 0, 0), f"prctl {option}")


def _unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare")


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clear", "propagation", "userns")]


def _mount_setattr(path: str, flags: int, set_: int = 0, clear: int = 0) -> None:
    attr = _MountAttr(set_, clear, 0, 0)
    result = _libc().syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {path}")


def _map_ids(uid: int, gid: int) -> None:
    """Map ``uid``/``gid`` to themselves in a user namespace just created."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _drop_capabilities() -> None:
    for cap in range(64):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as error:
            if error.errno == errno.EINVAL:  # past the last capability
                break
            if error.errno == errno.EPERM:  # no CAP_SETPCAP: nothing to drop from
                break
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _check(_libc().capset(header, data), "capset")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def enter(config_text: str) -> None:
    """Run in the kernel command before ipykernel: returns in the (isolated) kernel process.

    The calling process forks; the parent supervises (``_supervise``) and never returns.
    """
    config = json.loads(config_text)
    namespaces = config["mode"] == "namespaces"
    launcher = os.getpid()
    # The grader's pid comes in the config: were it read here, a grader that died before this
    # line would leave the launcher with init as its parent, and no signal ever.
    grader = config.get("grader") or os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the grader gone: kill the kernel and all below
    if os.getppid() != grader:
        os._exit(1)
    if namespaces:
        if config["drop"]:
            _unshare(CLONE_NEWPID)
        else:
            _unshare(CLONE_NEWUSER | CLONE_NEWPID)
            _map_ids(config["uid"], config["gid"])
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    # The kernel can ask to die with the launcher (PR_SET_PDEATHSIG) only after the fork; a
    # launcher that dies before (SIGTERM ahead of ``_supervise``'s handler) never signals it,
    # and in a PID namespace getppid() reads 0, so it cannot tell: it would start and wait
    # for a client forever. Only the launcher holds the pipe's write end open: once it is
    # gone, the kernel's end reads as closed.
    held, holder = os.pipe()
    child = os.fork()
    if child:
        os.close(held)
        _supervise(child)
    os.close(holder)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # again below: a change of uid clears it
    os.setpgid(0, 0)  # a process group of its own: the launcher forwards interrupts to it
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        details = _isolate(config) if namespaces else {}
        if not namespaces and config["drop"]:
            _become(config["uid"], config["gid"])
        if config["nproc"]:
            resource.setrlimit(resource.RLIMIT_NPROC, (config["nproc"], config["nproc"]))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if _closed(held):
            raise RuntimeError("the launcher died during start-up")
        os.close(held)
        os.environ["JPY_PARENT_PID"] = str(launcher)
        if config.get("probe"):
            details["python"] = os.access(sys.executable, os.X_OK) and os.access(
                os.__file__, os.R_OK
            )
            if not details["python"]:
                raise RuntimeError(f"uid {os.getuid()} cannot run {sys.executable}")
            print(json.dumps(details), flush=True)
            os._exit(0)
    except BaseException as error:  # noqa: BLE001 (reported in the kernel log, then exit)
        print(f"autograder sandbox: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        os._exit(70)


def _closed(fd: int) -> bool:
    """Whether the pipe's other end is closed (nothing is ever written to it)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _supervise(child: int) -> None:
    """The launcher: wait for the kernel, then kill what is left and exit with its status.

    SIGINT (Jupyter's interrupt, sent to the launcher's process group) goes on to the kernel's
    process group; SIGTERM and SIGHUP kill the kernel and everything below it.
    """

    def interrupt(signum: int, frame: object) -> None:
        try:
            os.killpg(child, signal.SIGINT)
        except OSError:
            pass

    def stop(signum: int, frame: object) -> None:
        kill_tree(os.getpid())
        os._exit(128 + signum)

    try:
        os.setpgid(child, child)
    except OSError:  # the child did it first, or is gone
        pass
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            break
    kill_tree(os.getpid())
    if code < 0:  # killed by a signal: end the same way, so that the grader tells it apart
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # from an exit status of 128 + n
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code  # only if that signal did not end this process
    os._exit(code)


def _isolate(config: dict) -> dict:
    """In the kernel process (PID 1 of its namespace): mounts, network, uid, capabilities."""
    details = {"userns": not config["drop"], "read_only": False}
    _unshare(CLONE_NEWNS | CLONE_NEWIPC | (0 if config["network"] else CLONE_NEWNET))
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if not config["network"]:
        _loopback_up()
    _cover(config)
    details["read_only"] = _read_only(config)
    os.chdir(config["cwd"])
    uid, gid = config["uid"], config["gid"]
    if config["drop"]:
        _become(uid, gid)
        try:  # a user namespace of its own: RLIMIT_NPROC counts this kernel's processes only
            _unshare(CLONE_NEWUSER | CLONE_NEWNS)
            _map_ids(uid, gid)
            details["userns"] = True
        except OSError:
            pass
    _drop_capabilities()
    return details


def _become(uid: int, gid: int) -> None:
    """Leave root for ``uid``: no supplementary groups, no capabilities left."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_DUMPABLE, 1)  # else /proc/self belongs to root


def _cover(config: dict) -> None:
    """Cover hidden and scratch paths with tmpfs (shallowest first), binding back reveals."""
    for path, kind in config["covers"]:
        if not os.path.lexists(path):  # not visible (under a cover) any more
            continue
        if not os.path.isdir(path):
            _mount("/dev/null", path, None, MS_BIND)
            continue
        under = [r for r in config["reveals"] if _inside(r, path)]
        under = [r for r in under if not any(_inside(r, other) for other in under)]
        handles = []
        for reveal in under:
            try:
                handles.append((reveal, os.open(reveal, os.O_PATH | os.O_CLOEXEC)))
            except OSError:
                continue
        if kind == "scratch":
            options = f"mode=1777,size={config['scratch_bytes']}"
        else:
            options = "mode=0755,size=1m"
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for reveal, handle in handles:
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.makedirs(reveal, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(reveal), mode=0o755, exist_ok=True)
                open(reveal, "a").close()
            _mount(f"/proc/self/fd/{handle}", reveal, None, MS_BIND | MS_REC)
            os.close(handle)
        if kind == "hide":
            _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _read_only(config: dict) -> bool:
    """Every mount read-only except the workspace, the scratch tmpfs and /proc."""
    writable = list(config["writable"])
    for path in writable:
        _mount(path, path, None, MS_BIND | MS_REC)
    try:
        _mount_setattr("/", AT_RECURSIVE, set_=MOUNT_ATTR_RDONLY)
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            return False  # an old kernel: only the hidden covers are read-only
        raise
    writable += [path for path, kind in config["covers"] if kind == "scratch"]
    writable += ["/proc", "/dev"]
    for path in writable:
        try:
            _mount_setattr(path, 0, clear=MOUNT_ATTR_RDONLY)
        except OSError as error:
            if error.errno != errno.EINVAL:  # EINVAL: not a mount point here
                raise
    return True
