"""bpnet prune: the arithmetic on hand-made numbers, exactness on zeroed filters (also across a
concatenation and an element-wise group), the rules per layer, the full model, the command."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from bpnet.cli import main
from bpnet.errors import ModelError
from bpnet.model.architecture import Architecture, default_filters, output_names
from bpnet.model.bpnet import build_model, count_params
from bpnet.model.io import architecture_of, load_model, save_model
from bpnet.prune import PruneSettings, channel_graph, equalize, filter_norms, kept_channels, normalize, prune_model

EXACT = dict(pruning_granularity=1, min_num_filters=1, pruning_threshold=1e-6)


def small_model(stages: int = 2, attention: bool = False, seed: int = 3, class_name: str = "BpNetLiteModel",
                c128: bool = False) -> keras.Model:
    arch = Architecture(stages=stages, use_self_attention=attention, class_name=class_name, add_final_c128_conv=c128,
                        filters=default_filters(stages, attention, 0.125, class_name=class_name,
                                                add_final_c128_conv=c128))
    model = build_model(arch, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # non-trivial batch-norm statistics, so copying them matters
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def silence(model: keras.Model, layer: str, channels: list[int]) -> None:
    """Make output channels of a conv exactly zero after its batch norm (or bias)."""
    conv = model.get_layer(layer)
    weights = conv.get_weights()
    weights[0][..., channels] = 0.0
    if len(weights) > 1:
        weights[1][channels] = 0.0
    conv.set_weights(weights)
    if any(lay.name == f"{layer}_bn" for lay in model.layers):
        bn = model.get_layer(f"{layer}_bn")
        gamma, beta, mean, var = bn.get_weights()
        beta[channels], mean[channels] = 0.0, 0.0
        bn.set_weights([gamma, beta, mean, var])


def max_output_difference(a: keras.Model, b: keras.Model, shape=(2, 64, 96, 3)) -> float:
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a(x), b(x), strict=True))


def test_normalizers():
    norms = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(normalize(norms, "max"), [0.75, 1.0, 0.0])
    np.testing.assert_allclose(normalize(norms, "L2"), [0.6, 0.8, 0.0])
    kernel = np.zeros((3, 3, 2, 2))
    kernel[0, 0, 0, 1], kernel[2, 1, 1, 1] = 3.0, 4.0
    np.testing.assert_allclose(filter_norms(kernel), [0.0, 5.0])


@pytest.mark.parametrize(("criterion", "expected"), [
    ("union", [0, 1, 2]), ("intersection", [2]), ("arithmetic_mean", [0, 1, 2]), ("geometric_mean", [2]),
])
def test_each_equalization_criterion_picks_the_expected_channels(criterion, expected):
    a = np.array([1.0, 0.05, 0.5, 0.0])
    b = np.array([0.05, 1.0, 0.5, 0.0])
    # means: arithmetic [0.525, 0.525, 0.5, 0]; geometric [0.224, 0.224, 0.5, 0]
    stat = equalize([a, b], criterion)
    assert kept_channels(stat, 0.3, granularity=1, min_num_filters=1).tolist() == expected


def test_granularity_and_minimum_round_the_kept_count():
    stat = np.linspace(1.0, 0.0, 32)  # 5 channels at or above 0.87
    assert len(kept_channels(stat, 0.87, granularity=8, min_num_filters=1)) == 8
    assert len(kept_channels(stat, 0.87, granularity=8, min_num_filters=16)) == 16
    assert len(kept_channels(stat[:12], 0.99, granularity=8, min_num_filters=16)) == 12  # never above the width
    assert kept_channels(stat, 0.87, granularity=8, min_num_filters=1).tolist() == list(range(8))  # best first


def test_groups_come_from_the_graph():
    graph = channel_graph(small_model(stages=3, attention=True))
    groups = [sorted(m) for m in graph.groups().values() if len(m) > 1]
    assert sorted(groups) == [[f"stage{s}_{b}_{k}" for k in ("attention", "conv")]
                              for s in (2, 3) for b in ("heat", "paf")]
    features = ("channel_reduction_conv", 16)
    assert graph.conv_inputs["stage1_conv1"] == [features]
    assert graph.conv_inputs["stage3_conv1"] == [features, ("stage2_heat_out", 19), ("stage2_paf_out", 38)]


def test_pruning_zeroed_filters_is_exact_through_batch_norm_and_concatenation():
    model = small_model()
    silence(model, "block3_conv2", [1, 5, 6])          # backbone conv + batch norm
    silence(model, "channel_reduction_conv", [0, 9])   # feeds stage 1 and, via a concatenation, stage 2
    silence(model, "stage2_conv3", [2, 3, 4, 10])      # a 7x7 head conv with bias
    result = prune_model(model, PruneSettings(**EXACT), flops_shape=(64, 96))
    before, after = architecture_of(model).filters, result.architecture.filters
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert changed == {"block3_conv2": (32, 29), "channel_reduction_conv": (16, 14), "stage2_conv3": (16, 12)}
    assert max_output_difference(model, result.model) < 1e-5


def test_pruning_an_elementwise_group_is_exact_and_keeps_it_aligned():
    model = small_model(attention=True)
    silence(model, "stage2_heat_conv", [3, 7])  # the attention gate multiplies these zeros: removable
    result = prune_model(model, PruneSettings(equalization_criterion="intersection", **EXACT), flops_shape=(64, 96))
    after = result.architecture.filters
    assert after["stage2_heat_conv"] == after["stage2_heat_attention"] == 14
    assert max_output_difference(model, result.model) < 1e-5
    union = prune_model(model, PruneSettings(equalization_criterion="union", **EXACT), flops_shape=(64, 96))
    assert union.architecture.filters["stage2_heat_conv"] == 16  # the gate's filters there are not small


def test_pruning_the_full_model_is_exact_per_branch_and_reloads(tmp_path):
    """BpNetModel (separate heatmap/PAF trunks, attention, the c128 conv): same rules, same exactness."""
    model = small_model(stages=3, attention=True, class_name="BpNetModel", c128=True)
    groups = [sorted(m) for m in channel_graph(model).groups().values() if len(m) > 1]
    assert sorted(groups) == [[f"stage{s}_{b}_{k}" for k in ("attention", "conv6")]
                              for s in (2, 3) for b in ("heat", "paf")]
    silence(model, "backbone_c128_conv", [0, 4])      # backbone conv + batch norm, feeds the reduction conv
    silence(model, "stage1_paf_conv2", [1, 2, 3])     # one branch's trunk only
    silence(model, "stage2_heat_conv5", [7])          # a 7x7 trunk conv of a later stage
    result = prune_model(model, PruneSettings(**EXACT), flops_shape=(64, 96))
    before, after = architecture_of(model).filters, result.architecture.filters
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert changed == {"backbone_c128_conv": (16, 14), "stage1_paf_conv2": (16, 13), "stage2_heat_conv5": (16, 15)}
    assert after["stage1_heat_conv2"] == 16  # the other branch keeps its width
    assert max_output_difference(model, result.model) < 1e-5
    assert result.architecture.class_name == "BpNetModel" and result.architecture.add_final_c128_conv
    reloaded = load_model(save_model(result.model, tmp_path / "pruned.tlt", key="k"), key="k")
    assert architecture_of(reloaded) == result.architecture


def test_threshold_sweep_removes_parameters_monotonically_and_rules_hold_per_layer():
    model = small_model(stages=3)
    before = architecture_of(model).filters
    counts = []
    for threshold in (0.0, 0.5, 0.7, 0.8, 0.9, 1.0):
        settings = PruneSettings(pruning_threshold=threshold, pruning_granularity=4, min_num_filters=8)
        result = prune_model(model, settings, (64, 64))
        counts.append(result.report["parameters"]["after"])
        for name, width in result.architecture.filters.items():
            assert width == before[name] or (width % 4 == 0 and width >= min(8, before[name])), name
        assert count_params(result.model) == counts[-1]
    assert counts == sorted(counts, reverse=True) and counts[0] == count_params(model) > counts[-1]


def test_excluded_layers_and_heads_keep_their_widths():
    model = small_model()
    excluded = ("block4_conv2", "stage1_conv1")
    settings = PruneSettings(pruning_threshold=1.0, pruning_granularity=1, min_num_filters=1,
                             excluded_layers=excluded)
    result = prune_model(model, settings, (64, 64))
    before = architecture_of(model)
    for name in excluded:
        assert result.architecture.filters[name] == before.filters[name]
    assert all(result.architecture.filters[n] < before.filters[n] for n in before.filters if n not in excluded)
    for stage in (1, 2):
        for name, channels in zip(output_names(stage, 2), (19, 38), strict=True):
            assert result.model.get_layer(name).filters == channels


def test_unknown_excluded_layer_is_named():
    with pytest.raises(ModelError, match=r"excluded layers \['heatmap_out', 'nope'\] are not prunable"):
        prune_model(small_model(), PruneSettings(excluded_layers=("nope", "heatmap_out")))


def test_full_default_model_prunes_and_reloads_without_a_spec(tmp_path):
    model = build_model(Architecture(stages=3))
    assert count_params(model) == 16_777_835
    result = prune_model(model, PruneSettings(pruning_threshold=0.85), flops_shape=(224, 320))
    assert result.report["parameters"]["after"] < 16_777_835
    path = save_model(result.model, tmp_path / "pruned.tlt", key="k")
    reloaded = load_model(path, key="k")
    assert architecture_of(reloaded) == result.architecture
    assert count_params(reloaded) == result.report["parameters"]["after"]


def test_prune_command_writes_model_and_report_and_refuses_bad_input(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    out = tmp_path / "pruned.tlt"
    assert main(["prune", "-m", str(model), "-o", str(out), "-k", "tiny", "-pth", "0.95", "-pg", "2", "-nf", "4",
                 "--input_shape", "64,64"]) == 0
    report = json.loads((tmp_path / "pruned.tlt.json").read_text())
    assert report["parameters"]["after"] == count_params(load_model(out, key="tiny"))
    assert report["settings"]["pruning_threshold"] == 0.95 and report["flops"]["input_shape"] == [64, 64]
    assert {"layer", "before", "after", "kept"} <= set(report["layers"][0])

    assert main(["prune", "-m", str(model), "-o", str(out), "-k", "tiny", "-pth", "1.5"]) == 2
    assert "-pth/--pruning_threshold: 1.5 — expected less than or equal to 1" in capsys.readouterr().err
    assert main(["prune", "-m", str(model), "-o", str(tmp_path / "new.tlt"), "-k", "wrong"]) == 1
    assert main(["prune", "-m", str(model), "-o", str(out), "-k", "tiny", "-el", "block9_conv9"]) == 1
    not_a_model = tmp_path / "x.tlt"
    not_a_model.write_bytes(b"PK\x03\x04 not really")
    assert main(["prune", "-m", str(not_a_model), "-o", str(out), "-k", "tiny"]) == 1
