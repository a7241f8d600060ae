"""Common Lab 3 mistakes, as text substitutions on the solution notebook's solution cells.

Used by the golden round trip of the autograder: for each entry, take the source notebook
(autograder/source/lab3_quant_prune/lab3_quant_prune.ipynb), replace ``old`` by ``new`` in the
code cell whose nbgrader ``grade_id`` is ``grade_id`` (``old`` occurs there exactly once),
grade it, and check that exactly the autograded cells in ``fails`` lose their points (every
other autograded cell keeps full marks). An empty ``fails`` is a right answer written another
way (float32 arithmetic, say), which must keep every point. ``more``: further substitutions of
the same mistake; ``says``: text the failing cell's message must contain.

Why each ``fails`` set holds one cell: every test cell builds its own inputs, and the two
test cells whose function calls other student functions build their hidden expectations with
the student's own versions of those (``quantize_model`` is compared with a reference int8
model calibrated by the student's ``calibrate`` and ``make_qconfig``; ``prune_finetune``
expects the masks of the student's ``apply_global_pruning``, compares the weights with the
text's recipe fine-tuned under those same masks, and checks permanence only when the
student's ``make_pruning_permanent`` works), while their visible checks only look at what
a wrong helper cannot spoil (quantized modules, the caller's model untouched, sparsity kept).
"""

from __future__ import annotations

SOURCE_NOTEBOOK = "autograder/source/lab3_quant_prune/lab3_quant_prune.ipynb"

