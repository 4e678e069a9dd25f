#!/bin/sh
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Install the GPU simulator into a root filesystem (a container image being built), never into the host:
#   install.sh DEST_ROOT
# DEST_ROOT/usr/bin/{nvidia-smi,gpu-sim}, the package in DEST_ROOT/usr/lib/gpu-sim/gpu_sim, and
# gpu-sim-boot.service (enabled) in DEST_ROOT/usr/lib/systemd/system: "the driver". nvidia-mig-parted is not
# part of it: it comes from the nvidia-mig-manager .deb (packaging/build-deb.sh), as on a real node. The GPUs
# are created later, inside the container, with `gpu-sim init --model ... --count ...`.
set -eu

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DEST_ROOT" >&2
    exit 2
fi
dest=$1
if [ ! -d "$dest" ]; then
    echo "$0: $dest is not a directory" >&2
    exit 2
fi
if [ "$(cd "$dest" && pwd -P)" = / ]; then
    echo "$0: refusing to install into / (the simulator belongs in a container's root filesystem)" >&2
    exit 2
fi
src=$(cd "$(dirname "$0")" && pwd -P)

install -d -m 0755 "$dest/usr/bin" "$dest/usr/lib/gpu-sim/gpu_sim" "$dest/usr/lib/systemd/system" \
    "$dest/etc/systemd/system/sysinit.target.wants" "$dest/var/lib/gpu-sim"
install -m 0644 "$src"/gpu_sim/*.py "$dest/usr/lib/gpu-sim/gpu_sim/"
# In the source tree the wrappers start '#!/usr/bin/env python' (what ansible-test's shebang check allows);
# Debian 12 has no 'python', so the installed copies name its python3.
for tool in nvidia-smi gpu-sim; do
    sed '1s|^#!.*|#!/usr/bin/python3|' "$src/bin/$tool" > "$dest/usr/bin/$tool"
    chmod 0755 "$dest/usr/bin/$tool"
done

cat > "$dest/usr/lib/systemd/system/gpu-sim-boot.service" <<'UNIT'
# GPU simulator (test equipment): what a reboot does to the GPUs. Pending MIG modes become current,
# GPU and compute instances are gone. Ordered early, before anything that could configure MIG (also before
# nvidia-mig-manager.service, which has DefaultDependencies=no and so is not ordered after sysinit.target).
[Unit]
Description=GPU simulator: GPU state at boot
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target nvidia-mig-manager.service shutdown.target
Conflicts=shutdown.target
ConditionPathExists=/var/lib/gpu-sim/state.json

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/gpu-sim boot

[Install]
WantedBy=sysinit.target
UNIT
chmod 0644 "$dest/usr/lib/systemd/system/gpu-sim-boot.service"
ln -sfn /usr/lib/systemd/system/gpu-sim-boot.service "$dest/etc/systemd/system/sysinit.target.wants/gpu-sim-boot.service"
echo "gpu-sim installed into $dest"
