# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: mig_config
short_description: Read and validate a nvidia-mig-parted layout file on the controller
version_added: 0.1.0
author:
  - GPU Ops maintainers (@gpu-ops)
description:
  - >-
    Reads a nvidia-mig-parted config file (C(version: v1), C(mig-configs)) on the controller with the same strict
    loader and validator that M(gpu_ops.mig_serving.mig_verify) uses on the node, and returns it as a mapping.
  - The file is refused, naming the file, the line and the host, when it is binary, not UTF-8, not YAML, defines a key
    twice (plain YAML would keep the last definition of a layout silently), uses a list or a mapping as a key, or is not
    a valid mig-parted config (unknown keys, malformed profiles or device filters, bad counts, ...).
  - A PCI id written without quotes in C(device-filter) (V(0x20B010DE)) is read as the id it looks like, and returned as
    the string V(0x20B010DE); a decimal number there is refused.
  - Whether a layout fits a node's GPUs is not checked here; that is P(gpu_ops.mig_serving.mig_plan#filter)'s job.
  - Relative paths are searched like M(ansible.builtin.file) does - the role's and the play's C(files/) directories,
    then the playbook's directory.
options:
  _terms:
    description: Path of the layout file, one.
    type: list
    elements: path
    required: true
  host:
    description:
      - The host whose variable named the file, for messages.
      - Defaults to C(inventory_hostname) of the task's host; give it when the lookup reads another host's file (in a
        loop over C(hostvars)).
    type: str
  variable:
    description: The variable that named the file, for messages (for example V(mig_layout_config_file)).
    type: str
seealso:
  - module: gpu_ops.mig_serving.mig_verify
  - plugin: gpu_ops.mig_serving.mig_plan
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Plan the node's layout on the controller
  ansible.builtin.set_fact:
    __plan: >-
      {{ lookup('gpu_ops.mig_serving.mig_config', mig_layout_config_file)
         | gpu_ops.mig_serving.mig_plan(mig_layout_config, gpus) }}

- name: Read every GPU node's layout file, naming the node in errors
  ansible.builtin.set_fact:
    __layouts: >-
      {{ __layouts | default({}) | combine({item: lookup('gpu_ops.mig_serving.mig_config',
         hostvars[item].mig_layout_config_file, host=item, variable='mig_layout_config_file')}) }}
  loop: "{{ groups['gpu_nodes'] }}"
"""

RETURN = r"""
_raw:
  description:
    - The config as a mapping with C(version) and C(mig-configs) (config name to its list of entries), in the file's
      order; unquoted hex device filters as strings.
  type: list
  elements: dict
  sample:
    - version: v1
      mig-configs:
        all-1g.18gb:
          - device-filter: ["0x233510DE"]
            devices: all
            mig-enabled: true
            mig-devices: {"1g.18gb": 7}
"""

from typing import Any, Dict, List, Optional

from ansible.errors import AnsibleError, AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_layout_file import read_layout_file


class LookupModule(LookupBase):  # type: ignore[misc]  # ansible carries no type hints
    def run(self, terms: List[Any], variables: Optional[Dict[str, Any]] = None, **kwargs: Any) -> List[Dict[str, Any]]:
        self.set_options(var_options=variables, direct=kwargs)
        host = self.get_option("host") or (variables or {}).get("inventory_hostname")
        variable = self.get_option("variable")
        named = ", ".join(x for x in (f"host {host}" if host else "", f"variable {variable}" if variable else "") if x)
        context = f" ({named})" if named else ""
        if len(terms) != 1:
            raise AnsibleLookupError(f"mig_config: give exactly one layout file path{context}, not {len(terms)}: {terms!r}")
        term = terms[0]
        if not isinstance(term, str) or not term:
            raise AnsibleLookupError(f"mig_config: the layout file path{context} must be a non-empty string, not {term!r}")
        try:
            path = self.find_file_in_search_path(variables, "files", term, ignore_missing=True)
        except AnsibleError as exc:
            raise AnsibleLookupError(f"mig_config: looking for layout file {term!r}{context}: {exc}") from None
        if not path:
            raise AnsibleLookupError(
                f"mig_config: layout file {term!r}{context} not found (a relative path is searched in the role's and the "
                "play's files/ directories, then the playbook's directory)"
            )
        try:
            _parsed, config = read_layout_file(path, path, self._loader)
        except MigConfigError as exc:
            raise AnsibleLookupError(f"mig_config: MIG layout file{context}: {exc}") from None
        except AnsibleError as exc:  # vault decryption
            raise AnsibleLookupError(f"mig_config: MIG layout file {path}{context}: {exc}") from None
        return [config]
