# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What mig_info and mig_verify returned on a real H200 (driver 580.159.04, MIG disabled), recorded by
benchmarks/mig_modules.py (tests/fixtures/h200-real, UUID replaced by a synthetic one).

These tests hold the recorded results to the requirements -- one H200, MIG disabled, the seven profiles of
the capture with their capacities and placements, both backends identical, all-disabled matched and
all-1g.18gb failed naming the mismatch -- and feed them back into the planner.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_catalog import model_by_device_id, supported_profiles
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resources
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nvidia_smi import parse_lgip, parse_lgipp

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "h200-real"
CAPTURE = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared" / "fixtures" / "nvidia-smi" / "h200-mig-disabled"


def load(name: str) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("backend", ["nvml", "nvidia_smi"])
def test_mig_info_on_the_real_h200(backend: str) -> None:
    res = load(f"mig_info-{backend}")
    assert res["backend"] == backend
    assert res["changed"] is False
    (gpu,) = res["gpus"]
    assert (gpu["name"], gpu["pci_device_id"], gpu["pci_subsystem_id"]) == ("NVIDIA H200", "0x233510DE", "0x18BF10DE")
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"]) == ("disabled", "disabled")
    assert (gpu["gpu_instances"], gpu["compute_instances"]) == ([], [])
    profiles = gpu["supported_profiles"]
    assert [(p["name"], p["id"], p["max_instances"]) for p in profiles] == [
        ("1g.18gb", 19, 7),
        ("1g.18gb+me", 20, 1),
        ("1g.35gb", 15, 4),
        ("2g.35gb", 14, 3),
        ("3g.71gb", 9, 2),
        ("4g.71gb", 5, 1),
        ("7g.141gb", 0, 1),
    ]


@pytest.mark.skipif(not CAPTURE.is_dir(), reason=f"H200 capture not found at {CAPTURE}")
def test_recorded_profiles_equal_the_capture() -> None:
    lgip = parse_lgip((CAPTURE / "nvidia-smi_mig_-lgip.txt").read_text())[0]
    lgipp = parse_lgipp((CAPTURE / "nvidia-smi_mig_-lgipp.txt").read_text())[0]
    (gpu,) = load("mig_info-nvml")["gpus"]
    for got, want in zip(gpu["supported_profiles"], lgip, strict=True):
        assert (got["name"], got["id"], got["max_instances"], got["memory_mib"]) == (
            want["name"], want["id"], want["max_instances"], want["memory_mib"]
        )
        assert got["placements"] == lgipp[want["id"]]


def test_both_backends_agree_exactly() -> None:
    assert load("mig_info-nvml")["gpus"] == load("mig_info-nvidia_smi")["gpus"]


@pytest.mark.parametrize("backend", ["nvml", "nvidia_smi"])
def test_mig_verify_on_the_real_h200(backend: str) -> None:
    ok = load(f"mig_verify-all-disabled-{backend}")
    assert ok["matched"] is True
    assert ok["mismatches"] == []
    assert "failed" not in ok
    bad = load(f"mig_verify-all-1g.18gb-{backend}")
    assert bad["failed"] is True
    assert bad["matched"] is False
    assert bad["mismatches"] == [
        {"gpu": 0, "profile": "mig-mode", "expected": "enabled", "actual": "disabled"},
        {"gpu": 0, "profile": "1g.18gb", "expected": 7, "actual": 0},
    ]
    assert "0    1g.18gb   7         0" in bad["msg"]


def test_catalog_agrees_with_the_hardware_table() -> None:
    (gpu,) = load("mig_info-nvml")["gpus"]
    model = model_by_device_id(gpu["pci_device_id"])
    assert model is not None
    assert model.key == "H200"
    catalog = {p["name"]: (p["id"], p["max_instances"], p["memory_mib"], p["placements"]) for p in supported_profiles(model)}
    hardware = {p["name"]: (p["id"], p["max_instances"], p["memory_mib"], p["placements"]) for p in gpu["supported_profiles"]}
    assert catalog == hardware


@pytest.mark.parametrize("layout", ["all-balanced", "all-1g.18gb", "all-3g.71gb", "all-1g.35gb", "all-7g.141gb"])
def test_planning_on_the_hardware_table_equals_planning_on_the_catalog(layout: str) -> None:
    shared = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared" / "conformance" / "mig-parted" / "config-default.yaml"
    if not shared.is_file():
        pytest.skip(f"conformance data not found at {shared}")
    config = shared.read_text()
    (gpu,) = load("mig_info-nvml")["gpus"]
    on_hardware = plan(config, layout, [gpu])
    on_catalog = plan(config, layout, [{"index": 0, "pci_device_id": gpu["pci_device_id"]}])
    assert on_hardware[0]["profile_source"] == "hardware"
    assert on_catalog[0]["profile_source"] == "catalog"
    assert resources(on_hardware) == resources(on_catalog)
    assert on_hardware[0]["devices"] == on_catalog[0]["devices"]
