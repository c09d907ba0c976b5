"""BpNetLoss: masked L2 over every stage's heatmaps and PAFs, optionally TAO's focal L2.

Per stage: ``0.5 * sum(mask * (pred - label)^2)`` for heatmaps plus the same for PAFs, summed over
pixels and channels, averaged over the (global) batch; the total is the sum over stages
(intermediate supervision). Masked regions (crowds, unlabeled people) contribute nothing.

With ``focal_loss_params.use_focal_loss`` (TAO's focal L2; the guide does not describe it) the
residual is multiplied by a per-pixel factor before squaring, as TAO's code does, so the squared
error is weighted by the factor squared::

    foreground (label > bkg_thresh):  factor = |1 + alpha - pred| ** gamma
    background (otherwise):           factor = |pred + beta| ** gamma

A missed peak (low prediction on a foreground pixel) or a false response (high prediction on the
background) weighs more; a well-predicted pixel less. As in TAO the factor is differentiated
through, and the same rule applies to PAFs with the signed label (a negative PAF component counts
as background, so limbs pointing left or up are barely learned from a zero prediction); with
``paf_sign_aware`` (a project extension) a PAF component is scored toward its label's sign.
"""

from __future__ import annotations

import tensorflow as tf

from bpnet.specs.train import FocalLossParams


def focal_factor(pred: tf.Tensor, label: tf.Tensor, params: FocalLossParams) -> tf.Tensor:
    """TAO's per-pixel focal scale of the residual (see the module docstring)."""
    adjusted = tf.where(label > params.bkg_thresh, pred - params.alpha, 1.0 - pred - params.beta)
    return tf.pow(tf.abs(1.0 - adjusted), params.gamma)


def stage_losses(heat_preds: list[tf.Tensor], paf_preds: list[tf.Tensor], heat_label: tf.Tensor,
                 paf_label: tf.Tensor, mask: tf.Tensor, global_batch: int,
                 focal: FocalLossParams | None = None) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """(heatmap loss per stage, PAF loss per stage), each a scalar; ``focal`` None = plain L2."""

    def term(pred: tf.Tensor, label: tf.Tensor, signed: bool = False) -> tf.Tensor:
        pred = tf.cast(pred, tf.float32)
        residual = pred - label
        if focal is not None:
            sign = tf.where(label < 0, -1.0, 1.0) if signed else 1.0
            residual = residual * focal_factor(pred * sign, label * sign, focal)
        return 0.5 * tf.reduce_sum(mask * tf.square(residual)) / global_batch

    signed_pafs = focal is not None and focal.paf_sign_aware
    return [term(h, heat_label) for h in heat_preds], [term(p, paf_label, signed_pafs) for p in paf_preds]


def total_loss(heat_losses: list[tf.Tensor], paf_losses: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n(heat_losses + paf_losses)
