# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from mig_module_harness import FIXTURES, H200, FakeNode, ModuleExit, a100_mig_node, h200_node

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nvidia_smi import COMMANDS
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))
from fake_pynvml import FakeNvml

RunModule = Callable[..., ModuleExit]


def test_h200_nvidia_smi_backend(run_module: RunModule) -> None:
    node = h200_node()
    res = run_module(mig_info.main, {"backend": "nvidia_smi"}, node)
    assert not res.failed, res.result
    assert res.result["changed"] is False
    assert res.result["backend"] == "nvidia_smi"
    (gpu,) = res.result["gpus"]
    assert (gpu["name"], gpu["pci_device_id"], gpu["mig_mode_current"], gpu["mig_mode_pending"]) == (
        "NVIDIA H200",
        "0x233510DE",
        "disabled",
        "disabled",
    )
    profiles = {p["name"]: p for p in gpu["supported_profiles"]}
    assert list(profiles) == ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]
    assert [p["max_instances"] for p in profiles.values()] == [7, 1, 4, 3, 2, 1, 1]
    assert [pl["start"] for pl in profiles["1g.35gb"]["placements"]] == [0, 2, 4, 6]
    assert profiles["7g.141gb"]["placements"] == [{"start": 0, "size": 8}]
    # MIG disabled: instances are not listed (no -lgi/-lci process), and only read-only commands ran
    assert [c[1:] for c in node.calls] == [COMMANDS["query"], COMMANDS["lgip"], COMMANDS["lgipp"]]
    assert all(c[0] == "/usr/bin/nvidia-smi" for c in node.calls)


def test_mig_enabled_a100_instances(run_module: RunModule) -> None:
    node = a100_mig_node()
    res = run_module(mig_info.main, {"backend": "auto"}, node)  # auto without NVML bindings -> nvidia-smi
    assert not res.failed, res.result
    assert res.result["backend"] == "nvidia_smi"
    assert "nvidia-ml-py" in res.result["backend_note"]
    (gpu,) = res.result["gpus"]
    assert [(g["id"], g["profile"], g["placement"]) for g in gpu["gpu_instances"]] == [
        (1, "3g.20gb", {"start": 4, "size": 4}),
        (2, "3g.20gb", {"start": 0, "size": 4}),
    ]
    assert [(c["gpu_instance_id"], c["id"], c["profile"]) for c in gpu["compute_instances"]] == [
        (1, 0, "1c.3g.20gb"),
        (1, 1, "1c.3g.20gb"),
        (1, 2, "1c.3g.20gb"),
    ]
    assert len(node.calls) == 5


def test_nvml_backend(run_module: RunModule) -> None:
    fake = FakeNvml.from_profiles_json(H200 / "nvml_profiles.json")
    node = FakeNode({})
    res = run_module(mig_info.main, {"backend": "nvml"}, node, nvml=fake)
    assert not res.failed, res.result
    assert res.result["backend"] == "nvml"
    assert node.calls == []  # NVML only, no nvidia-smi process
    (gpu,) = res.result["gpus"]
    assert [p["memory_mib"] for p in gpu["supported_profiles"]] == [16384, 16384, 33280, 33280, 71424, 71424, 143360]


def test_nvml_backend_without_bindings_fails_clearly(run_module: RunModule) -> None:
    res = run_module(mig_info.main, {"backend": "nvml"}, FakeNode({}))
    assert res.failed
    assert "backend 'nvml' needs the nvidia-ml-py Python package" in res.result["msg"]


def test_unrecognised_output_fails_naming_command_and_line(run_module: RunModule) -> None:
    lgip = (H200 / "nvidia-smi_mig_-lgip.txt").read_text().replace("|   0  MIG 1g.18gb         19", "|   0  MIG 1g.18gb  garbage 19", 1)
    node = h200_node()
    node.outputs["mig -lgip"] = lgip
    res = run_module(mig_info.main, {"backend": "nvidia_smi"}, node)
    assert res.failed
    assert res.result["msg"].startswith("Reading the node's GPUs: reading GPUs through nvidia-smi: nvidia-smi mig -lgip")
    assert "garbage" in res.result["msg"]


def test_nvidia_smi_failure_is_reported(run_module: RunModule) -> None:
    node = FakeNode({})  # every command fails with rc 2
    res = run_module(mig_info.main, {"backend": "nvidia_smi"}, node)
    assert res.failed
    assert "failed with rc 2" in res.result["msg"]


def test_check_mode_is_supported_and_changes_nothing(run_module: RunModule) -> None:
    node = h200_node()
    res = run_module(mig_info.main, {"backend": "nvidia_smi", "_ansible_check_mode": True}, node)
    assert not res.failed
    assert res.result["changed"] is False
    assert all(c[1] in ("mig",) or c[1].startswith("--query-gpu=") for c in node.calls)


@pytest.mark.parametrize("args", [{"backend": "nvidia"}, {"bogus": 1}])
def test_argument_spec_rejects_bad_input(run_module: RunModule, args: Any) -> None:
    node = h200_node()
    res = run_module(mig_info.main, args, node)
    assert res.failed
    assert node.calls == []


def test_nvidia_smi_path_must_be_an_executable(run_module: RunModule, tmp_path: Path) -> None:
    node = h200_node()
    res = run_module(mig_info.main, {"backend": "nvidia_smi", "nvidia_smi_path": str(tmp_path / "missing")}, node)
    assert res.failed
    assert res.result["msg"] == f"Reading the node's GPUs: nvidia_smi_path '{tmp_path / 'missing'}' is not an executable file"
    assert node.calls == []
