#!/usr/bin/env bash
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# nvidia-mig-manager.service of the simulated nvidia-mig-manager package: at every boot, apply the MIG config
# named by MIG_PARTED_SELECTED_CONFIG (override.conf) from MIG_PARTED_CONFIG_FILE (default: config.yaml here).
#
# 1. config.yaml next to this script is rewritten from `nvidia-mig-parted generate-config` at every boot
#    (kept as it is if that fails, or copied from config-default.yaml if there is none): a config kept in
#    /etc/nvidia-mig-manager/config.yaml does not survive a reboot; point MIG_PARTED_CONFIG_FILE elsewhere.
# 2. MIG mode: if `assert --mode-only` fails, `apply --mode-only --skip-reset`; then, where GPUs cannot be
#    reset, reboot once (a marker in /var/lib/nvidia-mig-manager prevents a loop); else `apply --mode-only`
#    (which now only resets the GPUs).
# 3. The MIG devices: `apply`, then `export` (the result, in the journal).
# Any failed step ends the script with a message and a non-zero status.
PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=utils.sh
source "${here}/utils.sh"

config="${here}/config.yaml"
fallback="${here}/config-default.yaml"

fail() {
	echo "nvidia-mig-manager: $*" >&2
	exit 1
}

# Show each nvidia-mig-parted call in the journal, then run it.
mig_parted() {
	echo "+ nvidia-mig-parted $*" >&2
	nvidia-mig-parted "$@"
}

# An older install may have left config.yaml as a link to config-default.yaml: writing through it would
# change the fallback itself.
if [ -L "${config}" ]; then
	rm -f "${config}"
fi
if nvidia-mig-parted generate-config -f "${config}.new"; then
	{
		echo "# Generated from the GPUs at every boot by nvidia-mig-manager.service: edits here are lost."
		echo "# Keep your own configs in another file and set MIG_PARTED_CONFIG_FILE to it."
		echo
		cat "${config}.new"
	} > "${config}.tmp"
	mv -f "${config}.tmp" "${config}"
elif [ -f "${config}" ]; then
	echo "nvidia-mig-manager: warning: could not generate ${config}; using the one there" >&2
elif [ -f "${fallback}" ]; then
	echo "nvidia-mig-manager: warning: could not generate ${config}; using ${fallback}" >&2
	cp "${fallback}" "${config}"
else
	fail "no MIG config file: generation failed and ${fallback} is missing"
fi
rm -f "${config}.new" "${config}.tmp"

export MIG_PARTED_CONFIG_FILE="${MIG_PARTED_CONFIG_FILE:-${config}}"
if [ -z "${MIG_PARTED_SELECTED_CONFIG:-}" ]; then
	fail "MIG_PARTED_SELECTED_CONFIG is not set (see /etc/systemd/system/nvidia-mig-manager.service.d/override.conf)"
fi
export MIG_PARTED_SELECTED_CONFIG
echo "nvidia-mig-manager: applying '${MIG_PARTED_SELECTED_CONFIG}' from ${MIG_PARTED_CONFIG_FILE}" >&2

if ! mig_parted assert --mode-only; then
	mig_parted apply --mode-only --skip-reset || fail "Error applying MIG mode"
	if ! mig_manager_gpu_reset_available; then
		echo "nvidia-mig-manager: GPU reset is not available here; rebooting to make the MIG mode effective" >&2
		mig_manager_reboot_once
		exit $?
	fi
	# The mode is set (pending); this call finds it so and only resets the GPUs.
	mig_parted apply --mode-only || fail "Error issuing GPU reset"
fi
# The mode is in place: a later mode change may reboot once again.
mig_manager_clear_reboot_state

if ! mig_manager_driver_loaded; then
	echo "nvidia-mig-manager: no nvidia module loaded, skipping the MIG device config" >&2
	exit 0
fi
mig_parted apply || fail "Error applying MIG config"
mig_parted export