MISTAKES: list[dict] = [
    # ----------------------------------------------------------------- quantization
    {
        "name": "per_channel_weights",
        "description": "make_qconfig observes weights per channel where per-tensor was asked",
        "grade_id": "lab3_make_qconfig_solution",
        "old": "weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)",
        "new": (
            "weight = PerChannelMinMaxObserver.with_args("
            "dtype=torch.qint8, qscheme=torch.per_channel_symmetric)"
        ),
        "fails": {"lab3_make_qconfig"},
    },
    {
        "name": "full_range_activations",
        "description": "make_qconfig uses 8-bit activations, ignoring the x86 reduce_range advice",
        "grade_id": "lab3_make_qconfig_solution",
        "old": "quant_min=0, quant_max=127",
        "new": "quant_min=0, quant_max=255",
        "fails": {"lab3_make_qconfig"},
    },
    {
        "name": "affine_weights",
        "description": "make_qconfig quantizes weights per-tensor affine (a zero point, no symmetry)",
        "grade_id": "lab3_make_qconfig_solution",
        "old": "dtype=torch.qint8, qscheme=torch.per_tensor_symmetric",
        "new": "dtype=torch.qint8, qscheme=torch.per_tensor_affine",
        "fails": {"lab3_make_qconfig"},
    },
    {
        "name": "calibrate_in_train_mode",
        "description": "calibrate runs the model in training mode",
        "grade_id": "lab3_calibrate_solution",
        "old": "model.eval()",
        "new": "model.train()",
        "fails": {"lab3_calibrate"},
    },
    {
        "name": "calibrate_with_gradients",
        "description": "calibrate leaves autograd on",
        "grade_id": "lab3_calibrate_solution",
        "old": "with torch.no_grad():",
        "new": "with torch.enable_grad():",
        "fails": {"lab3_calibrate"},
    },
    {
        "name": "calibrate_one_batch_too_many",
        "description": "calibrate runs num_batches + 1 batches",
        "grade_id": "lab3_calibrate_solution",
        "old": "if num_seen >= num_batches:",
        "new": "if num_seen > num_batches:",
        "fails": {"lab3_calibrate"},
    },
    {
        "name": "no_calibration",
        "description": "quantize_model converts without calibrating the observers",
        "grade_id": "lab3_quantize_model_solution",
        "old": "calibrate(prepared, calib_loader, num_batches)",
        "new": "pass  # calibration forgotten",
        "fails": {"lab3_quantize_model"},
    },
    {
        "name": "quantize_without_eval",
        "description": "quantize_model prepares a model left in training mode",
        "grade_id": "lab3_quantize_model_solution",
        "old": "model = copy.deepcopy(model).cpu().eval()",
        "new": "model = copy.deepcopy(model).cpu()",
        "fails": {"lab3_quantize_model"},
    },
    {
        "name": "quantize_in_place",
        "description": "quantize_model prepares the caller's model instead of a copy",
        "grade_id": "lab3_quantize_model_solution",
        "old": "model = copy.deepcopy(model).cpu().eval()",
        "new": "model = model.cpu().eval()",
        "fails": {"lab3_quantize_model"},
    },
    {
        "name": "both_range_spellings",
        "description": "make_qconfig writes reduce_range=True and quant_max=127: the range halves to [0, 63]",
        "grade_id": "lab3_make_qconfig_solution",
        "old": "quant_min=0, quant_max=127",
        "new": "quant_min=0, quant_max=127, reduce_range=True",
        "fails": {"lab3_make_qconfig"},
        "says": {"lab3_make_qconfig": "not both"},
    },
    {
        "name": "calibrate_sets_only_the_top_flag",
        "description": "calibrate sets model.training = False: its submodules stay in training mode",
        "grade_id": "lab3_calibrate_solution",
        "old": "model.eval()",
        "new": "model.training = False",
        "fails": {"lab3_calibrate"},
        "says": {"lab3_calibrate": "model.training = False sets the top module's flag only"},
    },
    {
        "name": "calibrate_turns_gradients_off_for_good",
        "description": (
            "calibrate calls torch.set_grad_enabled(False) with no block, leaving gradients off "
            "in the student's kernel: no cell loses points (train turns gradients on; the visible "
            "check tells a student who runs it in their own kernel)"
        ),
        "grade_id": "lab3_calibrate_solution",
        "old": "    with torch.no_grad():\n",
        "new": "    torch.set_grad_enabled(False)\n    if True:\n",
        "fails": set(),
    },
    {
        "name": "quantize_ignores_its_qconfig",
        "description": "quantize_model always uses make_qconfig(), whatever qconfig it is given",
        "grade_id": "lab3_quantize_model_solution",
        "old": "QConfigMapping().set_global(qconfig)",
        "new": "QConfigMapping().set_global(make_qconfig())",
        "fails": {"lab3_quantize_model"},
        "says": {"lab3_quantize_model": "use the qconfig argument"},
    },
    # ----------------------------------------------------------------- pruning
    {
        "name": "sparsity_of_weight_orig",
        "description": "sparsity_table counts weight_orig (no mask applied) when pruning is attached",
        "grade_id": "lab3_sparsity_table_solution",
        "old": "weight = module.weight.detach()",
        "new": 'weight = getattr(module, "weight_orig", module.weight).detach()',
        "fails": {"lab3_sparsity_table"},
    },
    {
        "name": "global_sparsity_counts_batchnorm",
        "description": "global_sparsity also counts BatchNorm weights",
        "grade_id": "lab3_global_sparsity_solution",
        "old": "if isinstance(module, nn.Conv2d | nn.Linear):",
        "new": "if isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):",
        "fails": {"lab3_global_sparsity"},
    },
    {
        "name": "classifier_pruned_by_l1",
        "description": "apply_local_pruning prunes the classifier by magnitude instead of at random",
        "grade_id": "lab3_apply_local_pruning_solution",
        "old": "prune.random_unstructured(model.classifier",
        "new": "prune.l1_unstructured(model.classifier",
        "fails": {"lab3_apply_local_pruning"},
    },
    {
        "name": "amount_not_relative",
        "description": "prune_to_sparsity passes the target as amount, ignoring that it compounds",
        "grade_id": "lab3_prune_to_sparsity_solution",
        "old": "amount = (target_sparsity - current) / (1.0 - current)",
        "new": "amount = target_sparsity",
        "fails": {"lab3_prune_to_sparsity"},
    },
    {
        "name": "structured_input_channels",
        "description": "apply_structured_pruning prunes input channels (dim=1)",
        "grade_id": "lab3_apply_structured_pruning_solution",
        "old": "n=2, dim=0",
        "new": "n=2, dim=1",
        "fails": {"lab3_apply_structured_pruning"},
    },
    {
        "name": "structured_l1_norm",
        "description": "apply_structured_pruning ranks channels by their L1 norm (n=1)",
        "grade_id": "lab3_apply_structured_pruning_solution",
        "old": "n=2, dim=0",
        "new": "n=1, dim=0",
        "fails": {"lab3_apply_structured_pruning"},
    },
    {
        "name": "global_done_layer_by_layer",
        "description": "apply_global_pruning prunes each layer by amount on its own (local pruning)",
        "grade_id": "lab3_apply_global_pruning_solution",
        "old": (
            "prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, "
            "amount=amount)"
        ),
        "new": "[prune.l1_unstructured(m, name, amount=amount) for m, name in parameters]",
        "fails": {"lab3_apply_global_pruning"},
    },
    {
        "name": "remove_only_convs",
        "description": "make_pruning_permanent forgets the linear layers",
        "grade_id": "lab3_make_pruning_permanent_solution",
        "old": "for module in model.modules():",
        "new": "for module in [m for m in model.modules() if isinstance(m, nn.Conv2d)]:",
        "fails": {"lab3_make_pruning_permanent"},
    },
    {
        "name": "sparsity_in_float32",
        "description": (
            "sparsity_table computes the sparsity in float32 ((w == 0).float().mean()): right, "
            "to float32's precision"
        ),
        "grade_id": "lab3_sparsity_table_solution",
        "old": '"sparsity": zeros / numel}',
        "new": '"sparsity": (weight == 0).float().mean().item()}',
        "fails": set(),
    },
    {
        "name": "global_sparsity_in_float32",
        "description": "global_sparsity sums a tensor and divides in float32: right",
        "grade_id": "lab3_global_sparsity_solution",
        "old": "zeros += int((module.weight == 0).sum())",
        "new": "zeros = zeros + (module.weight == 0).sum()",
        "more": [
            {
                "grade_id": "lab3_global_sparsity_solution",
                "old": "return zeros / numel if numel else 0.0",
                "new": "return float(zeros / numel) if numel else 0.0",
            }
        ],
        "fails": set(),
    },
    {
        "name": "current_sparsity_in_float32",
        "description": "prune_to_sparsity measures the current sparsity in float32: right",
        "grade_id": "lab3_prune_to_sparsity_solution",
        "old": "current = int((weight == 0).sum()) / weight.numel()",
        "new": "current = (weight == 0).float().mean().item()",
        "fails": set(),
    },
    {
        "name": "schedule_over_all_epochs",
        "description": "prune_finetune gives make_finetune_setup the steps of all epochs",
        "grade_id": "lab3_prune_finetune_solution",
        "old": "make_finetune_setup(model, num_epochs, steps)",
        "new": "make_finetune_setup(model, num_epochs, num_epochs * steps)",
        "fails": {"lab3_prune_finetune"},
        "says": {"lab3_prune_finetune": "the weights differ from the text's recipe"},
    },
    {
        "name": "setup_every_epoch",
        "description": "prune_finetune builds a new optimizer and schedule every epoch",
        "grade_id": "lab3_prune_finetune_solution",
        "old": (
            "    criterion, optimizer, scheduler = make_finetune_setup(model, num_epochs, steps)\n"
            "    for _ in range(num_epochs):\n"
        ),
        "new": (
            "    for _ in range(num_epochs):\n"
            "        criterion, optimizer, scheduler = make_finetune_setup(model, num_epochs, steps)\n"
        ),
        "fails": {"lab3_prune_finetune"},
    },
    {
        "name": "global_pruning_with_biases",
        "description": (
            "apply_global_pruning ranks the biases too: its own cell fails; prune_finetune, "
            "checked against the recipe with the same masks, keeps its points"
        ),
        "grade_id": "lab3_apply_global_pruning_solution",
        "old": (
            '(module, "weight") for module in model.modules() if isinstance(module, nn.Conv2d | '
            "nn.Linear)"
        ),
        "new": (
            "(module, kind) for module in model.modules() if isinstance(module, nn.Conv2d | "
            'nn.Linear) for kind in ("weight", "bias") if getattr(module, kind) is not None'
        ),
        "fails": {"lab3_apply_global_pruning"},
    },
    {
        "name": "permanent_does_nothing",
        "description": (
            "make_pruning_permanent returns the model with its masks: its own cell fails; "
            "prune_finetune keeps its points"
        ),
        "grade_id": "lab3_make_pruning_permanent_solution",
        "old": "            prune.remove(module, name)",
        "new": "            pass",
        "fails": {"lab3_make_pruning_permanent"},
    },
    {
        "name": "remove_before_finetuning",
        "description": "prune_finetune makes the pruning permanent before training (zeros regrow)",
        "grade_id": "lab3_prune_finetune_solution",
        "old": "apply_global_pruning(model, amount)\n",
        "new": "apply_global_pruning(model, amount)\n    make_pruning_permanent(model)\n",
        "fails": {"lab3_prune_finetune"},
    },
    {
        "name": "finetune_never_trains",
        "description": "prune_finetune builds the optimizer but never calls train",
        "grade_id": "lab3_prune_finetune_solution",
        "old": "        train(model, dataloader, criterion, optimizer, scheduler, max_steps=steps)",
        "new": "        pass",
        "fails": {"lab3_prune_finetune"},
    },
]

# Every autograded cell and its points, for checks of the round trip.
AUTOGRADED_POINTS: dict[str, int] = {
    "lab3_make_qconfig": 10,
    "lab3_calibrate": 10,
    "lab3_quantize_model": 14,
    "lab3_sparsity_table": 8,
    "lab3_global_sparsity": 4,
    "lab3_apply_local_pruning": 7,
    "lab3_prune_to_sparsity": 6,
    "lab3_apply_structured_pruning": 6,
    "lab3_apply_global_pruning": 6,
    "lab3_make_pruning_permanent": 8,
    "lab3_prune_finetune": 6,
}
