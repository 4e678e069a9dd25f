# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() with given arguments against a node whose nvidia-smi replays real captures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvidia_smi, _nvml

FIXTURES = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared" / "fixtures" / "nvidia-smi"
H200 = FIXTURES / "h200-mig-disabled"
GUIDE = FIXTURES / "documented" / "a100-sxm4-40gb" / "mig-user-guide"

# What nvidia-smi --query-gpu prints for our real H200 (values from h200-mig-disabled/nvidia-smi_-q.txt)
H200_QUERY = {
    "index": "0",
    "name": "NVIDIA H200",
    "uuid": "GPU-00000000-1111-2222-3333-444444444444",
    "pci.bus_id": "00000000:00:06.0",
    "pci.device_id": "0x233510DE",
    "pci.sub_device_id": "0x18BF10DE",
    "mig.mode.current": "Disabled",
    "mig.mode.pending": "Disabled",
}


def query_line(values: Dict[str, str]) -> str:
    return ", ".join(values[f] for f in _nvidia_smi.QUERY_FIELDS) + "\n"


class ModuleExit(Exception):
    def __init__(self, failed: bool, result: Dict[str, Any]) -> None:
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


class FakeNode:
    """nvidia-smi on a node: answers each read-only command with captured output; records every call."""

    def __init__(self, outputs: Dict[str, str]) -> None:
        self.outputs = outputs
        self.calls: List[List[str]] = []

    def run_command(self, argv: List[str], **kwargs: Any) -> Tuple[int, str, str]:
        assert kwargs.get("environ_update", {}).get("LC_ALL") == "C", "nvidia-smi must run with the C locale"
        self.calls.append(list(argv))
        key = " ".join(argv[1:])
        for prefix, out in self.outputs.items():
            if key.startswith(prefix):
                return 0, out, ""
        return 2, "", f"fake nvidia-smi: no capture for {key!r}"


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleExit]:
    def _run(main: Callable[[], None], args: Dict[str, Any], node: FakeNode, nvml: Optional[Any] = None) -> ModuleExit:
        def exit_json(self: Any, **kwargs: Any) -> None:
            raise ModuleExit(False, kwargs)

        def fail_json(self: Any, msg: str, **kwargs: Any) -> None:
            raise ModuleExit(True, dict(kwargs, msg=msg))

        monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
        monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
        monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: node.run_command(argv, **kw))
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False, opt_dirs=None: f"/usr/bin/{name}")
        if nvml is None:
            monkeypatch.setattr(_nvml, "available", lambda: False)
        else:  # NVML through the fake pynvml (tests/unit/plugins/module_utils/fake_pynvml.py)
            real_collect = _nvml.collect
            monkeypatch.setattr(_nvml, "available", lambda: True)
            monkeypatch.setattr(_nvml, "collect", lambda nvml_module=None, timeout=None: real_collect(nvml, timeout=timeout))
        with patch_module_args(args), pytest.raises(ModuleExit) as exc:
            main()
        # the result must be JSON-serialisable, as Ansible sends it
        json.dumps(exc.value.result)
        return exc.value

    return _run


def h200_node() -> FakeNode:
    return FakeNode(
        {
            "--query-gpu=": query_line(H200_QUERY),
            "mig -lgipp": (H200 / "nvidia-smi_mig_-lgipp.txt").read_text(),
            "mig -lgip": (H200 / "nvidia-smi_mig_-lgip.txt").read_text(),
        }
    )


def a100_mig_node() -> FakeNode:
    """A100-SXM4-40GB with MIG enabled: two 3g.20gb GPU instances, three 1c.3g.20gb compute instances in GI 1
    and none in GI 2 -- NVIDIA's MIG User Guide outputs, unchanged."""
    values = dict(H200_QUERY, name="NVIDIA A100-SXM4-40GB")
    values.update({"pci.device_id": "0x20B010DE", "pci.sub_device_id": "0x134F10DE", "mig.mode.current": "Enabled", "mig.mode.pending": "Enabled"})
    return FakeNode(
        {
            "--query-gpu=": query_line(values),
            "mig -lgipp": (GUIDE / "nvidia-smi_mig_-lgipp.txt").read_text(),
            "mig -lgip": (GUIDE / "nvidia-smi_mig_-lgip.txt").read_text(),
            "mig -lgi": (GUIDE / "nvidia-smi_mig_-lgi_2x3g.20gb.txt").read_text(),
            "mig -lci": (GUIDE / "nvidia-smi_mig_-lci_-gi_1.txt").read_text(),
        }
    )
