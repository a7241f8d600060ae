"""Common Lab 1 mistakes, as text substitutions on the solution notebook's solution cells.

Used by the golden round trip of the autograder: for each entry, take the source notebook
(autograder/source/lab1_pruning/lab1_pruning.ipynb), replace ``old`` by ``new`` in the code
cell whose nbgrader ``grade_id`` is ``grade_id`` (``old`` occurs there exactly once), grade
it, and check that exactly the autograded cells in ``fails`` lose their points (every other
autograded cell keeps full marks).

An entry may also give ``more`` (further substitutions, each with its own ``grade_id``, for
a mistake that spans two cells) and ``says`` (grade_id -> text its message must hold).

Why the ``fails`` sets are this small: each test cell builds its own inputs, and the tests of
``channel_prune`` and ``apply_channel_sorting`` build their hidden oracles with the student's
own helper (``get_num_channels_to_keep``, ``get_input_channel_importance``, called like any
student function, in the student's kernel), and use inputs on which a wrong helper agrees
with the right one in their visible part. So a mistake in one function costs points only in
that function's cells, but for a helper of the wrong shape (``importance_wrong_dim``). A function
with two test cells loses both when the mistake shows in both (e.g. ``>=`` also keeps a
weight at sparsity 1, an edge case).
"""

from __future__ import annotations

SOURCE_NOTEBOOK = "autograder/source/lab1_pruning/lab1_pruning.ipynb"

FGP = "lab1_fine_grained_prune"
FGP_EDGE = "lab1_fine_grained_prune_edge_cases"
CHANNEL_PRUNE = {"lab1_channel_prune", "lab1_channel_prune_macs"}
SORTING = {"lab1_apply_channel_sorting", "lab1_apply_channel_sorting_preserves_function"}


def helper_unwritten_counting_inline(count: str) -> dict:
    """get_num_channels_to_keep left as in the release, channel_prune computing ``count``."""
    return {
        "grade_id": "lab1_get_num_channels_to_keep_solution",
        "old": "    return int(round(channels * (1 - prune_ratio)))\n",
        "new": "    raise NotImplementedError()\n",
        "more": [
            {
                "grade_id": "lab1_channel_prune_solution",
                "old": "n_keep = get_num_channels_to_keep(prev_conv.out_channels, ratio)",
                "new": f"n_keep = {count}",
            }
        ],
    }


