#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_info
short_description: Read NVIDIA GPUs, their MIG mode, MIG instances and supported MIG profiles
version_added: 0.1.0
description:
  - Reads every NVIDIA GPU of the node with its MIG mode (current and pending), its GPU and compute instances and the
    MIG profiles the GPU supports, with their capacities and placements.
  - The profile table comes from the GPU itself and is reported even while MIG is disabled, so a layout can be
    validated against the real hardware before MIG is enabled.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
  - gpu_ops.mig_serving._gpu_backend
options: {}
notes:
  - Feed RV(gpus) to the P(gpu_ops.mig_serving.mig_plan#filter) filter to plan a layout on the node's real profile table.
seealso:
  - module: gpu_ops.mig_serving.mig_verify
  - plugin: gpu_ops.mig_serving.mig_plan
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Read the GPUs
  gpu_ops.mig_serving.mig_info:
  register: __mig

- name: Show each GPU's MIG mode
  ansible.builtin.debug:
    msg: "GPU {{ item.index }} {{ item.name }}: MIG {{ item.mig_mode_current }} (pending {{ item.mig_mode_pending }})"
  loop: "{{ __mig.gpus }}"
  loop_control:
    label: "{{ item.index }}"

- name: Plan a layout on the node's own profile table
  ansible.builtin.debug:
    msg: "{{ layouts | gpu_ops.mig_serving.mig_plan('all-balanced', __mig.gpus) }}"
  vars:
    layouts: "{{ lookup('ansible.builtin.file', 'files/mig-config.yaml') | ansible.builtin.from_yaml }}"

- name: Force the nvidia-smi parser, and give a slow node more time per command
  gpu_ops.mig_serving.mig_info:
    backend: nvidia_smi
    timeout: 120
"""

RETURN = r"""
extends_documentation_fragment:
  - gpu_ops.mig_serving._gpu_backend
gpus:
  description: One entry per GPU, sorted by index.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: GPU index as nvidia-smi numbers it.
      type: int
      sample: 0
    name:
      description: Product name as nvidia-smi prints it.
      type: str
      sample: NVIDIA H200
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-00000000-1111-2222-3333-444444444444
    pci_bus_id:
      description: PCI bus id.
      type: str
      sample: "00000000:00:06.0"
    pci_device_id:
      description: PCI device and vendor id, the key mig-parted device filters match.
      type: str
      sample: "0x233510DE"
    pci_subsystem_id:
      description: PCI subsystem id, matched by device filters with a subsystem suffix.
      type: str
      sample: "0x18BF10DE"
    mig_mode_current:
      description: Current MIG mode, V(enabled), V(disabled), or V(unsupported) on GPUs without MIG.
      type: str
      sample: disabled
    mig_mode_pending:
      description: MIG mode after the next GPU reset; differs from RV(gpus[].mig_mode_current) while a change is pending.
      type: str
      sample: disabled
    gpu_instances:
      description: GPU instances (empty while MIG is disabled).
      type: list
      elements: dict
      sample: [{"id": 1, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 4, "size": 4}}]
    compute_instances:
      description: Compute instances; each is one MIG device.
      type: list
      elements: dict
      sample: [{"gpu_instance_id": 1, "id": 0, "profile_id": 2, "profile": "3g.20gb"}]
    supported_profiles:
      description:
        - GPU instance profiles the GPU supports, with C(name), C(id), C(max_instances), C(free_instances),
          C(memory_mib), C(compute_slices) and C(placements) (C(start) and C(size) in memory slices), plus engine counts.
      type: list
      elements: dict
      sample:
        - name: 1g.18gb
          id: 19
          max_instances: 7
          free_instances: 7
          memory_mib: 16384
          compute_slices: 1
          placements: [{"start": 0, "size": 1}, {"start": 1, "size": 1}]
"""


from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_reader import (
    GpuReadError,
    bounded_module,
    gpu_backend_argument_spec,
    read_gpus,
)


def main() -> None:
    module = bounded_module("Reading the node's GPUs", gpu_backend_argument_spec())
    p = module.params
    try:
        gpus, used, note = read_gpus(module, p["backend"], p["nvidia_smi_path"], p["timeout"])
    except GpuReadError as exc:
        module.fail_json(msg=f"Reading the node's GPUs: {exc}")
    module.exit_json(changed=False, gpus=gpus, backend=used, backend_note=note)


if __name__ == "__main__":
    main()
