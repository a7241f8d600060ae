"""One short GPU lease, prepared: the figures of docs/results.md that need a GPU, in one command.

A GPU machine is lent to some sessions only, for about 15 minutes in all, with no network and
an image whose Python lacks the notebook stack. Three verbs make such a lease count:

``kit`` (here, with PyPI): ``gpu_kit/`` (git-ignored) with the JPEG copy of CIFAR-10 and the
wheels the GPU image lacks (nbformat, nbclient, ipykernel and what they need, torchprofile,
torchao for Lab 3's PT2E section),
at the versions of this venv, built for the GPU's Python (``--python-version``, default 3.12).

``run`` (on the GPU machine, from the repository root; its ``python3`` holds PyTorch):
installs those wheels into ``/tmp/site`` (only distributions not already installed there),
then runs the steps below in this order, each a subprocess with its output in a log, each
given the time left of ``--budget`` seconds and stopped (its whole process group) when that
is spent. Steps that finished are remembered (``runs/gpu_session/<profile>/done/``) and
skipped by a second call on the same machine; an interrupted ``train-dense`` resumes from its
``.partial``. After every step, ``--out`` holds ``summary.md`` (status, wall time and the end
of each step's log), ``gpu_session.json``, ``logs.tar.gz`` (the logs and the executed
notebooks) and the trained dense checkpoint in parts of at most 15 MiB (the device tool
returns files of at most 16 MiB), so what was done comes back even if the call is cut off.

``simulate`` (here, with PyPI): ``run`` in a venv that sees, of this venv's packages, only
those the GPU image has (its list below), with a kit for this Python, ``LAB_DATA`` and all
output in ``runs/gpu_session/simulate/``: what the kit lacks fails here, not in the lease.

``fetch DIR`` (here): checks and joins the checkpoint's parts into ``LAB_DATA`` (it refuses
to replace a different file there), unpacks the logs into ``runs/gpu_session/fetched/`` and
prints the summary. With the course checkpoint here, the CPU figures of docs/results.md can
be rerun on it.

    .venv/bin/python benchmarks/gpu_session.py kit
    # device tool: carry ["gpu_kit"], timeout_s 600:
    python3 benchmarks/gpu_session.py run --budget 560 --out "$OUT"
    .venv/bin/python benchmarks/gpu_session.py fetch /path/to/files_at
    .venv/bin/python benchmarks/gpu_session.py simulate      # check it here: smoke, 6 min

Steps, most needed first: environment, data, train-dense (course recipe, 20 epochs),
lab1 (``lab_results.py``, the ``full`` tables and runtime), lab3, loader
(``loader_throughput.py``), sparsity-search, channel-sorting, dense-recipes (the course run is
the ``train-dense`` checkpoint, reused), runtimes-quick (``lab_runtimes.py``: both labs
under ``quick``, once). ``--steps`` picks some.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

KIT = REPO_ROOT / "gpu_kit"
ARCHIVE_NAME = "cifar10-jpg.tar.gz"
ARCHIVE_SOURCES = (  # the course machines' copy (data/README.md), beside the checkout or fixed
    REPO_ROOT.parent / "shared" / "data" / ARCHIVE_NAME,
    Path("/work/shared/data") / ARCHIVE_NAME,
)
SITE = Path("/tmp/site")
PART_BYTES = 15 * 2**20
PACK_RESERVE_S = 20.0  # kept back from the budget to write --out after the last step

# What the notebooks and benchmarks need beyond PyTorch, torchvision, NumPy, matplotlib, tqdm.
KIT_ROOTS = ("nbformat", "nbclient", "ipykernel", "torchprofile", "torchao")
# pyproject's dependencies that no step on the GPU machine imports (the instructors' and the
# browser's side), so the kit leaves them out.
NOT_ON_THE_GPU = frozenset({"nbgrader", "jupyterlab", "nbconvert", "bleach"})

# The GPU image's Python packages, as the device tool's KINDS.md lists them (read 2026-11-17).
# The kit leaves these out; ``run`` also skips any wheel whose distribution is installed there.
GPU_IMAGE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
    protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
    scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
    sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
    tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
    urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
)


def normalize(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------
# kit


def requirements_closure(
    roots: Iterable[str], exclude: Iterable[str], environment: dict[str, str]
) -> dict[str, str]:
    """The installed distributions ``roots`` need, transitively: ``{name: version}``.

    Requirements are read from this environment's metadata, their markers evaluated for
    ``environment`` (the target Python and platform; extras are not followed). Names in
    ``exclude`` are left out and not followed. A requirement not installed here maps to "".
    """
    from packaging.requirements import Requirement

    skip = {normalize(n) for n in exclude}
    found: dict[str, str] = {}
    todo = [normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in skip:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = ""
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**environment, "extra": ""}):
                todo.append(normalize(req.name))
    return found


def target_environment(python_version: str) -> dict[str, str]:
    """Marker values for CPython ``python_version`` on x86-64 Linux (the GPU machine)."""
    return {
        "python_version": ".".join(python_version.split(".")[:2]),
        "python_full_version": python_version
        if python_version.count(".") == 2
        else f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def make_kit(kit: Path, archive: Path | None, python_version: str) -> int:
    if archive is None:
        archive = next((p for p in ARCHIVE_SOURCES if p.is_file()), None)
    if archive is None or not archive.is_file():
        where = archive or " or ".join(map(str, ARCHIVE_SOURCES))
        print(f"error: no CIFAR-10 JPEG archive at {where}; give --archive PATH", file=sys.stderr)
        return 2
    wheels = kit / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not (kit / ARCHIVE_NAME).is_file() or sha256(kit / ARCHIVE_NAME) != sha256(archive):
        shutil.copy2(archive, kit / ARCHIVE_NAME)
    needed = requirements_closure(KIT_ROOTS, GPU_IMAGE_PACKAGES, target_environment(python_version))
    tags = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    tags += ["manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    failed = []
    for name, version in sorted(needed.items()):
        spec = f"{name}=={version}" if version else name
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", python_version]
        cmd += ["--implementation", "cp", "-d", str(wheels), spec]
        for tag in tags:
            cmd += ["--platform", tag]
        print(f"  {spec}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(spec)
    if failed:
        print(f"error: no wheel for {', '.join(failed)} (Python {python_version})", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    print(
        f"{kit}: {ARCHIVE_NAME} and {len(list(wheels.glob('*.whl')))} wheels for Python "
        f"{python_version}, {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB)"
    )
    return 0


def wheel_distribution(path: Path) -> str:
    """The distribution a wheel file installs, from its name (``name-version-...whl``)."""
    return normalize(path.name.split("-")[0])


def wheels_to_install(wheels: Iterable[Path], installed: Callable[[str], bool]) -> list[Path]:
    """The wheels whose distribution ``installed`` says is missing (one per distribution)."""
    chosen: dict[str, Path] = {}
    for wheel in sorted(wheels):
        name = wheel_distribution(wheel)
        if not installed(name):
            chosen.setdefault(name, wheel)
    return list(chosen.values())


def is_installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# run


@dataclass
class Step:
    """One command of the session. ``satisfied`` says why it need not run (its result is
    there already), ``ready`` why it cannot run yet; each returns None otherwise."""

    name: str
    argv: list[str]
    min_s: float = 30.0
    ready: Callable[[], str | None] = lambda: None
    satisfied: Callable[[], str | None] = lambda: None
    before: Callable[[], None] = lambda: None


@dataclass
class Outcome:
    name: str
    status: str  # ok, ok: why not run, failed (exit N), timed out ..., skipped: why, done before
    wall_s: float = 0.0
    command: str = ""


def run_step(step: Step, log: Path, timeout_s: float, env: dict[str, str]) -> Outcome:
    """Run ``step`` with its output in ``log``; stop its process group after ``timeout_s``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(step.argv)
    began = time.perf_counter()
    with open(log, "wb") as out:
        out.write(f"$ {command}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            step.argv,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its kernels and workers go with it on a timeout
        )
        try:
            code = proc.wait(timeout=max(timeout_s, 0.1))
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            stop_group(proc)
            status = f"timed out after {timeout_s:.0f} s"
        except BaseException:  # stopped ourselves (SIGTERM, Ctrl-C): leave nothing running
            stop_group(proc)
            raise
    return Outcome(step.name, status, time.perf_counter() - began, command)


def stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_on_sigterm() -> None:
    """Exit on SIGTERM (the device tool's timeout) through ``run_step``'s cleanup, so that no
    step is left running in its own session after this process is gone."""

    def stopped(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)


def run_session(
    steps: list[Step],
    work: Path,
    budget_s: float,
    pack: Callable[[list[Outcome]], None],
    env: dict[str, str] | None = None,
    again: bool = False,
) -> list[Outcome]:
    """Run ``steps`` in order within ``budget_s``; ``pack`` the outcomes after each one.

    A step that finished in an earlier call (a file in ``work/done``) is not run again unless
    ``again``, nor one whose result is there already (``satisfied``). A step is skipped when
    it is not ``ready`` or less than its ``min_s`` is left; a running step gets the time left
    (less the packing reserve) and is stopped when it is spent.
    """
    env = dict(os.environ if env is None else env)
    deadline = time.monotonic() + budget_s
    done_dir = work / "done"
    done_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for step in steps:
        marker = done_dir / f"{step.name}.json"
        if marker.is_file() and not again:
            earlier = json.loads(marker.read_text())
            outcome = Outcome(step.name, "done before", earlier["wall_s"], earlier["command"])
        elif (there := step.satisfied()) is not None:
            outcome = Outcome(step.name, f"ok: {there}", 0.0, " ".join(step.argv))
        else:
            left = deadline - time.monotonic() - PACK_RESERVE_S
            why = step.ready()
            if why is None and left < step.min_s:
                why = f"{left:.0f} s left, needs at least {step.min_s:.0f}"
            if why is not None:
                outcome = Outcome(step.name, f"skipped: {why}", 0.0, " ".join(step.argv))
            else:
                print(f"[{step.name}] {' '.join(step.argv)} (up to {left:.0f} s)", flush=True)
                step.before()
                outcome = run_step(step, work / "logs" / f"{step.name}.log", left, env)
                print(f"[{step.name}] {outcome.status}, {outcome.wall_s:.0f} s", flush=True)
                if outcome.status == "ok":
                    marker.write_text(
                        json.dumps({"wall_s": outcome.wall_s, "command": outcome.command})
                    )
        outcomes.append(outcome)
        pack(outcomes)
    return outcomes


