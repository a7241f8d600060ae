"""Run a notebook cell by cell in a separate, limited kernel process.

The kernel is an ordinary IPython kernel started by jupyter_client with a small launcher that
first sets ``RLIMIT_AS`` (the memory cap, in MiB of address space) and ``RLIMIT_FSIZE`` (the
largest file it may write: a runaway loop fails with ``OSError: [Errno 27] File too large``
instead of filling the grader's disk) and drops the editable-install import hook, so
``import autograder`` does not resolve from the kernel. Each code cell runs with a time limit
(never longer than what is left of the notebook's limit); a cell past its limit is interrupted
and the kernel goes on with the next cell, unless it does not respond, in which case it is
killed. A dead kernel (``os._exit``, a segfault, the memory cap) ends the run;
the cells not run are reported as such. Outputs are capped in bytes; the kernel's whole process
group is killed at the end, so children it started do not outlive it (unless they left the
group on purpose; with a ``SandboxSpec``, they cannot: ``autograder.sandbox`` isolates the
kernel and kills everything below its launcher).

A cell *passes* iff its ``execute_reply`` says ``ok``: printing to stderr or warning never fails
a cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode, v4
from traitlets import Any, Instance, Integer

from autograder import forking
from autograder import sandbox as sandboxing
from autograder.sandbox import SandboxSpec

# Environment variables passed through to the kernel; everything else is dropped.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL")

_LAUNCHER = """\
import resource, sys
def cap(kind, value):  # never above the hard limit the grader itself runs under
    hard = resource.getrlimit(kind)[1]
    if value:
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))
cap(resource.RLIMIT_AS, {limit})
cap(resource.RLIMIT_FSIZE, {file_limit})
del cap
{sandbox}
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
if sys.path and sys.path[0] == "":
    del sys.path[0]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one notebook run. ``None`` or 0 means no limit."""

    cell_timeout: float | None = 300.0  # seconds per cell
    notebook_timeout: float | None = 900.0  # seconds for the whole notebook
    memory_mb: int | None = 8192  # address space (RLIMIT_AS) of the kernel, MiB
    file_mb: int | None = 1024  # largest file the student's kernel may write (RLIMIT_FSIZE), MiB
    threads: int = 1  # OMP/MKL/torch threads
    output_bytes: int = 2_000_000  # kept per cell; the rest is dropped with a notice
    startup_timeout: float = 120.0


@dataclass
class CellRun:
    """What happened to one code cell."""

    status: str  # ok | error | timeout | dead | not_run
    seconds: float = 0.0
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    exit_code: int | None = None  # a dead kernel's exit status, when known (``exit_status``)

    @property
    def maybe_memory(self) -> bool:
        """Whether a dead kernel may have run out of memory: killed or crashed by a signal,
        or ended in a way not known (not an exit status of its own: ``os._exit``)."""
        if self.status != "dead":
            return False
        return self.exit_code is None or ending_signal(self.exit_code) is not None

    @property
    def passed(self) -> bool:
        return self.status == "ok"


@dataclass
class Execution:
    """A notebook after a run: the executed cells, per-cell results and why it stopped early."""

    notebook: NotebookNode
    runs: dict[int, CellRun]  # cell index -> result, for every code cell
    stopped: str | None  # why cells were not run, or None when every cell ran
    stopped_status: str | None  # "timeout" or "error" for the cells not run
    seconds: float
    grader_error: str | None = None  # the grader itself failed (regraded on the next run)
    isolation: str = "none"  # what isolated the student's kernel (autograder.sandbox)


def kernel_env(
    extra: dict[str, str] | None = None, threads: int = 1, base: dict[str, str] | None = None
) -> dict[str, str]:
    """A minimal, reproducible environment for a kernel: no secrets, fixed seeds and threads."""
    base = os.environ if base is None else base
    env = {key: base[key] for key in PASSED_ENV if key in base}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    threads_text = str(max(1, int(threads)))
    env.update(
        {
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": threads_text,
            "MKL_NUM_THREADS": threads_text,
            "OPENBLAS_NUM_THREADS": threads_text,
            "NUMEXPR_NUM_THREADS": threads_text,
            "TORCH_NUM_THREADS": threads_text,
            "MPLBACKEND": "Agg",
            "TQDM_DISABLE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "JUPYTER_PLATFORM_DIRS": "1",
        }
    )
    env.update(extra or {})
    return env


class _LimitedKernelManager(AsyncKernelManager):
    """Starts ipykernel through a launcher that applies the memory and file-size caps first and,
    with a ``sandbox``, isolates the kernel (``autograder.sandbox``; then the connection file and the
    ZeroMQ ipc sockets are in ``<workspace>/.kernel/``).

    Raises ``SandboxError`` on creation when ``AUTOGRADER_SANDBOX=require`` cannot be met.
    """

    memory_bytes = Integer(0)
    file_bytes = Integer(0)  # RLIMIT_FSIZE; 0: none
    sandbox = Instance(SandboxSpec, allow_none=True)
    template = Any(None, allow_none=True)  # a forking.Template: fork the kernel from it

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.launch: sandboxing.Launch | None = None
        if self.sandbox is not None:
            sandboxing.check(self.sandbox)

    async def start_kernel(self, **kw) -> None:  # noqa: ANN003
        if self.sandbox is not None:
            cwd = Path(kw.get("cwd") or os.getcwd())
            self.launch = sandboxing.prepare(self.sandbox, cwd, kw.get("env") or {})
            if self.launch.runtime is not None:
                self.transport, self.cache_ports = "ipc", False
                self.connection_file = str(self.launch.runtime / "kernel.json")
                self.ip = str(self.launch.runtime / "kernel")
        await super().start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:  # noqa: ANN003
        """Fork the kernel from ``template`` when there is one (the same launcher code, run
        by a process that has the lab's modules imported); else start it as usual, also when
        the template fails (it only saves time)."""
        if self.template is not None:
            connection = os.path.realpath(self.connection_file)
            code = self._launcher_code(parent=self.template.pid)
            log = kw.get("stdout")
            try:
                process = await asyncio.to_thread(
                    self.template.fork,
                    code,
                    ["-f", connection],
                    {**(kw.get("env") or {}), "JPY_PARENT_PID": str(self.template.pid)},
                    str(kw.get("cwd") or os.getcwd()),
                    str(getattr(log, "name", "") or ""),
                )
            except forking.TemplateError:
                self.template = None
            else:
                assert self.provisioner is not None
                self.provisioner.process = process
                self.provisioner.pid = self.provisioner.pgid = process.pid
                self.provisioner.cwd = kw.get("cwd")
                self._reconcile_connection_info(self.provisioner.connection_info)
                return
        await super()._async_launch_kernel(kernel_cmd, **kw)

    @property
    def isolation(self) -> str:
        """Which isolation the kernel got (``sandbox.describe``), or "none"."""
        return self.launch.isolation if self.launch is not None else "none"

    @property
    def launcher_pid(self) -> int | None:
        """The process jupyter_client started (the kernel itself when not sandboxed)."""
        process = getattr(getattr(self, "provisioner", None), "process", None)
        return process.pid if process is not None else None

    @property
    def kernel_pid(self) -> int | None:
        """The ipykernel process, as the grader sees it (outside any PID namespace)."""
        pid = self.launcher_pid
        if pid is None or self.launch is None:
            return pid
        return sandboxing.first_child(pid)

    def _launcher_code(self, parent: int | None = None) -> str:
        """The launcher's code; ``parent``: the pid that starts it, when not this process."""
        isolate = "" if self.launch is None else self.launch.code(self.connection_file, parent)
        return _LAUNCHER.format(
            limit=int(self.memory_bytes), file_limit=int(self.file_bytes), sandbox=isolate
        )

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        code = self._launcher_code()
        return [sys.executable, "-c", code, "-f", os.path.realpath(self.connection_file)] + list(
            extra_arguments or []
        )


ERROR_CLIP = 20_000  # characters of an error's value, and of its traceback, kept past the cap


def _clipped_error(content: dict) -> dict:
    """An error's content (``evalue``, ``traceback``) with the value and the traceback clipped
    to ``ERROR_CLIP`` characters each (the traceback's last lines kept: they say where it
    failed)."""
    content = dict(content)
    evalue = str(content.get("evalue", ""))
    if len(evalue) > ERROR_CLIP:
        content["evalue"] = evalue[:ERROR_CLIP] + " ..."
    kept: list[str] = []
    left = ERROR_CLIP
    for line in reversed([str(line) for line in content.get("traceback", [])]):
        if left <= 0:
            kept.append("[autograder: the start of this traceback was dropped]")
            break
        kept.append(line if len(line) <= left else line[:left] + " ...")
        left -= len(line)
    content["traceback"] = kept[::-1]
    return content


class _CappedClient(NotebookClient):
    """A NotebookClient that keeps at most ``output_bytes`` of output per cell."""

    output_bytes = Integer(2_000_000)

    def _say_cut(self, outs: list, cell_index: int) -> None:
        """Add, once per cell, the notice that output past the cap was dropped."""
        if cell_index not in self._output_cut:
            self._output_cut.add(cell_index)
            notice = v4.new_output(
                "stream",
                name="stderr",
                text=f"\n[autograder: output beyond {self.output_bytes:,} bytes dropped]\n",
            )
            outs.append(notice)

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201
        content = msg.get("content", {})
        error = msg.get("msg_type") == "error"
        size = (
            len(str(content.get("text", "")))
            + sum(len(str(value)) for value in content.get("data", {}).values())
            + len(str(content.get("evalue", "")))
            + sum(len(str(line)) for line in content.get("traceback", []))
        )
        used = self._output_used.get(cell_index, 0) + size
        self._output_used[cell_index] = used
        if used > self.output_bytes:
            if not error:
                self._say_cut(outs, cell_index)
                return None
            # Past the cap, one error is kept, clipped: the latest, which replaces the one kept
            # before (the last is the one that ends the cell). Keeping them all (a loop of
            # showtraceback) would fill the grader's memory.
            clipped = {**msg, "content": _clipped_error(content)}
            before = self._error_kept.get(cell_index)
            kept = super().output(outs, clipped, display_id, cell_index)
            if kept is not None and before is not None:
                for index, out in enumerate(outs):
                    if out is before:  # in its place: other outputs keep their indices
                        outs[index] = outs.pop()
                        break
                self._say_cut(outs, cell_index)  # after: a pending clear_output empties outs
            self._error_kept[cell_index] = kept
            return kept
        return super().output(outs, msg, display_id, cell_index)


@dataclass(frozen=True)
class JudgeSpec:
    """A second, trusted kernel that runs some cells in place of the student's kernel.

    Attributes:
        cells: indices (in the notebook) of the cells run by the judge, never by the student's
            kernel (the test cells); the judge runs them in notebook order, each when the
            student's kernel has run every cell before it.
        prelude: code the judge runs first, while the student's kernel starts on its cells
            (the lab's set-up cells, then the line that connects the judge to the student's
            kernel).
        env: the judge's environment; the student's kernel's connection info (JSON) and pid
            are added.
        cwd: the judge's working folder.
        lib: the folder on the judge's ``PYTHONPATH``; with ``preload``, the judge is forked
            from a template (``autograder.forking``) that imported ``preload`` from a copy
            of ``lib``.
        preload: modules the template imports (what the prelude imports).
        log: the file the judge kernel's own stdout and stderr go to, or nowhere. It must be
            in a folder of the grader's, never the student's: the judge starts after the
            student's code, which could put a link in its place.
    """

    cells: frozenset[int]
    prelude: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    lib: Path | None = None
    preload: tuple[str, ...] = ()
    log: Path | None = None


def execute(
    notebook: NotebookNode,
    *,
    cwd: Path,
    env: dict[str, str],
    limits: Limits = Limits(),
    stop_on_error: bool = False,
    on_cell: Callable[[int, CellRun], None] | None = None,
    kernel_log: Path | None = None,
    judge: JudgeSpec | None = None,
    sandbox: SandboxSpec | None = None,
    preload: tuple[str, ...] = (),
) -> Execution:
    """Run every code cell of ``notebook`` (in place) in a fresh kernel; see the module doc.

    With ``judge``, the cells it names run in the judge kernel instead (their outputs are put
    into the notebook), each after the student's kernel has run every cell before it.
    The kernel process's own stdout and stderr (not the cells' outputs) go to ``kernel_log``,
    or nowhere. With ``sandbox``, the student's kernel runs isolated (``autograder.sandbox``);
    ``SandboxError`` when ``AUTOGRADER_SANDBOX=require`` cannot be met. With ``preload``, the
    kernel is forked from a template that imported those modules (``autograder.forking``).
    """
    args = (notebook, cwd, env, limits, stop_on_error, on_cell)
    if kernel_log is None:
        return asyncio.run(_execute(*args, None, judge, sandbox, preload))
    with open(kernel_log, "ab") as log:
        return asyncio.run(_execute(*args, log, judge, sandbox, preload))


def code_cell_indices(notebook: NotebookNode) -> list[int]:
    """The cells ``execute`` runs: code cells that are not blank."""
    return [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.source.strip()]


@contextlib.contextmanager
def cell_progress(notebook: NotebookNode, desc: str, enabled: bool = True):
    """A progress bar (tqdm, on stderr) over the code cells ``execute`` runs; yields its
    ``on_cell`` callback, or None when not ``enabled``."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(
        total=len(code_cell_indices(notebook)), desc=desc, unit="cell", file=sys.stderr
    ) as bar:
        yield lambda index, run: bar.update(1)


def _new_client(
    notebook: NotebookNode, km: _LimitedKernelManager, limits: Limits, cwd: Path, replies: dict
) -> _CappedClient:
    def remember(cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        replies[cell_index] = execute_reply

    client = _CappedClient(
        notebook,
        km=km,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=False,
        record_timing=False,
        startup_timeout=int(limits.startup_timeout),
        iopub_timeout=10,
        output_bytes=limits.output_bytes,
        on_cell_executed=remember,
        resources={"metadata": {"path": str(cwd)}},
    )
    client._output_used, client._output_cut, client._error_kept = {}, set(), {}
    return client


async def _start(client: _CappedClient, env: dict, cwd: Path, log: BinaryIO | None) -> None:
    stream = log if log is not None else subprocess.DEVNULL
    await client.async_start_new_kernel(
        env=env, cwd=str(cwd), stdout=stream, stderr=subprocess.STDOUT
    )
    await client.async_start_new_kernel_client()


JUDGE_GRACE_S = 15.0  # past the cell limit, for the judge to stop a student's call itself
# The judge's address space holds the lab's libraries as the student's does, and copies of
# what the student's functions return: capped at the student's cap plus this. (PyTorch alone
# maps 3 GiB of address space; a judge capped at a 4 GiB student cap was seen to abort.)
JUDGE_MEMORY_EXTRA_MB = 2048
# judge_runtime's guess at why the student's kernel died during a test's call (the judge cannot
# see its exit status); the grader can, and puts the cause in its place (``_Judge.run``).
JUDGE_DIED_GUESS = " (os._exit, sys.exit in a thread, a crash, or more memory than the cap)"


class _Judge:
    """The judge kernel of one run: started with the student's, prelude run in the background."""

    def __init__(self, spec: JudgeSpec, notebook: NotebookNode, limits: Limits) -> None:
        self.spec = spec
        self.limits = limits
        # The judge stops a student's call at the cell limit itself (StudentTimeout); the
        # kernel's own limit on a test cell only catches a judge that hangs.
        self.test_limits = dataclasses.replace(
            limits,
            cell_timeout=limits.cell_timeout + JUDGE_GRACE_S if limits.cell_timeout else None,
        )
        prelude = [v4.new_code_cell(source) for source in spec.prelude]
        self.offset = len(prelude)
        self.position = {index: self.offset + i for i, index in enumerate(sorted(spec.cells))}
        cells = [copy.deepcopy(notebook.cells[index]) for index in sorted(spec.cells)]
        self.notebook = v4.new_notebook(cells=prelude + cells, metadata=notebook.metadata)
        template = forking.template_for(spec.env, spec.preload, spec.lib)
        memory_mb = limits.memory_mb + JUDGE_MEMORY_EXTRA_MB if limits.memory_mb else 0
        self.km = _LimitedKernelManager(
            kernel_name="python3", memory_bytes=int(memory_mb) << 20, template=template
        )
        self.replies: dict[int, dict] = {}
        self.client = _new_client(self.notebook, self.km, limits, spec.cwd, self.replies)
        self.ready: asyncio.Task | None = None
        self.failed: str | None = None
        self.grader_fault = False  # the judge failed on its own (not because of the student)
        self.student_km: _LimitedKernelManager | None = None
        self.student_died: str | None = None  # why, once a test's call ended the student's kernel
        self.log: BinaryIO | None = None

    def begin(self, student_km: _LimitedKernelManager) -> None:
        self.student_km = student_km
        env = dict(self.spec.env)
        # The connection's ports and key from the grader's memory, not the file: that is in
        # the student's folder, where the student's code could remove or replace it.
        info = {
            key: value.decode() if isinstance(value, bytes) else value
            for key, value in student_km.get_connection_info().items()
        }
        env["AUTOGRADER_STUDENT_CONNECTION"] = json.dumps(info)
        env["AUTOGRADER_STUDENT_PID"] = str(student_km.kernel_pid or 0)
        self.ready = asyncio.create_task(self._prelude(env))

    async def _prelude(self, env: dict) -> None:
        try:
            if self.spec.log is not None:
                self.log = open(self.spec.log, "ab")  # noqa: SIM115 (closed in close())
            await _start(self.client, env, self.spec.cwd, self.log)
        except Exception as error:  # noqa: BLE001
            self.failed = f"the grader's test kernel did not start: {type(error).__name__}: {error}"
            self.grader_fault = True
            return
        for index in range(self.offset):
            run, fatal = await _run_cell(
                self.client, self.notebook, index, math.inf, self.limits, self.replies
            )
            if not run.passed:
                self.failed = (
                    f"the grader's test kernel failed in its set-up ({run.ename}: "
                    f"{run.evalue[:300]})"
                )
                self.grader_fault = True
                return

    async def run(self, notebook: NotebookNode, index: int, left: float) -> CellRun:
        """Run test cell ``index`` in the judge; its outputs go into ``notebook``."""
        assert self.ready is not None
        await self.ready
        if self.failed:
            return CellRun("error", 0.0, "GraderError", self.failed)
        position = self.position[index]
        run, fatal = await _run_cell(
            self.client,
            self.notebook,
            position,
            left + JUDGE_GRACE_S,
            self.test_limits,
            self.replies,
        )
        if run.status == "error" and run.ename == "StudentTimeout":
            run = CellRun("timeout", run.seconds, "TimeoutError", run.evalue, run.traceback)
        if self.student_died is None:
            run = await self._student_death(run)
        judged = self.notebook.cells[position]
        notebook.cells[index].outputs = judged.get("outputs", [])
        notebook.cells[index].execution_count = judged.get("execution_count")
        if fatal:
            self.failed = f"the grader's test kernel stopped: {fatal[0]}"
        return run

    async def _student_death(self, run: CellRun) -> CellRun:
        """After a test cell: when the student's kernel is gone (a function the test called
        ended it), its cause from the exit status in place of the judge's guess, the cell's run
        a dead kernel's (memory counts for regrading, as for the student's own cells), and
        ``student_died`` set, which stops the notebook."""
        km = self.student_km
        if km is None or not km.has_kernel or await km.is_alive():
            return run
        code = await asyncio.to_thread(exit_status, km)
        how = how_it_ended(code)
        self.student_died = "the student's kernel died during a test: " + how
        if run.status != "error" or run.ename != "StudentKernelError":
            return run  # the test went on without the kernel (it caught the error, say)
        if JUDGE_DIED_GUESS in run.evalue:
            evalue = run.evalue.replace(JUDGE_DIED_GUESS, ": " + how)
        else:
            evalue = f"{run.evalue} ({self.student_died})"
        return CellRun("dead", run.seconds, run.ename, evalue, run.traceback, exit_code=code)

    async def close(self) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.cancel()
            try:
                await self.ready
            except BaseException:  # noqa: BLE001 (cancelled)
                pass
        try:
            await _shutdown(self.client, self.km)
        finally:
            if self.log is not None:
                self.log.close()


async def _execute(
    notebook: NotebookNode,
    cwd: Path,
    env: dict[str, str],
    limits: Limits,
    stop_on_error: bool,
    on_cell: Callable[[int, CellRun], None] | None,
    log: BinaryIO | None,
    judge_spec: JudgeSpec | None = None,
    sandbox: SandboxSpec | None = None,
    preload: tuple[str, ...] = (),
) -> Execution:
    start = time.monotonic()
    memory = int(limits.memory_mb or 0) << 20
    template = forking.template_for(env, preload)
    km = _LimitedKernelManager(
        kernel_name="python3",
        memory_bytes=memory,
        file_bytes=int(limits.file_mb or 0) << 20,
        sandbox=sandbox,
        template=template,
    )
    replies: dict[int, dict] = {}
    client = _new_client(notebook, km, limits, cwd, replies)
    judge = _Judge(judge_spec, notebook, limits) if judge_spec is not None else None
    runs: dict[int, CellRun] = {}
    stopped: str | None = None
    stopped_status: str | None = None
    not_started: str | None = None
    code_cells = code_cell_indices(notebook)
    deadline = start + limits.notebook_timeout if limits.notebook_timeout else math.inf
    try:
        try:
            await _start(client, env, cwd, log)
        except Exception as error:  # noqa: BLE001 (any start failure is reported, not raised)
            stopped = f"the kernel did not start: {type(error).__name__}: {error}"
            not_started = stopped  # no student code ran: not the student's doing
            stopped_status = "error"
            code_cells_left = code_cells
        else:
            if judge is not None:
                judge.begin(km)
            code_cells_left = []
            for position, index in enumerate(code_cells):
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = (
                        f"the notebook ran out of time ({limits.notebook_timeout:.0f} s for the "
                        "whole notebook); later cells were not run"
                    )
                    stopped_status = "timeout"
                    code_cells_left = code_cells[position:]
                    break
                if judge is not None and index in judge.spec.cells:
                    run, fatal = await judge.run(notebook, index, left), None
                    if judge.student_died:
                        fatal = (f"{judge.student_died}; later cells were not run", "error")
                else:
                    run, fatal = await _run_cell(client, notebook, index, left, limits, replies)
                runs[index] = run
                if on_cell:
                    on_cell(index, run)
                if fatal:
                    stopped, stopped_status = fatal
                    code_cells_left = code_cells[position + 1 :]
                    break
                if stop_on_error and not run.passed:
                    stopped, stopped_status = "a cell failed; later cells were not run", "error"
                    code_cells_left = code_cells[position + 1 :]
                    break
        for index in code_cells_left:
            runs[index] = CellRun("not_run", evalue=stopped or "")
    finally:
        if judge is not None:
            await judge.close()
        await _shutdown(client, km)
    execution = Execution(notebook, runs, stopped, stopped_status, time.monotonic() - start)
    if not_started:
        execution.grader_error = not_started
    elif judge is not None and judge.grader_fault:
        execution.grader_error = judge.failed
    execution.isolation = km.isolation
    return execution


async def _run_cell(
    client: _CappedClient,
    notebook: NotebookNode,
    index: int,
    left: float,
    limits: Limits,
    replies: dict[int, dict],
) -> tuple[CellRun, tuple[str, str] | None]:
    """Run one cell; returns its result and, when the kernel is gone, (why, status)."""
    cell_limit = min(limits.cell_timeout or math.inf, left)
    client.timeout = None if math.isinf(cell_limit) else max(1, math.ceil(cell_limit))
    began = time.monotonic()
    try:
        await client.async_execute_cell(notebook.cells[index], index, store_history=True)
    except CellTimeoutError:
        seconds = time.monotonic() - began
        whose = "cell" if cell_limit == (limits.cell_timeout or math.inf) else "notebook"
        run = CellRun(
            "timeout",
            seconds,
            "TimeoutError",
            f"the cell ran longer than its time limit ({cell_limit:.0f} s, {whose} limit) "
            "and was interrupted",
        )
        if await _interrupt(client):
            return run, None
        return run, (
            "the kernel did not stop after a time limit and was shut down; later cells were "
            "not run",
            "timeout",
        )
    except DeadKernelError:
        seconds = time.monotonic() - began
        code = await asyncio.to_thread(exit_status, client.km)
        why = "the kernel died while running this cell: " + how_it_ended(code)
        run = CellRun("dead", seconds, "DeadKernelError", why, exit_code=code)
        return run, (f"{why}; later cells were not run", "error")
    seconds = time.monotonic() - began
    content = (replies.pop(index, None) or {}).get("content", {})
    if content.get("status") == "ok":
        return CellRun("ok", seconds), None
    content = _clipped_error(content)
    return (
        CellRun(
            "error",
            seconds,
            str(content.get("ename", "Error")),
            str(content.get("evalue", "")),
            [str(line) for line in content.get("traceback", [])],
        ),
        None,
    )


def exit_status(km: AsyncKernelManager, wait: float = 2.0) -> int | None:
    """A dead kernel's exit status as ``Popen.returncode`` gives it (negative: a signal), or
    None when it is not known within ``wait`` seconds."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    if isinstance(process, forking.ForkedProcess):
        return process.exit_status(wait)
    if process is None:
        return None
    try:
        return process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return None


# Signals that end a process on a fault in native code (a crash, or an allocation that failed
# where nothing could raise MemoryError).
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}


def ending_signal(code: int | None) -> int | None:
    """The signal that ended a kernel, from its exit status (negative: a signal, as ``Popen``
    gives it; the sandbox's launcher ends by the signal that ended its kernel)."""
    return -code if code is not None and code < 0 else None


def how_it_ended(code: int | None) -> str:
    """A dead kernel's cause in words, from its exit status (``exit_status``)."""
    if code is None:
        return "os._exit, a crash, or more memory than the cap (its exit status is unknown)"
    number = ending_signal(code)
    if number is None:
        return (
            f"it exited with status {code} (os._exit(), or a library that ends the process; "
            "sys.exit() and exit() in a cell do not)"
        )
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL:
        return (
            "it was killed (SIGKILL), most often by the system running out of memory: more "
            "memory than the machine or the cap allows"
        )
    if number in CRASH_SIGNALS:
        return (
            f"it crashed ({name}): a fault in native code, such as a library given invalid "
            "input or running out of memory where it could not raise MemoryError"
        )
    return f"it was ended by {name}"


async def _interrupt(client: _CappedClient, wait: float = 15.0) -> bool:
    """Interrupt a busy kernel; True when it answers again within ``wait`` seconds."""
    try:
        await client.km.interrupt_kernel()
        msg_id = client.kc.kernel_info()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                msg = await client.kc.shell_channel.get_msg(timeout=deadline - time.monotonic())
            except Exception:  # noqa: BLE001 (queue.Empty and friends)
                break
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return True
    except Exception:  # noqa: BLE001 (a dead kernel cannot be interrupted)
        return False
    return False


async def _shutdown(client: _CappedClient, km: _LimitedKernelManager) -> None:
    """Stop the kernel and everything left in its process group (in a sandbox: everything
    the launcher has below it, ``setsid`` or not)."""
    pid = km.launcher_pid
    if pid and km.launch is not None:
        sandboxing.kill_tree(pid)
    try:
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            await asyncio.wait_for(km.shutdown_kernel(now=True), timeout=20)
    except Exception:  # noqa: BLE001 (best effort; the group kill below is what counts)
        pass
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if km.launch is not None:
        km.launch.remove_leftovers()  # a fallback kernel's files in /tmp and /dev/shm
    try:
        await km.cleanup_resources()
    except Exception:  # noqa: BLE001
        pass
