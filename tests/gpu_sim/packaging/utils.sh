#!/usr/bin/env bash
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Helpers of the simulated nvidia-mig-manager package, sourced by service.sh and hooks.sh (bash).
# They behave as NVIDIA's utils.sh is documented to: a reboot-once guard, the selected config persisted in
# override.conf, systemd units and Kubernetes containers stopped and started around a MIG change, and checks
# for a loaded driver and for GPU reset. Where the real checks read /proc/modules and /sys, the GPU simulator
# (gpu-sim, installed as "the driver" of the test nodes) answers instead.

MIG_MANAGER_STATE_DIR=${MIG_MANAGER_STATE_DIR:-/var/lib/nvidia-mig-manager}
MIG_MANAGER_OVERRIDE=${MIG_MANAGER_OVERRIDE:-/etc/systemd/system/nvidia-mig-manager.service.d/override.conf}

mig_manager_log() {
	echo "nvidia-mig-manager: $*" >&2
}

# True while systemd runs this machine (not inside a chroot or an image build).
mig_manager_systemd_running() {
	[ -d /run/systemd/system ]
}

# Reboot to let a pending MIG mode take effect where no GPU reset is possible, but only once: a marker file
# stops a reboot loop until someone removes it (or a later boot applies the mode and clears it).
mig_manager_reboot_once() {
	local marker="${MIG_MANAGER_STATE_DIR}/reboot_attempted"
	mkdir -p "${MIG_MANAGER_STATE_DIR}"
	if [ -e "${marker}" ]; then
		mig_manager_log "a reboot was already attempted once; not rebooting again"
		mig_manager_log "remove ${marker} to allow one more automatic reboot"
		return 1
	fi
	touch "${marker}"
	systemctl reboot
}

mig_manager_clear_reboot_state() {
	rm -f "${MIG_MANAGER_STATE_DIR}/reboot_attempted"
}

# Make NAME the config the service applies at the next boot: override.conf is rewritten with only that
# setting (anything else in it is lost, as with NVIDIA's package), then systemd re-reads its units.
mig_manager_persist_selected_config() {
	local name="${1:?a MIG config name is needed}"
	mkdir -p "$(dirname "${MIG_MANAGER_OVERRIDE}")"
	printf '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=%s"\n' "${name}" > "${MIG_MANAGER_OVERRIDE}.tmp"
	mv -f "${MIG_MANAGER_OVERRIDE}.tmp" "${MIG_MANAGER_OVERRIDE}"
	if mig_manager_systemd_running; then
		systemctl daemon-reload
	fi
}

# mig_manager_units stop|start [--no-block] UNIT...: act on the units that are enabled here, skip the others.
mig_manager_units() {
	local action="${1}" unit
	shift
	local extra=()
	if [ "${1:-}" = "--no-block" ]; then
		extra=(--no-block)
		shift
	fi
	for unit in "$@"; do
		if ! systemctl is-enabled --quiet "${unit}" 2>/dev/null; then
			continue
		fi
		mig_manager_log "${action} ${unit}"
		systemctl "${extra[@]}" "${action}" "${unit}" || return 1
	done
	return 0
}

# Kill the Kubernetes containers (docker and containerd's k8s.io namespace) running any of the given images.
mig_manager_kill_containers() {
	local image ids
	for image in "$@"; do
		if command -v docker >/dev/null 2>&1; then
			ids=$(docker ps --format '{{.ID}} {{.Image}}' | awk -v img="${image}" 'index($2, img) {print $1}')
			if [ -n "${ids}" ]; then
				# shellcheck disable=SC2086 # one word per container id
				docker rm -f ${ids} >/dev/null || return 1
			fi
		fi
		if command -v ctr >/dev/null 2>&1; then
			ids=$(ctr -n k8s.io task ls -q "image~=${image}" 2>/dev/null || true)
			if [ -n "${ids}" ]; then
				# shellcheck disable=SC2086 # one word per task id
				ctr -n k8s.io task kill -a -s SIGKILL ${ids} || return 1
			fi
		fi
	done
	return 0
}

# Whether the NVIDIA kernel module (here: the simulated driver) is loaded.
mig_manager_driver_loaded() {
	if grep -q "^nvidia " /proc/modules 2>/dev/null; then
		return 0
	fi
	command -v gpu-sim >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# Whether every NVIDIA GPU can be reset without a reboot (no reset under GPU passthrough, for example).
mig_manager_gpu_reset_available() {
	if command -v gpu-sim >/dev/null 2>&1; then
		gpu-sim reset-available >&2
		return
	fi
	local dev
	for dev in /sys/bus/pci/devices/*; do
		[ "$(cat "${dev}/vendor" 2>/dev/null)" = "0x10de" ] || continue
		[ "$(cat "${dev}/class" 2>/dev/null)" = "0x030200" ] || continue
		[ -e "${dev}/reset" ] || return 1
	done
	return 0
}
