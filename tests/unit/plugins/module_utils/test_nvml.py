# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for the NVML backend of mig_info (plugins/module_utils/_nvml.py), against fake_pynvml."""
from __future__ import annotations

import ast
import ctypes
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pynvml import (
    NVML_DEVICE_MIG_DISABLE,
    NVML_DEVICE_MIG_ENABLE,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVMLError,
)

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvml
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nvml import NvmlError, available, collect
from ansible_collections.gpu_ops.mig_serving.tests.unit.plugins.module_utils.fake_pynvml import FakeGpu, FakeNvml, FakeNvmlMisuse, parse_lgip

FIXTURES = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared" / "fixtures" / "nvidia-smi"
H200_DIR = FIXTURES / "h200-mig-disabled"
A100_DIR = FIXTURES / "documented" / "a100-sxm4-40gb" / "mig-user-guide"
RTX_DIR = FIXTURES / "documented" / "rtx-pro-6000-blackwell-max-q" / "user-notes-580.105.08"
MODULE_SOURCE = Path(_nvml.__file__)

needs_fixtures = pytest.mark.skipif(
    not (H200_DIR / "nvml_profiles.json").is_file() or not (A100_DIR / "nvidia-smi_mig_-lgip.txt").is_file(),
    reason=f"nvidia-smi/NVML fixtures not found under {FIXTURES} (the shared/ checkout beside the repository)",
)

PROFILE_KEYS = {
    "name", "id", "max_instances", "free_instances", "memory_mib", "compute_slices", "multiprocessors",
    "copy_engines", "decoders", "encoders", "jpeg_decoders", "ofa", "p2p", "placements",
}  # fmt: skip
GPU_KEYS = {
    "index", "name", "uuid", "pci_bus_id", "pci_device_id", "pci_subsystem_id", "mig_mode_current", "mig_mode_pending",
    "gpu_instances", "compute_instances", "supported_profiles",
}  # fmt: skip

H200_IDS = [19, 20, 15, 14, 9, 5, 0]
H200_PLACEMENTS = {
    19: [(s, 1) for s in range(7)],
    20: [(s, 1) for s in range(7)],
    15: [(0, 2), (2, 2), (4, 2), (6, 2)],
    14: [(0, 2), (2, 2), (4, 2)],
    9: [(0, 4), (4, 4)],
    5: [(0, 4)],
    0: [(0, 8)],
}


def _h200(**kwargs: Any) -> FakeNvml:
    return FakeNvml.from_profiles_json(H200_DIR / "nvml_profiles.json", **kwargs)


def _a100_gpu() -> FakeGpu:
    return FakeNvml.gpu_from_lgip(
        A100_DIR / "nvidia-smi_mig_-lgip.txt",
        A100_DIR / "nvidia-smi_mig_-lgipp.txt",
        name="NVIDIA A100-SXM4-40GB",
        uuid="GPU-00000006-1111-2222-3333-444444444444",
        bus_id="00000000:36:00.0",
        pci_device_id=0x20B010DE,
        pci_subsystem_id=0x134F10DE,
    )


def _a100_3_2_1_1(**kwargs: Any) -> FakeNvml:
    """The MIG user guide's 3g.20gb + 2g.10gb + 1g.5gb x2 layout (mig -lgi_3-2-1-1), with compute instances."""
    fake = FakeNvml([_a100_gpu()], **kwargs)
    fake.set_mig_mode_state(0, NVML_DEVICE_MIG_ENABLE)
    fake.add_gpu_instance(0, 19, start=0, gi_id=7)
    fake.add_gpu_instance(0, 19, start=1, gi_id=8)
    fake.add_gpu_instance(0, 14, start=2, gi_id=4)
    fake.add_gpu_instance(0, 9, start=4, gi_id=2)
    for ci_id in (0, 1, 2):  # mig -cci 0,0,0 -gi 2: three 1c.3g.20gb
        fake.add_compute_instance(0, 2, ci_profile_id=0, ci_id=ci_id)
    fake.add_compute_instance(0, 4, ci_profile_id=1, ci_id=0)  # whole 2g.10gb
    fake.add_compute_instance(0, 7, ci_profile_id=0, ci_id=0)
    fake.add_compute_instance(0, 8, ci_profile_id=0, ci_id=0)
    return fake