def log_tail(log: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log, progress-bar redraws (carriage returns) dropped."""
    if not log.is_file():
        return []
    text = log.read_bytes()[-200_000:].decode("utf-8", "replace")
    kept = [line.split("\r")[-1].rstrip() for line in text.split("\n")]
    return [line for line in kept if line][-lines:]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_file(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list[dict]:
    """Write ``path`` as ``out/<name>.partN`` files of at most ``part_bytes``."""
    parts = []
    with open(path, "rb") as f:
        for index in range(10_000):
            block = f.read(part_bytes)
            if not block:
                break
            part = out / f"{path.name}.part{index}"
            part.write_bytes(block)
            parts.append({"file": part.name, "sha256": hashlib.sha256(block).hexdigest()})
    return parts


def write_out(
    out: Path,
    outcomes: list[Outcome],
    work: Path,
    checkpoint: Path,
    extra_files: Iterable[Path],
    header: str,
    part_bytes: int = PART_BYTES,
) -> None:
    """``out``: summary.md, gpu_session.json, logs.tar.gz and the checkpoint in parts."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{checkpoint.name}.part*"):
        old.unlink()
    record: dict = {"steps": [vars(o) for o in outcomes], "checkpoint": None}
    if checkpoint.is_file():
        record["checkpoint"] = {
            "name": checkpoint.name,
            "bytes": checkpoint.stat().st_size,
            "sha256": sha256(checkpoint),
            "parts": split_file(checkpoint, out, part_bytes),
        }
    logs = sorted((work / "logs").glob("*.log")) if (work / "logs").is_dir() else []
    logs = [(path, f"logs/{path.name}") for path in logs]
    extras = [(path, f"runs/{path.name}") for path in extra_files if path.exists()]
    for members in (logs + extras, logs):  # the executed notebooks only if they fit
        with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
            for path, name in members:
                tar.add(path, arcname=name)
        if (out / "logs.tar.gz").stat().st_size <= part_bytes:
            break
    (out / "gpu_session.json").write_text(json.dumps(record, indent=1))
    lines = [header, "", "| step | status | wall s |", "| --- | --- | --- |"]
    lines += [f"| {o.name} | {o.status} | {o.wall_s:.0f} |" for o in outcomes]
    for o in outcomes:
        tail = log_tail(work / "logs" / f"{o.name}.log", 40 if o.name != "environment" else 20)
        if tail:
            lines += ["", f"## {o.name}: {o.status}", "", "```", *tail, "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def probe() -> int:
    """Print the machine: Python, torch, CPU, GPU (and a matrix product on it), the kit."""
    import platform

    import torch
    import torchvision

    print("python", sys.version.split()[0], sys.executable)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    print(f"cpu {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        memory = f"{props.total_memory / 2**30:.0f} GiB"
        print("gpu", props.name, memory, props.multi_processor_count, "multiprocessors")
        x = torch.randn(4096, 4096, device="cuda")
        print("a matrix product on it:", bool(torch.isfinite(x @ x).all()))
    else:
        print("gpu: none (CUDA is not available)")
    for name in KIT_ROOTS:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"), "from", Path(module.__file__).parent)
    return 0


LABS = ("lab1_pruning", "lab3_quant_prune")


def lab_outputs(work: Path, profile: str) -> tuple[Path, list[Path]]:
    """The folder the lab steps write to (``lab_results.py --out``), and the executed
    notebooks and figure folders they leave there."""
    from autograder.run import output_paths

    folder = work / "notebooks"
    return folder, [path for lab in LABS for path in output_paths(folder, lab, profile)]


def session_steps(profile: str, kit: Path, python: str, work: Path) -> list[Step]:
    """The session's steps, most needed first; their own outputs go under ``work``."""
    from dense_recipes import checkpoint_path

    from helpers.profiles import data_dir, get_profile
    from helpers.train import default_dense_path, default_recipe

    prof = get_profile(profile)
    checkpoint = default_dense_path(prof)
    cache = data_dir() / "cifar10_uint8.pt"

    def needs_checkpoint() -> str | None:
        return None if checkpoint.is_file() else f"no trained checkpoint {checkpoint.name}"

    def needs_cache() -> str | None:
        return None if cache.is_file() else "no CIFAR-10 cache (the data step failed)"

    def cache_there() -> str | None:
        return f"{cache} is there already" if cache.is_file() else None

    def checkpoint_there() -> str | None:
        return f"{checkpoint} is there already" if checkpoint.is_file() else None

    def needs_archive() -> str | None:
        return None if (kit / ARCHIVE_NAME).is_file() else f"no {kit / ARCHIVE_NAME}"

    def seed_course_run() -> None:
        """dense_recipes reuses the train-dense checkpoint as its course run (same settings)."""
        target = checkpoint_path(
            work / "dense_recipes",
            prof.name,
            "course",
            default_recipe(prof).epochs,
            0,
        )
        if checkpoint.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkpoint, target)

    def lab(name: str) -> Step:
        argv = [python, "benchmarks/lab_results.py", "--lab", name, "--profile", profile]
        argv += ["--out", str(lab_outputs(work, profile)[0])]
        return Step(name.split("_")[0], argv, 60, needs_checkpoint)

    loader_args = ["--images", "500", "--pipeline-images", "1000"] if profile == "smoke" else []
    quick = "smoke" if profile == "smoke" else "quick"
    return [
        Step("environment", [python, "benchmarks/gpu_session.py", "probe"], 10),
        Step(
            "data",
            [python, "-m", "helpers", "data", "--from", str(kit / ARCHIVE_NAME)],
            30,
            needs_archive,
            cache_there,
        ),
        Step(
            "train-dense",
            [python, "-m", "helpers", "train-dense", "--profile", profile],
            60,
            satisfied=checkpoint_there,
        ),
        *(lab(name) for name in LABS),
        Step("loader", [python, "benchmarks/loader_throughput.py", *loader_args], 30, needs_cache),
        Step(
            "sparsity-search",
            [python, "benchmarks/sparsity_search.py", "--profile", profile]
            + ["--out-dir", str(work / "sparsity_search")],  # a rerun resumes it
            60,
            needs_checkpoint,
        ),
        Step(
            "channel-sorting",
            [python, "benchmarks/channel_sorting.py", "--profile", profile],
            60,
            needs_checkpoint,
        ),
        Step(
            "dense-recipes",
            [python, "benchmarks/dense_recipes.py", "--profile", profile]
            + ["--out-dir", str(work / "dense_recipes")],
            60,
            before=seed_course_run,
        ),
        Step(
            "runtimes-quick",
            [python, "benchmarks/lab_runtimes.py", "--profiles", quick, "--repeats", "1"],
            60,
            needs_checkpoint,
        ),
    ]


def install_kit(kit: Path, site: Path) -> str:
    """Install the kit's wheels that this Python lacks into ``site``; a line saying what."""
    wheels = sorted((kit / "wheels").glob("*.whl"))
    chosen = wheels_to_install(wheels, is_installed)
    if not chosen:
        return f"kit: nothing to install ({len(wheels)} wheels, all installed)"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--disable-pip-version-check", "--target", str(site)]
    done = subprocess.run(cmd + [str(w) for w in chosen], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install the kit: {done.stderr.strip()[-2000:]}")
    return f"kit: installed {len(chosen)} of {len(wheels)} wheels into {site}"


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    lines = []
    if (args.kit / "wheels").is_dir():
        sys.path.insert(0, str(args.site))  # a second call finds what the first installed
        try:
            lines.append(install_kit(args.kit, args.site))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        paths = [str(args.site), str(REPO_ROOT), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    else:
        lines.append(f"kit: no {args.kit / 'wheels'}; using this Python's packages")
    from helpers.profiles import get_profile
    from helpers.train import default_dense_path

    checkpoint = default_dense_path(get_profile(args.profile))
    work = args.work or REPO_ROOT / "runs" / "gpu_session" / args.profile
    out = args.out or work / "out"
    steps = session_steps(args.profile, args.kit, sys.executable, work)
    if args.steps:
        unknown = sorted(set(args.steps) - {s.name for s in steps})
        if unknown:
            print(f"error: unknown step(s) {', '.join(unknown)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s.name in args.steps]
    header = (
        f"# GPU session, profile {args.profile}, budget {args.budget:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n\n" + "\n".join(lines)
    )
    notebooks = lab_outputs(work, args.profile)[1]
    print(header, flush=True)

    def pack(outcomes: list[Outcome]) -> None:
        write_out(out, outcomes, work, checkpoint, notebooks, header)

    stop_on_sigterm()
    budget = args.budget - (time.monotonic() - began)
    outcomes = run_session(steps, work, budget, pack, env=env, again=args.again)
    print((out / "summary.md").read_text()[-9000:])
    return 0 if all(o.status.startswith("ok") or o.status == "done before" for o in outcomes) else 1


# ---------------------------------------------------------------------------------------------
# simulate


def image_venv(folder: Path) -> Path:
    """A venv at ``folder`` that sees, of this environment's packages, only those the GPU
    image has (linked, not copied): the GPU machine's Python as near as this one can show it.
    Returns its ``python``."""
    if folder.exists():
        shutil.rmtree(folder)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    farm = folder / "image-packages"
    farm.mkdir()
    for dist in importlib.metadata.distributions():
        if normalize(dist.metadata["Name"]) not in GPU_IMAGE_PACKAGES:
            continue
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "bin")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (farm / top).exists():
                (farm / top).symlink_to(source)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "gpu_image.pth").write_text(f"{farm}\n")
    return python


def simulate(args: argparse.Namespace) -> int:
    """``run`` in a venv with the GPU image's packages only, with a kit for this Python, from
    nothing (no cache, checkpoint or earlier step kept: as on a bare GPU machine)."""
    folder = args.folder
    for made in ("data", "work", "out", "site"):  # a bare machine each time; the kit is kept
        shutil.rmtree(folder / made, ignore_errors=True)
    python = image_venv(folder / "venv")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    code = make_kit(folder / "kit", args.archive, version)
    if code != 0:
        return code
    argv = [str(python), str(Path(__file__).resolve()), "run", "--profile", args.profile]
    argv += ["--budget", str(args.budget), "--kit", str(folder / "kit"), "--again"]
    argv += ["--work", str(folder / "work"), "--out", str(folder / "out")]
    argv += ["--site", str(folder / "site")] + (["--steps", *args.steps] if args.steps else [])
    env = {**os.environ, "LAB_DATA": str(folder / "data")}
    env.pop("PYTHONPATH", None)
    print("$ " + " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=REPO_ROOT, env=env).returncode


# ---------------------------------------------------------------------------------------------
# fetch


def join_parts(folder: Path, record: dict, target: Path) -> None:
    """Check every part and the whole against ``record``; write ``target`` (atomically)."""
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            for part in record["parts"]:
                data = (folder / part["file"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != part["sha256"]:
                    raise ValueError(f"{part['file']} is damaged (sha256 differs)")
                digest.update(data)
                tmp.write(data)
            if digest.hexdigest() != record["sha256"]:
                raise ValueError("the joined checkpoint's sha256 differs from the record")
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.replace(tmp.name, target)


def fetch(args: argparse.Namespace) -> int:
    from helpers.profiles import data_dir

    folder = args.folder
    try:
        record = json.loads((folder / "gpu_session.json").read_text())
    except (OSError, ValueError) as error:
        print(f"error: {folder} holds no readable gpu_session.json ({error})", file=sys.stderr)
        return 2
    ckpt = record.get("checkpoint")
    if ckpt:
        target = data_dir() / ckpt["name"]
        if target.is_file() and sha256(target) != ckpt["sha256"]:
            print(
                f"error: {target} exists and differs from the session's checkpoint; move it "
                "away first (nothing was changed)",
                file=sys.stderr,
            )
            return 2
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                join_parts(folder, ckpt, target)
            except (OSError, ValueError) as error:
                print(f"error: {error}; nothing was written", file=sys.stderr)
                return 2
        print(f"checkpoint: {target} ({ckpt['bytes']:,} bytes, sha256 {ckpt['sha256'][:12]})")
    else:
        print("checkpoint: none in this session's files")
    logs = folder / "logs.tar.gz"
    if logs.is_file():
        dest = args.runs / "fetched"
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(logs) as tar:
            tar.extractall(dest, filter="data")
        print(f"logs and notebooks: {dest}")
    summary = folder / "summary.md"
    if summary.is_file():
        print(summary.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    k = verbs.add_parser("kit", help="gpu_kit/: the data archive and the wheels (here)")
    k.add_argument("--kit", type=Path, default=KIT)
    k.add_argument("--archive", type=Path, default=None)
    k.add_argument("--python-version", default="3.12", help="the GPU machine's (default 3.12)")
    r = verbs.add_parser("run", help="the steps, within --budget seconds (GPU machine)")
    r.add_argument("--budget", type=float, default=560.0, help="seconds (default 560)")
    r.add_argument("--profile", default="full", choices=["smoke", "quick", "full"])
    r.add_argument("--out", type=Path, default=None, help="default runs/gpu_session/<profile>/out")
    r.add_argument("--kit", type=Path, default=KIT)
    r.add_argument("--work", type=Path, default=None, help="logs and done-markers (default: runs/)")
    r.add_argument("--site", type=Path, default=SITE, help=f"where the wheels go (default {SITE})")
    r.add_argument("--steps", nargs="+", default=None, help="only these steps, in session order")
    r.add_argument("--again", action="store_true", help="rerun steps that finished before")
    verbs.add_parser("probe", help="print the machine and the kit's packages")
    m = verbs.add_parser("simulate", help="`run` here, in a Python with the GPU image's packages")
    m.add_argument("--folder", type=Path, default=REPO_ROOT / "runs" / "gpu_session" / "simulate")
    m.add_argument("--profile", default="smoke", choices=["smoke", "quick", "full"])
    m.add_argument("--budget", type=float, default=900.0)
    m.add_argument("--archive", type=Path, default=None)
    m.add_argument("--steps", nargs="+", default=None)
    f = verbs.add_parser("fetch", help="join the checkpoint into LAB_DATA, unpack the logs")
    f.add_argument("folder", type=Path)
    f.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "gpu_session")
    args = parser.parse_args(argv)
    if args.verb == "kit":
        return make_kit(args.kit, args.archive, args.python_version)
    if args.verb == "run":
        if args.budget < 60:
            parser.error("--budget must be at least 60 seconds")
        return run(args)
    if args.verb == "probe":
        return probe()
    if args.verb == "simulate":
        return simulate(args)
    return fetch(args)


if __name__ == "__main__":
    sys.exit(main())
