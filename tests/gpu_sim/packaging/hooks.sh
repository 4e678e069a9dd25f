#!/usr/bin/env bash
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Hook functions of the simulated nvidia-mig-manager package, called from hooks-default.yaml and
# hooks-minimal.yaml (nvidia-mig-parted runs hooks with an empty environment, hence the PATH).
PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=utils.sh
source "${here}/utils.sh"

# Clients of the driver that hold the GPUs, and the Kubernetes pieces that must let go of them.
driver_clients=(nvsm.service nvidia-dcgm.service)
k8s_services=(dcgm-exporter.service kubelet.service)
k8s_images=(k8s-device-plugin gpu-feature-discovery dcgm-exporter)

reversed() {
	local i
	for ((i = $# ; i > 0 ; i--)); do
		printf '%s\n' "${!i}"
	done
}

persist-config() {
	mig_manager_persist_selected_config "${1:?usage: persist-config NAME}"
}

stop-k8s() {
	local units
	mapfile -t units < <(reversed "${k8s_services[@]}")
	mig_manager_units stop "${units[@]}" && mig_manager_kill_containers "${k8s_images[@]}"
}

start-k8s() {
	mig_manager_units start "${k8s_services[@]}"
}

stop-driver-clients() {
	local units
	mapfile -t units < <(reversed "${driver_clients[@]}")
	mig_manager_units stop "${units[@]}"
}

# While the machine is still booting, only queue the starts: waiting for them from inside a boot-time job
# could deadlock on units ordered after it.
start-driver-clients() {
	local state
	state=$(systemctl is-system-running 2>/dev/null || true)
	if [ "${state}" = running ] || [ "${state}" = degraded ]; then
		mig_manager_units start "${driver_clients[@]}"
	else
		mig_manager_units start --no-block "${driver_clients[@]}"
	fi
}