def _v100() -> FakeGpu:
    return FakeGpu(
        name="Tesla V100-SXM2-16GB",
        uuid="GPU-00000001-1111-2222-3333-444444444444",
        bus_id="00000000:1A:00.0",
        pci_device_id=0x1DB110DE,
        pci_subsystem_id=0x121210DE,
        mig_supported=False,
    )


def _called(fake: FakeNvml, name: str) -> list[int | None]:
    return [gpu for call, gpu in fake.calls if call == name]


# -- H200, MIG disabled (real NVML capture) ------------------------------------------------------------------


@needs_fixtures
def test_h200_mig_disabled_identity_and_modes() -> None:
    fake = _h200()
    gpus = collect(fake)
    assert len(gpus) == 1
    gpu = gpus[0]
    assert set(gpu) == GPU_KEYS
    assert gpu["index"] == 0
    assert gpu["name"] == "NVIDIA H200"
    assert gpu["uuid"] == "GPU-00000000-1111-2222-3333-444444444444"
    assert gpu["pci_bus_id"] == "00000000:00:06.0"
    assert gpu["pci_device_id"] == "0x233510DE"
    assert gpu["pci_subsystem_id"] == "0x18BF10DE"  # Sub System Id in nvidia-smi -q
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"]) == ("disabled", "disabled")
    assert gpu["gpu_instances"] == []
    assert gpu["compute_instances"] == []


@needs_fixtures
def test_h200_mig_disabled_profiles() -> None:
    profiles = collect(_h200())[0]["supported_profiles"]
    assert [p["id"] for p in profiles] == H200_IDS
    assert [p["name"] for p in profiles] == [
        "1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb",
    ]  # fmt: skip
    assert [p["max_instances"] for p in profiles] == [7, 1, 4, 3, 2, 1, 1]
    assert [p["free_instances"] for p in profiles] == [7, 1, 4, 3, 2, 1, 1]
    assert [p["memory_mib"] for p in profiles] == [16384, 16384, 33280, 33280, 71424, 71424, 143360]
    assert [p["compute_slices"] for p in profiles] == [1, 1, 1, 2, 3, 4, 7]
    assert [p["multiprocessors"] for p in profiles] == [16, 16, 26, 32, 60, 64, 132]
    for profile in profiles:
        assert set(profile) == PROFILE_KEYS
        expected = [{"start": s, "size": z} for s, z in H200_PLACEMENTS[profile["id"]]]
        assert profile["placements"] == expected, profile["name"]
    assert profiles[1] == {
        "name": "1g.18gb+me", "id": 20, "max_instances": 1, "free_instances": 1, "memory_mib": 16384,
        "compute_slices": 1, "multiprocessors": 16, "copy_engines": 1, "decoders": 1, "encoders": 0,
        "jpeg_decoders": 1, "ofa": 1, "p2p": False, "placements": [{"start": s, "size": 1} for s in range(7)],
    }  # fmt: skip
    assert profiles[-1]["copy_engines"] == 8
    assert profiles[-1]["ofa"] == 1


@needs_fixtures
def test_h200_mig_disabled_reads_little_and_never_asks_for_instances() -> None:
    fake = _h200()
    collect(fake)
    assert fake.init_count == 0, "nvmlShutdown must balance nvmlInit"
    assert fake.calls[0] == ("nvmlInit", None)
    assert fake.calls[-1] == ("nvmlShutdown", None)
    assert _called(fake, "nvmlDeviceGetGpuInstances") == []
    assert _called(fake, "nvmlDeviceGetGpuInstanceRemainingCapacity") == []
    # one info call per profile constant, two placement calls (count, then fill) per profile
    assert len(_called(fake, "nvmlDeviceGetGpuInstanceProfileInfo")) == 0x12
    assert len(_called(fake, "nvmlDeviceGetGpuInstancePossiblePlacements")) == 2 * 7
    assert len(fake.calls) <= 45


