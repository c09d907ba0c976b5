"""Issue 26, section 3: each step moves only what it needs. Calibration gets a small artifact of
the images it reads; a training worker fetches its own record shards and their images from the
train artifact's object-store URI (a real S3-protocol server: moto on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpnet.artifacts import ArtifactError, read_manifest
from bpnet.deploy.calibration import calibration_candidates
from bpnet.errors import DataError
from bpnet.layout import CALIBRATION_IMAGES_DIR, DATASET_SPEC, RAW_DIR, RECORDS_DIR
from bpnet.storage import S3Store, open_store
from components import runtime
from components.worker_data import RECORDS_MANIFEST, fetch_train_share, train_share

CAL = {"cal_batches": 2, "cal_batch_size": 3}  # 6 images


@pytest.fixture
def s3(moto_server, monkeypatch) -> str:
    """A bucket on the moto server, the MinIO settings in the environment as a step's pod has them."""
    for name, value in {"BPNET_S3_ENDPOINT": f"http://{moto_server.endpoint}", "BPNET_S3_ACCESS_KEY": "testing",
                        "BPNET_S3_SECRET_KEY": "testing", "BPNET_MODEL_KEY": "tiny"}.items():
        monkeypatch.setenv(name, value)
    S3Store("s3://data").client.make_bucket("data")
    return "s3://data"


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every object the S3 client downloads, by key."""
    seen: list[str] = []
    original = S3Store.download_file

    def counted(self: S3Store, relative: str, local: Path) -> None:
        seen.append(self.key(relative))
        original(self, relative, local)

    monkeypatch.setattr(S3Store, "download_file", counted)
    return seen


def test_calibration_artifact_holds_exactly_the_images_calibration_takes(s3, synth_dir, tmp_path, downloads):
    raw = tmp_path / "raw"
    shutil.copytree(synth_dir, raw)
    first = calibration_candidates(p.name for p in (raw / "train2017").iterdir())[0]
    (raw / "train2017" / first).write_bytes(b"not a jpeg")  # skipped, as calibration skips it
    open_store(f"{s3}/raw").upload_tree(raw)
    downloads.clear()

    figures = runtime.calibration_data(f"{s3}/raw", (raw / "coco_spec.json").read_text(), json.dumps(CAL),
                                       str(tmp_path / "cal"))

    names = calibration_candidates(p.name for p in (raw / "train2017").iterdir())
    expected = names[1:7]  # the first six readable ones, by name
    assert sorted(p.name for p in (tmp_path / "cal" / CALIBRATION_IMAGES_DIR).iterdir()) == expected
    assert downloads == [f"raw/train2017/{n}" for n in names[:7]]  # nothing else was fetched
    assert figures["images"] == 6 and len(names) > 7
    manifest = json.loads((tmp_path / "cal" / "MANIFEST.json").read_text())
    assert [e["path"] for e in manifest["files"]] == [f"{CALIBRATION_IMAGES_DIR}/{n}" for n in expected]


def test_too_few_calibration_images_is_a_clear_error(s3, synth_dir, tmp_path):
    open_store(f"{s3}/raw").upload_tree(synth_dir)
    settings = json.dumps({"cal_batches": 100, "cal_batch_size": 2})
    with pytest.raises(DataError, match=r"raw/train2017: 24 usable .*cal_batches x cal_batch_size = 200 are needed"):
        runtime.calibration_data(f"{s3}/raw", (synth_dir / "coco_spec.json").read_text(), settings,
                                 str(tmp_path / "cal"))
    assert not (tmp_path / "cal" / "MANIFEST.json").exists()


def test_calibrate_works_from_the_calibration_artifact(tiny_model, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    settings = json.dumps({"input_shape": [64, 96], **CAL})
    runtime.calibration_data(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), settings,
                             str(tmp_path / "cal"))
    runtime.export(str(tiny_model[0].parent), settings, str(tmp_path / "exported"))
    figures = runtime.calibrate(str(tmp_path / "exported"), str(tmp_path / "cal"), settings, str(tmp_path / "int8"))
    assert figures["cal_images"] == 6 and (tmp_path / "int8" / "calibration.bin").is_file()

    (tmp_path / "cal" / CALIBRATION_IMAGES_DIR / sorted((tmp_path / "cal" / CALIBRATION_IMAGES_DIR).iterdir())[0]
     .name).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="checksum mismatch with the manifest"):
        runtime.calibrate(str(tmp_path / "exported"), str(tmp_path / "cal"), settings, str(tmp_path / "int8b"))


@pytest.fixture(scope="module")
def four_shards(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session dataset as the pipeline's train Dataset folder, in four record shards."""
    out = tmp_path_factory.mktemp("four-shards")
    runtime.dataset_convert(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), out / "train_data",
                            out / "val_data", True, 4)
    return out / "train_data"


