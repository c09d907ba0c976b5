"""Images/s of one training step and the FLOP rate it achieves.

The achieved rate (3 x forward FLOPs per image: forward + backward, times images/s) is printed
as a fraction of this machine's float32 matrix-multiply rate measured in the same process, for
the CPU demo model and for the published m1 model, each at its spec's input size and batch size
(specs/demo/bpnet_train_demo.yaml, specs/bpnet_train_m1_coco.yaml) and with the spec's optimizer
(Adam for the demo, momentum SGD for m1), so that the demo's training budget can be read off:
`make run` trains and retrains about ``num_epoch x samples`` images each.
Each step is timed in float32 and with ``compute_dtype: bfloat16`` (mixed precision), in wall and
in CPU time, with their ratio: bfloat16 pays where the CPU has AVX512_BF16 or AMX.
Only the network step is timed (inputs are random tensors; the input pipeline has its own
benchmark). Run it on an idle machine: other processes on the same cores lower both figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tensorflow as tf  # noqa: E402

from bpnet.model.bpnet import build_model, count_flops, split_outputs  # noqa: E402
from bpnet.model.loss import stage_losses, total_loss  # noqa: E402
from bpnet.model.optimizer import layer_rates, make_optimizer  # noqa: E402
from bpnet.specs import TrainSpec, load_spec  # noqa: E402
from bpnet.specs.loader import default_path_context  # noqa: E402
from bpnet.train import spec_architecture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECS = {"demo": "specs/demo/bpnet_train_demo.yaml", "m1": "specs/bpnet_train_m1_coco.yaml"}
# the m1 spec names the guide's pose config path: the repository's copy stands in for it
POSE_CONFIGS = f"/workspace/examples/bpnet/model_pose_config={REPO / 'specs'}"


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f().numpy()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step_rate(spec: TrainSpec, steps: int, compute_dtype: str = "float32") -> tuple[float, float, float]:
    """(images/s, achieved FLOP/s, CPU seconds per image) of the spec's train step: its model, input
    size, batch size and optimizer (with its per-layer rates), computing in ``compute_dtype``."""
    arch, dims, batch = spec_architecture(spec), spec.dataloader.image_config.image_dims, spec.dataloader.batch_size
    height, width = dims.height, dims.width
    model = build_model(arch, compute_dtype=compute_dtype)
    rates = layer_rates(model, spec.optimizer, spec.use_stagewise_lr_multipliers)
    opt = make_optimizer(spec.optimizer, 1000, 100, rates)
    images = tf.random.uniform([batch, height, width, 3])
    th, tw = height // 8, width // 8
    heat, paf = tf.zeros([batch, th, tw, arch.heat_channels]), tf.zeros([batch, th, tw, arch.paf_channels])
    mask = tf.ones([batch, th, tw, 1])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            h, p = split_outputs(model(images, training=True), arch.stages)
            loss = total_loss(*stage_losses(h, p, heat, paf, mask, batch))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
        return loss

    step().numpy()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step().numpy()
    ips = batch * steps / (time.perf_counter() - t0)
    return ips, 3 * count_flops(arch, height, width) * ips, (time.process_time() - cpu0) / (batch * steps)


def main() -> None:
    peak = matmul_rate()
    print(f"float32 matmul rate: {peak / 1e9:.1f} GFLOP/s")
    for name, path in SPECS.items():
        spec = load_spec(REPO / path, TrainSpec, default_path_context(REPO / path, path_map=[POSE_CONFIGS]))
        m, dims, batch = spec.model, spec.dataloader.image_config.image_dims, spec.dataloader.batch_size
        steps = 10 if name == "demo" else 3
        ips, flops, cpu = step_rate(spec, steps)
        print(f"train step {name} ({m.stages} stages, width {m.width_multiplier:g}, {dims.height}x{dims.width}, "
              f"batch {batch}, {spec.optimizer.class_name}): {ips:.1f} images/s, {flops / 1e9:.1f} GFLOP/s = "
              f"{flops / peak:.2f} of matmul rate, {cpu * 1e3:.0f} CPU-ms/image")
        bf_ips, _, bf_cpu = step_rate(spec, steps, "bfloat16")
        print(f"  compute_dtype bfloat16: {bf_ips:.1f} images/s ({bf_ips / ips:.2f}x), {bf_cpu * 1e3:.0f} CPU-ms/image "
              f"({cpu / bf_cpu:.2f}x less CPU)")


if __name__ == "__main__":
    main()
