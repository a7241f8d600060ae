"""The result tables of a lab on real images: run its solution notebook, print what it found.

The lab's solution notebook (``autograder/source``) is executed headless under a profile
exactly as ``python -m autograder run`` does; one more cell, run last in the same kernel,
reads the figures the lab computed (dense baseline, sensitivity scan, ``sparsity_dict``,
fine-grained and channel pruning before and after fine-tuning, the latency table; for Lab 3
the int8 tables, the qconfig variants, the pruning tables and pruned plus quantized) and
prints them as JSON, which this script turns into Markdown tables. It also prints the
checkpoint the lab started from (its ``meta``: how it was trained), the machine and the wall
time, so one run gives both the tables and the lab's runtime. The executed notebook and its
figures are kept in ``--out`` (default ``runs/``).

    .venv/bin/python benchmarks/lab_results.py --lab lab1_pruning --profile quick --data DIR
    .venv/bin/python benchmarks/lab_results.py --lab lab3_quant_prune --profile full

``--data`` is the ``LAB_DATA`` folder holding the CIFAR-10 cache and the dense checkpoint
(default: ``$LAB_DATA`` or ``data/``). Under ``smoke`` (synthetic data, small model) every
figure is meaningless; it is there to check the script in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_runtimes import LABS, command_line, cpu_name, weights_label  # noqa: E402

MARK = "LAB_RESULTS "

# Run last in the lab's kernel: every name below is defined by the solution notebook.
READERS = {
    "lab1_pruning": r"""
import json as _json
_out = {
    "dense baseline": [{
        "accuracy (%)": dense_accuracy, "size (MiB)": dense_size_bits / MiB,
        "parameters (M)": dense_params / 1e6, "MACs (M)": dense_macs / 1e6}],
    "sensitivity": {"dense": scan_dense_accuracy, "sparsities": scan_sparsities,
                    "accuracies": scan_accuracies},
    "sparsity_dict": [{"layer": k, "sparsity": v} for k, v in sparsity_dict.items()],
    "fine-grained pruning with sparsity_dict": [{
        "size, course VGG (% of dense)": 100 * sparse_model_size_ratio(course_vgg, sparsity_dict),
        "size, this model (% of dense)": 100 * sparse_size_ratio,
        "dense (%)": dense_accuracy, "pruned (%)": sparse_accuracy_before,
        "fine-tuned (%)": sparse_accuracy,
        "per epoch (%)": " / ".join(f"{a:.2f}" for a in sparse_history),
        "fine-tuning": f"{profile.finetune_epochs} epoch(s) x "
                       f"{profile.finetune_steps_per_epoch or 'all'} steps"}],
    "channel pruning": [{
        "ratio": channel_prune_ratio, "MACs (M)": naive_pruned_macs / 1e6,
        "fewer MACs": dense_macs / naive_pruned_macs,
        "parameters (M)": get_num_parameters(naive_pruned_model) / 1e6,
        "not sorted (%)": naive_pruned_accuracy, "sorted (%)": sorted_pruned_accuracy,
        "sorted, fine-tuned (%)": channel_pruned_accuracy,
        "distortion not sorted": naive_distortion, "distortion sorted": sorted_distortion}],
    "dense against pruned (CPU latency at batch 1)": comparison_rows,
    "latency, median (IQR)": [{"model": k, "latency": str(v)} for k, v in latencies.items()],
    "threads": torch.get_num_threads(),
}
print("LAB_RESULTS " + _json.dumps(_out, default=str))
""",
    "lab3_quant_prune": r"""
