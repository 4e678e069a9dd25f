#!/usr/bin/env bash
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Build the simulated nvidia-mig-manager package (test equipment, see README.md here):
#   build-deb.sh VERSION OUTDIR   ->  OUTDIR/nvidia-mig-manager_VERSION-1_amd64.deb
# No root needed (dpkg-deb --root-owner-group). Deterministic: the same sources and VERSION give the same
# bytes (fixed mtimes from SOURCE_DATE_EPOCH, default 2024-01-01, sorted entries, gzip).
# /usr/bin/nvidia-mig-parted in the package runs the simulator's nvidia-mig-parted from /usr/lib/gpu-sim (the
# simulated driver, which tests/gpu_sim/install.sh puts in the node image) and reports VERSION.
set -euo pipefail

usage() {
  echo "usage: $0 VERSION OUTDIR (VERSION like 0.13.0)" >&2
  exit 2
}
[ "$#" -eq 2 ] || usage
version=$1
outdir=$2
[[ "$version" =~ ^[0-9]+(\.[0-9]+)+$ ]] || usage
command -v dpkg-deb >/dev/null || { echo "$0: dpkg-deb is missing" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd -P)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export LC_ALL=C TZ=UTC
umask 022
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd -P)
deb=$outdir/nvidia-mig-manager_${version}-1_amd64.deb

work=$(mktemp -d "${TMPDIR:-/tmp}/mig-manager-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
etc=$root/etc/nvidia-mig-manager
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$etc" "$root/etc/profile.d" \
  "$root/etc/systemd/system/nvidia-mig-manager.service.d" "$root/var/lib/nvidia-mig-manager" \
  "$root/usr/share/doc/nvidia-mig-manager"

cat > "$root/usr/bin/nvidia-mig-parted" <<WRAPPER
#!/usr/bin/python3
# nvidia-mig-parted ${version} of the GPU simulator (test equipment of gpu_ops.mig_serving, GPL-3.0-or-later).
# The tool's logic lives with the simulated driver in /usr/lib/gpu-sim; this package pins the version.
import sys

sys.path.insert(0, "/usr/lib/gpu-sim")
try:
    from gpu_sim.parted import main
except ImportError:
    if sys.argv[1:2] in (["--version"], ["-v"]):
        print("nvidia-mig-parted version ${version} (simulated)")
        sys.exit(0)
    print('time="1970-01-01T00:00:00Z" level=fatal msg="Error initializing NVML: Driver Not Loaded"', file=sys.stderr)
    print("gpu-sim: the simulated driver (/usr/lib/gpu-sim) is not installed", file=sys.stderr)
    sys.exit(1)
sys.exit(main(sys.argv[1:], version="${version}"))
WRAPPER
chmod 0755 "$root/usr/bin/nvidia-mig-parted"
install -m 0644 "$here/nvidia-mig-manager.service" "$root/lib/systemd/system/"
install -m 0644 "$here/override.conf" "$root/etc/systemd/system/nvidia-mig-manager.service.d/"
install -m 0644 "$here/nvidia-mig-parted.sh" "$root/etc/profile.d/"
install -m 0755 "$here/service.sh" "$etc/"
install -m 0644 "$here/utils.sh" "$here/hooks.sh" "$here/hooks-default.yaml" "$here/hooks-minimal.yaml" \
  "$here/config-default.yaml" "$etc/"
install -m 0644 "$here/README.md" "$root/usr/share/doc/nvidia-mig-manager/README.md"

install -m 0755 "$here/postinst" "$here/postrm" "$root/DEBIAN/"
# Only override.conf is a conffile: config.yaml is made at install time and regenerated at every boot (postrm
# purges it); the scripts and the hooks/config files beside it belong to the package and are replaced on upgrade.
echo /etc/systemd/system/nvidia-mig-manager.service.d/override.conf > "$root/DEBIAN/conffiles"
size=$(find "$root" -path "$root/DEBIAN" -prune -o -type f -printf '%s\n' | awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')
cat > "$root/DEBIAN/control" <<CONTROL
Package: nvidia-mig-manager
Version: ${version}-1
Architecture: amd64
Maintainer: gpu_ops.mig_serving test equipment <gpu-ops-mig-serving@localhost>
Installed-Size: ${size}
Depends: python3 (>= 3.11)
Section: utils
Priority: optional
Description: NVIDIA MIG Partition Editor and systemd service (GPU simulator build)
 Test equipment of the gpu_ops.mig_serving Ansible collection: the layout of
 NVIDIA's nvidia-mig-manager package (nvidia-mig-parted, nvidia-mig-manager.service
 and its scripts, hooks and configs) around the GPU simulator's nvidia-mig-parted.
 It needs the simulated driver (/usr/lib/gpu-sim) and manages no real GPU.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

dpkg-deb --root-owner-group -Zgzip -z9 --build "$root" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb"
