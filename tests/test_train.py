"""The trainer: outputs, checkpoints, resume after SIGKILL, retraining a loaded graph, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bpnet.artifacts import read_manifest, verify_files
from bpnet.cli import main
from bpnet.model.io import architecture_of, load_model, save_model
from bpnet.specs import TrainSpec, load_spec
from bpnet.train import train
from tests.conftest import write_train_spec


def test_two_epochs_write_checkpoints_model_and_manifest(converted, synth_dir, tmp_path):
    spec = load_spec(write_train_spec(tmp_path / "t.yaml", synth_dir, converted), TrainSpec)
    out = tmp_path / "run"
    result = train(spec, out, key="k1")
    assert result.epochs == 2 and result.steps == 2 * result.steps_per_epoch and result.resumed_from_epoch == 0
    assert (out / "checkpoints" / "ckpt-1.index").is_file() and (out / "checkpoints" / "ckpt-2.index").is_file()
    assert list((out / "events").iterdir())
    verify_files(out, read_manifest(out / "MANIFEST.json"))
    model = load_model(out / "bpnet_model.tlt", key="k1")
    assert architecture_of(model).stages == 2
    resolved = (out / "train_spec.resolved.yaml").read_text()
    assert "width_multiplier: 0.125" in resolved and "__class_name__: BpNetTrainer" in resolved
    again = train(spec, out, key="k1")  # finished: resumes at the end, trains nothing more
    assert again.resumed_from_epoch == 2 and again.steps == result.steps and again.first_loss is None


def test_the_same_spec_trains_the_same_weights(converted, synth_dir, tmp_path):
    """Seeded draws, a deterministic input pipeline and op determinism: two runs of one spec (here
    with the Adam extension and the stage-wise rates) give the same weights on one machine, to
    float rounding (oneDNN may round a sum differently; `make run`'s AP agrees to 5 decimals)."""
    def run(name: str, seed: int) -> list[np.ndarray]:
        spec = load_spec(write_train_spec(tmp_path / f"{name}.yaml", synth_dir, converted, num_epoch=1,
                                          random_seed=seed, use_stagewise_lr_multipliers=True,
                                          **{"optimizer.__class_name__": "WeightedAdamOptimizer"}), TrainSpec)
        assert spec.optimizer.class_name == "WeightedAdamOptimizer"
        train(spec, tmp_path / name, key="k")
        return load_model(tmp_path / name / "bpnet_model.tlt", key="k").get_weights()

    a, b = run("a", 5), run("b", 5)
    assert all(np.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(a, b, strict=True))


@pytest.mark.slow  # a real kill -9 mid-training and a resume: make test-all
def test_killed_run_resumes_and_finishes_all_epochs(converted, synth_dir, tmp_path):
    spec_path = write_train_spec(tmp_path / "t.yaml", synth_dir, converted, num_epoch=4)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bpnet.cli", "train", "-e", str(spec_path), "-r", str(out), "-k", "k2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "ckpt-2.index").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "MANIFEST.json").exists() and not (out / "checkpoints" / "ckpt-4.index").exists()
    finished = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_epoch"] >= 2 and summary["epochs"] == 4
    assert summary["steps"] == 4 * summary["steps_per_epoch"]  # optimizer state came back with the epoch
    verify_files(out, read_manifest(out / "MANIFEST.json"))
    load_model(out / "bpnet_model.tlt", key="k2")


def test_retrain_with_load_graph_keeps_the_graph_and_drops_regularization(converted, synth_dir, tmp_path):
    first = tmp_path / "first"
    spec = load_spec(write_train_spec(tmp_path / "a.yaml", synth_dir, converted, num_epoch=1,
                                      **{"model.kernel_regularization_factor": 1e-3}), TrainSpec)
    train(spec, first, key="k3")
    retrain_spec = load_spec(write_train_spec(
        tmp_path / "b.yaml", synth_dir, converted, num_epoch=1, load_graph=True,
        pretrained_weights=str(first / "bpnet_model.tlt"),
        **{"model.stages": 3, "model.kernel_regularization_factor": 1e-3}), TrainSpec)
    assert not retrain_spec.regularization_enabled
    result = train(retrain_spec, tmp_path / "second", key="k3")
    model = load_model(result.model_path, key="k3")
    assert architecture_of(model) == architecture_of(load_model(first / "bpnet_model.tlt", key="k3"))
    assert model.losses == []  # regularization is off for a loaded graph


