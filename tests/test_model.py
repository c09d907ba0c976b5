"""BpNetLiteModel and BpNetModel, their file format, weight loading, the losses and the schedules."""

from __future__ import annotations

import math

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from bpnet.errors import ModelError
from bpnet.model.architecture import FULL, Architecture, default_filters
from bpnet.model.bpnet import Regularization, build_model, count_flops, count_params, split_outputs
from bpnet.model.io import ModelKeyError, architecture_of, load_model, load_weights_by_name, save_model
from bpnet.model.loss import focal_factor, stage_losses, total_loss
from bpnet.model.optimizer import (
    ExponentialDecay,
    SoftstartAnnealing,
    layer_multiplier,
    layer_rates,
    make_optimizer,
    make_schedule,
)
from bpnet.specs.train import (
    AdamOptimizerConfig,
    AnyOptimizerConfig,
    ExponentialDecaySchedule,
    FocalLossParams,
    LearningRateSchedule,
    OptimizerConfig,
)


@pytest.mark.parametrize("stages,expected", [(3, 16_777_835), (6, 30_015_638)])
def test_parameter_counts_match_the_published_model(stages, expected):
    assert count_params(build_model(Architecture(stages=stages))) == expected


@pytest.mark.parametrize("stages,params,convs", [(3, 25_965_035, 50), (6, 52_319_510, 92)])
def test_full_model_counts_match_the_published_bpnet_model(stages, params, convs):
    """TAO's test_bpnet_model.py: parameters and Conv2D layers of BpNetModel (about 4 s at 6 stages)."""
    model = build_model(Architecture(stages=stages, class_name=FULL))
    assert count_params(model) == params
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == convs
    assert sum(isinstance(layer, keras.layers.Concatenate) for layer in model.layers) == stages - 1


@pytest.mark.parametrize("class_name", ["BpNetLiteModel", FULL])
def test_final_c128_conv_ends_the_backbone_with_128_filters(class_name):
    plain = build_model(Architecture(stages=2, class_name=class_name))
    c128 = build_model(Architecture(stages=2, class_name=class_name, add_final_c128_conv=True))
    conv = c128.get_layer("backbone_c128_conv")
    assert conv.kernel.shape == (3, 3, 256, 128) and conv.bias is None
    assert c128.get_layer("channel_reduction_conv").kernel.shape == (3, 3, 128, 128)
    # + the 3x3 256->128 conv and its batch norm, - half of the channel reduction conv's input
    assert count_params(c128) - count_params(plain) == 3 * 3 * 256 * 128 + 4 * 128 - 3 * 3 * 128 * 128


def test_full_model_has_a_trunk_per_branch_and_round_trips(tmp_path):
    arch = Architecture(stages=3, class_name=FULL, use_self_attention=True, add_final_c128_conv=True,
                        filters=default_filters(3, True, 0.125, class_name=FULL, add_final_c128_conv=True))
    model = build_model(arch, seed=1)
    assert model.name == "bpnet"
    names = {layer.name for layer in model.layers}
    assert {"stage1_heat_conv3", "stage1_paf_conv4", "stage3_heat_conv6", "stage3_paf_attention"} <= names
    assert "stage2_conv1" not in names  # no shared trunk
    assert model.get_layer("stage2_paf_conv1").kernel.shape[:2] == (7, 7)
    heats, pafs = split_outputs(model(tf.zeros([1, 64, 96, 3])), 3)
    assert heats[-1].shape == (1, 8, 12, 19) and pafs[-1].shape == (1, 8, 12, 38)
    assert architecture_of(model) == arch and Architecture.from_json(arch.to_json()) == arch
    back = load_model(save_model(model, tmp_path / "full.tlt", key="k"), key="k")
    assert architecture_of(back) == arch
    x = tf.random.uniform([1, 32, 32, 3], seed=2)
    assert np.allclose(model(x)[-1], back(x)[-1], atol=1e-6)


def test_architecture_records_before_the_class_read_as_lite_models():
    old = '{"stages": 2, "heat_channels": 19, "paf_channels": 38, "use_self_attention": false, "use_bias": true, ' \
          '"backbone_use_bias": false, "class_name": "BpNetLiteModel", "filters": %s}'
    arch = Architecture.from_json(old % str(default_filters(2, False, 0.125)).replace("'", '"'))
    assert arch.class_name == "BpNetLiteModel" and not arch.add_final_c128_conv