@needs_fixtures
def test_fake_lgip_parser_matches_real_nvml_values() -> None:
    """The -lgip parser that builds the A100 and RTX fakes reproduces the H200's real NVML numbers."""
    real = json.loads((H200_DIR / "nvml_profiles.json").read_text())["profiles"]
    parsed = parse_lgip(H200_DIR / "nvidia-smi_mig_-lgip.txt")
    assert parsed == [{k: v for k, v in entry.items() if k != "nvml_constant"} for entry in real]


# -- A100, MIG enabled with instances ------------------------------------------------------------------------


@needs_fixtures
def test_a100_mig_enabled_instances() -> None:
    gpu = collect(_a100_3_2_1_1())[0]
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"]) == ("enabled", "enabled")
    assert gpu["pci_device_id"] == "0x20B010DE"
    assert gpu["pci_subsystem_id"] == "0x134F10DE"
    assert gpu["pci_bus_id"] == "00000000:36:00.0"
    assert gpu["gpu_instances"] == [
        {"id": 2, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 4, "size": 4}},
        {"id": 4, "profile_id": 14, "profile": "2g.10gb", "placement": {"start": 2, "size": 2}},
        {"id": 7, "profile_id": 19, "profile": "1g.5gb", "placement": {"start": 0, "size": 1}},
        {"id": 8, "profile_id": 19, "profile": "1g.5gb", "placement": {"start": 1, "size": 1}},
    ]
    assert gpu["compute_instances"] == [
        {"gpu_instance_id": 2, "id": 0, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 2, "id": 1, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 2, "id": 2, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 4, "id": 0, "profile_id": 1, "profile": "2g.10gb"},
        {"gpu_instance_id": 7, "id": 0, "profile_id": 0, "profile": "1g.5gb"},
        {"gpu_instance_id": 8, "id": 0, "profile_id": 0, "profile": "1g.5gb"},
    ]


@needs_fixtures
def test_a100_profiles_and_free_capacity_when_full() -> None:
    profiles = collect(_a100_3_2_1_1())[0]["supported_profiles"]
    assert [(p["name"], p["id"]) for p in profiles] == [
        ("1g.5gb", 19), ("1g.5gb+me", 20), ("1g.10gb", 15), ("2g.10gb", 14),
        ("3g.20gb", 9), ("4g.20gb", 5), ("7g.40gb", 0),
    ]  # fmt: skip
    assert [p["max_instances"] for p in profiles] == [7, 1, 4, 3, 2, 1, 1]
    assert [p["free_instances"] for p in profiles] == [0] * 7  # every slice is taken
    assert [p["memory_mib"] for p in profiles] == [4864, 4864, 9856, 9856, 19968, 19968, 40192]
    assert profiles[2]["placements"] == [{"start": s, "size": 2} for s in (0, 2, 4, 6)]
    assert profiles[6]["placements"] == [{"start": 0, "size": 8}]


@needs_fixtures
def test_a100_free_capacity_comes_from_nvml() -> None:
    fake = FakeNvml([_a100_gpu()])
    fake.set_mig_mode_state(0, NVML_DEVICE_MIG_ENABLE)
    fake.add_gpu_instance(0, 9, start=4, gi_id=2)  # one 3g.20gb in the upper half
    gpu = collect(fake)[0]
    free = {p["id"]: p["free_instances"] for p in gpu["supported_profiles"]}
    assert free == {19: 4, 20: 1, 15: 2, 14: 2, 9: 1, 5: 1, 0: 0}
    assert _called(fake, "nvmlDeviceGetGpuInstanceRemainingCapacity") == [0] * 7
    assert gpu["gpu_instances"] == [
        {"id": 2, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 4, "size": 4}}
    ]
    assert gpu["compute_instances"] == []


