"""Images/s of one training step and the FLOP rate it achieves.

The achieved rate (3 x forward FLOPs per image: forward + backward, times images/s) is printed
as a fraction of this machine's float32 matrix-multiply rate measured in the same process, for
the CPU demo model (specs/demo) and for the published m1 model at 256x256.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bpnet.model.architecture import Architecture, default_filters  # noqa: E402
from bpnet.model.bpnet import build_model, count_flops, split_outputs  # noqa: E402
from bpnet.model.loss import stage_losses, total_loss  # noqa: E402


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f().numpy()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step_rate(arch: Architecture, size: int, batch: int, steps: int) -> tuple[float, float]:
    model = build_model(arch)
    opt = keras.optimizers.SGD(1e-5, momentum=0.9)
    images = tf.random.uniform([batch, size, size, 3])
    t = size // 8
    heat, paf = tf.zeros([batch, t, t, 19]), tf.zeros([batch, t, t, 38])
    mask = tf.ones([batch, t, t, 1])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            h, p = split_outputs(model(images, training=True), arch.stages)
            loss = total_loss(*stage_losses(h, p, heat, paf, mask, batch))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True))
        return loss

    step().numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    ips = batch * steps / (time.perf_counter() - t0)
    return ips, 3 * count_flops(arch, size, size) * ips


def main() -> None:
    peak = matmul_rate()
    print(f"float32 matmul rate: {peak / 1e9:.1f} GFLOP/s")
    cases = [("demo (2 stages, width 0.25, 128x128)", Architecture(stages=2, filters=default_filters(2, False, 0.25)),
              128, 8, 10),
             ("m1 (3 stages, full width, 256x256)", Architecture(stages=3), 256, 2, 3)]
    for name, arch, size, batch, steps in cases:
        ips, flops = step_rate(arch, size, batch, steps)
        print(f"train step {name}: {ips:.1f} images/s, {flops / 1e9:.1f} GFLOP/s = {flops / peak:.2f} of matmul rate")


if __name__ == "__main__":
    main()