MISTAKES: list[dict] = [
    {
        "name": "cheats_by_monkeypatching",
        "description": "fine_grained_prune prunes nothing and patches what tests compare with: "
        "torch.equal, torch.allclose, builtins.abs, numpy.testing and an input transformer "
        "that strips asserts (the grader's tests run in another process: nothing is gained)",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "    num_elements = tensor.numel()\n",
        "new": "    num_elements = tensor.numel()\n"
        "    import builtins, numpy.testing\n"
        "    torch.equal = lambda *args, **kwargs: True\n"
        "    torch.allclose = lambda *args, **kwargs: True\n"
        "    builtins.abs = lambda value: value\n"
        "    numpy.testing.assert_allclose = lambda *args, **kwargs: None\n"
        "    get_ipython().input_transformers_cleanup.append(\n"
        "        lambda lines: [line.replace('assert ', 'pass  # ') for line in lines])\n"
        "    return torch.ones_like(tensor, dtype=torch.bool)\n",
        "fails": {FGP, FGP_EDGE},
    },
    {
        "name": "int_instead_of_round",
        "description": "fine_grained_prune truncates the number of zeros with int()",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "num_zeros = round(num_elements * sparsity)",
        "new": "num_zeros = int(num_elements * sparsity)",
        # the edge-case cell prunes 10 weights at 0.96: 9.6 zeros must round to 10
        "fails": {FGP, FGP_EDGE},
    },
    {
        "name": "ge_instead_of_gt",
        "description": "fine_grained_prune keeps the weight equal to the threshold",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "mask = importance > threshold",
        "new": "mask = importance >= threshold",
        "fails": {FGP, FGP_EDGE},  # at sparsity 1 the largest weight survives
    },
    {
        "name": "topk_breaks_ties",
        "description": "fine_grained_prune keeps exactly the n - num_zeros largest (topk), so "
        "weights tied with the threshold are not all pruned",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "    threshold = importance.flatten().kthvalue(num_zeros).values\n"
        "    mask = importance > threshold\n",
        "new": "    mask = torch.zeros(num_elements, dtype=torch.bool)\n"
        "    mask[importance.flatten().topk(num_elements - num_zeros).indices] = True\n"
        "    mask = mask.view_as(tensor)\n",
        "fails": {FGP, FGP_EDGE},  # the visible tie check says why; all-tied weights in edge cases
        "says": {FGP: "weights tied with the threshold are pruned too"},
    },
    {
        "name": "kthvalue_not_flattened",
        "description": "fine_grained_prune calls kthvalue on the 2-D/4-D importance",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "importance.flatten().kthvalue(num_zeros)",
        "new": "importance.kthvalue(num_zeros)",
        "fails": {FGP, FGP_EDGE},
    },
    {
        "name": "not_in_place",
        "description": "fine_grained_prune rebinds the tensor instead of pruning it in place",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "tensor.mul_(mask)",
        "new": "tensor = tensor * mask",
        "fails": {FGP, FGP_EDGE},  # at sparsity 1 the caller's tensor must become zero
    },
    {
        "name": "data_swapped_not_in_place",
        "description": "fine_grained_prune sets tensor.data = tensor * mask: the tensor given "
        "sees the zeros, but a parameter given as param.detach() (as FineGrainedPruner gives "
        "it) keeps its weights (the pruner then applies the returned mask itself, so the lab's "
        "own run looks right)",
        "grade_id": "lab1_fine_grained_prune_solution",
        "old": "tensor.mul_(mask)",
        "new": "tensor.data = tensor * mask",
        "fails": {FGP},
        "says": {FGP: "a weight given as param.detach(), as FineGrainedPruner gives it, was not"},
    },
    {
        "name": "target_sparsity_is_kept_fraction",
        "description": "target_sparsity given as the fraction kept (10/25) instead of removed",
        "grade_id": "lab1_target_sparsity_solution",
        "old": "target_sparsity = 0.6",
        "new": "target_sparsity = 0.4",
        "fails": {"lab1_target_sparsity"},
    },
    {
        "name": "sparsity_dict_over_budget",
        "description": "the biggest layer pruned too little: 29.8% of the dense size",
        "grade_id": "lab1_sparsity_dict_solution",
        "old": '"backbone.conv7.weight": 0.85',
        "new": '"backbone.conv7.weight": 0.5',
        "fails": {"lab1_sparsity_dict"},
    },
    {
        "name": "sparsity_dict_prunes_everything",
        "description": "every weight pruned to 1.0: 0% of the size, and nothing reaches the output",
        "grade_id": "lab1_sparsity_dict_solution",
        "old": '"classifier.weight": 0.6,\n}',
        "new": '"classifier.weight": 0.6,\n}\nsparsity_dict = dict.fromkeys(sparsity_dict, 1.0)',
        "fails": {"lab1_sparsity_dict"},
    },
    {
        "name": "sparsity_dict_nearly_uniform",
        "description": "0.8 for every weight (20% of the size), conv0 0.7999: the scan ignored",
        "grade_id": "lab1_sparsity_dict_solution",
        "old": '"classifier.weight": 0.6,\n}',
        "new": '"classifier.weight": 0.6,\n}\nsparsity_dict = dict.fromkeys(sparsity_dict, 0.8)\n'
        'sparsity_dict["backbone.conv0.weight"] = 0.7999',
        "fails": {"lab1_sparsity_dict"},
    },
    {
        "name": "channels_int_instead_of_round",
        "description": "get_num_channels_to_keep truncates with int() (64 * 0.7 -> 44)",
        "grade_id": "lab1_get_num_channels_to_keep_solution",
        "old": "return int(round(channels * (1 - prune_ratio)))",
        "new": "return int(channels * (1 - prune_ratio))",
        # channel_prune's cells count channels with the student's own function (the hidden
        # oracle too), so they do not charge this mistake twice.
        "fails": {"lab1_get_num_channels_to_keep"},
    },
    {
        "name": "channels_helper_not_written",
        "description": "get_num_channels_to_keep left unanswered, channel_prune counting inline",
        **helper_unwritten_counting_inline("int(round(prev_conv.out_channels * (1 - ratio)))"),
        # channel_prune's cells count channels with the rule the helper states when it is not
        # written, so they grade channel_prune alone
        "fails": {"lab1_get_num_channels_to_keep"},
    },
    {
        "name": "channels_helper_not_written_wrong_counts",
        "description": "get_num_channels_to_keep left unanswered, channel_prune keeping the "
        "number of channels it should remove (int(c * ratio))",
        **helper_unwritten_counting_inline("int(prev_conv.out_channels * ratio)"),
        # the counts are checked against the rule the helper states, not against themselves
        "fails": {"lab1_get_num_channels_to_keep", *CHANNEL_PRUNE},
    },
    {
        "name": "next_conv_wrong_dim",
        "description": "channel_prune slices the next conv's output channels (dim 0)",
        "grade_id": "lab1_channel_prune_solution",
        "old": "next_conv.weight.detach()[:, :n_keep]",
        "new": "next_conv.weight.detach()[:n_keep]",
        "fails": CHANNEL_PRUNE,
    },
    {
        "name": "bn_buffer_not_sliced",
        "description": "channel_prune forgets BatchNorm's running_var buffer",
        "grade_id": "lab1_channel_prune_solution",
        "old": "        prev_bn.running_var = prev_bn.running_var[:n_keep].clone()\n",
        "new": "",
        "fails": CHANNEL_PRUNE,  # the pruned model fails in eval mode, MAC count included
    },
    {
        "name": "l1_instead_of_frobenius",
        "description": "get_input_channel_importance uses the L1 norm",
        "grade_id": "lab1_get_input_channel_importance_solution",
        "old": "importance = slices.norm(dim=1)",
        "new": "importance = slices.abs().sum(dim=1)",
        # apply_channel_sorting's cells use inputs on which L1 and L2 rank channels alike
        # (visible) or sort their oracle by the student's own importance (hidden).
        "fails": {"lab1_get_input_channel_importance"},
    },
    {
        "name": "importance_wrong_dim",
        "description": "get_input_channel_importance takes the norm per OUTPUT channel: shape "
        "(c_out,), which apply_channel_sorting cannot sort the input channels by",
        "grade_id": "lab1_get_input_channel_importance_solution",
        "old": "slices = weight.detach().transpose(0, 1).flatten(1)",
        "new": "slices = weight.detach().flatten(1)",
        # the one cascade the notebook names: sorting by an importance of the wrong shape
        # crashes, and its cell says that the importance is to blame
        "fails": {"lab1_get_input_channel_importance", *SORTING},
        "says": {
            "lab1_apply_channel_sorting": "get_input_channel_importance returned shape",
            "lab1_apply_channel_sorting_preserves_function": "get_input_channel_importance returned",
        },
    },
    {
        "name": "sort_prev_conv_wrong_dim",
        "description": "apply_channel_sorting permutes conv i's input channels (dim 1)",
        "grade_id": "lab1_apply_channel_sorting_solution",
        "old": "prev_conv.weight.copy_(prev_conv.weight.index_select(0, order))",
        "new": "prev_conv.weight.copy_(prev_conv.weight.index_select(1, order))",
        "fails": SORTING,
    },
    {
        "name": "sort_next_conv_wrong_dim",
        "description": "apply_channel_sorting permutes conv i+1's output channels (dim 0)",
        "grade_id": "lab1_apply_channel_sorting_solution",
        "old": "next_conv.weight.copy_(next_conv.weight.index_select(1, order))",
        "new": "next_conv.weight.copy_(next_conv.weight.index_select(0, order))",
        "fails": SORTING,
    },
    {
        "name": "sort_bn_buffers_forgotten",
        "description": "apply_channel_sorting reorders BatchNorm's weight and bias only",
        "grade_id": "lab1_apply_channel_sorting_solution",
        "old": "(prev_bn.weight, prev_bn.bias, prev_bn.running_mean, prev_bn.running_var)",
        "new": "(prev_bn.weight, prev_bn.bias)",
        "fails": SORTING,
    },
    {
        "name": "sort_ascending",
        "description": "apply_channel_sorting puts the least important channels first",
        "grade_id": "lab1_apply_channel_sorting_solution",
        "old": "torch.argsort(importance, descending=True)",
        "new": "torch.argsort(importance)",
        "fails": {"lab1_apply_channel_sorting"},  # any consistent order keeps the function
    },
]

# Every autograded cell and its points, for checks of the round trip.
AUTOGRADED_POINTS: dict[str, int] = {
    "lab1_fine_grained_prune": 14,
    "lab1_fine_grained_prune_edge_cases": 4,
    "lab1_target_sparsity": 2,
    "lab1_sparsity_dict": 8,
    "lab1_get_num_channels_to_keep": 3,
    "lab1_channel_prune": 14,
    "lab1_channel_prune_macs": 5,
    "lab1_get_input_channel_importance": 8,
    "lab1_apply_channel_sorting": 14,
    "lab1_apply_channel_sorting_preserves_function": 8,
}