@needs_fixtures
def test_compute_instance_profile_enumerated_once_per_gi_profile() -> None:
    fake = _a100_3_2_1_1()
    collect(fake)
    # 3 distinct GI profiles among the 4 GIs -> 3 x 9 CI profile constants, not 4 x 9
    assert len(_called(fake, "nvmlGpuInstanceGetComputeInstanceProfileInfo")) == 3 * 9


@needs_fixtures
def test_driver_without_v2_profile_info_falls_back_to_v1_and_derives_names() -> None:
    gpu = collect(_a100_3_2_1_1(profile_info_v2=False))[0]
    assert [p["name"] for p in gpu["supported_profiles"]] == [
        "1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb",
    ]  # fmt: skip
    assert [ci["profile"] for ci in gpu["compute_instances"]] == [
        "1c.3g.20gb", "1c.3g.20gb", "1c.3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb",
    ]  # fmt: skip


@needs_fixtures
def test_legacy_binding_bytes_and_legacy_bus_id() -> None:
    gpu = collect(_a100_3_2_1_1(legacy_binding=True))[0]
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB"
    assert gpu["uuid"] == "GPU-00000006-1111-2222-3333-444444444444"
    assert gpu["pci_bus_id"] == "00000000:36:00.0"
    assert gpu["pci_subsystem_id"] == "0x134F10DE"  # nvmlPciInfo_v2_t has pciSubSystemId too
    assert gpu["supported_profiles"][1]["name"] == "1g.5gb+me"
    assert gpu["compute_instances"][0]["profile"] == "1c.3g.20gb"


# -- MIG mode edge cases -------------------------------------------------------------------------------------


@needs_fixtures
def test_pending_enable_reports_profiles_but_no_instances() -> None:
    fake = _h200()
    fake.set_mig_mode_state(0, NVML_DEVICE_MIG_DISABLE, pending=NVML_DEVICE_MIG_ENABLE)
    gpu = collect(fake)[0]
    assert (gpu["mig_mode_current"], gpu["mig_mode_pending"]) == ("disabled", "enabled")
    assert [p["id"] for p in gpu["supported_profiles"]] == H200_IDS
    assert gpu["gpu_instances"] == []
    assert gpu["compute_instances"] == []
    assert _called(fake, "nvmlDeviceGetGpuInstances") == []


@needs_fixtures
def test_gpu_without_mig_support_next_to_a_mig_gpu() -> None:
    h200 = _h200().gpus[0]
    fake = FakeNvml([_v100(), h200])
    gpus = collect(fake)
    assert [g["index"] for g in gpus] == [0, 1]
    v100 = gpus[0]
    assert v100["name"] == "Tesla V100-SXM2-16GB"
    assert v100["pci_device_id"] == "0x1DB110DE"
    assert v100["pci_subsystem_id"] == "0x121210DE"
    assert (v100["mig_mode_current"], v100["mig_mode_pending"]) == ("unsupported", "unsupported")
    assert v100["supported_profiles"] == []
    assert v100["gpu_instances"] == []
    assert v100["compute_instances"] == []
    assert 0 not in _called(fake, "nvmlDeviceGetGpuInstanceProfileInfo")
    assert gpus[1]["mig_mode_current"] == "disabled"
    assert [p["id"] for p in gpus[1]["supported_profiles"]] == H200_IDS


@needs_fixtures
def test_enabled_h200_without_instances() -> None:
    fake = _h200()
    fake.set_mig_mode_state(0, NVML_DEVICE_MIG_ENABLE)
    gpu = collect(fake)[0]
    assert gpu["mig_mode_current"] == "enabled"
    assert [p["free_instances"] for p in gpu["supported_profiles"]] == [7, 1, 4, 3, 2, 1, 1]
    assert gpu["gpu_instances"] == []
    assert gpu["compute_instances"] == []
    assert len(_called(fake, "nvmlDeviceGetGpuInstances")) == 7


