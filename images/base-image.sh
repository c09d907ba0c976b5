#!/usr/bin/env bash
# The step images' base when no registry is reachable: Debian bookworm (Python 3.11, the project's
# version) made with debootstrap and imported into podman as $1 (default bpnet-base:bookworm).
# Skipped when the image exists. Users with a registry pass BASE_IMAGE=python:3.11-slim-bookworm
# (or their mirror of it) to `make image-cpu` instead, and this script is not run.
set -euo pipefail
NAME="${1:-bpnet-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if podman image exists "$NAME"; then
  echo "base image $NAME exists"
  exit 0
fi
ROOT="$(mktemp -d /var/tmp/bpnet-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
start=$(date +%s)
echo "debootstrap bookworm -> $NAME (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" "$MIRROR" \
  > "$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
# apt's lists and caches are not needed at run time; the image only ever installs wheels.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
tar -C "$ROOT" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$NAME" >/dev/null
echo "base image $NAME built in $(( $(date +%s) - start )) s"