import json as _json
_out = {
    "fp32 against int8 (FX)": fx_rows,
    "latency, median (IQR)": [
        {"model": m, **{f"batch {b}": str(r) for b, r in by.items()}}
        for m, by in fx_latency.items()],
    "qconfig variants": variant_rows,
    "int8 (PT2E)": [dict(r, **{"as converted (%)": simulated_accuracy}) for r in pt2e_rows],
    "structured pruning: masked against thin": cost_rows,
    f"global pruning at {PRUNE_AMOUNT:.0%}": [{
        "dense (%)": dense_accuracy, "global, not fine-tuned (%)": global_accuracy,
        "uniform, not fine-tuned (%)": uniform_accuracy, "global, fine-tuned (%)": pruned_accuracy,
        "fine-tuning": f"{profile.finetune_epochs} epoch(s) x "
                       f"{profile.finetune_steps_per_epoch or 'all'} steps"}],
    "per-layer sparsity, global against uniform": [
        {"layer": g["name"], "weights": g["numel"], "global": g["sparsity"],
         "uniform": u["sparsity"]} for g, u in zip(global_rows, uniform_rows)],
    "pruned plus quantized": table_rows,
    "threads": NUM_THREADS,
    "engine": torch.backends.quantized.engine,
}
print("LAB_RESULTS " + _json.dumps(_out, default=str))
""",
}


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "(none)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def sensitivity_table(scan: dict) -> str:
    """Layers as rows, sparsities as columns, accuracy (%) in the cells."""
    sparsities = scan["sparsities"]
    rows = [
        {"layer": name, **{f"{s:.2f}": a for s, a in zip(sparsities, accuracies, strict=True)}}
        for name, accuracies in scan["accuracies"].items()
    ]
    return f"dense accuracy on the scan split: {scan['dense']:.2f}%\n\n" + markdown(rows)


def results_of(notebook_path: Path) -> dict:
    """The JSON the reading cell printed in the executed notebook."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    for output in notebook.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
    raise SystemExit(f"{notebook_path}: the last cell printed no results")


def solution_namespace(lab: str, grade_ids: list[str], namespace: dict | None = None) -> dict:
    """``namespace`` after running the solution notebook's cells ``grade_ids`` in that order.

    For scripts that need a lab's reference functions or values without running the whole
    notebook; the cells' imports must be given in ``namespace``.
    """
    from autograder.course import Course

    source = Course().source_path(lab)
    cells = {
        cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"): "".join(cell["source"])
        for cell in json.loads(source.read_text())["cells"]
    }
    namespace = {} if namespace is None else namespace
    for grade_id in grade_ids:
        if grade_id not in cells:
            raise SystemExit(f"{source}: no cell {grade_id!r}")
        exec(compile(cells[grade_id], f"{source.name}:{grade_id}", "exec"), namespace)
    return namespace


def checkpoint_line(data: Path, profile: str) -> str:
    if profile == "smoke":
        return "small VGG on synthetic data (smoke): every figure is meaningless"
    from helpers.checkpoints import DENSE_CHECKPOINT, read_checkpoint

    path = data / DENSE_CHECKPOINT
    meta = read_checkpoint(path).get("meta") or {}
    recipe = meta.get("recipe") or {}
    if meta.get("stand_in"):
        return f"{path}: stand-in (random weights): accuracies are meaningless"
    if not recipe:
        return f"{path}: no training record in its meta (e.g. the MIT checkpoint)"
    return (
        f"{path}: trained by `helpers train-dense`, {recipe.get('epochs')} epochs, batch "
        f"{recipe.get('batch_size')}, peak lr {recipe.get('lr')}, label smoothing "
        f"{recipe.get('label_smoothing')}; test accuracy {meta.get('test_accuracy', float('nan')):.2f}%, "
        f"trained in {meta.get('wall_s', float('nan')):.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", required=True, choices=LABS)
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA (default: data/)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs", help="executed notebook")
    args = parser.parse_args(argv)

    from helpers.profiles import data_dir

    data = (args.data or data_dir()).resolve()
    if weights_label(args.profile, data) is None:
        raise SystemExit(
            f"{args.lab} ({args.profile}) needs the CIFAR-10 cache and a dense checkpoint in {data}"
        )
    os.environ["LAB_DATA"] = str(data)
    header = checkpoint_line(data, args.profile)

    import torch

    from autograder.course import Course
    from autograder.run import run_lab

    load_before = os.getloadavg()[0]
    report = run_lab(Course(), args.lab, args.profile, args.out, final_code=READERS[args.lab])
    load_after = os.getloadavg()[0]
    if report.failed is not None:
        print(report.failure, file=sys.stderr)
        raise SystemExit(f"{args.lab} failed at cell {report.failed}; see {report.notebook}")
    results = results_of(report.notebook)

    print(f"# {args.lab}, profile {args.profile}")
    print(f"checkpoint: {header}")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {results.pop('threads')} threads; "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )
    if "engine" in results:
        print(f"quantized engine: {results.pop('engine')}")
    print(f"notebook: {report.seconds:.1f} s wall time ({report.notebook})")
    for title, value in results.items():
        print(f"\n## {title}\n")
        if title == "sensitivity":
            print(sensitivity_table(value))
        else:
            print(markdown(value))
    print(f"\nCommand: {command_line(__file__, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
