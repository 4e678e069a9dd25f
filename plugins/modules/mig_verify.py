#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_verify
short_description: Verify that a node has exactly the MIG devices its layout promises
version_added: 0.1.0
description:
  - Reads the node's GPUs (as M(gpu_ops.mig_serving.mig_info) does), plans the expected layout on the GPUs' own
    profile tables and compares, GPU by GPU, the MIG mode and the number of MIG devices of every profile.
  - The layout is a named config of an nvidia-mig-parted config file on the node (O(config_file) and O(config)), or an
    inline list of entries in the same format (O(layout)).
  - A layout that cannot be realised on the node's GPUs (unknown profile, over capacity, no placement, a GPU not
    covered) is an error, reported before anything is compared.
  - A pending MIG mode change counts as a mismatch, as does a GPU instance without a compute instance.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
  - gpu_ops.mig_serving._gpu_backend
options:
  config_file:
    description:
      - >-
        Path of an nvidia-mig-parted config file (C(version: v1)) on the node.
      - Requires O(config).
      - Read with the same strict loader as the P(gpu_ops.mig_serving.mig_config#lookup) lookup on the controller - a
        binary, non-UTF-8 or non-YAML file, a duplicate key or a list as a key is refused naming the file and the line.
    type: path
  config:
    description:
      - Name of the config to verify, a key of C(mig-configs) in O(config_file).
      - With O(layout) it only names the layout in messages.
    type: str
  layout:
    description:
      - The entries of one config, inline, in nvidia-mig-parted's format (C(devices), C(mig-enabled), C(mig-devices),
        C(device-filter)).
      - Mutually exclusive with O(config_file).
    type: list
    elements: dict
  fail_on_mismatch:
    description:
      - Fail when the node does not match, with a message that lists the mismatches as a table.
      - With V(false) the module succeeds and RV(matched) says the result.
    type: bool
    default: true
seealso:
  - module: gpu_ops.mig_serving.mig_info
"""

EXAMPLES = r"""
- name: Verify the layout mig-parted applies at boot
  gpu_ops.mig_serving.mig_verify:
    config_file: /etc/gpu-ops/mig/config.yaml
    config: all-balanced

- name: Verify an inline layout without failing, and report
  gpu_ops.mig_serving.mig_verify:
    config: inference
    layout:
      - devices: [0, 1]
        mig-enabled: true
        mig-devices:
          1g.10gb: 7
      - devices: all
        mig-enabled: false
    fail_on_mismatch: false
  register: __verify

- name: Show what differs
  ansible.builtin.debug:
    var: __verify.mismatches
  when: not __verify.matched
"""

RETURN = r"""
extends_documentation_fragment:
  - gpu_ops.mig_serving._gpu_backend
matched:
  description: Whether every GPU is in its expected state.
  returned: always
  type: bool
  sample: false
config:
  description: Name of the verified config.
  returned: always
  type: str
  sample: all-1g.18gb
expected:
  description: Per GPU, the planned state.
  returned: always
  type: list
  elements: dict
  sample: [{"index": 0, "model": "NVIDIA H200", "mig_enabled": true, "devices": {"1g.18gb": 7}}]
actual:
  description: Per GPU, the current MIG mode and the MIG devices present.
  returned: always
  type: list
  elements: dict
  sample: [{"index": 0, "mig_mode_current": "disabled", "mig_mode_pending": "disabled", "devices": {}}]
mismatches:
  description:
    - One entry per difference, with C(gpu), C(profile) (C(mig-mode) for the MIG mode), C(expected) and C(actual).
  returned: always
  type: list
  elements: dict
  sample: [{"gpu": 0, "profile": "mig-mode", "expected": "enabled", "actual": "disabled"}]
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_reader import (
    GpuReadError,
    gpu_backend_argument_spec,
    read_gpus,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_compare import actual_devices, compare, mismatch_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, MigConfigFile, parse_config, parse_entries
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._strict_yaml import MAX_BYTES


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config_file": {"type": "path"},
            "config": {"type": "str"},
            "layout": {"type": "list", "elements": "dict"},
            "fail_on_mismatch": {"type": "bool", "default": True},
            **gpu_backend_argument_spec(),  # backend, nvidia_smi_path, timeout
        },
        mutually_exclusive=[("config_file", "layout")],
        required_one_of=[("config_file", "layout")],
        required_by={"config_file": "config"},
        supports_check_mode=True,
    )
    p = module.params
    name = p["config"] or "<inline layout>"
    # Parse and validate the layout before touching the GPUs: bad input fails first, with its own message
    # (a file is read with the collection's strict loader, as the mig_config lookup reads it on the controller).
    try:
        if p["config_file"]:
            try:
                if os.path.getsize(p["config_file"]) > MAX_BYTES:
                    module.fail_json(msg=f"Reading MIG config file {p['config_file']}: larger than {MAX_BYTES} bytes; is it the right file?")
                with open(p["config_file"], "rb") as fh:
                    text = fh.read(MAX_BYTES + 1)
            except OSError as exc:
                module.fail_json(msg=f"Reading MIG config file {p['config_file']}: {exc.strerror}")
            parsed = parse_config(text, source=p["config_file"])
            parsed.select(name)
        else:
            parsed = MigConfigFile(version="v1", configs={name: parse_entries(p["layout"], f"layout {name!r}")})
        source: Any = parsed
    except MigConfigError as exc:
        module.fail_json(msg=f"Verifying MIG layout {name!r}: {exc}")

    try:
        gpus, used, note = read_gpus(module, p["backend"], p["nvidia_smi_path"], p["timeout"])
    except GpuReadError as exc:
        module.fail_json(msg=f"Verifying MIG layout {name!r}: reading the node's GPUs: {exc}")
    if not gpus:
        module.fail_json(msg=f"Verifying MIG layout {name!r}: no NVIDIA GPU found on this node")

    try:
        expected = plan(source, name, gpus)
    except (MigConfigError, MigPlanError) as exc:
        module.fail_json(msg=f"Verifying MIG layout {name!r}: the layout cannot be realised on this node: {exc}")

    mismatches = compare(expected, gpus)
    actual = []
    for g in gpus:
        devices = actual_devices(g)[0] if g.get("mig_mode_current") == "enabled" else {}
        actual.append(
            {
                "index": g["index"],
                "name": g.get("name"),
                "mig_mode_current": g.get("mig_mode_current"),
                "mig_mode_pending": g.get("mig_mode_pending"),
                "devices": devices,
            }
        )
    result = {
        "changed": False,
        "matched": not mismatches,
        "config": name,
        "backend": used,
        "backend_note": note,
        "expected": [{k: e[k] for k in ("index", "model", "mig_enabled", "devices")} for e in expected],
        "actual": actual,
        "mismatches": mismatches,
    }
    if mismatches and p["fail_on_mismatch"]:
        module.fail_json(
            msg=f"MIG layout {name!r} does not match this node ({len(mismatches)} difference(s)):\n"
            + mismatch_table(mismatches),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