@pytest.fixture(scope="module")
def small() -> Architecture:
    return Architecture(stages=3, filters=default_filters(3, False, 0.125))


def test_fully_convolutional_at_stride_8(small):
    model = build_model(small)
    outputs = model(tf.zeros([2, 96, 160, 3]))
    heats, pafs = split_outputs(outputs, 3)
    assert len(heats) == len(pafs) == 3
    assert heats[-1].shape == (2, 12, 20, 19) and pafs[-1].shape == (2, 12, 20, 38)
    assert model.get_layer("heatmap_out") is not None and model.get_layer("paf_out") is not None


def test_flops_scale_with_input_area(small):
    assert count_flops(small, 128, 128) == 4 * count_flops(small, 64, 64)


def test_self_attention_and_regularization_options():
    arch = Architecture(stages=2, use_self_attention=True, filters=default_filters(2, True, 0.125))
    model = build_model(arch, Regularization("l1_l2", 1e-4, 1e-5))
    assert model.get_layer("stage2_paf_attention_tanh").activation.__name__ == "tanh"
    assert model.get_layer("stage2_heat_attention_sigmoid").activation.__name__ == "sigmoid"
    model(tf.zeros([1, 32, 32, 3]))
    assert len(model.losses) > 0
    assert build_model(arch).losses == []


def test_architecture_round_trips_through_a_model_and_json():
    arch = Architecture(stages=2, filters=default_filters(2, False, 0.125)).with_filters({"stage2_conv3": 5})
    model = build_model(arch)
    assert architecture_of(model) == arch
    assert Architecture.from_json(arch.to_json()) == arch
    with pytest.raises(ModelError, match="missing"):
        Architecture(stages=2, filters={"block1_conv1": 8})


def test_encrypted_model_round_trip_and_wrong_key(small, tmp_path):
    model = build_model(small, seed=1)
    path = save_model(model, tmp_path / "m.tlt", key="s3cret")
    assert b"stage1_conv1" not in path.read_bytes()
    back = load_model(path, key="s3cret")
    x = tf.random.uniform([1, 32, 32, 3], seed=1)
    assert np.allclose(model(x)[-1], back(x)[-1], atol=1e-6)
    assert architecture_of(back) == small
    with pytest.raises(ModelKeyError, match="wrong key"):
        load_model(path, key="guess")
    with pytest.raises(ModelKeyError, match="encrypted"):
        load_model(path)


def _write_keras2_h5(path, layers: dict[str, list[np.ndarray]]) -> None:
    """Weights in the Keras 2 HDF5 layout (as keras.applications VGG19 files are)."""
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = [n.encode() for n in layers]
        for name, arrays in layers.items():
            group = h5.create_group(name)
            names = [f"{name}/w{i}:0".encode() for i in range(len(arrays))]
            group.attrs["weight_names"] = names
            for n, a in zip(names, arrays, strict=True):
                group.create_dataset(n.decode(), data=a)


def test_pretrained_weights_load_by_name_with_a_report(small, tmp_path):
    model = build_model(small, seed=2)
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)
    _write_keras2_h5(tmp_path / "vgg.h5", {
        "block1_conv1": [kernel, np.zeros(8, np.float32)],  # VGG has a bias; our backbone does not
        "block1_conv2": [np.zeros((3, 3, 8, 999), np.float32)],
        "fc1": [np.zeros((4, 4), np.float32)],
    })
    report = load_weights_by_name(model, tmp_path / "vgg.h5")
    assert report.partial == ["block1_conv1"] and report.shape_mismatch == ["block1_conv2"]
    assert report.unused_in_source == ["fc1"] and "stage1_conv1" in report.not_in_source
    assert np.array_equal(model.get_layer("block1_conv1").kernel.numpy(), kernel)


def test_weights_load_from_a_saved_bpnet_model(small, tmp_path):
    source = build_model(small, seed=3)
    save_model(source, tmp_path / "m.keras")
    target = build_model(small, seed=4)
    report = load_weights_by_name(target, tmp_path / "m.keras")
    assert not report.shape_mismatch and not report.not_in_source
    assert np.array_equal(target.get_layer("paf_out").kernel.numpy(), source.get_layer("paf_out").kernel.numpy())


