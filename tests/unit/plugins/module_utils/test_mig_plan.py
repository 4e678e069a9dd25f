# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_compare import actual_devices, compare, mismatch_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resource_name, resources

# The A100-SXM4-40GB table as `nvidia-smi mig -lgip` / `-lgipp` print it in NVIDIA's MIG User Guide
# (shared/fixtures/nvidia-smi/documented/a100-sxm4-40gb/mig-user-guide/), in mig_info's shape.
A100_HW: List[Dict[str, Any]] = [
    {"name": n, "id": i, "max_instances": m, "placements": [{"start": s, "size": z} for s in starts]}
    for n, i, m, starts, z in [
        ("1g.5gb", 19, 7, range(7), 1),
        ("1g.5gb+me", 20, 1, range(7), 1),
        ("1g.10gb", 15, 4, (0, 2, 4, 6), 2),
        ("2g.10gb", 14, 3, (0, 2, 4), 2),
        ("3g.20gb", 9, 2, (0, 4), 4),
        ("4g.20gb", 5, 1, (0,), 4),
        ("7g.40gb", 0, 1, (0,), 8),
    ]
]


def hw_gpus(n: int = 1) -> List[Dict[str, Any]]:
    return [{"index": i, "name": "NVIDIA A100-SXM4-40GB", "supported_profiles": A100_HW} for i in range(n)]


def layout(devices: Dict[str, int]) -> List[Dict[str, Any]]:
    return [{"devices": "all", "mig-enabled": True, "mig-devices": devices}]


# Combinations NVIDIA's MIG User Guide lists as valid on A100-40GB (the "A100 MIG profiles" figure),
# and ones that are not, for the memory-slice reason or the compute-slice one.
VALID_A100 = [
    {"7g.40gb": 1},
    {"4g.20gb": 1, "3g.20gb": 1},
    {"4g.20gb": 1, "2g.10gb": 1, "1g.5gb": 1},
    {"4g.20gb": 1, "1g.5gb": 3},
    {"3g.20gb": 2},
    {"3g.20gb": 1, "2g.10gb": 2},
    {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2},
    {"3g.20gb": 1, "1g.5gb": 4},
    {"2g.10gb": 3, "1g.5gb": 1},
    {"2g.10gb": 2, "1g.5gb": 3},
    {"2g.10gb": 1, "1g.5gb": 5},
    {"1g.5gb": 7},
    {"1g.10gb": 4},
    {"1g.10gb": 3, "1g.5gb": 1},
    {"1g.5gb+me": 1, "1g.5gb": 6},
    {"1c.3g.20gb": 2, "3g.20gb": 0},
]
INVALID_A100 = [
    ({"7g.40gb": 1, "1g.5gb": 1}, "no placement|need 8 compute"),
    ({"4g.20gb": 1, "3g.20gb": 1, "1g.5gb": 1}, "need 8 compute"),
    ({"3g.20gb": 2, "1g.5gb": 1}, "no placement"),
    ({"1g.10gb": 3, "2g.10gb": 1, "1g.5gb": 1}, "no placement"),
    ({"1g.10gb": 4, "1g.5gb": 1}, "no placement"),
    ({"4g.20gb": 1, "2g.10gb": 2}, "need 8 compute"),
    ({"1g.5gb": 8}, "allows at most 7"),
    ({"1c.3g.20gb": 7}, "allows at most 2 \\(GPU instances needed for the compute instances asked\\)"),
]


@pytest.mark.parametrize("devices", VALID_A100, ids=lambda d: "+".join(f"{n}x{p}" for p, n in d.items()))
def test_valid_a100_combinations_plan(devices: Dict[str, int]) -> None:
    (gpu,) = plan(layout(devices), "x", hw_gpus())
    assert gpu["devices"] == {p: n for p, n in devices.items() if n}
    assert gpu["profile_source"] == "hardware"
    # the placement is real: no two instances share a memory slice, all inside the 8 slices
    used: List[int] = []
    for pl in gpu["placements"]:
        used.extend(range(pl["start"], pl["start"] + pl["size"]))
    assert len(used) == len(set(used))
    assert all(0 <= s < 8 for s in used)
    if not any("c." in p for p in devices):  # one GPU instance per device; compute-instance packing below
        assert len(gpu["placements"]) == sum(devices.values())


