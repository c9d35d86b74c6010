"""Students initialised from their teacher, to be fine-tuned (with labels or by distillation).

Two ways, which compose (blocks first, then channels):

- fewer blocks (DistilBERT, Sanh et al. 2019, takes one layer in two of BERT): keep blocks
  0, k, 2k, ... of each stage and copy their weights. A ResNet keeps them per stage (``layer1``...),
  so the first block of every stage -- the one that changes width and stride -- always stays; a
  MobileNetV2 per row (t, c, n, s) of its inverted-residual setting, the first (strided) block of
  each row staying; a ViT over ``encoder.layers``. Everything outside those blocks (stem, heads,
  norms, embeddings) is copied as it is.
- fewer channels: ``prune.channel_prune`` of the teacher (dependency groups; exact surgery).

The student is a normal model of the teacher's class, built by its constructor with the new depth
(``layers``, ``inverted_residual_setting``, ``num_layers``), so ``io.save`` / ``io.load`` rebuild it;
its arrays are copies (training the student never changes the teacher).
"""
from __future__ import annotations

import copy
import numbers
import re
from typing import Any

import numpy as np

from ..models.mobilenet import MobileNetV2
from ..models.resnet import ResNet
from ..models.vit import VisionTransformer
from ..nn import init
from ..nn.module import Module
from ..prune.surgery import bake_pruning, channel_prune


def kept_blocks(n: int, every: int) -> list[int]:
    """Blocks 0, k, 2k, ... < n: the first block always stays."""
    return list(range(0, n, every))


def _copy_state(student: Module, teacher_state: dict, rename: Any) -> Module:
    """Load ``teacher_state[rename(key)]`` into every ``key`` of the student (strict: every key is filled)."""
    student.load_state_dict({key: np.array(teacher_state[rename(key)], copy=True) for key in student.state_dict()})
    return student


def _resnet(teacher: ResNet, every: int) -> ResNet:
    kept = [kept_blocks(n, every) for n in teacher.layers_config]
    student = type(teacher)._from_config({**teacher._config(), "layers": [len(k) for k in kept]})

    def rename(key: str) -> str:
        match = re.match(r"layer(\d+)\.(\d+)\.(.*)", key)
        if match is None:
            return key
        stage, block, rest = int(match[1]), int(match[2]), match[3]
        return f"layer{stage}.{kept[stage - 1][block]}.{rest}"
    return _copy_state(student, teacher.state_dict(), rename)


def _mobilenet(teacher: MobileNetV2, every: int) -> MobileNetV2:
    index_map, setting, old, new = {0: 0}, [], 1, 1          # new features index -> teacher's
    for t, c, n, s in teacher.inverted_residual_setting:
        kept = kept_blocks(n, every)
        setting.append([t, c, len(kept), s])
        for j in kept:
            index_map[new] = old + j
            new += 1
        old += n
    index_map[new] = old                                       # the final 1x1 conv
    with init.skip_init():
        student = type(teacher)(teacher.num_classes, teacher.width_mult, setting, teacher.round_nearest,
                                dropout=teacher.dropout, in_channels=teacher.in_channels,
                                small_input=teacher.small_input)

    def rename(key: str) -> str:
        match = re.match(r"features\.(\d+)\.(.*)", key)
        return key if match is None else f"features.{index_map[int(match[1])]}.{match[2]}"
    return _copy_state(student, teacher.state_dict(), rename)


def _vit(teacher: VisionTransformer, every: int) -> VisionTransformer:
    kept = kept_blocks(teacher.num_layers, every)
    with init.skip_init():
        student = type(teacher)(teacher.image_size, teacher.patch_size, len(kept), teacher.num_heads,
                                teacher.hidden_dim, teacher.mlp_dim, teacher.dropout, teacher.attention_dropout,
                                teacher.num_classes, teacher.representation_size, in_channels=teacher.in_channels)

    def rename(key: str) -> str:
        match = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.*)", key)
        return key if match is None else f"encoder.layers.encoder_layer_{kept[int(match[1])]}.{match[2]}"
    return _copy_state(student, teacher.state_dict(), rename)


BLOCK_MODELS = {ResNet: _resnet, MobileNetV2: _mobilenet, VisionTransformer: _vit}


def student_from_teacher(teacher: Module, *, every: int | None = None, amount: numbers.Real | None = None,
                         example_input: np.ndarray | None = None, importance: Any = "l1",
                         **prune_options: Any) -> Module:
    """A student initialised from ``teacher``'s weights (module docstring); ``teacher`` is left untouched.

    Parameters
    ----------
    every : keep one block in ``every`` (blocks 0, k, 2k, ... of each stage); ResNet, MobileNetV2, ViT.
    amount : then remove this fraction (or count) of each dependency group's channels with
        ``prune.channel_prune(model, example_input, amount, importance, **prune_options)``.
    example_input : a batch the model runs on; needed with ``amount`` (tracing).

    Returns a new model in training mode. Pruning masks on the teacher are baked in first.
    """
    if every is None and amount is None:
        raise ValueError("student_from_teacher: give every= (keep one block in k), amount= (prune channels) "
                         "or both")
    if every is not None and (isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1):
        raise ValueError(f"student_from_teacher: every must be an int >= 1, got {every!r}")
    if amount is not None and example_input is None:
        raise ValueError("student_from_teacher: amount= prunes channels, which needs example_input= (a batch the "
                         "teacher runs on) to trace the model")
    student = bake_pruning(copy.deepcopy(teacher))
    if every is not None:
        build = next((fn for cls, fn in BLOCK_MODELS.items() if isinstance(student, cls)), None)
        if build is None:
            raise ValueError(f"student_from_teacher: keeping every {every}th block needs a ResNet, MobileNetV2 or "
                             f"VisionTransformer, got {type(teacher).__name__}; use amount= for any traced model")
        student = build(student, int(every))
    if amount is not None:
        student = channel_prune(student, example_input, amount, importance, **prune_options)
    return student.train()