def test_masked_loss_ignores_masked_pixels():
    rng = np.random.default_rng(0)
    label_h, label_p = rng.random((2, 4, 4, 19), np.float32), rng.random((2, 4, 4, 38), np.float32)
    mask = np.ones((2, 4, 4, 1), np.float32)
    mask[:, :2] = 0.0
    pred_h, pred_p = rng.random((2, 4, 4, 19), np.float32), rng.random((2, 4, 4, 38), np.float32)
    base = total_loss(*stage_losses([pred_h], [pred_p], label_h, label_p, mask, 2))
    pred_h2 = pred_h.copy()
    pred_h2[:, :2] += 100.0  # garbage only where the mask is 0
    same = total_loss(*stage_losses([pred_h2], [pred_p], label_h, label_p, mask, 2))
    assert float(same) == pytest.approx(float(base))
    pred_h2[:, 2:] += 1.0
    assert float(total_loss(*stage_losses([pred_h2], [pred_p], label_h, label_p, mask, 2))) > float(base)
    expected = 0.5 * (np.sum(mask * (pred_h - label_h) ** 2) + np.sum(mask * (pred_p - label_p) ** 2)) / 2
    assert float(base) == pytest.approx(expected, rel=1e-5)


def test_stages_are_summed():
    z = np.zeros((1, 2, 2, 19), np.float32)
    zp = np.zeros((1, 2, 2, 38), np.float32)
    heat, paf = stage_losses([z + 1, z + 2], [zp, zp], z, zp, np.ones((1, 2, 2, 1), np.float32), 1)
    assert [float(h) for h in heat] == [0.5 * 4 * 19, 0.5 * 4 * 19 * 4]


def test_softstart_annealing_schedule_values():
    s = SoftstartAnnealing(base=2e-5, minimum=8e-8, soft_start=0.05, annealing=0.5, last_step=1000)
    lr = {step: float(s(step)) for step in (0, 25, 50, 200, 499, 750, 1000, 5000)}
    assert lr[0] == pytest.approx(8e-8, rel=1e-5)
    assert lr[25] == pytest.approx(math.sqrt(2e-5 * 8e-8), rel=1e-4)  # halfway up, in log space
    assert lr[50] == lr[200] == lr[499] == pytest.approx(2e-5, rel=1e-5)
    assert lr[750] == pytest.approx(math.sqrt(2e-5 * 8e-8), rel=1e-4)
    assert lr[1000] == lr[5000] == pytest.approx(8e-8, rel=1e-5)


@pytest.mark.parametrize("staircase,minimum,expected", [
    (False, 0.0, [0.1, 0.01, 0.0015848934, 0.0001]),
    (False, 0.0005, [0.1, 0.01, 0.0015848934, 0.0005]),
    (True, 0.0, [0.1, 0.01, 0.01, 0.0001]),
    (True, 0.0005, [0.1, 0.01, 0.01, 0.0005]),
])
def test_exponential_decay_reproduces_taos_golden_values(staircase, minimum, expected):
    """TAO's test_exponential_decay_schedule.py: 25 steps per epoch, decay every epoch by 0.1; its
    values are read at global steps 26, 51, 71, 101 *before* their increment, i.e. steps 25 ... 100."""
    config = ExponentialDecaySchedule(learning_rate=1.0, decay_epochs=1, decay_rate=0.1, staircase=staircase,
                                      min_learning_rate=minimum)
    schedule = make_schedule(config, total_steps=10_000, steps_per_epoch=25)
    assert isinstance(schedule, ExponentialDecay) and schedule.decay_steps == 25
    np.testing.assert_allclose([float(schedule(s)) for s in (25, 50, 70, 100)], expected, rtol=1e-5)


