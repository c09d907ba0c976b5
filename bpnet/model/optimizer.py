"""The learning-rate schedule, the optimizers and their per-layer learning-rate multipliers.

Soft-start annealing over training progress p = step / last_step in [0, 1]: the rate rises
exponentially from ``min_learning_rate`` to ``base_learning_rate`` over [0, soft_start], holds,
and decays exponentially back to ``min_learning_rate`` over [annealing, 1] (the guide's curve).
TAO's exponential decay (``BpNetExponentialDecayLRSchedule``) is the other choice: see
``ExponentialDecay``.
On a short run ``soft_start`` x steps can be a handful of steps, a ramp of min -> base in ~4 steps
that diverges (3 epochs of an earlier demo recipe hit NaN at step 19), so the ramp is stretched to at
least the steps that keep its growth under ``MAX_SOFT_START_GROWTH`` per step, never past
``annealing`` (see ``effective_soft_start``); long runs keep the guide's fractions unchanged.

Two optimizers: the guide's ``WeightedMomentumOptimizer`` (momentum SGD) and the project's
``WeightedAdamOptimizer`` extension (Adam). Multipliers scale each variable's learning rate inside
the optimizer's update: for momentum SGD that is the same as scaling its gradient, but Adam divides
the gradient by its running RMS, so a scaled gradient would change nothing there. Precedence:
``grad_weights_dict`` (layer name or glob pattern -> multiplier), then
``use_stagewise_lr_multipliers`` as the guide states it (backbone 2x, refinement stages 4x; the
initial stage and everything else stay at 1x), then ``weight_default_value``.
"""

from __future__ import annotations

import fnmatch
import logging
import math

import keras
import tensorflow as tf

from bpnet.model.architecture import BACKBONE_LAYERS, C128_CONV
from bpnet.specs.train import AdamOptimizerConfig, ExponentialDecaySchedule, LearningRateSchedule, OptimizerConfig

log = logging.getLogger(__name__)

BACKBONE_MULTIPLIER = 2.0
REFINEMENT_MULTIPLIER = 4.0
# The soft start's per-step growth cap: min -> base over ln(base/min)/ln(1.1) steps at least (73 steps
# for the demo's 1000x range, 58 for the guide's 250x). A COCO run with the guide's schedule ramps slower
# than this already; the 40-epoch demo (31 steps an epoch, 0.05 x 1,240 = 62 steps of ramp) is
# stretched to 73; 3 demo epochs of an earlier recipe (4 steps of ramp, 3.2x per step) diverged.
MAX_SOFT_START_GROWTH = 1.1


class SoftstartAnnealing(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base: float, minimum: float, soft_start: float, annealing: float, last_step: int):
        self.base, self.minimum = float(base), float(minimum)
        self.soft_start, self.annealing = float(soft_start), float(annealing)
        self.last_step = max(int(last_step), 1)

    def __call__(self, step):
        p = tf.clip_by_value(tf.cast(step, tf.float32) / self.last_step, 0.0, 1.0)
        log_base, log_min = math.log(self.base), math.log(self.minimum)
        ramp = log_min + (log_base - log_min) * p / max(self.soft_start, 1e-12)
        decay = log_base + (log_min - log_base) * (p - self.annealing) / max(1.0 - self.annealing, 1e-12)
        log_lr = tf.where(p < self.soft_start, ramp, tf.where(p < self.annealing, log_base, decay))
        return tf.exp(log_lr)

    def get_config(self) -> dict:
        return {"base": self.base, "minimum": self.minimum, "soft_start": self.soft_start,
                "annealing": self.annealing, "last_step": self.last_step}


class ExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``max(base * rate ** (step / decay_steps), minimum)``, the exponent floored if ``staircase``
    (TAO's BpNetExponentialDecayLRSchedule, i.e. tf.compat.v1.train.exponential_decay + a floor)."""

    def __init__(self, base: float, decay_steps: int, rate: float, staircase: bool, minimum: float):
        self.base, self.rate, self.minimum = float(base), float(rate), float(minimum)
        self.decay_steps, self.staircase = max(int(decay_steps), 1), bool(staircase)

    def __call__(self, step):
        exponent = tf.cast(step, tf.float32) / self.decay_steps
        if self.staircase:
            exponent = tf.floor(exponent)
        return tf.maximum(self.base * tf.pow(self.rate, exponent), self.minimum)

    def get_config(self) -> dict:
        return {"base": self.base, "decay_steps": self.decay_steps, "rate": self.rate,
                "staircase": self.staircase, "minimum": self.minimum}


def effective_soft_start(config: LearningRateSchedule, last_step: int) -> float:
    """The soft-start fraction actually used over ``last_step`` steps.

    The spec's fraction, unless its ramp would grow the rate faster than ``MAX_SOFT_START_GROWTH``
    per step; then the ramp gets the steps it needs, capped at ``annealing`` (a 1-epoch run ramps
    until the decay starts). ``soft_start: 0`` (no warm-up) is kept as asked.
    """
    if config.soft_start <= 0:
        return 0.0
    last_step = max(int(last_step), 1)
    needed = math.log(config.base_learning_rate / config.min_learning_rate) / math.log(MAX_SOFT_START_GROWTH)
    stretched = min(max(config.soft_start, needed / last_step), config.annealing)
    if stretched > config.soft_start:
        log.info("soft_start %.3g is %.1f of %d steps: ramping over %.1f steps instead (at most %.2gx per step)",
                 config.soft_start, config.soft_start * last_step, last_step, stretched * last_step,
                 MAX_SOFT_START_GROWTH)
    return stretched


def make_schedule(config: LearningRateSchedule | ExponentialDecaySchedule, total_steps: int,
                  steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    if isinstance(config, ExponentialDecaySchedule):
        # TAO's trainer sets decay_steps = decay_epochs * steps_per_epoch (steps of the global batch).
        decay_steps = config.decay_steps or max(1, round(config.decay_epochs * steps_per_epoch))
        return ExponentialDecay(config.learning_rate, decay_steps, config.decay_rate, config.staircase,
                                config.min_learning_rate)
    last_step = config.last_step or total_steps
    return SoftstartAnnealing(config.base_learning_rate, config.min_learning_rate,
                              effective_soft_start(config, last_step), config.annealing, last_step)


class _LayerRates:
    """Mixin for a Keras optimizer: each variable's learning rate times its multiplier, looked up
    by variable path (``rates``; absent paths keep 1x)."""

    def __init__(self, *args, rates: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rates = dict(rates or {})
        self._rate_of_index: list[float] = []

    def build(self, variables) -> None:
        super().build(variables)
        self._rate_of_index = [self.rates.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        rate = self._rate_of_index[self._get_variable_index(variable)]  # a Python float at trace time
        return super().update_step(gradient, variable, learning_rate if rate == 1.0 else learning_rate * rate)


class WeightedSGD(_LayerRates, keras.optimizers.SGD):
    """WeightedMomentumOptimizer."""


class WeightedAdam(_LayerRates, keras.optimizers.Adam):
    """WeightedAdamOptimizer (extension)."""


def make_optimizer(config: OptimizerConfig | AdamOptimizerConfig, total_steps: int, steps_per_epoch: int,
                   rates: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """The spec's optimizer over its schedule; ``rates``: variable path -> learning-rate multiplier
    (``layer_rates``)."""
    schedule = make_schedule(config.learning_rate_schedule, total_steps, steps_per_epoch)
    if isinstance(config, AdamOptimizerConfig):
        return WeightedAdam(learning_rate=schedule, beta_1=config.beta_1, beta_2=config.beta_2,
                            epsilon=config.epsilon, rates=rates)
    return WeightedSGD(learning_rate=schedule, momentum=config.momentum, nesterov=config.use_nesterov, rates=rates)


def _owner_layer(variable_path: str) -> str:
    """'stage2_conv1/kernel' -> 'stage2_conv1'; batch-norm variables belong to their conv."""
    layer = variable_path.split("/")[-2] if "/" in variable_path else variable_path
    return layer[:-3] if layer.endswith("_bn") else layer


def layer_multiplier(layer: str, config: OptimizerConfig | AdamOptimizerConfig, stagewise: bool) -> float:
    for pattern, value in (config.grad_weights_dict or {}).items():
        if fnmatch.fnmatchcase(layer, pattern):
            return float(value)
    if stagewise:
        if layer in {name for name, _ in BACKBONE_LAYERS} or layer == C128_CONV:
            return BACKBONE_MULTIPLIER
        if layer.startswith("stage") and not layer.startswith("stage1_"):
            return REFINEMENT_MULTIPLIER
        if layer in ("heatmap_out", "paf_out"):  # the last refinement stage's outputs
            return REFINEMENT_MULTIPLIER
    return float(config.weight_default_value)


def layer_rates(model: keras.Model, config: OptimizerConfig | AdamOptimizerConfig, stagewise: bool) -> dict[str, float]:
    """Each trainable variable's learning-rate multiplier, by variable path."""
    return {v.path: layer_multiplier(_owner_layer(v.path), config, stagewise) for v in model.trainable_variables}
