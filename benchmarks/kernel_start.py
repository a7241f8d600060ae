"""What a kernel template saves: importing a lab's libraries in a fresh Python, against a
process forked from a template that imported them already (``autograder.forking``).

For each lab, the student's and the judge's module lists (``autograder.grade.preloads``) are
imported ``--repeats`` times by a fresh ``python -c``, and ``--repeats`` processes are forked
from one template that imported them, each importing the same list again (a no-op there);
both are timed from start to exit, threads fixed to 1. Prints medians, and the template's
address space once it imported the list (``VmSize``: what a kernel starts with against the
``--memory-mb`` cap).

    .venv/bin/python benchmarks/kernel_start.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

from autograder import forking  # noqa: E402
from autograder.course import Course  # noqa: E402
from autograder.execute import kernel_env  # noqa: E402
from autograder.grade import preloads  # noqa: E402

IMPORT = "import importlib, json, sys\nfor name in json.loads(sys.argv[1]):\n    try:\n        importlib.import_module(name)\n    except Exception:\n        pass\n"


def fresh(modules: tuple[str, ...], env: dict) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORT, json.dumps(modules)], env=env, check=True)
    return time.perf_counter() - began


def forked(template: forking.Template, modules: tuple[str, ...], env: dict, cwd: str) -> float:
    began = time.perf_counter()
    process = template.fork(IMPORT, [json.dumps(modules)], env, cwd, "")
    process.wait(timeout=300)
    return time.perf_counter() - began


def address_space_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="+", default=["lab1_pruning", "lab3_quant_prune"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not forking.supported():
        sys.exit("forking is not supported here (Linux with pidfd needed)")
    course = Course()
    lib = REPO_ROOT / "helpers"
    print("kernel start: importing the lab's modules, fresh Python vs forked from a template")
    header = f"{'lab':18} {'kernel':8} {'modules':>7} {'fresh s':>8} {'forked s':>9}"
    print(f"{header} {'saved s':>8} {'address space MiB':>18}")
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "lib").mkdir()
        judge_lib = Path(scratch) / "lib"
        (judge_lib / "helpers").symlink_to(lib)
        judge_runtime = REPO_ROOT / "autograder" / "judge_runtime.py"
        (judge_lib / "autograder_judge.py").symlink_to(judge_runtime)
        env = kernel_env({"PYTHONPATH": str(judge_lib)}, threads=1)
        for name in args.labs:
            lists = preloads(course.load(name), course)
            for kernel, modules in zip(("student", "judge"), lists, strict=True):
                template = forking.Template(env, modules, judge_lib)
                try:
                    forked(template, (), env, scratch)  # wait until it has imported them
                    space = address_space_mib(template.pid)
                    times_fresh = [fresh(modules, env) for _ in range(args.repeats)]
                    times_forked = [
                        forked(template, modules, env, scratch) for _ in range(args.repeats)
                    ]
                finally:
                    template.close()
                a, b = statistics.median(times_fresh), statistics.median(times_forked)
                row = f"{name:18} {kernel:8} {len(modules):7d} {a:8.2f} {b:9.2f}"
                print(f"{row} {a - b:8.2f} {space:18.0f}")
    print(f"medians of {args.repeats}; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