def _records(folder: Path, shards: list[str]) -> list[bytes]:
    import tensorflow as tf

    return [r.numpy() for shard in shards for r in tf.data.TFRecordDataset(str(folder / RECORDS_DIR / shard))]


@pytest.mark.parametrize("workers", [2, 4])
def test_each_worker_fetches_exactly_its_shards_and_their_images(s3, four_shards, tmp_path, downloads, workers):
    from bpnet.data.records import decode
    open_store(f"{s3}/run/train_data").upload_tree(four_shards)
    everything = _records(four_shards, read_manifest(four_shards / RECORDS_MANIFEST)["metadata"]["summary"]["shards"])
    seen: list[bytes] = []
    for rank in range(workers):
        downloads.clear()
        dest = tmp_path / f"w{rank}"
        share = fetch_train_share("minio://data/run/train_data", dest, rank, workers)
        assert len(share.shards) == 4 // workers
        mine = _records(dest, share.shards)
        named = {f for r in map(decode, mine) for f in (r.filename, r.mask_filename) if f}
        expected = {DATASET_SPEC, RECORDS_MANIFEST, *(f"{RECORDS_DIR}/{s}" for s in share.shards),
                    *(f"{RAW_DIR}/{f}" for f in named)}
        assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == expected
        assert sorted(downloads) == sorted(f"run/train_data/{e}" for e in expected)  # nothing else moved
        assert set(share.files) == named and share.samples == len(mine)
        seen += mine
    assert sorted(seen) == sorted(everything)  # every sample exactly once across the workers


@pytest.mark.parametrize(("workers", "message"), [
    (3, "num_shards: 4 record shards cannot be split evenly among 3 workers (each reads whole shards of its own): "
        "convert with num_shards a multiple of 3"),
    (8, "num_shards: 4 record shards cannot be split evenly among 8 workers"),
])
def test_shards_that_do_not_divide_among_the_workers_are_one_clear_error(s3, four_shards, tmp_path, workers,
                                                                         message):
    open_store(f"{s3}/run/train_data").upload_tree(four_shards)
    from components.distributed import JobTemplate

    job = JobTemplate("trainjob", "img", workers).to_json()
    uri = "minio://data/run/train_data"
    for attempt in (lambda: train_share(uri, 0, workers),
                    lambda: fetch_train_share(uri, tmp_path / "w", 0, workers),
                    lambda: runtime.train_on_workers(job, "run-1", "train", tmp_path / "model",  # before any job:
                                                     "minio://data/run/model", uri, "", "", "", 0)):  # no API server
        with pytest.raises(DataError) as raised:
            attempt()
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not list((tmp_path / "w").rglob("*-fold-*"))  # no shard was fetched


def test_one_process_makes_the_global_batches_of_n_workers(four_shards, synth_dir, tmp_path):
    """Worker i's input (its own shards only) is slice i of every global batch one process makes
    with the same partitions: the same samples, the same augmentation, the same labels."""
    import numpy as np

    from bpnet.data.loader import build_dataset
    from bpnet.specs import TrainSpec, load_spec
    from tests.conftest import write_train_spec

    shards = read_manifest(four_shards / RECORDS_MANIFEST)["metadata"]["summary"]["shards"]
    paths = [four_shards / RECORDS_DIR / s for s in shards]
    spec = load_spec(write_train_spec(tmp_path / "t.yaml", synth_dir, four_shards / RECORDS_DIR, **{
        "dataloader.dataset_config.root_data_path": str(four_shards / RAW_DIR)}), TrainSpec)

    def batches(**part) -> list:
        return list(build_dataset(spec, paths, 4, counter_offset=8, partitions=2, **part).take(2))

    whole, first, second = batches(), batches(part=0), batches(part=1)
    for (images, labels), (a, la), (b, lb) in zip(whole, first, second, strict=True):
        assert np.array_equal(images.numpy(), np.concatenate([a.numpy(), b.numpy()]))
        assert np.array_equal(labels["paf"].numpy(), np.concatenate([la["paf"].numpy(), lb["paf"].numpy()]))
    with pytest.raises(DataError, match="num_shards: 4 record shards cannot be split evenly among 3 workers"):
        build_dataset(spec, paths, 6, partitions=3)