def test_pretrained_weights_are_loaded_by_name(converted, synth_dir, tmp_path):
    first = tmp_path / "first"
    train(load_spec(write_train_spec(tmp_path / "a.yaml", synth_dir, converted, num_epoch=1), TrainSpec),
          first, key="k4")
    trained = load_model(first / "bpnet_model.tlt", key="k4")
    from bpnet.train import initial_model

    spec = load_spec(write_train_spec(tmp_path / "b.yaml", synth_dir, converted,
                                      pretrained_weights=str(first / "bpnet_model.tlt")), TrainSpec)
    model = initial_model(spec, key="k4")
    assert np.array_equal(model.get_layer("stage2_conv3").kernel.numpy(),
                          trained.get_layer("stage2_conv3").kernel.numpy())


def test_cli_requires_a_key_and_dumps_label_samples(converted, synth_dir, tmp_path, monkeypatch, capsys):
    spec_path = write_train_spec(tmp_path / "t.yaml", synth_dir, converted)
    monkeypatch.delenv("BPNET_MODEL_KEY", raising=False)
    assert main(["train", "-e", str(spec_path), "-r", str(tmp_path / "r")]) == 2
    assert "-k/--key: missing" in capsys.readouterr().err
    monkeypatch.setenv("BPNET_MODEL_KEY", "from-env")
    assert main(["train", "-e", str(spec_path), "-r", str(tmp_path / "r"), "--dump_samples", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "r" / "label_samples").iterdir()) == [
        "sample_0000.jpg", "sample_0001.jpg", "sample_0002.jpg"]


def test_more_gpus_than_present_is_a_clear_error(converted, synth_dir, tmp_path, caplog):
    spec_path = write_train_spec(tmp_path / "t.yaml", synth_dir, converted)
    assert main(["train", "-e", str(spec_path), "-r", str(tmp_path / "r"), "-k", "x", "--gpus", "2"]) == 1
    assert "--gpus 2: only 0 GPU(s) present" in caplog.text


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_loss_falls_on_the_demo_data(converted, synth_dir, tmp_path, compute_dtype):
    """Under a minute of CPU: the joint heatmaps must be learned, not just the background; in
    bfloat16 too, whose saved model is then read in float32."""
    from bpnet.data.loader import build_dataset, record_paths

    spec = load_spec(write_train_spec(
        tmp_path / "t.yaml", synth_dir, converted, num_epoch=30, checkpoint_n_epoch=30, compute_dtype=compute_dtype,
        **{"optimizer.learning_rate_schedule.base_learning_rate": 1e-4,
           "optimizer.learning_rate_schedule.min_learning_rate": 1e-6}), TrainSpec)
    result = train(spec, tmp_path / "run", key="k")
    assert result.last_loss < 0.5 * result.first_loss
    model = load_model(result.model_path, key="k")
    err = base = 0.0
    for images, labels in build_dataset(spec, record_paths(spec), 8, training=False, repeat=False):
        heat = model(images)[1].numpy()[..., :-1]
        truth, mask = labels["heatmap"].numpy()[..., :-1], labels["mask"].numpy()
        err += float((mask * (heat - truth) ** 2).sum())
        base += float((mask * truth**2).sum())
    assert err < 0.85 * base  # better than predicting "no joint anywhere"


