#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_node_files
short_description: Bring a GPU node's files, directories, symlinks and systemd units to one description
version_added: 0.1.0
description:
  - Converges, in one call, the files, directories and symlinks of O(files) (content, mode, owner) and the systemd
    units of O(units) (enabled or not), running C(systemctl daemon-reload) when an entry marked O(files[].daemon_reload)
    changed.
  - M(gpu_ops.mig_serving.mig_node_state) compares a node with the same description (its O(gpu_ops.mig_serving.mig_node_state#module:want)
    option) without changing anything, so a role that gives one description to both writes exactly what it compared.
    The C(gpu_ops.mig_serving.mig_layout) role describes its config, hooks, boot-time report, systemd drop-in and
    unit once, and calls this module only on a node whose read found a difference.
  - Files are compared by SHA-1 of their content (as M(ansible.builtin.copy) does) and written atomically (a temporary
    file in the same directory renamed over the old one). Directories are created with their missing parents.
  - Never deletes anything. A path where something else stands (a directory where a file should be, a file where a
    directory or a link should be) fails naming it.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.converge
attributes:
  diff_mode:
    details:
      - One diff per path for state, mode, owner and link target, and one with the content for a file; one per unit.
options:
  files:
    description:
      - Paths the node must have, converged in order (describe a directory before the files in it).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute, normalised path on the node.
        type: path
        required: true
      state:
        description: What the path is.
        type: str
        choices: [file, directory, link]
        default: file
      content:
        description: The file's content (text, written UTF-8 encoded). Required for O(files[].state=file).
        type: str
      src:
        description: The link's target. Required for O(files[].state=link), refused otherwise.
        type: str
      mode:
        description:
          - Permission bits as a quoted octal string, such as V('0644'). Required for files and directories; links
            have none.
          - An unquoted YAML number is refused (C(0644) unquoted is the integer 420).
        type: raw
      owner:
        description: User name or numeric id owning the path.
        type: str
        default: root
      group:
        description: Group name or numeric id owning the path.
        type: str
        default: root
      daemon_reload:
        description:
          - Run C(systemctl daemon-reload) when this path changed (a unit file or a drop-in), after all paths and
            before any unit is enabled. Skipped where systemd is not PID 1.
        type: bool
        default: false
  units:
    description: systemd units the node must have enabled (or not).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The unit's name, with its suffix (for example C(nvidia-mig-manager.service)).
        type: str
        required: true
      enabled:
        description:
          - Whether the unit starts at boot (its unit file state is V(enabled)). Where systemd is not PID 1 (an image
            build, a chroot) the unit files are changed on disk (C(systemctl --root=/)).
        type: bool
        default: true
  timeout:
    description: Seconds each C(systemctl) command may take, from 1 to 3600; on expiry the module fails naming it.
    type: int
    default: 60
notes:
  - Where SELinux is enabled, each written path gets its default context.
seealso:
  - module: gpu_ops.mig_serving.mig_node_state
  - module: ansible.builtin.copy
  - module: ansible.builtin.systemd_service
"""

EXAMPLES = r"""
- name: Our config and the unit's drop-in, the unit enabled (daemon-reload when the drop-in changed)
  gpu_ops.mig_serving.mig_node_files:
    files:
      - path: /etc/gpu-ops/mig
        state: directory
        mode: "0755"
      - path: /etc/gpu-ops/mig/config.yaml
        content: "{{ lookup('ansible.builtin.file', 'layouts/dgx.yaml', rstrip=false) }}"
        mode: "0644"
      - path: /etc/systemd/system/nvidia-mig-manager.service.d
        state: directory
        mode: "0755"
      - path: /etc/systemd/system/nvidia-mig-manager.service.d/zz-gpu-ops.conf
        content: "{{ lookup('ansible.builtin.template', 'gpu-ops.conf.j2') }}"
        mode: "0644"
        daemon_reload: true
    units:
      - name: nvidia-mig-manager.service
        enabled: true

- name: Compare the same description while reading the node; write only where it differs
  gpu_ops.mig_serving.mig_node_state:
    gpus: false
    want:
      files: "{{ node_files }}"
      units: "{{ node_units }}"
  register: __state

- name: Converge
  gpu_ops.mig_serving.mig_node_files:
    files: "{{ node_files }}"
    units: "{{ node_units }}"
  when: __state.drift | length > 0
"""

RETURN = r"""
changes:
  description: Per path or unit that differed, what differed (V(absent), V(content differs), C(mode 0600 instead of 0644), ...).
  returned: always
  type: dict
  sample: {"/etc/gpu-ops/mig/config.yaml": ["content differs"], "nvidia-mig-manager.service": ["not enabled (unit file state: disabled)"]}
daemon_reload:
  description: Whether C(systemctl daemon-reload) ran (in check mode, would run).
  returned: always
  type: bool
  sample: true
systemd_running:
  description: Whether systemd runs as PID 1 on the node.
  returned: always
  type: bool
  sample: true
"""

from typing import Any

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_reader import (
    CommandTimeout,
    bounded_module,
    path_runner,
    timeout_argument_spec,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._node_files import (
    ConvergeError,
    DescriptionError,
    converge,
    description_argument_spec,
    parse_files,
    parse_units,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._node_state import NodeStateError


def main() -> None:
    module = bounded_module("Converging the node's files and units", {**description_argument_spec(), **timeout_argument_spec()})
    p = module.params
    try:
        files = parse_files(p["files"])
        units = parse_units(p["units"])
    except DescriptionError as exc:
        module.fail_json(msg=f"Converging the node's files and units: {exc}")

    def set_context(path: str) -> Any:
        return module.set_default_selinux_context(path, False)

    try:
        result = converge(files, units, path_runner(module, p["timeout"]), module.check_mode, module._diff, set_context)
    except (ConvergeError, NodeStateError, CommandTimeout) as exc:
        module.fail_json(msg=f"Converging the node's files and units: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
