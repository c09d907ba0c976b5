"""The trainer: builds the model from the spec, trains it, checkpoints and resumes.

Results directory layout::

    train_spec.resolved.yaml   the spec as run (defaults filled in, paths resolved)
    checkpoints/               tf.train checkpoints (model, optimizer, epoch), max_ckpt_to_keep
    events/                    TensorBoard summaries
    bpnet_model.tlt            the final model (.keras, AES-GCM encrypted with the key)
    architecture.json          filter counts etc.; the model file also reloads without it
    train_summary.json         epochs, steps, losses, parameters, FLOPs, throughput
    learning_curve.{json,png}  mean loss per epoch and AP on a few val images (bpnet.curves)
    MANIFEST.json              sizes and sha256 of the files above, written last

Re-running the same command resumes from the latest checkpoint (model, optimizer state and epoch);
a run that already finished only re-exports its final model.

Several workers (``TF_CONFIG`` naming more than one, or ``BPNET_CLUSTER=jobset``: bpnet.cluster)
train one model under MultiWorkerMirroredStrategy. The global batch is ``batch_size`` x all
replicas (every GPU of every worker); the learning rate is the spec's, unchanged, as the guide's
multi-GPU rule has it (``batch_size`` is per GPU, the spec's rate is used as written: raise it by
hand if you scale the global batch far, e.g. linearly with it). Each worker reads whole record
shards of its own (``bpnet.data.partition``: the shard count must be a multiple of the worker
count) and makes its slice of every global batch from them, so a worker needs only its shards and
their images (a pipeline worker fetches only those). One process given
``partitions`` = n makes the same global batches an n-worker run makes (the test compares them).
Only the chief writes the results folder; the other workers write theirs into a temporary
folder that is removed when they finish, and restore from the chief's checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from bpnet.artifacts import MANIFEST_NAME, atomic_write_text, build_manifest, write_manifest
from bpnet.cluster import Cluster, cluster_from_env
from bpnet.curves import CURVE_JSON, CURVE_PNG, LearningCurve, ValScorer
from bpnet.data.convert import verified_shards
from bpnet.data.loader import bad_record_error, build_dataset, record_paths
from bpnet.data.partition import worker_shards
from bpnet.errors import DataError, ModelError, SpecError, StepError
from bpnet.layout import ARCHITECTURE_FILE, MODEL_FILE, TRAIN_SPEC_FILE, TRAIN_SUMMARY_FILE
from bpnet.model.architecture import Architecture, default_filters
from bpnet.model.bpnet import Regularization, build_model, count_flops, count_params, split_outputs
from bpnet.model.exported import HEAT_NAME
from bpnet.model.io import architecture_of, latest_readable_checkpoint, load_weights_by_name, open_model, save_model
from bpnet.model.loss import stage_losses, total_loss
from bpnet.model.optimizer import layer_rates, make_optimizer
from bpnet.pose import Skeleton
from bpnet.specs.loader import write_resolved_spec
from bpnet.specs.train import TrainSpec

log = logging.getLogger(__name__)



class TrainingDiverged(ModelError, RuntimeError):
    """The loss or the weights became inf/NaN; the message names the step, the rate and what to try."""


def nonfinite_variables(model: keras.Model) -> list[str]:
    """Paths of the model's variables holding inf/NaN: such weights must never be checkpointed."""
    return [v.path for v in model.variables if not np.isfinite(keras.ops.convert_to_numpy(v)).all()]


class WorkerLost(StepError, RuntimeError):
    """Multi-worker training lost a peer; the message names this worker and the checkpoint kept."""


# what a collective raises when a peer is gone (MultiWorkerMirroredStrategy's health check aborts it)
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
               tf.errors.AbortedError)


@dataclass
class TrainResult:
    results_dir: str
    model_path: str
    epochs: int
    steps: int
    steps_per_epoch: int
    first_loss: float | None
    last_loss: float | None
    parameters: int
    gflops_per_image: float
    images_per_second: float | None
    resumed_from_epoch: int


