#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_node_state
short_description: Read in one pass what decides a GPU node's MIG configuration work
version_added: 0.1.0
description:
  - Reads, in one round trip, the node's GPUs (as M(gpu_ops.mig_serving.mig_info) does), its OS family (from
    C(/etc/os-release)), the installed version of a package, the checksum, mode and owner of files, the state of
    systemd units and, optionally, the processes holding a GPU.
  - With O(want), compares the node with a description of the files, directories, symlinks and units it must have,
    the description M(gpu_ops.mig_serving.mig_node_files) converges, and reports what differs in RV(drift).
  - The C(gpu_ops.mig_serving.mig_layout) role decides from this result, on the controller, which of its steps a
    node needs, so a node already in its layout costs one module run, in check mode too.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
  - gpu_ops.mig_serving._gpu_backend
options:
  gpus:
    description: Read the GPUs. With V(false) no GPU is touched and O(backend) is not used.
    type: bool
    default: true
  package:
    description: Name of a package whose installed version to report in RV(package_version).
    type: str
  files:
    description: Paths whose state to report in RV(files). A missing path is reported, not an error.
    type: list
    elements: path
    default: []
  units:
    description: systemd units whose state to report in RV(units) (one C(systemctl show) call for all).
    type: list
    elements: str
    default: []
  compute_apps:
    description:
      - List the processes that hold a GPU (C(nvidia-smi --query-compute-apps)) in RV(compute_apps).
    type: bool
    default: false
  want:
    description:
      - What the node must have, as the O(gpu_ops.mig_serving.mig_node_files#module:files) and
        O(gpu_ops.mig_serving.mig_node_files#module:units) options of M(gpu_ops.mig_serving.mig_node_files) take it
        (keys C(files) and C(units)), checked the same way.
      - Compared, never written; RV(drift) lists every path and unit that differs, with why. Units named here are read in
        the same C(systemctl show) call as O(units) and reported in RV(units) too.
    type: dict
notes:
  - Checksums are SHA-1, as M(ansible.builtin.copy) and M(ansible.builtin.template) compare them.
  - O(timeout) bounds every command the module runs, C(dpkg-query) or C(rpm) and C(systemctl) as well as C(nvidia-smi).
seealso:
  - module: gpu_ops.mig_serving.mig_info
  - module: gpu_ops.mig_serving.mig_verify
"""

EXAMPLES = r"""
- name: Read the node once
  gpu_ops.mig_serving.mig_node_state:
    package: nvidia-mig-manager
    files:
      - /etc/gpu-ops/mig/config.yaml
      - /etc/systemd/system/nvidia-mig-manager.service.d/zz-gpu-ops.conf
    units: [nvidia-mig-manager.service]
  register: __state

- name: List the processes still holding a GPU, and nothing else (a hung driver fails it after 30 s)
  gpu_ops.mig_serving.mig_node_state:
    gpus: false
    compute_apps: true
    timeout: 30
  register: __holders

- name: Plan and compare on the controller
  ansible.builtin.set_fact:
    __mismatches: "{{ configs | gpu_ops.mig_serving.mig_plan('all-1g.10gb', __state.gpus) | gpu_ops.mig_serving.mig_compare(__state.gpus) }}"
"""

RETURN = r"""
extends_documentation_fragment:
  - gpu_ops.mig_serving._gpu_backend
os_family:
  description: The OS family as Ansible's C(ansible_facts.os_family) names it, from C(/etc/os-release).
  returned: always
  type: str
  sample: Debian
gpus:
  description: The GPUs, exactly as RV(gpu_ops.mig_serving.mig_info#module:gpus) returns them.
  returned: when O(gpus=true)
  type: list
  elements: dict
package_version:
  description:
    - Installed version of O(package) (Debian C(dpkg) version, RPM C(version-release)); empty when not installed.
  returned: when O(package) is set
  type: str
  sample: 0.13.0-1
files:
  description:
    - Per path in O(files), C(exists) and, when it exists, C(isdir), C(islnk), C(isreg), C(mode), C(uid), C(gid), C(size)
      and for a regular file C(checksum). The path itself is examined (a symlink is not followed).
  returned: always
  type: dict
  sample: {"/etc/gpu-ops/mig/config.yaml": {"exists": true, "isdir": false, "islnk": false, "isreg": true, "mode": "0644", "uid": 0, "gid": 0, "size": 812,
           "checksum": "5b1c0b8f5a1a3e8b0e8fb4b5f7a0b9a2bfb2a8c1"}}
units:
  description: Per unit in O(units), C(load_state) (V(not-found) when there is no such unit), C(unit_file_state) and C(active_state).
  returned: always
  type: dict
  sample: {"nvidia-mig-manager.service": {"load_state": "loaded", "unit_file_state": "enabled", "active_state": "inactive"}}
systemd_running:
  description:
    - Whether systemd runs as PID 1. Where it does not (a chroot, an image build), RV(units) comes from the unit files
      on disk (C(systemctl --root=/ is-enabled)) and every C(active_state) is V(unknown).
  returned: always
  type: bool
  sample: true
drift:
  description:
    - Each path and unit of O(want) that differs from it on the node, in the order given (paths first), as C(name) (the
      path or unit), C(kind) (V(file), V(directory), V(link) or V(unit)) and C(why).
    - Empty when the node is as described; M(gpu_ops.mig_serving.mig_node_files) would then change nothing.
  returned: when O(want) is set
  type: list
  elements: dict
  sample: [{"name": "/etc/gpu-ops/mig/config.yaml", "kind": "file", "why": "content differs; mode 0600 instead of 0644"},
           {"name": "nvidia-mig-manager.service", "kind": "unit", "why": "not enabled (unit file state: disabled)"}]
compute_apps:
  description: Processes holding a GPU, C(pid), C(process_name) and C(gpu_uuid).
  returned: when O(compute_apps=true)
  type: list
  elements: dict
  sample: [{"pid": "4242", "process_name": "tritonserver", "gpu_uuid": "GPU-5e4c..."}]
"""

from typing import Any, Dict, List

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_reader import (
    CommandTimeout,
    GpuReadError,
    bounded_module,
    gpu_backend_argument_spec,
    path_runner,
    read_gpus,
    smi_runner,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._node_files import (
    DescriptionError,
    FileWant,
    UnitWant,
    description_argument_spec,
    drift,
    parse_files,
    parse_units,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._node_state import (
    NodeStateError,
    compute_apps,
    file_state,
    package_version,
    read_os_family,
    unit_states,
)


def main() -> None:
    module = bounded_module("Reading the node's state", {
        "gpus": {"type": "bool", "default": True},
        "package": {"type": "str"},
        "files": {"type": "list", "elements": "path", "default": []},
        "units": {"type": "list", "elements": "str", "default": []},
        "compute_apps": {"type": "bool", "default": False},
        "want": {"type": "dict"},
        **gpu_backend_argument_spec(),
    })
    p = module.params
    want_files: List[FileWant] = []
    want_units: List[UnitWant] = []
    if p["want"] is not None:
        # the same options, checked the same way, as mig_node_files takes them
        checked = ArgumentSpecValidator(description_argument_spec()).validate(p["want"])
        if checked.error_messages:
            module.fail_json(msg=f"Reading the node's state: want: {'; '.join(checked.error_messages)}")
        try:
            want_files = parse_files(checked.validated_parameters["files"])
            want_units = parse_units(checked.validated_parameters["units"])
        except DescriptionError as exc:
            module.fail_json(msg=f"Reading the node's state: want: {exc}")
    # every command (dpkg-query or rpm, systemctl, nvidia-smi) bounded by the timeout option
    run = path_runner(module, p["timeout"])

    result: Dict[str, Any] = {"changed": False}
    step = "reading the OS family"
    try:
        result["os_family"] = read_os_family()
        if p["gpus"]:
            step = "reading the GPUs"
            result["gpus"], result["backend"], result["backend_note"] = read_gpus(module, p["backend"], p["nvidia_smi_path"], p["timeout"])
        if p["package"]:
            step = f"reading the installed version of {p['package']}"
            result["package_version"] = package_version(run, result["os_family"], p["package"])
        step = "reading the files"
        result["files"] = {path: file_state(path) for path in p["files"]}
        step = "reading the systemd units"
        names = list(dict.fromkeys([*p["units"], *(u.name for u in want_units)]))  # one systemctl call for all
        result["units"], result["systemd_running"] = unit_states(run, names)
        if p["want"] is not None:
            step = "comparing the node with want"
            result["drift"] = drift(want_files, want_units, result["units"])
        if p["compute_apps"]:
            step = "listing the processes holding the GPUs"
            result["compute_apps"] = compute_apps(smi_runner(module, p["nvidia_smi_path"], p["timeout"]))
    except (GpuReadError, NodeStateError, CommandTimeout) as exc:
        module.fail_json(msg=f"Reading the node's state: {step}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