@pytest.mark.parametrize(
    ("devices", "gpu_instances"),
    [
        ({"1c.3g.20gb": 3}, 1),
        ({"1c.3g.20gb": 4}, 2),
        ({"3g.20gb": 1, "1c.3g.20gb": 3}, 2),
        ({"2c.3g.20gb": 2}, 2),
        ({"2c.3g.20gb": 1, "1c.3g.20gb": 1}, 1),
        ({"2c.3g.20gb": 1, "1c.3g.20gb": 2}, 2),
    ],
)
def test_compute_instances_share_gpu_instances_as_mig_parted_packs_them(devices: Dict[str, int], gpu_instances: int) -> None:
    (gpu,) = plan(layout(devices), "x", hw_gpus())
    assert [p["profile"] for p in gpu["placements"]] == ["3g.20gb"] * gpu_instances


@pytest.mark.parametrize(("devices", "why"), INVALID_A100, ids=str)
def test_invalid_a100_combinations_are_rejected(devices: Dict[str, int], why: str) -> None:
    with pytest.raises(MigPlanError, match=why) as err:
        plan(layout(devices), "x", hw_gpus())
    assert "GPU 0 (NVIDIA A100-SXM4-40GB" in str(err.value)


def test_hardware_table_wins_over_catalog() -> None:
    # A GPU that claims a catalog device id but reports a smaller table: the table it reports is used.
    small = [p for p in A100_HW if p["name"] != "1g.10gb"]
    gpus = [{"index": 0, "pci_device_id": "0x20B010DE", "supported_profiles": small}]
    with pytest.raises(MigPlanError, match=r"profile '1g\.10gb' is not supported"):
        plan(layout({"1g.10gb": 1}), "x", gpus)