def spec_architecture(spec: TrainSpec, skeleton: Skeleton | None = None) -> Architecture:
    """The spec's model for ``skeleton`` (default: the spec's pose config): its heads follow it."""
    m = spec.model
    skeleton = skeleton or spec.skeleton
    return Architecture(
        stages=m.stages, heat_channels=skeleton.heat_channels, paf_channels=skeleton.paf_channels,
        use_self_attention=m.use_self_attention, use_bias=m.use_bias,
        backbone_use_bias=m.backbone_attributes.use_bias, class_name=m.class_name,
        add_final_c128_conv=m.backbone_attributes.add_final_c128_conv,
        filters=default_filters(m.stages, m.use_self_attention, m.width_multiplier, class_name=m.class_name,
                                add_final_c128_conv=m.backbone_attributes.add_final_c128_conv))


def spec_regularization(spec: TrainSpec) -> Regularization:
    """Off when retraining a loaded graph (the guide); otherwise as the model section says."""
    if not spec.regularization_enabled:
        return Regularization()
    m = spec.model
    return Regularization(m.regularization_type, m.kernel_regularization_factor, m.bias_regularization_factor)


def initial_model(spec: TrainSpec, key: str | None) -> keras.Model:
    """Build the model the spec describes, with pretrained weights or a loaded (pruned) graph."""
    reg = spec_regularization(spec)
    if spec.load_graph:
        if not spec.pretrained_weights:
            raise SpecError(["load_graph is true but pretrained_weights names no model file"])
        loaded = open_model(spec.pretrained_weights, key)
        if loaded.skeleton != spec.skeleton:
            raise ModelError(f"pretrained_weights: {spec.pretrained_weights} was trained for the skeleton "
                             f"'{loaded.skeleton.name}' ({loaded.skeleton.num_joints} joints), the pose config "
                             f"{spec.dataloader.pose_config.pose_config_path} is '{spec.skeleton.name}' "
                             f"({spec.skeleton.num_joints} joints); retrain with the model's own pose config")
        source = loaded.model
        model = build_model(architecture_of(source), reg, seed=spec.random_seed, compute_dtype=spec.compute_dtype)
        model.set_weights(source.get_weights())
        log.info("loaded graph and weights of %s (%d parameters)", spec.pretrained_weights, count_params(model))
        return model
    model = build_model(spec_architecture(spec), reg, seed=spec.random_seed, compute_dtype=spec.compute_dtype)
    if spec.pretrained_weights:
        report = load_weights_by_name(model, spec.pretrained_weights, key)
        if report.not_in_source and HEAT_NAME not in report.not_in_source and not spec.partial_pretrained_weights:
            raise ModelError(  # a bpnet model of another architecture: those layers would start from scratch
                f"pretrained_weights: {spec.pretrained_weights}: a model of another architecture: "
                f"{len(report.not_in_source)} layer(s) of the spec's model are not in it "
                f"({', '.join(report.not_in_source[:8])}{', ...' if len(report.not_in_source) > 8 else ''}) and "
                "would train from scratch; set partial_pretrained_weights: true if that is intended")
        if report.shape_mismatch:  # training on would silently start those layers from scratch
            raise ModelError(
                f"pretrained_weights: {spec.pretrained_weights}: {len(report.shape_mismatch)} layer(s) differ in "
                f"shape from the spec's model (first: {report.shape_mismatch[0]}); a pruned model is retrained "
                "with load_graph: true")
    return model


def saved_model(model: keras.Model, spec: TrainSpec) -> keras.Model:
    """The model a run saves: ``model``, or after a ``compute_dtype: bfloat16`` run its float32 twin
    with the same weights (export, inference and TensorRT take float32 graphs, and a model file
    should not compute in whatever dtype its training happened to use)."""
    if spec.compute_dtype == "float32":
        return model
    twin = build_model(architecture_of(model), spec_regularization(spec))
    twin.set_weights(model.get_weights())
    return twin