def test_exponential_decay_of_taos_coco_spec_and_explicit_decay_steps():
    config = ExponentialDecaySchedule(learning_rate=2e-5, decay_epochs=17, decay_rate=0.333, staircase=True,
                                      min_learning_rate=8.18938e-08)
    schedule = make_schedule(config, total_steps=100, steps_per_epoch=10)  # 170 steps per decay
    assert float(schedule(169)) == pytest.approx(2e-5, rel=1e-6)
    assert float(schedule(170)) == pytest.approx(2e-5 * 0.333, rel=1e-5)
    assert float(schedule(170 * 50)) == pytest.approx(8.18938e-08, rel=1e-5)  # the floor
    explicit = make_schedule(config.model_copy(update={"decay_steps": 7}), total_steps=100, steps_per_epoch=10)
    assert explicit.decay_steps == 7
    assert isinstance(make_schedule(LearningRateSchedule(), 100, 10), SoftstartAnnealing)


def test_schedule_is_chosen_by_class_name():
    assert isinstance(OptimizerConfig().learning_rate_schedule, LearningRateSchedule)
    chosen = OptimizerConfig.model_validate({"learning_rate_schedule": {
        "__class_name__": "BpNetExponentialDecayLRSchedule", "learning_rate": 1e-3, "decay_epochs": 2,
        "decay_rate": 0.5}}).learning_rate_schedule
    assert isinstance(chosen, ExponentialDecaySchedule) and chosen.staircase is False
    with pytest.raises(ValueError, match="decay_epochs"):
        OptimizerConfig.model_validate({"learning_rate_schedule": {
            "__class_name__": "BpNetExponentialDecayLRSchedule", "learning_rate": 1e-3, "decay_rate": 0.5}})
    with pytest.raises(ValueError, match="__class_name__ must be"):
        OptimizerConfig.model_validate({"learning_rate_schedule": {"__class_name__": "CosineDecay"}})


def test_focal_factor_and_loss_golden_values():
    """Hand-computed with TAO's formula (alpha 0.1, beta 0.02, gamma 1, bkg_thresh 0.01):
    foreground pred 0.5 / label 1: factor |1 - (0.5 - 0.1)| = 0.6, residual -0.5 -> (-0.3)^2 = 0.09;
    background pred 0.2 / label 0: factor |1 - (1 - 0.2 - 0.02)| = 0.22, residual 0.2 -> 0.044^2."""
    params = FocalLossParams(use_focal_loss=True)
    pred = np.array([0.5, 0.2, 0.9, 0.0], np.float32).reshape(1, 1, 4, 1)
    label = np.array([1.0, 0.0, 1.0, 0.005], np.float32).reshape(1, 1, 4, 1)
    np.testing.assert_allclose(focal_factor(pred, label, params).numpy().ravel(), [0.6, 0.22, 0.2, 0.02], rtol=1e-5)
    mask = np.ones((1, 1, 4, 1), np.float32)
    mask[..., 2, :] = 0.0  # a masked pixel adds nothing
    heat, paf = stage_losses([pred], [pred], label, label, mask, 1, params)
    expected = 0.5 * (0.3**2 + 0.044**2 + (0.005 * 0.02) ** 2)
    assert float(heat[0]) == float(paf[0]) == pytest.approx(expected, rel=1e-5)
    squared = stage_losses([pred], [pred], label, label, mask, 1, params.model_copy(update={"gamma": 2.0}))[0]
    assert float(squared[0]) == pytest.approx(0.5 * (0.5**2 * 0.6**4 + 0.2**2 * 0.22**4 + 0.005**2 * 0.02**4),
                                              rel=1e-5)
    plain = stage_losses([pred], [pred], label, label, mask, 1)[0]
    assert float(plain[0]) == pytest.approx(0.5 * (0.25 + 0.04 + 0.005**2), rel=1e-5)


def test_sign_aware_focal_learns_pafs_of_both_directions():
    """TAO's rule: a zero prediction on a -0.8 PAF component is "background", its gradient about
    30x smaller than on +0.8; ``paf_sign_aware`` weighs both alike (heatmaps unchanged)."""
    import tensorflow as tf

    def paf_gradients(params: FocalLossParams) -> np.ndarray:
        pred = tf.Variable(np.zeros((1, 1, 2, 1), np.float32))
        label = np.array([0.8, -0.8], np.float32).reshape(1, 1, 2, 1)
        with tf.GradientTape() as tape:
            _, paf = stage_losses([pred], [pred], label, label, np.ones((1, 1, 2, 1), np.float32), 1, params)
        return np.abs(tape.gradient(paf[0], pred).numpy().ravel())

    tao = paf_gradients(FocalLossParams(use_focal_loss=True))
    assert tao[1] * 20 < tao[0]
    aware = paf_gradients(FocalLossParams(use_focal_loss=True, paf_sign_aware=True))
    assert aware[0] == pytest.approx(tao[0]) and aware[1] == pytest.approx(aware[0])