def test_bfloat16_training_computes_in_bfloat16_and_saves_the_float32_twin(converted, synth_dir, tmp_path):
    """The hidden layers train in bfloat16 (the outputs and the loss in float32); the saved model
    holds exactly the checkpoint's weights and computes in float32 only."""
    import tensorflow as tf

    from bpnet.train import initial_model

    spec = load_spec(write_train_spec(tmp_path / "t.yaml", synth_dir, converted, num_epoch=1,
                                      compute_dtype="bfloat16"), TrainSpec)
    trained = initial_model(spec, None)
    hidden = {layer.dtype_policy.compute_dtype for layer in trained.layers if layer.name.startswith("block1_conv")}
    assert hidden == {"bfloat16"} and {o.dtype for o in trained.outputs} == {"float32"}
    result = train(spec, tmp_path / "run", key="k")
    assert np.isfinite(result.last_loss)
    saved = load_model(result.model_path, key="k")
    assert {layer.dtype_policy.compute_dtype for layer in saved.layers} == {"float32"}
    tf.train.Checkpoint(model=trained).restore(tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
                                               ).expect_partial()
    assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), saved.get_weights(), strict=True))


def test_a_loaded_graph_retrains_in_bfloat16_from_its_own_weights(tiny_model, converted, synth_dir, tmp_path):
    """``load_graph`` (retraining a pruned model) with ``compute_dtype: bfloat16``: the loaded
    graph computes in bfloat16 and starts from exactly the file's weights."""
    from bpnet.train import initial_model

    model_file, _ = tiny_model
    spec = load_spec(write_train_spec(tmp_path / "r.yaml", synth_dir, converted, load_graph=True,
                                      pretrained_weights=str(model_file), compute_dtype="bfloat16"), TrainSpec)
    model = initial_model(spec, "tiny")
    source = load_model(model_file, key="tiny")
    assert {layer.dtype_policy.compute_dtype for layer in model.layers if layer.name.startswith("block1_conv")} \
        == {"bfloat16"}
    assert architecture_of(model) == architecture_of(source)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), source.get_weights(), strict=True))


@pytest.mark.slow  # prunes, retrains and resumes: make test-all
def test_retraining_a_pruned_model_resumes_like_training(tiny_model, converted, synth_dir, tmp_path):
    from bpnet.prune import PruneSettings, prune_model

    model_file, _ = tiny_model
    pruned = prune_model(load_model(model_file, key="tiny"),
                           PruneSettings(pruning_threshold=0.95, pruning_granularity=2, min_num_filters=4), (64, 64))
    pruned_file = save_model(pruned.model, tmp_path / "pruned.tlt", key="tiny")
    out = tmp_path / "retrain"

    def retrain(epochs: int):
        spec = load_spec(write_train_spec(tmp_path / f"r{epochs}.yaml", synth_dir, converted, num_epoch=epochs,
                                          load_graph=True, pretrained_weights=str(pruned_file)), TrainSpec)
        return train(spec, out, key="tiny")

    retrain(1)
    result = retrain(2)  # the same results folder: continues from the epoch-1 checkpoint
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 2
    assert architecture_of(load_model(result.model_path, key="tiny")) == pruned.architecture


def test_a_full_bpnet_model_is_loaded_as_a_graph_for_retraining(converted, synth_dir, tmp_path):
    """load_graph rebuilds whatever class the model file holds (here a pruned-width BpNetModel)."""
    from bpnet.model.architecture import FULL, Architecture, default_filters
    from bpnet.model.bpnet import build_model
    from bpnet.train import initial_model

    arch = Architecture(stages=2, class_name=FULL, add_final_c128_conv=True,
                        filters=default_filters(2, False, 0.125, class_name=FULL, add_final_c128_conv=True)
                        ).with_filters({"stage2_paf_conv3": 5})
    source = build_model(arch, seed=9)
    path = save_model(source, tmp_path / "full.tlt", key="k5")
    spec = load_spec(write_train_spec(tmp_path / "r.yaml", synth_dir, converted, load_graph=True,
                                      pretrained_weights=str(path)), TrainSpec)
    model = initial_model(spec, key="k5")
    assert architecture_of(model) == arch
    assert np.array_equal(model.get_layer("stage2_paf_conv3").kernel.numpy(),
                          source.get_layer("stage2_paf_conv3").kernel.numpy())
