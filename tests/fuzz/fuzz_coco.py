"""Fuzz the COCO reader: random byte and structure mutations of the real annotations in
tests/data/real_images fed to ``load_coco`` and, when it finds nothing wrong, to dataset_convert.

Anything but a clean result or located problems (``ConvertError``) is a bug: the input that
raised it is written to ``fuzz-coco-crash-<n>.json`` and the exception re-raised.

    python -m tests.fuzz.fuzz_coco [seconds]      # default 60
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from bpnet.data.coco import load_coco
from bpnet.data.convert import ConvertError, ConvertSettings, convert_dataset
from bpnet.specs import DatasetSpec
from tests.test_coco_props import BASE, REAL, SPEC

SEED_BYTES = json.dumps(BASE).encode()
INTERESTING = [b"NaN", b"Infinity", b"-1", b"0", b"1e309", b"null", b"true", b'"x"', b"[]", b"{}",
               b"99999999999999999999", b'"../../etc"', b",", b"[", b"}", b'"id": 1']


def fuzz_one(data: bytes) -> None:
    """One input: the annotation file's bytes. Raises only on a bug."""
    spec = DatasetSpec.model_validate(SPEC)
    with tempfile.TemporaryDirectory(prefix="fuzz-coco-") as tmp:
        root = Path(tmp)
        (root / "images").symlink_to(REAL, target_is_directory=True)
        (root / "annotations.json").write_bytes(data)
        spec = spec.model_copy(update={"root_directory_path": str(root)})
        found = load_coco(root / "annotations.json", spec.person_category, spec.visibility_flags)
        for problem in found.problems:
            if problem.image_id is None and problem.annotation_id is None and not any(
                    marker in problem.message for marker in ("images[", "annotations[", "annotation file")):
                raise AssertionError(f"problem without a location: {problem}")
        try:
            convert_dataset(spec, root / "out" / "train", ConvertSettings(generate_masks=True))
        except ConvertError:
            if (root / "out").exists() or (root / "masks").exists():
                raise AssertionError("a failed conversion left output behind") from None


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few byte-level edits, or a value swap inside the parsed document."""
    if rng.random() < 0.5:
        doc = json.loads(SEED_BYTES)
        section = doc[rng.choice(["images", "annotations"])]
        entry = rng.choice(section)
        key = rng.choice(sorted(entry))
        entry[key] = json.loads(rng.choice(INTERESTING[:10]))
        return json.dumps(doc).encode()
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.3:
            out[pos] = rng.randrange(256)
        elif choice < 0.6:
            del out[pos:pos + rng.randint(1, 16)]
        else:
            out[pos:pos] = rng.choice(INTERESTING)
    return bytes(out)


def main(seconds: float = 60.0, seed: int = 0) -> int:
    logging.disable(logging.WARNING)  # every rejected input logs its problems
    rng = random.Random(seed)
    runs, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        data = mutate(rng, SEED_BYTES)
        try:
            fuzz_one(data)
        except Exception:
            crash = Path(f"fuzz-coco-crash-{runs}.json")
            crash.write_bytes(data)
            print(f"crash after {runs} inputs; input saved to {crash}", file=sys.stderr)
            raise
        runs += 1
    print(f"fuzz_coco: {runs} inputs in {time.monotonic() - start:.0f} s, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))
