#!/usr/bin/env bash
# Make this machine able to build and run the step images, and print the DOCKER_HOST=... line of the
# Docker-API socket that kfp.local.DockerRunner (the docker SDK) talks to. Idempotent.
#
# - A Docker-API socket that already answers is used as it is: $DOCKER_HOST if set, else a running
#   Docker engine's /var/run/docker.sock, else podman's $BPNET_CONTAINER_SOCKET from an earlier run.
# - Otherwise podman (Debian's package): installs podman, runc, debootstrap and curl when missing
#   (apt-get, as root or through sudo); writes a drop-in that makes podman use runc with the cgroupfs
#   manager (crun refuses hybrid cgroup hosts) and default ulimits below the host's hard limits (a VM
#   without CAP_SYS_RESOURCE cannot raise them); starts `podman system service` on that socket.
set -euo pipefail
SOCKET="${BPNET_CONTAINER_SOCKET:-/run/podman/podman.sock}"
DROPIN=/etc/containers/containers.conf.d/50-bpnet.conf
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

answers() {  # the Docker API's /_ping on the socket $1
  command -v curl >/dev/null 2>&1 && curl -fsS --max-time 5 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
}

for candidate in "${DOCKER_HOST:-}" /var/run/docker.sock "$SOCKET"; do
  candidate="${candidate#unix://}"
  if [ -n "$candidate" ] && [ -S "$candidate" ] && answers "$candidate"; then
    echo "DOCKER_HOST=unix://$candidate"
    exit 0
  fi
done

missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

if [ ! -f "$DROPIN" ]; then
  $SUDO mkdir -p "$(dirname "$DROPIN")"
  $SUDO tee "$DROPIN" >/dev/null <<'CONF'
# Written by bpnet's images/podman-setup.sh: runc with cgroupfs (crun refuses this host's hybrid
# cgroups) and default ulimits below the host's hard limits (no CAP_SYS_RESOURCE to raise them).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
  echo "wrote $DROPIN" >&2
fi

$SUDO mkdir -p "$(dirname "$SOCKET")"
# setsid: the service outlives this script (and make) and ignores the terminal's Ctrl-C.
$SUDO setsid podman system service --time=0 "unix://$SOCKET" >/tmp/bpnet-podman-service.log 2>&1 < /dev/null &
for _ in $(seq 1 50); do
  answers "$SOCKET" && { echo "DOCKER_HOST=unix://$SOCKET"; exit 0; }
  sleep 0.2
done
echo "error: podman system service did not answer on $SOCKET (log: /tmp/bpnet-podman-service.log)" >&2
exit 1
