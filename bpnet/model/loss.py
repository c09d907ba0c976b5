"""BpNetLoss: masked L2 over every stage's heatmaps and PAFs.

Per stage: ``0.5 * sum(mask * (pred - label)^2)`` for heatmaps plus the same for PAFs, summed over
pixels and channels, averaged over the (global) batch; the total is the sum over stages
(intermediate supervision). Masked regions (crowds, unlabeled people) contribute nothing.
"""

from __future__ import annotations

import tensorflow as tf


def stage_losses(heat_preds: list[tf.Tensor], paf_preds: list[tf.Tensor], heat_label: tf.Tensor,
                 paf_label: tf.Tensor, mask: tf.Tensor, global_batch: int) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """(heatmap loss per stage, PAF loss per stage), each a scalar."""

    def term(pred: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
        return 0.5 * tf.reduce_sum(mask * tf.square(tf.cast(pred, tf.float32) - label)) / global_batch

    return [term(h, heat_label) for h in heat_preds], [term(p, paf_label) for p in paf_preds]


def total_loss(heat_losses: list[tf.Tensor], paf_losses: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n(heat_losses + paf_losses)