# -- failures ------------------------------------------------------------------------------------------------


@needs_fixtures
def test_failure_mid_way_names_call_and_gpu_and_still_shuts_down() -> None:
    fake = FakeNvml([_v100(), _h200().gpus[0]])
    fake.fail("nvmlDeviceGetGpuInstancePossiblePlacements", NVML_ERROR_GPU_IS_LOST, gpu_index=1)
    with pytest.raises(NvmlError) as excinfo:
        collect(fake)
    message = str(excinfo.value)
    assert "nvmlDeviceGetGpuInstancePossiblePlacements" in message
    assert "GPU 1" in message
    assert "GPU is lost" in message
    assert excinfo.value.code == NVML_ERROR_GPU_IS_LOST
    assert excinfo.value.gpu_index == 1
    assert isinstance(excinfo.value.__cause__, NVMLError)
    assert fake.calls[-1] == ("nvmlShutdown", None)
    assert fake.init_count == 0


@needs_fixtures
def test_failure_in_instances_when_enabled() -> None:
    fake = _a100_3_2_1_1()
    fake.fail("nvmlGpuInstanceGetInfo", NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(NvmlError, match=r"nvmlGpuInstanceGetInfo failed on GPU 0: GPU is lost"):
        collect(fake)
    assert fake.init_count == 0


def test_init_failure_is_reported_and_no_shutdown() -> None:
    fake = FakeNvml([])
    fake.fail("nvmlInit", NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(NvmlError, match=r"^NVML call nvmlInit failed: Driver Not Loaded$"):
        collect(fake)
    assert _called(fake, "nvmlShutdown") == []


def test_mig_mode_error_other_than_not_supported_is_raised() -> None:
    fake = FakeNvml([_v100()])
    fake.gpus[0].mig_supported = True
    fake.fail("nvmlDeviceGetMigMode", NVML_ERROR_GPU_IS_LOST, gpu_index=0)
    with pytest.raises(NvmlError, match="nvmlDeviceGetMigMode failed on GPU 0"):
        collect(fake)


def test_no_gpus() -> None:
    fake = FakeNvml([])
    assert collect(fake) == []
    assert fake.calls == [("nvmlInit", None), ("nvmlDeviceGetCount", None), ("nvmlShutdown", None)]


# -- profile enumeration rules -------------------------------------------------------------------------------


@pytest.mark.skipif(not (RTX_DIR / "nvidia-smi_mig_-lgip.txt").is_file(), reason=f"RTX PRO 6000 capture not in {RTX_DIR}")
def test_profile_order_matches_nvidia_smi_with_gfx_and_media_variants() -> None:
    """NVML's constant order differs from nvidia-smi's; the backend returns nvidia-smi's (RTX PRO 6000, 580)."""
    lgip = RTX_DIR / "nvidia-smi_mig_-lgip.txt"
    gpu = FakeNvml.gpu_from_lgip(
        lgip, None, name="NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
        uuid="GPU-00000001-1111-2222-3333-444444444444", bus_id="00000000:01:00.0", pci_device_id=0x2BB410DE,
    )  # fmt: skip
    assert [p.id for p in gpu.profiles] != [e["id"] for e in parse_lgip(lgip)]  # the fake really is in NVML order
    profiles = collect(FakeNvml([gpu]))[0]["supported_profiles"]
    assert [(p["name"], p["id"]) for p in profiles] == [
        ("1g.24gb", 14), ("1g.24gb+me", 21), ("1g.24gb+gfx", 47), ("1g.24gb+me.all", 65), ("1g.24gb-me", 67),
        ("2g.48gb", 5), ("2g.48gb+gfx", 35), ("2g.48gb+me.all", 64), ("2g.48gb-me", 66),
        ("4g.96gb", 0), ("4g.96gb+gfx", 32),
    ]  # fmt: skip


@needs_fixtures
def test_duplicate_profile_ids_are_reported_once() -> None:
    fake = _h200()
    gpu = fake.gpus[0]
    twin = next(p for p in gpu.profiles if p.id == 0)
    gpu.profiles.append(type(twin)(**{**vars(twin), "constant": 0x5}))  # 8_SLICE answering with id 0 too
    assert [p["id"] for p in collect(fake)[0]["supported_profiles"]] == H200_IDS


@needs_fixtures
def test_profiles_beyond_an_older_bindings_constants_are_found() -> None:
    fake = _h200()
    fake.NVML_GPU_INSTANCE_PROFILE_COUNT = 0x5  # an old nvidia-ml-py on a new driver
    assert [p["id"] for p in collect(fake)[0]["supported_profiles"]] == H200_IDS


@pytest.mark.parametrize(
    ("bus_id", "fields", "expected"),
    [
        ("00000000:00:06.0", (0, 0, 6), "00000000:00:06.0"),
        ("0000:00:06.0", (0, 0, 6), "00000000:00:06.0"),
        ("0000:8a:00.0", (0, 0x8A, 0), "00000000:8A:00.0"),
        ("00000001:c1:1f.3", (1, 0xC1, 0x1F), "00000001:C1:1F.3"),
        ("", (2, 0x3B, 0), "00000002:3B:00.0"),
    ],
)
def test_normalize_bus_id(bus_id: str, fields: tuple[int, int, int], expected: str) -> None:
    assert _nvml.normalize_bus_id(bus_id, *fields) == expected


# -- read-only and import guarantees -------------------------------------------------------------------------

FORBIDDEN = re.compile(r"Set|Create|Destroy|Reset")


def test_module_references_no_nvml_setter_creator_or_destroyer() -> None:
    source = MODULE_SOURCE.read_text()
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"nvml\w+", node.value):
            names.add(node.value)  # calls made by name through getattr
    offending = sorted(n for n in names if FORBIDDEN.search(n))
    assert offending == []
    assert re.findall(r"nvml\w*(?:Set|Create|Destroy|Reset)\w*", source) == []


def test_scan_would_catch_a_setter() -> None:
    for name in ("nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlGpuInstanceDestroy", "nvmlDeviceResetGpuLockedClocks"):
        assert FORBIDDEN.search(name)


def test_fake_fails_loudly_on_unimplemented_calls() -> None:
    fake = FakeNvml([])
    for name in ("nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlGpuInstanceDestroy", "nvmlDeviceResetGpuLockedClocks"):
        with pytest.raises(AttributeError, match="does not implement"):
            getattr(fake, name)


@needs_fixtures
def test_fake_rejects_calls_before_init_and_after_shutdown() -> None:
    fake = _h200()
    with pytest.raises(NVMLError) as excinfo:
        fake.nvmlDeviceGetCount()
    assert excinfo.value.value == NVML_ERROR_UNINITIALIZED
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.nvmlShutdown()
    with pytest.raises(NVMLError) as excinfo:
        fake.nvmlDeviceGetMigMode(handle)
    assert excinfo.value.value == NVML_ERROR_UNINITIALIZED


@needs_fixtures
def test_fake_refuses_instance_queries_while_mig_disabled_and_buffer_overruns() -> None:
    fake = _h200()
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    buffer = (fake.c_nvmlGpuInstance_t * 7)()
    with pytest.raises(NVMLError) as excinfo:
        fake.nvmlDeviceGetGpuInstances(handle, 19, buffer, ctypes.byref(ctypes.c_uint(7)))
    assert excinfo.value.value == NVML_ERROR_NOT_SUPPORTED
    small = (fake.c_nvmlGpuInstancePlacement_t * 2)()
    with pytest.raises(FakeNvmlMisuse, match="overrun"):
        fake.nvmlDeviceGetGpuInstancePossiblePlacements(handle, 19, small, ctypes.byref(ctypes.c_uint(2)))


def test_available_false_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    assert available() is True  # nvidia-ml-py is a test dependency
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert available() is False
    with pytest.raises(NvmlError, match="import pynvml"):
        collect()