def test_plan_mixed_entries_and_filter() -> None:
    cfg = {
        "version": "v1",
        "mig-configs": {
            "custom": [
                {"devices": [0, 1], "mig-enabled": False},
                {"devices": [2], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
                {"devices": [3], "mig-enabled": True, "mig-devices": {}},
            ]
        },
    }
    result = plan(cfg, "custom", hw_gpus(4))
    assert [(g["index"], g["mig_enabled"], g["devices"]) for g in result] == [
        (0, False, {}),
        (1, False, {}),
        (2, True, {"1g.5gb": 7}),
        (3, True, {}),
    ]
    assert resources(result) == {"nvidia.com/gpu": 2, "nvidia.com/mig-1g.5gb": 7}


def test_bad_gpu_descriptions() -> None:
    with pytest.raises(MigPlanError, match="non-empty list"):
        plan(layout({"1g.5gb": 1}), "x", [])
    with pytest.raises(MigPlanError, match="'index' must be a non-negative integer"):
        plan(layout({"1g.5gb": 1}), "x", [{"name": "NVIDIA A100-SXM4-40GB"}])
    with pytest.raises(MigPlanError, match="give 'pci_device_id'"):
        plan(layout({"1g.5gb": 1}), "x", [{"index": 0}])
    with pytest.raises(MigPlanError, match="GPU 0: malformed PCI device id"):
        plan(layout({"1g.5gb": 1}), "x", [{"index": 0, "pci_device_id": "20B0"}])
    with pytest.raises(MigPlanError, match=r"GPU index\(es\) \[0\] appear more than once"):
        plan(layout({"1g.5gb": 1}), "x", hw_gpus(1) * 2)
    with pytest.raises(MigPlanError, match=r"supported_profiles entry .* is incomplete"):
        plan(layout({"1g.5gb": 1}), "x", [{"index": 0, "name": "x", "supported_profiles": [{"name": "1g.5gb"}]}])


def test_resource_names() -> None:
    assert resource_name("1g.5gb") == "nvidia.com/mig-1g.5gb"
    assert resource_name("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    assert resource_name("1g.24gb+me.all") == "nvidia.com/mig-1g.24gb.me.all"
    assert resource_name("1g.24gb-me") == "nvidia.com/mig-1g.24gb-me"
    assert resource_name("2g.48gb+gfx") == "nvidia.com/mig-2g.48gb.gfx"
    assert resource_name("1c.3g.20gb") == "nvidia.com/mig-1c.3g.20gb"


def test_resources_single_strategy() -> None:
    uniform = plan(layout({"1g.5gb": 7}), "x", hw_gpus(8))
    assert resources(uniform, "single") == {"nvidia.com/gpu": 56}
    assert resources(uniform) == {"nvidia.com/mig-1g.5gb": 56}
    # a list of node plans is summed
    assert resources([uniform, uniform]) == {"nvidia.com/mig-1g.5gb": 112}
    disabled = plan([{"devices": "all", "mig-enabled": False}], "x", hw_gpus(2))
    assert resources(disabled, "single") == {"nvidia.com/gpu": 2}


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        (layout({"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}), "one MIG profile on every GPU, the layout has 1g.5gb, 2g.10gb, 3g.20gb"),
        (
            [{"devices": [0], "mig-enabled": False}, {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
            r"MIG is disabled on GPU\(s\) 0 and enabled on GPU\(s\) 1",
        ),
        (
            [{"devices": [0], "mig-enabled": True, "mig-devices": {}}, {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
            r"GPU\(s\) 0 have MIG enabled with none",
        ),
    ],
)
def test_single_strategy_refuses_non_uniform(entries: List[Dict[str, Any]], why: str) -> None:
    p = plan(entries, "x", hw_gpus(2))
    with pytest.raises(MigPlanError, match=why):
        resources(p, "single")


def test_resources_rejects_garbage() -> None:
    with pytest.raises(MigPlanError, match="unknown MIG strategy 'none'"):
        resources([], "none")
    with pytest.raises(MigPlanError, match="lacks 'mig_enabled'"):
        resources([{"index": 0}])


def _gpu_state(mode: str = "enabled", pending: str = "", gis: Any = (), cis: Any = ()) -> Dict[str, Any]:
    return {
        "index": 0,
        "mig_mode_current": mode,
        "mig_mode_pending": pending or mode,
        "gpu_instances": list(gis),
        "compute_instances": list(cis),
    }


def test_actual_devices_from_instances() -> None:
    # shared/fixtures/.../mig-user-guide: GI 1 (3g.20gb) with three 1c CIs; GI 2 (3g.20gb) whole; GI 5 without CI
    gis = [
        {"id": 1, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 4, "size": 4}},
        {"id": 2, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 0, "size": 4}},
        {"id": 5, "profile_id": 19, "profile": "1g.5gb", "placement": {"start": 6, "size": 1}},
    ]
    cis = [
        {"gpu_instance_id": 1, "id": 0, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 1, "id": 1, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 1, "id": 2, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 2, "id": 0, "profile_id": 2, "profile": "3g.20gb"},
    ]
    devices, problems = actual_devices(_gpu_state(gis=gis, cis=cis))
    assert devices == {"1c.3g.20gb": 3, "3g.20gb": 1}
    assert problems == ["GPU instance 5 (1g.5gb) has no compute instance"]


def test_compare_reports_each_difference() -> None:
    expected = [{"index": 0, "mig_enabled": True, "devices": {"1g.5gb": 7}}]
    assert compare(expected, [_gpu_state(mode="disabled")]) == [
        {"gpu": 0, "profile": "mig-mode", "expected": "enabled", "actual": "disabled"},
        {"gpu": 0, "profile": "1g.5gb", "expected": 7, "actual": 0},
    ]
    # pending change is a mismatch even when current already matches the target
    pending = compare([{"index": 0, "mig_enabled": False, "devices": {}}], [_gpu_state("disabled", "enabled")])
    assert pending == [
        {"gpu": 0, "profile": "mig-mode", "expected": "disabled", "actual": "disabled (pending enabled: reset needed)"}
    ]
    gis = [{"id": i, "profile_id": 19, "profile": "1g.5gb", "placement": {"start": i, "size": 1}} for i in range(6)]
    cis = [{"gpu_instance_id": i, "id": 0, "profile_id": 0, "profile": "1g.5gb"} for i in range(6)]
    short = compare(expected, [_gpu_state(gis=gis, cis=cis)])
    assert short == [{"gpu": 0, "profile": "1g.5gb", "expected": 7, "actual": 6}]
    assert compare([{"index": 0, "mig_enabled": True, "devices": {"1g.5gb": 6}}], [_gpu_state(gis=gis, cis=cis)]) == []
    assert compare(expected, []) == [{"gpu": 0, "profile": "gpu", "expected": "present", "actual": "absent"}]


def test_mismatch_table_is_aligned() -> None:
    table = mismatch_table(
        [
            {"gpu": 0, "profile": "mig-mode", "expected": "enabled", "actual": "disabled"},
            {"gpu": 0, "profile": "1g.18gb", "expected": 7, "actual": 0},
        ]
    )
    assert table.splitlines() == [
        "GPU  PROFILE   EXPECTED  ACTUAL",
        "0    mig-mode  enabled   disabled",
        "0    1g.18gb   7         0",
    ]


def test_gpus_shorthand_for_one_model() -> None:
    short = plan(layout({"1g.5gb": 7}), "x", {"count": 8, "pci_device_id": "0x20B010DE"})
    assert [g["index"] for g in short] == list(range(8))
    assert resources(short) == {"nvidia.com/mig-1g.5gb": 56}
    with pytest.raises(MigPlanError, match="'count' must be a positive integer"):
        plan(layout({"1g.5gb": 7}), "x", {"count": 0, "pci_device_id": "0x20B010DE"})
    with pytest.raises(MigPlanError, match=r"unknown key\(s\) model"):
        plan(layout({"1g.5gb": 7}), "x", {"count": 2, "model": "A100"})
