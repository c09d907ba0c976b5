"""What containers cost on this machine: building the step image and running the DAG in it.

Prints: the cold build time of ``bpnet-cpu:local`` (``--no-cache``: every layer rebuilt from the
base image and the wheelhouse, which are made first if absent and timed apart), the warm build time
(unchanged tree: every layer reused), the image size; then the demo DAG of ``make run`` (the
repository's local run spec and demo data, ``--set`` overrides as given) run once with every step
as a host process and once with every step in a container, each wall time and their ratio.
Needs a container engine (``make container-engine``) and the demo data (``make demo-data``).

    .venv/bin/python benchmarks/containers.py [--set num_epoch=5 ...] [--skip_builds]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.image_build import build, engine  # noqa: E402

IMAGE = "bpnet-cpu:local"
SPEC = ROOT / "specs" / "pipeline" / "local.yaml"


def dag(overrides: list[str], image: str | None) -> tuple[float, float]:
    """(wall seconds, retrained AP) of the demo DAG: host processes, or containers of ``image``."""
    from pipelines.arguments import parse_overrides
    from pipelines.local_run import run_local

    os.environ.setdefault("BPNET_MODEL_KEY", "bpnet-demo-key")
    start = time.perf_counter()
    summary = run_local(SPEC, parse_overrides(overrides), image)
    return time.perf_counter() - start, summary["metrics"]["AP"]


def build_seconds(no_cache: bool) -> tuple[float, int]:
    """(seconds, image size) of one build; ``no_cache`` rebuilds every layer."""
    if no_cache:
        subprocess.run([engine(), "rmi", "-f", IMAGE], capture_output=True)
    built = build("cpu", IMAGE, no_cache=no_cache)
    return built.seconds, built.size_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="NAME=VALUE")
    parser.add_argument("--skip_builds", action="store_true", help="time the DAGs only (image already built)")
    args = parser.parse_args()
    if not args.skip_builds:
        build("cpu", IMAGE)  # base image and wheelhouse in place, so the cold build times the layers alone
        cold, size = build_seconds(no_cache=True)
        warm, _ = build_seconds(no_cache=False)
        print(f"image {IMAGE}: {size / 1e9:.2f} GB; build cold (--no-cache) {cold:.0f} s, warm {warm:.0f} s")
    (host, host_ap), (containers, containers_ap) = dag(args.overrides, None), dag(args.overrides, IMAGE)
    print(f"DAG wall time: host processes {host:.0f} s, containers {containers:.0f} s, ratio {containers / host:.2f}")
    print(f"retrained AP: host processes {host_ap:.4f}, containers {containers_ap:.4f}")


if __name__ == "__main__":
    main()