def _strategy(gpus: int, gpu_index: list[int] | None, cluster: Cluster | None) -> tf.distribute.Strategy:
    devices = tf.config.list_physical_devices("GPU")
    if gpu_index:
        bad = [i for i in gpu_index if i >= len(devices)]
        if bad:
            raise StepError(f"--gpu_index {bad}: only {len(devices)} GPU(s) present")
        devices = [devices[i] for i in gpu_index]
        tf.config.set_visible_devices(devices, "GPU")
    if gpus > 1 and len(devices) < gpus:
        raise StepError(f"--gpus {gpus}: only {len(devices)} GPU(s) present")
    if cluster:  # every visible GPU of every worker (CPU when there is none); NCCL or ring as TF picks
        if gpus > 1:
            tf.config.set_visible_devices(devices[:gpus], "GPU")
        log.info("worker %d of %d (%s)", cluster.rank, cluster.size, "chief" if cluster.is_chief else "not chief")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if gpus > 1:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(gpus)])
    return tf.distribute.get_strategy()


def _synchronize_batch_norm(model: keras.Model, on: bool) -> None:
    """Batch-norm statistics over the global batch (all workers), as one process would compute them;
    without it each worker normalizes by its own slice and keeps its own moving statistics."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = on


class Trainer:
    """``results_dir`` is where this process writes; ``checkpoints`` where it resumes from (the
    chief's checkpoint folder; by default its own)."""

    def __init__(self, spec: TrainSpec, results_dir: str | Path, key: str, gpus: int = 1,
                 gpu_index: list[int] | None = None, cluster: Cluster | None = None,
                 checkpoints: Path | None = None, partitions: int = 1):
        self.spec, self.key, self.cluster = spec, key, cluster
        self.partitions = cluster.size if cluster else partitions
        self.results = Path(results_dir)
        self.checkpoints = checkpoints or self.results / "checkpoints"
        self.strategy = _strategy(gpus, gpu_index, cluster)
        self.replicas = self.strategy.num_replicas_in_sync
        self.global_batch = spec.dataloader.batch_size * self.replicas  # batch_size is per GPU (guide)
        self.skeleton = spec.skeleton
        self.paths = record_paths(spec)
        read = worker_shards(self.paths, self.partitions)[cluster.rank] if cluster else self.paths
        self.num_samples = verified_shards(self.paths, self.skeleton, read)
        if self.num_samples < self.global_batch:
            raise DataError(f"{self.num_samples} training samples < one batch of {self.global_batch}")
        self.steps_per_epoch = self.num_samples // self.global_batch
        self.total_steps = self.steps_per_epoch * spec.num_epoch
        with self.strategy.scope():
            self.model = initial_model(spec, key)
            self.optimizer = make_optimizer(spec.optimizer, self.total_steps, self.steps_per_epoch,
                                            layer_rates(self.model, spec.optimizer, spec.use_stagewise_lr_multipliers))
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        _synchronize_batch_norm(self.model, bool(cluster))
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.results / "checkpoints"),
                                                  max_to_keep=spec.max_ckpt_to_keep, checkpoint_name="ckpt")
        self.last_good: str | None = None  # the checkpoint a divergence falls back to

    def _restore(self) -> int:
        """Resume from the latest checkpoint, else fine-tune start point; returns the start epoch."""
        latest = self.last_good = latest_readable_checkpoint(self.checkpoints)
        if latest:
            self.checkpoint.restore(latest).expect_partial()
            log.info("resuming from %s (epoch %d)", latest, int(self.epoch.numpy()))
            return self._agreed(int(self.epoch.numpy()))
        ft = self.spec.finetuning_config
        if ft.is_finetune_exp:
            if not ft.checkpoint_path:
                raise SpecError(["finetuning_config.is_finetune_exp is true but checkpoint_path is null"])
            path = Path(ft.checkpoint_path)
            prefix = (str(path / "checkpoints" / f"ckpt-{ft.ckpt_epoch_num}") if ft.ckpt_epoch_num
                      else tf.train.latest_checkpoint(str(path / "checkpoints") if (path / "checkpoints").is_dir()
                                                      else str(path))) if path.is_dir() else str(path)
            if not prefix:
                raise SpecError([f"finetuning_config.checkpoint_path: no checkpoint found in {path}"])
            tf.train.Checkpoint(model=self.model).restore(prefix).expect_partial()
            log.info("fine-tuning from %s", prefix)
        return self._agreed(0)

    def _agreed(self, epoch: int) -> int:
        """``epoch``, once every worker is known to resume from it: a worker that cannot see the
        chief's checkpoints would otherwise train other weights in lockstep (sum and sum of squares
        over the replicas: all equal iff n * sum(e^2) == sum(e)^2)."""
        if not self.cluster:
            return epoch
        per_replica = self.strategy.run(lambda: tf.constant([epoch, epoch * epoch], tf.int64))
        total, squares = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
        if self.replicas * squares != total * total:
            raise StepError(
                f"worker {self.cluster.rank} resumes at epoch {epoch}, the workers' mean is {total / self.replicas:g}: "
                f"every worker must read the chief's checkpoint folder {self.checkpoints}")
        return epoch

    def _step_fn(self):
        stages = len(self.model.outputs) // 2
        variables = self.model.trainable_variables
        focal = self.spec.loss.focal

        def step(images, labels):
            with tf.GradientTape() as tape:
                heats, pafs = split_outputs(self.model(images, training=True), stages)
                heat_l, paf_l = stage_losses(heats, pafs, labels["heatmap"], labels["paf"], labels["mask"],
                                             self.global_batch, focal)
                loss = total_loss(heat_l, paf_l)
                reg = tf.add_n(self.model.losses) / self.replicas if self.model.losses else tf.constant(0.0)
                objective = loss + reg
            grads = tape.gradient(objective, variables)
            self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables, strict=True) if g is not None])
            return objective, reg, tf.stack(heat_l), tf.stack(paf_l)

        @tf.function
        def distributed(images, labels):
            out = self.strategy.run(step, args=(images, labels))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in out]

        return distributed

    def run(self) -> TrainResult:
        spec = self.spec
        start = self._restore()
        arch = architecture_of(self.model)
        dims = spec.dataloader.image_config.image_dims
        flops = count_flops(arch, dims.height, dims.width)
        log.info("model: %d parameters, %.2f GFLOPs per %dx%d image; %d samples, %d steps/epoch, batch %d x %d",
                 count_params(self.model), flops / 1e9, dims.height, dims.width, self.num_samples,
                 self.steps_per_epoch, spec.dataloader.batch_size, self.replicas)
        first = last = None
        rate = None
        if start < spec.num_epoch:
            try:
                first, last, rate = self._epochs(start)
            except PEER_ERRORS as exc:
                raise self._peer_lost(exc) from None
        model_path = self.results / MODEL_FILE
        _synchronize_batch_norm(self.model, False)  # the saved model is the one a single process makes
        save_model(saved_model(self.model, spec), model_path, self.key, self.skeleton)
        atomic_write_text(self.results / ARCHITECTURE_FILE, arch.to_json() + "\n")
        result = TrainResult(str(self.results), str(model_path), spec.num_epoch,
                             self._iterations(), self.steps_per_epoch, first, last,
                             count_params(self.model), flops / 1e9, rate, start)
        atomic_write_text(self.results / TRAIN_SUMMARY_FILE, json.dumps(asdict(result), indent=2) + "\n")
        names = [MODEL_FILE, ARCHITECTURE_FILE, TRAIN_SPEC_FILE, TRAIN_SUMMARY_FILE,
                 *(n for n in (CURVE_JSON, CURVE_PNG) if (self.results / n).is_file())]
        write_manifest(self.results / MANIFEST_NAME, build_manifest(self.results, names))
        return result

    def _epochs(self, start: int) -> tuple[float, float, float]:
        spec = self.spec
        offset = start * self.steps_per_epoch * self.global_batch
        batches = iter(self._distributed_dataset(offset))
        step_fn = self._step_fn()
        writer = tf.summary.create_file_writer(str(self.results / "events"))
        curve = LearningCurve(spec, self.results, start, ValScorer.from_train_spec(spec))
        first = last = None
        last_log = time.monotonic()
        t0, images = time.monotonic(), 0
        for epoch in range(start + 1, spec.num_epoch + 1):
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}/{spec.num_epoch}", unit="step",
                       leave=False, disable=None)
            epoch_loss = 0.0
            for _ in bar:
                try:
                    images_batch, labels = next(batches)
                except PEER_ERRORS:
                    raise
                except tf.errors.OpError as exc:  # raised in the input pipeline's map function
                    raise bad_record_error(exc) from None
                lr = float(self.optimizer.learning_rate)  # the rate this step uses
                objective, reg, heat_l, paf_l = step_fn(images_batch, labels)
                loss = float(objective)
                step = self._iterations()
                if not math.isfinite(loss):
                    raise self._diverged(f"the loss became {loss}", step, epoch, lr)
                first = loss if first is None else first
                last = loss
                epoch_loss += loss
                images += self.global_batch
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}")
                if spec.summary_every_n_steps and step % spec.summary_every_n_steps == 0:
                    self._summaries(writer, step, loss, float(reg), heat_l.numpy(), paf_l.numpy(), lr)
                if spec.infrequent_summary_every_n_steps and step % spec.infrequent_summary_every_n_steps == 0:
                    self._image_summary(writer, step, images_batch, labels)
                if time.monotonic() - last_log >= spec.log_every_n_secs:
                    last_log = time.monotonic()
                    log.info("epoch %d step %d loss %.5g lr %.3g %.1f images/s", epoch, step, loss, lr,
                             images / (time.monotonic() - t0))
            self.epoch.assign(epoch)
            bad = nonfinite_variables(self.model)
            if bad:  # a finite loss can still come with inf/NaN gradients on the epoch's last step
                raise self._diverged(f"{len(bad)} weight(s) became inf/NaN (first: {bad[0]})",
                                     self._iterations(), epoch, lr)
            scoring = time.monotonic()
            curve.end_epoch(self.model, epoch, self._iterations(), epoch_loss / self.steps_per_epoch,
                            writer)
            t0 += time.monotonic() - scoring  # images/s is of training alone
            if epoch % spec.checkpoint_n_epoch == 0 or epoch == spec.num_epoch:
                saved = self.last_good = self.manager.save(checkpoint_number=epoch)
                log.info("epoch %d done, loss %.5g; checkpoint %s", epoch, last, saved)
        writer.flush()
        return first, last, images / max(time.monotonic() - t0, 1e-9)

    def _distributed_dataset(self, offset: int):
        """Batches for this process's replicas; with several workers each makes its slice of every
        global batch from its own shards (bpnet.data.loader.build_dataset's ``part``)."""
        if not self.cluster:
            dataset = build_dataset(self.spec, self.paths, self.global_batch, training=True, counter_offset=offset,
                                    partitions=self.partitions)
            return self.strategy.experimental_distribute_dataset(dataset)
        cluster = self.cluster

        def worker_dataset(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            if (ctx.input_pipeline_id, ctx.num_input_pipelines) != (cluster.rank, cluster.size):
                raise DataError(f"worker {cluster.rank} of {cluster.size} was given input pipeline "
                                f"{ctx.input_pipeline_id} of {ctx.num_input_pipelines}: it holds the shards of "
                                f"partition {cluster.rank} only")
            return build_dataset(self.spec, self.paths, self.global_batch, training=True, counter_offset=offset,
                                 partitions=cluster.size, part=cluster.rank,
                                 replica_batch=ctx.get_per_replica_batch_size(self.global_batch))

        return self.strategy.distribute_datasets_from_function(worker_dataset)

    def _iterations(self) -> int:
        """Steps taken (``int()`` of a distributed variable fails; its local value is the same on every replica)."""
        return int(keras.ops.convert_to_numpy(self.optimizer.iterations))

    def _peer_lost(self, exc: tf.errors.OpError) -> Exception:
        """A collective failed: with several workers that means a peer died or is unreachable."""
        if not self.cluster:
            return exc
        kept = self.last_good or "none yet"
        first = (exc.message or type(exc).__name__).strip().splitlines()[0][:300]
        return WorkerLost(
            f"worker {self.cluster.rank} of {self.cluster.size}: the collective all-reduce failed, a worker died or "
            f"became unreachable ({type(exc).__name__}: {first}); the job fails, and a rerun resumes from the "
            f"chief's last checkpoint ({kept})")

    def _diverged(self, what: str, step: int, epoch: int, lr: float) -> TrainingDiverged:
        kept = self.last_good
        return TrainingDiverged(
            f"training diverged at step {step} (epoch {epoch}): {what} at learning rate {lr:.3g}; "
            f"{'the last good checkpoint ' + kept + ' is kept' if kept else 'no checkpoint was written'}"
            ". Try a lower optimizer.learning_rate_schedule.base_learning_rate, a longer soft_start or more "
            "epochs, a larger batch_size; rerunning resumes from the last good checkpoint")

    @staticmethod
    def _summaries(writer, step: int, loss: float, reg: float, heat: np.ndarray, paf: np.ndarray, lr: float) -> None:
        with writer.as_default(step=step):
            tf.summary.scalar("loss/total", loss)
            tf.summary.scalar("loss/regularization", reg)
            tf.summary.scalar("learning_rate", lr)
            for k, (h, p) in enumerate(zip(heat, paf, strict=True), start=1):
                tf.summary.scalar(f"loss/stage{k}_heatmap", h)
                tf.summary.scalar(f"loss/stage{k}_paf", p)

    def _image_summary(self, writer, step: int, images, labels) -> None:
        local = self.strategy.experimental_local_results
        image = local(images)[0][:1]
        heat = local(labels["heatmap"])[0][:1, ..., :-1]
        norm = self.spec.dataloader.normalization_params
        with writer.as_default(step=step):
            tf.summary.image("input", tf.clip_by_value((image + norm.image_offset) * norm.image_scale / 255.0, 0, 1))
            tf.summary.image("heatmap_label", tf.reduce_max(heat, axis=-1, keepdims=True))


def train(spec: TrainSpec, results_dir: str | Path, key: str, gpus: int = 1,
          gpu_index: list[int] | None = None, partitions: int = 1) -> TrainResult:
    """Train (or resume) as the spec says; writes everything under ``results_dir``.

    A worker of a multi-worker cluster that is not the chief writes into a temporary folder
    (removed when it returns) and resumes from ``results_dir``'s checkpoints, the chief's.
    ``partitions`` (one process only; a cluster has one per worker) makes the global batches an
    n-worker run would make, to compare a multi-worker run with one process."""
    cluster = cluster_from_env()
    if cluster and not cluster.is_chief:
        with tempfile.TemporaryDirectory(prefix=f"bpnet-worker{cluster.rank}-") as scratch:
            result = _train_into(spec, Path(scratch), key, gpus, gpu_index, cluster,
                                 Path(results_dir) / "checkpoints")
        log.info("worker %d: done; its outputs were temporary, the chief wrote %s", cluster.rank, results_dir)
        return result
    return _train_into(spec, Path(results_dir), key, gpus, gpu_index, cluster, None, partitions)


def _train_into(spec: TrainSpec, results: Path, key: str, gpus: int, gpu_index: list[int] | None,
                cluster: Cluster | None, checkpoints: Path | None, partitions: int = 1) -> TrainResult:
    results.mkdir(parents=True, exist_ok=True)
    (results / MANIFEST_NAME).unlink(missing_ok=True)  # the results are unfinished until it returns
    keras.utils.set_random_seed(spec.random_seed)
    # Same machine, same spec: the same model (and AP) run after run. The op-level nondeterminism of
    # parallel reductions is what otherwise varies; a machine with other cores or CPU features still
    # rounds differently.
    tf.config.experimental.enable_op_determinism()
    write_resolved_spec(spec, results / TRAIN_SPEC_FILE)
    surprise = spec.dataloader.augmentation_config.spatial_aug_params.rotation_surprise
    if surprise:
        log.warning("%s", surprise)
    return Trainer(spec, results, key, gpus, gpu_index, cluster, checkpoints, partitions).run()
