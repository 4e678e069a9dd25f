#!/usr/bin/env bash
# Build the podman image of a simulated GPU node: Debian 12 with systemd (PID 1 in the container),
# python3 for Ansible, and the GPU simulator (tests/gpu_sim) in place of the NVIDIA driver (nvidia-smi, gpu-sim;
# no nvidia-mig-parted). Also builds the simulated nvidia-mig-manager packages the node role installs from a
# local file: build/testbed/debs/nvidia-mig-manager_{0.12.1,0.13.0}-1_amd64.deb (rewritten only when their
# bytes change).
#   tests/testbed/build-node-image.sh [IMAGE]      (default localhost/gpu-ops-node:latest)
# The debootstrap rootfs is cached in build/testbed/ (about 45 s to make); the image is rebuilt when the
# simulator changes. Needs root, podman, runc and debootstrap (make test installs them). Concurrent runs
# wait for each other (flock on build/testbed/build.lock).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
image=${1:-localhost/gpu-ops-node:latest}
cache=$root/build/testbed
# python3-apt: what Ansible's apt and package_facts modules use on Debian (a real node has it; the role installs
# the nvidia-mig-manager .deb through them). The package list is part of the cache name.
packages=systemd,systemd-sysv,dbus,python3,python3-yaml,python3-apt,iproute2,procps
base=$cache/debian-bookworm-base-$(printf %s "$packages" | sha256sum | cut -c1-8).tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/tests/testbed/containers.conf}

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-node-image: $tool is missing (make test installs it)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build-node-image: needs root (debootstrap, podman import)" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/build.lock"
flock 9

# The nvidia-mig-manager packages (deterministic: an unchanged source gives the same bytes, left untouched).
debs=$cache/debs
mkdir -p "$debs"
debwork=$(mktemp -d "$cache/debs.XXXXXX")
trap 'rm -rf "$debwork"' EXIT
for version in ${MIG_MANAGER_DEB_VERSIONS:-0.12.1 0.13.0}; do
  "$root/tests/gpu_sim/packaging/build-deb.sh" "$version" "$debwork" >/dev/null
  name=nvidia-mig-manager_${version}-1_amd64.deb
  if ! cmp -s "$debwork/$name" "$debs/$name"; then
    mv -f "$debwork/$name" "$debs/$name"
    echo "build-node-image: built $debs/$name"
  fi
done
rm -rf "$debwork"; trap - EXIT

if [ ! -s "$base" ]; then
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "build-node-image: debootstrap bookworm into $work"
  debootstrap --variant=minbase --include="$packages" \
    bookworm "$work" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # a container has no consoles to log in on, and must not try to configure the host's network
  rm -f "$work"/etc/systemd/system/getty.target.wants/* 2>/dev/null || true
  echo "gpu-node" > "$work/etc/hostname"
  tar -C "$work" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$work"; trap - EXIT
fi

# Rebuild the image when the base or the simulator changed.
stamp=$( (sha256sum "$base" | cut -d' ' -f1; find "$root/tests/gpu_sim" -path "$root/tests/gpu_sim/packaging" -prune -o -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
if podman image exists "$image" && [ "$(podman image inspect --format '{{ index .Labels "gpu-ops.stamp" }}' "$image" 2>/dev/null)" = "$stamp" ]; then
  echo "build-node-image: $image is up to date ($stamp)"
  exit 0
fi
work=$(mktemp -d "$cache/image.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xf "$base"
"$root/tests/gpu_sim/install.sh" "$work"
tar -C "$work" -c . | podman import --change 'CMD ["/sbin/init"]' --change "LABEL gpu-ops.stamp=$stamp" \
  --change 'ENV container=podman' - "$image" >/dev/null
echo "build-node-image: built $image ($stamp)"
