"""Pruning: ``torch.nn.utils.prune``'s masks and re-parametrisation, schedules, reports, channel surgery.

- ``functional`` / ``methods`` / ``base``: the PyTorch API (``l1_unstructured``, ``ln_structured``,
  ``global_unstructured``, ``remove``, ... and the method classes), masks bit-identical to PyTorch's;
- ``nm`` / ``selection``: N:M (2:4) semi-structured masks equal to ``WeightNormSparsifier``'s, ties included;
- ``threshold``: |w| >= tau pruning (absolute, or Han et al.'s s * std) and its gradual schedule;
- ``activation`` / ``scores``: mean-activation and APoZ channel importance by forward hooks, pruning by scores;
- ``schedule``: gradual (Zhu & Gupta) pruning callback, iterative prune-and-fine-tune, lottery-ticket rewinding;
- ``report``: per-tensor and total sparsity, dense vs sparse bytes;
- ``dependency`` / ``importance`` / ``surgery``: channel groups on the traced dataflow graph (Torch-Pruning's
  DepGraph), their importance, and ``channel_prune``, which returns a physically smaller dense model;
- ``heads``: ``prune_heads`` removes whole attention heads (weight norm or Michel et al.'s gate gradient);
- ``slimming``: the BatchNorm-scale L1 penalty for network slimming;
- ``sparse`` / ``kernels``: ``SparseLinear``, a Numba CSR kernel for unstructured-sparse inference.
"""
from .functional import (custom_from_mask, global_unstructured, identity, is_pruned, l1_unstructured,
                         ln_structured, random_structured, random_unstructured, remove)
from .methods import (BasePruningMethod, CustomFromMask, Identity, L1Unstructured, LnStructured,
                      PruningContainer, RandomStructured, RandomUnstructured, effective_weight, pruning_hook)
from .activation import activation_importance
from .scores import ScoreStructured, structured_from_scores
from .nm import NMStructured, nm_mask, nm_structured
from .report import format_report, sparsity_report
from .schedule import (GradualPruning, RewindPoint, iterative_pruning, polynomial_sparsity, prunable_weights,
                       prune_to_sparsity, rewind_weights, snapshot_weights)
from .slimming import BNScalePenalty, bn_scale_l1
from .sparse import SparseLinear
from .threshold import GradualThreshold, ThresholdPruning, threshold_pruning
from .dependency import DependencyGraph, Group, dependency_graph
from .importance import BNScaleImportance, MagnitudeImportance, RandomImportance, TaylorImportance
from .surgery import bake_pruning, channel_prune, plan_channel_prune, prune_count
from .pruner import ChannelPruner
from .heads import head_gate_importance, head_importance, plan_head_prune, prune_heads

__all__ = ["identity", "random_unstructured", "l1_unstructured", "random_structured", "ln_structured",
           "global_unstructured", "custom_from_mask", "remove", "is_pruned",
           "BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured", "L1Unstructured",
           "RandomStructured", "LnStructured", "CustomFromMask", "effective_weight", "pruning_hook",
           "sparsity_report", "format_report",
           "polynomial_sparsity", "GradualPruning", "prunable_weights", "prune_to_sparsity",
           "snapshot_weights", "rewind_weights", "RewindPoint", "iterative_pruning",
           "BNScalePenalty", "bn_scale_l1", "SparseLinear", "channel_prune", "plan_channel_prune", "bake_pruning",
           "prune_count", "dependency_graph", "DependencyGraph", "Group", "MagnitudeImportance", "BNScaleImportance",
           "TaylorImportance", "RandomImportance", "ChannelPruner", "prune_heads", "plan_head_prune", "head_importance",
           "head_gate_importance",
           "NMStructured", "nm_mask", "nm_structured",
           "ThresholdPruning", "threshold_pruning", "GradualThreshold",
           "activation_importance", "ScoreStructured", "structured_from_scores"]
