"""Multi-worker scaling on CPU: samples/s of the demo model's training step with 1 and 2 worker
processes on 127.0.0.1 (one core each: pinned with sched_setaffinity, one TensorFlow thread),
the scaling efficiency (2-worker rate / twice the 1-worker rate) and the time per step spent in the
all-reduce (the collective alone, on tensors shaped like the model's gradients, over the same
gRPC ring as training).

Each worker trains the demo model (specs/demo/bpnet_train_demo.yaml: its architecture, input size,
per-replica batch and optimizer) under MultiWorkerMirroredStrategy; inputs are random tensors (the
input pipeline has its own benchmark). Run it on an idle machine with at least two cores: another
process on the same cores lowers every figure.

    python benchmarks/distributed.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "demo" / "bpnet_train_demo.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(index: int, workers: int, steps: int) -> dict:
    """One process: train ``steps`` timed steps (after 3 warm-up steps); time the all-reduce alone."""
    import tensorflow as tf

    from bpnet.model.bpnet import build_model, split_outputs
    from bpnet.model.loss import stage_losses, total_loss
    from bpnet.model.optimizer import layer_rates, make_optimizer
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.train import spec_architecture

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()
    spec = load_spec(SPEC, TrainSpec)
    arch, dims, batch = spec_architecture(spec), spec.dataloader.image_config.image_dims, spec.dataloader.batch_size
    th, tw = dims.height // 8, dims.width // 8
    global_batch = batch * workers
    with strategy.scope():
        model = build_model(arch, seed=1)
        opt = make_optimizer(spec.optimizer, 1000, 100, layer_rates(model, spec.optimizer,
                                                                    spec.use_stagewise_lr_multipliers))
    images = tf.random.uniform([batch, dims.height, dims.width, 3])
    heat, paf = tf.zeros([batch, th, tw, arch.heat_channels]), tf.zeros([batch, th, tw, arch.paf_channels])
    mask = tf.ones([batch, th, tw, 1])

    def replica_step():
        with tf.GradientTape() as tape:
            h, p = split_outputs(model(images, training=True), arch.stages)
            loss = total_loss(*stage_losses(h, p, heat, paf, mask, global_batch))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                strict=True))
        return loss

    def replica_all_reduce():
        grads = [tf.ones_like(v) for v in model.trainable_variables]
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)[0][0]

    step = tf.function(lambda: strategy.run(replica_step))
    reduce = tf.function(lambda: strategy.run(replica_all_reduce))

    def timed(fn, n: int) -> float:
        for _ in range(3):
            strategy.experimental_local_results(fn())[0].numpy()
        t0 = time.perf_counter()
        for _ in range(n):
            strategy.experimental_local_results(fn())[0].numpy()
        return (time.perf_counter() - t0) / n

    step_s = timed(step, steps)
    reduce_s = timed(reduce, steps) if workers > 1 else 0.0
    parameters = int(sum(v.shape.num_elements() for v in model.trainable_variables))
    return {"worker": index, "step_s": step_s, "all_reduce_s": reduce_s, "samples_per_s": global_batch / step_s,
            "global_batch": global_batch, "parameters": parameters}


def run(workers: int, steps: int) -> list[dict]:
    ports = [free_port() for _ in range(workers)]
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for i in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        env.pop("TF_CONFIG", None)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": i}})
        core = cores[i % len(cores)]
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", str(i), "--workers", str(workers), "--steps", str(steps)],
            env=env, stdout=subprocess.PIPE, text=True, preexec_fn=lambda c=core: os.sched_setaffinity(0, {c})))
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=1800)
        if p.returncode:
            raise SystemExit(f"worker failed (exit {p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.workers, args.steps)))
        return
    cores = len(os.sched_getaffinity(0))
    print(f"demo model ({SPEC.relative_to(REPO)}), {args.steps} timed steps, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    one = run(1, args.steps)[0]
    print(f"1 worker : {one['samples_per_s']:7.2f} samples/s  ({one['step_s'] * 1e3:.0f} ms/step, "
          f"batch {one['global_batch']}, {one['parameters']:,} parameters)")
    two = run(2, args.steps)
    rate = min(w["samples_per_s"] for w in two)  # the workers step together: the slower one sets the pace
    step, reduce = max(w["step_s"] for w in two), max(w["all_reduce_s"] for w in two)
    print(f"2 workers: {rate:7.2f} samples/s  ({step * 1e3:.0f} ms/step, global batch {two[0]['global_batch']})")
    print(f"scaling efficiency: {rate / (2 * one['samples_per_s']):.0%}  (2-worker rate / 2 x 1-worker rate)")
    print(f"all-reduce: {reduce * 1e3:.1f} ms per step ({reduce / step:.0%} of a 2-worker step), "
          f"{one['parameters'] * 4 / 1e6:.1f} MB of float32 gradients")


if __name__ == "__main__":
    main()
