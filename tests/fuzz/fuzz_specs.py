"""Fuzz target for the spec loader: arbitrary bytes, loaded as every kind of spec.

``fuzz_one(data)`` raises only if the loader breaks its promise: for any input it returns a
validated spec or raises ``SpecError`` whose lines all read ``spec error: <file>: ...`` — never
another exception, a hang or unbounded memory. ``main(seconds)`` mutates the shipped specs
(byte flips, YAML/JSON tokens such as anchors, aliases, brackets, ``.nan`` and huge numbers,
spliced spans) for a fixed time under an address-space limit and a per-input alarm, and saves
any failing input to ``$FUZZ_CRASH_DIR`` (default ``build/fuzz-crashes``). Run it with
``make fuzz`` (FUZZ_SECONDS each) or ``python -m tests.fuzz.fuzz_specs --seconds 60``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bpnet.specs import DatasetSpec, InferenceSpec, SpecError, TrainSpec, load_spec
from pipelines.run_spec import RunSpec

REPO = Path(__file__).resolve().parents[2]
MODELS = (TrainSpec, DatasetSpec, InferenceSpec, RunSpec)
SEED_FILES = sorted(p for d in ("specs", "specs/demo", "specs/pipeline") for p in (REPO / d).glob("*")
                    if p.suffix in (".yaml", ".json"))
TOKENS = [b"&a ", b"*a", b"<<: *a\n", b"[", b"]", b"{", b"}", b": ", b"\n", b"- ", b"  ", b".nan", b".inf",
          b"-.inf", b"1e400", b"1.0e12", b"true", b"null", b"~", b"\xff", b"\x00", b"\xc3", b"'", b'"', b"9" * 60,
          b"-1", b"0x1F", b"%YAML 1.1\n", b"---\n", b"...\n", b"? ", b"!!binary |\n  AAAA\n",
          b"!!python/name:os.system",
          b"!!set {a, b}", b"NaN", b"Infinity", b",", b"#", b"\t", b"\r\n", b"\\u0000"]
MEMORY_LIMIT = 2 << 30
INPUT_SECONDS = 20  # far above any real input (milliseconds); only a hang reaches it
WORK = Path(tempfile.mkdtemp(prefix="fuzz-specs-"))


def fuzz_one(data: bytes) -> None:
    """Load ``data`` as one spec kind (picked from the data) as YAML or JSON."""
    suffix = ".json" if data.lstrip()[:1] in (b"{", b"[") else ".yaml"
    model = MODELS[len(data) % len(MODELS)]
    path = WORK / f"spec{suffix}"
    path.write_bytes(data)
    try:
        load_spec(path, model)
    except SpecError as exc:
        if not exc.lines or any(not line.startswith(f"spec error: {path}: ") or "\n" in line for line in exc.lines):
            raise AssertionError(f"malformed spec error lines: {exc.lines[:3]!r}") from None


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        at = rng.randint(0, len(data))
        if op < 0.25 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op < 0.6:
            data[at:at] = rng.choice(TOKENS) * (rng.choice([1, 1, 1, 2, 50]))
        elif op < 0.75:
            del data[at:at + rng.randint(1, 64)]
        elif op < 0.9:
            start = rng.randint(0, len(data))
            data[at:at] = data[start:start + rng.randint(1, 200)]
        else:
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            data[at:at] = other[start:start + rng.randint(1, 400)]
    return bytes(data)


@dataclass
class Stats:
    inputs: int = 0
    failures: int = 0
    seconds: float = 0.0


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"one input took more than {INPUT_SECONDS} s")


def run(target: Callable[[bytes], None], inputs: Iterator[bytes], until: float | None = None,
        crash_dir: Path | None = None) -> Stats:
    """Feed ``inputs`` to ``target`` (until the monotonic deadline ``until``, if given); a failing
    input is saved under ``crash_dir`` and reported with its traceback."""
    stats, start = Stats(), time.monotonic()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for data in inputs:
            if until is not None and time.monotonic() > until:
                break
            stats.inputs += 1
            signal.alarm(INPUT_SECONDS)
            try:
                target(data)
            except (Exception, MemoryError) as exc:  # noqa: BLE001 - anything else is the finding
                stats.failures += 1
                where = _save(data, crash_dir) if crash_dir else None
                print(f"FAILURE {type(exc).__name__}: {str(exc)[:200]} (input saved: {where})", file=sys.stderr)
                traceback.print_exc(limit=6)
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    stats.seconds = time.monotonic() - start
    return stats


def _save(data: bytes, crash_dir: Path) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"specs-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def generate(seed: int) -> Iterator[bytes]:
    """The shipped specs first, unchanged, then endless deterministic mutations of them."""
    seeds = [p.read_bytes() for p in SEED_FILES]
    yield from seeds
    rng = random.Random(seed)
    while True:
        yield mutate(rng, seeds)


def limit_memory(nbytes: int = MEMORY_LIMIT) -> None:
    """A blow-up becomes a MemoryError (a reported failure) instead of swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main(seconds: float, seed: int = 0) -> int:
    limit_memory()
    crash_dir = Path(os.environ.get("FUZZ_CRASH_DIR", REPO / "build" / "fuzz-crashes"))
    stats = run(fuzz_one, generate(seed), until=time.monotonic() + seconds, crash_dir=crash_dir)
    print(f"fuzz_specs: {stats.inputs} inputs in {stats.seconds:.1f} s "
          f"({stats.inputs / max(stats.seconds, 1e-9):.0f}/s), seed {seed}, {stats.failures} failures")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    sys.exit(main(cli.seconds, cli.seed))
