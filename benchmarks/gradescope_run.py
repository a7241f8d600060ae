"""The Gradescope autograder, run here: wall time and memory of one submission.

Builds each lab's zip as ``python -m autograder gradescope --lab LAB`` does (its default
limits), lays out a folder as Gradescope's ``/autograder`` for each notebook (the solution
and the blank release), runs the zip's ``run_autograder`` with this Python (on Gradescope:
the virtual environment ``setup.sh`` makes) and samples, every 0.1 s, the memory of the whole
process tree: the sum over its processes of the proportional set size (PSS: a page shared by
k processes counts 1/k in each, so the sum is the memory the tree holds; a container's memory
limit counts about that, plus page cache). ``--cpus N`` pins the run to N cores (``taskset``),
nearer Gradescope's default of half a CPU than this machine's cores.

    .venv/bin/python benchmarks/gradescope_run.py                # both labs, 1 core
    .venv/bin/python benchmarks/gradescope_run.py --labs lab1_pruning --cpus 2

Prints one row per run: wall seconds, peak memory (MiB), score, and the result's first line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

from autograder.course import Course  # noqa: E402
from autograder.gradescope import build, lay_out, local_command  # noqa: E402
from autograder.sandbox import descendants  # noqa: E402
from benchmarks.grading import load_text, machine  # noqa: E402


def pss_mib(pids: list[int]) -> float:
    """The summed PSS of ``pids`` in MiB (processes that ended meanwhile count 0)."""
    total_kib = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total_kib += int(line.split()[1])
                break
    return total_kib / 1024


def run_once(bundle: Path, notebook: bytes, name: str, folder: Path, cpus: int) -> dict:
    lay_out(bundle, folder, {name: notebook})
    command, env = local_command(folder)
    if cpus:
        command = ["taskset", "-c", f"0-{cpus - 1}", *command]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, pss_mib([process.pid, *descendants(process.pid)]))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    value = json.loads((folder / "results" / "results.json").read_text())
    points = sum(test["max_score"] for test in value["tests"])
    return {
        "wall": wall,
        "peak": peak,
        "score": f"{value['score']:g} / {points:g}",
        "first": value["output"].splitlines()[1 if value["tests"] else 0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", nargs="+", default=None, help="default: every lab")
    parser.add_argument("--cpus", type=int, default=1, help="cores to pin to; 0: all")
    args = parser.parse_args(argv)
    course = Course()
    labs = args.labs or course.labs()
    print("\n".join(machine()))
    print(f"pinned to {args.cpus or os.cpu_count()} core(s); load average {load_text()}")
    print()
    print("| lab | notebook | wall (s) | peak memory (MiB, PSS) | score | result |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gradescope-bench-") as scratch:
        for lab in labs:
            bundle = Path(scratch) / f"{lab}.zip"
            build(course, lab, bundle)
            solution = course.source_path(lab).read_bytes()
            blank = course.release_path(lab).read_bytes()
            for kind, notebook in (("solution", solution), ("blank release", blank)):
                folder = Path(tempfile.mkdtemp(prefix=f"{lab}-", dir=scratch))
                row = run_once(bundle, notebook, f"{lab}.ipynb", folder, args.cpus)
                print(
                    f"| {lab} | {kind} | {row['wall']:.1f} | {row['peak']:.0f} | "
                    f"{row['score']} | {row['first']} |",
                    flush=True,
                )
    print(f"\nload average at the end {load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