def test_focal_loss_is_off_unless_asked():
    from bpnet.specs.train import LossConfig

    assert LossConfig().focal is None
    assert LossConfig(focal_loss_params=FocalLossParams()).focal is None  # TAO's specs: present, off
    assert LossConfig(focal_loss_params=FocalLossParams(use_focal_loss=True, gamma=2)).focal.gamma == 2


def test_lr_multipliers_follow_the_guide_and_overrides():
    cfg = OptimizerConfig(grad_weights_dict={"stage2_conv*": 0.5}, weight_default_value=1.5)
    assert layer_multiplier("block3_conv2", cfg, stagewise=True) == 2.0
    assert layer_multiplier("stage3_conv1", cfg, stagewise=True) == 4.0
    assert layer_multiplier("paf_out", cfg, stagewise=True) == 4.0
    assert layer_multiplier("stage1_conv1", cfg, stagewise=True) == 1.5
    assert layer_multiplier("stage2_conv4", cfg, stagewise=True) == 0.5
    assert layer_multiplier("block3_conv2", cfg, stagewise=False) == 1.5
    model = build_model(Architecture(stages=2, filters=default_filters(2, False, 0.125)))
    mults = layer_rates(model, cfg, True)
    assert mults["block1_conv1_bn/gamma"] == 2.0 and mults["stage2_heat_conv/bias"] == 4.0
    filters = default_filters(2, False, 0.125, class_name=FULL, add_final_c128_conv=True)
    full = build_model(Architecture(stages=2, class_name=FULL, add_final_c128_conv=True, filters=filters))
    mults = layer_rates(full, OptimizerConfig(), True)
    assert mults["backbone_c128_conv/kernel"] == 2.0 and mults["stage2_paf_conv5/kernel"] == 4.0
    assert mults["stage1_heat_conv4/kernel"] == 1.0 and mults["paf_out/bias"] == 4.0


def test_optimizer_is_chosen_by_class_name():
    spec = {"learning_rate_schedule": {"base_learning_rate": 1e-3, "min_learning_rate": 1e-6}}
    from pydantic import TypeAdapter

    adapter = TypeAdapter(AnyOptimizerConfig)  # TrainSpec.optimizer's type
    assert isinstance(adapter.validate_python(spec), OptimizerConfig)  # the guide's, when unnamed
    adam = adapter.validate_python({"__class_name__": "WeightedAdamOptimizer", "beta_2": 0.99, **spec})
    assert isinstance(adam, AdamOptimizerConfig) and adam.beta_2 == 0.99
    with pytest.raises(ValueError, match="WeightedMomentumOptimizer or WeightedAdamOptimizer"):
        adapter.validate_python({"__class_name__": "Adagrad"})
    with pytest.raises(ValueError, match="momentum"):  # a momentum field is not Adam's
        adapter.validate_python({"__class_name__": "WeightedAdamOptimizer", "momentum": 0.9})


@pytest.mark.parametrize("config", [OptimizerConfig(momentum=0.0),
                                    AdamOptimizerConfig.model_validate({"__class_name__": "WeightedAdamOptimizer"})],
                         ids=["momentum", "adam"])
def test_layer_rates_scale_each_variables_step(config):
    """A 2x variable moves twice as far as a 1x one on the same gradient, for Adam too (which
    normalises gradients, so scaling them would change nothing)."""
    import keras

    a, b = keras.Variable([1.0], name="a"), keras.Variable([1.0], name="b")
    opt = make_optimizer(config.model_copy(update={"learning_rate_schedule": LearningRateSchedule(
        soft_start=0.0, annealing=1.0, base_learning_rate=1e-2, min_learning_rate=1e-2)}), 10, 10,
        rates={b.path: 2.0})
    opt.apply_gradients([(tf.constant([0.5]), a), (tf.constant([0.5]), b)])
    step_a, step_b = 1.0 - float(a.numpy()[0]), 1.0 - float(b.numpy()[0])
    assert step_a > 0 and step_b == pytest.approx(2 * step_a, rel=1e-4)
