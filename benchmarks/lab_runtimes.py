"""Wall time of each lab per profile: ``python -m autograder run --lab LAB --profile P``.

``autograder run`` executes the lab's solution notebook headless in a fresh kernel (see
``autograder/run.py``). Each (lab, profile) is run ``--repeats`` times, in rounds (every
pair once per round), so a change in machine load hits them alike; the table gives the
median and the range of

- ``process``: the whole command, Python start-up and imports included (what a user waits);
- ``notebook``: the execution time the command itself prints ("... s wall time").

``smoke`` needs nothing (synthetic data; the small model is cached in ``LAB_DATA`` after its
first run, so the first round may include a few seconds of training it). ``quick`` and
``full`` need the CIFAR-10 cache and the dense checkpoint in ``LAB_DATA`` (``--data DIR``,
default ``data/``). Without a trained checkpoint, ``--make-stand-in DIR`` makes a folder
holding links to the cache (and the cached smoke model) and a random-weights checkpoint marked
as a stand-in; runs on it are labelled "stand-in weights: runtime only" (the work is the same,
every accuracy is meaningless).

    .venv/bin/python benchmarks/lab_runtimes.py                               # smoke, both labs
    .venv/bin/python benchmarks/lab_runtimes.py --make-stand-in /tmp/standin
    .venv/bin/python benchmarks/lab_runtimes.py --labs lab1_pruning --profiles quick \\
        --data /tmp/standin --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

LABS = ("lab1_pruning", "lab3_quant_prune")
_WALL = re.compile(r"\): ([0-9.]+) s wall time")


def make_stand_in(folder: Path, source: Path) -> Path:
    """A ``LAB_DATA`` folder with links to ``source``'s CIFAR-10 cache (and smoke model) and a
    random-weights dense checkpoint whose ``meta`` says it is a stand-in. Returns its path."""
    from helpers.checkpoints import DENSE_CHECKPOINT, SMOKE_CHECKPOINT, save_checkpoint
    from helpers.data import CACHE_NAME
    from helpers.profiles import VGG_ARCH
    from helpers.pruning import random_vgg

    cache = source / CACHE_NAME
    if not cache.is_file():
        raise SystemExit(
            f"no CIFAR-10 cache at {cache}: prepare it first "
            "(`python -m helpers data --from /work/shared/data/cifar10-jpg.tar.gz`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name in (CACHE_NAME, SMOKE_CHECKPOINT):
        link = folder / name
        if (source / name).is_file() and not link.exists():
            link.symlink_to((source / name).resolve())
    path = save_checkpoint(
        random_vgg(VGG_ARCH, seed=0),
        folder / DENSE_CHECKPOINT,
        stand_in=True,
        note="random weights (helpers.pruning.random_vgg, seed 0), not trained: runtimes only",
    )
    print(f"stand-in LAB_DATA: {folder} (checkpoint {path}, random weights; cache linked)")
    return folder


def weights_label(profile: str, data: Path) -> str | None:
    """What the lab runs on under ``profile`` with ``LAB_DATA=data``; None when it cannot run."""
    if profile == "smoke":
        return "synthetic data, small VGG (smoke): runtime only"
    from helpers.checkpoints import DENSE_CHECKPOINT, CheckpointError, read_checkpoint
    from helpers.data import CACHE_NAME

    path = data / DENSE_CHECKPOINT
    if not (data / CACHE_NAME).is_file() or not path.is_file():
        return None
    try:
        meta = read_checkpoint(path).get("meta") or {}
    except (CheckpointError, AttributeError):
        return None
    if meta.get("stand_in"):
        return "CIFAR-10 (JPEG copy), stand-in weights: runtime only"
    return f"CIFAR-10 (JPEG copy), checkpoint {path}"


def run_once(lab: str, profile: str, env: dict[str, str], out: Path) -> tuple[float, float, str]:
    """Seconds of the whole command, seconds it reports for the notebook, and its output tail."""
    command = [sys.executable, "-m", "autograder", "run", "--lab", lab, "--profile", profile]
    command += ["--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    text = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-20:])
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}):\n{tail}")
    match = _WALL.search(done.stdout)
    return seconds, float(match.group(1)) if match else float("nan"), text


def command_line(script: str, argv: list[str] | None) -> str:
    """How to rerun the benchmark ``script`` (its ``__file__``) with ``argv`` (None: sys.argv)."""
    args = sys.argv[1:] if argv is None else argv
    return f"python benchmarks/{Path(script).name} " + shlex.join(args)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.1f}"
    return f"{median:.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", nargs="+", default=list(LABS), choices=LABS)
    parser.add_argument(
        "--profiles", nargs="+", default=["smoke"], choices=["smoke", "quick", "full"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per lab and profile (median)")
    parser.add_argument(
        "--data", type=Path, default=None, help="LAB_DATA (default: $LAB_DATA or data/)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads of the kernel (default: unset)"
    )
    parser.add_argument(
        "--make-stand-in",
        type=Path,
        metavar="DIR",
        help="make a stand-in LAB_DATA in DIR (cache links + random-weights checkpoint) and exit",
    )
    args = parser.parse_args(argv)

    from helpers.profiles import data_dir

    if args.make_stand_in:
        make_stand_in(args.make_stand_in.resolve(), (args.data or data_dir()).resolve())
        return 0

    data = (args.data or data_dir()).resolve()
    env = {key: value for key, value in os.environ.items() if key != "NBGRADER_EXECUTION"}
    env["LAB_DATA"] = str(data)
    env.setdefault("MPLBACKEND", "Agg")
    if args.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(args.threads)

    pairs, labels = [], {}
    for lab in args.labs:
        for profile in args.profiles:
            label = weights_label(profile, data)
            if label is None:
                print(
                    f"skipping {lab} ({profile}): needs the CIFAR-10 cache and a checkpoint in "
                    f"{data} (see --make-stand-in)"
                )
                continue
            pairs.append((lab, profile))
            labels[lab, profile] = label
    if not pairs:
        return 1

    load_before = os.getloadavg()
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; load average {load_before[0]:.2f}; "
        f"threads: {args.threads or 'unset (torch default)'}; LAB_DATA={data}"
    )
    process: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    notebook: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    with tempfile.TemporaryDirectory(prefix="lab-runtimes-") as out:
        for round_index in range(args.repeats):
            for lab, profile in pairs:
                seconds, reported, _ = run_once(lab, profile, env, Path(out))
                process[lab, profile].append(seconds)
                notebook[lab, profile].append(reported)
                print(
                    f"  round {round_index + 1}/{args.repeats}: {lab} ({profile}) "
                    f"{seconds:.1f} s (notebook {reported:.1f} s)",
                    flush=True,
                )
    load_after = os.getloadavg()

    print()
    print(
        "| lab | profile | process s, median (range) | notebook s, median (range) | runs | data and weights |"
    )
    print("|---|---|---|---|---|---|")
    for lab, profile in pairs:
        print(
            f"| {lab} | {profile} | {spread(process[lab, profile])} | "
            f"{spread(notebook[lab, profile])} | {len(process[lab, profile])} | "
            f"{labels[lab, profile]} |"
        )
    print()
    import torch

    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{platform.python_version()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (1-minute)."
    )
    print(f"Command: {command_line(__file__, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
