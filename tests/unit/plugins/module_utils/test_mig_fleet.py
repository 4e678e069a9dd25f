# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet model: every GPU node planned once, capacity and resource names per MIG profile (gpu_ops_fleet)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import read_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_fleet import expected_resources, plan_fleet
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError

ROOT = Path(__file__).resolve().parents[4]
DGX_LAYOUTS, DGX_CONFIG = read_config((ROOT / "inventories" / "layouts" / "dgx.yaml").read_bytes(), "dgx.yaml")
A100 = {"count": 8, "pci_device_id": "0x20B010DE"}
H200 = {"count": 8, "pci_device_id": "0x233510DE"}

CONFIG: Dict[str, Any] = {
    "version": "v1",
    "mig-configs": {
        "all-1g.5gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
        "all-balanced": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}}],
        "media": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb+me": 1, "1g.5gb": 6}}],
        "shared-3g": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1c.3g.20gb": 3, "4g.20gb": 1}}],
        "all-3g.20gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 2}}],
        "half": [
            {"devices": [0, 1, 2, 3], "mig-enabled": False},
            {"devices": [4, 5, 6, 7], "mig-enabled": True, "mig-devices": {"3g.20gb": 2}},
        ],
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
    },
}


def node(name: str, config_name: str, gpus: Any = None, config: Any = None, **extra: Any) -> Dict[str, Any]:
    return {"node": name, "config": CONFIG if config is None else config, "config_name": config_name, "gpus": A100 if gpus is None else gpus,
            **extra}


def dgx_fleet(strategy: str = "mixed") -> Dict[str, Any]:
    """inventories/dgx's GPU nodes (hosts.yml), on its layout file (inventories/layouts/dgx.yaml), parsed once."""
    return plan_fleet([node("dgx-a100-01", "all-1g.5gb", A100, DGX_LAYOUTS, host="dgx-a100-01"),
                       node("dgx-a100-02", "all-balanced", A100, DGX_LAYOUTS, host="dgx-a100-02"),
                       node("dgx-h200-01", "all-1g.18gb", H200, DGX_LAYOUTS, host="dgx-h200-01")], strategy)


def test_dgx_inventory_capacities() -> None:
    fleet = dgx_fleet()
    assert fleet["strategy"] == "mixed"
    assert fleet["profiles"] == {
        "1g.18gb": {"resource": "nvidia.com/mig-1g.18gb", "capacity": 56, "slices": 1, "nodes": ["dgx-h200-01"]},
        "1g.5gb": {"resource": "nvidia.com/mig-1g.5gb", "capacity": 56 + 16, "slices": 1, "nodes": ["dgx-a100-01", "dgx-a100-02"]},
        "2g.10gb": {"resource": "nvidia.com/mig-2g.10gb", "capacity": 8, "slices": 2, "nodes": ["dgx-a100-02"]},
        "3g.20gb": {"resource": "nvidia.com/mig-3g.20gb", "capacity": 8, "slices": 3, "nodes": ["dgx-a100-02"]},
    }
    assert fleet["nodes"]["dgx-a100-02"] == {
        "host": "dgx-a100-02", "config": "all-balanced", "gpus": 8,
        "profiles": {"1g.5gb": 16, "2g.10gb": 8, "3g.20gb": 8},
        "resources": {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8},
    }
    # what the cluster-side verification compares: the same as each node's resources
    assert fleet["expected"] == {name: entry["resources"] for name, entry in fleet["nodes"].items()}
    assert fleet["expected"]["dgx-h200-01"] == {"nvidia.com/mig-1g.18gb": 56}
    # the whole cluster, per resource (gpu_plugins' mig-capacity.yaml in render mode)
    assert fleet["resources"] == {"nvidia.com/mig-1g.18gb": 56, "nvidia.com/mig-1g.5gb": 72, "nvidia.com/mig-2g.10gb": 8,
                                  "nvidia.com/mig-3g.20gb": 8}


def test_fact_is_json_with_sorted_keys() -> None:
    fleet = dgx_fleet()
    text = json.dumps(fleet)
    assert json.loads(text) == fleet
    assert text == json.dumps(fleet, sort_keys=True)


def test_single_strategy_names_every_device_nvidia_gpu() -> None:
    fleet = plan_fleet([node("a", "all-1g.5gb"), node("b", "all-3g.20gb")], "single")
    assert fleet["strategy"] == "single"
    assert fleet["profiles"] == {
        "1g.5gb": {"resource": "nvidia.com/gpu", "capacity": 56, "slices": 1, "nodes": ["a"]},
        "3g.20gb": {"resource": "nvidia.com/gpu", "capacity": 16, "slices": 3, "nodes": ["b"]},
    }
    assert fleet["expected"] == {"a": {"nvidia.com/gpu": 56}, "b": {"nvidia.com/gpu": 16}}


def test_single_strategy_refuses_a_mixed_layout_naming_the_host() -> None:
    with pytest.raises(MigPlanError, match=r"^GPU node dgx-a100-02: strategy 'single' needs one MIG profile on every GPU, the layout has "
                                           r"1g\.5gb, 2g\.10gb, 3g\.20gb; use strategy 'mixed'$"):
        dgx_fleet("single")


def test_media_extension_and_shared_compute_profiles() -> None:
    fleet = plan_fleet([node("a", "media"), node("b", "shared-3g")])
    assert fleet["profiles"]["1g.5gb+me"] == {"resource": "nvidia.com/mig-1g.5gb.me", "capacity": 8, "slices": 1, "nodes": ["a"]}
    assert fleet["profiles"]["1g.5gb"]["capacity"] == 48
    # a compute instance of a 3g GPU instance: one compute slice, its own resource
    assert fleet["profiles"]["1c.3g.20gb"] == {"resource": "nvidia.com/mig-1c.3g.20gb", "capacity": 24, "slices": 1, "nodes": ["b"]}
    assert fleet["profiles"]["4g.20gb"]["slices"] == 4


def test_gpus_without_mig_count_as_nvidia_gpu_and_no_profile() -> None:
    fleet = plan_fleet([node("a", "half"), node("b", "all-disabled")])
    assert fleet["expected"] == {"a": {"nvidia.com/gpu": 4, "nvidia.com/mig-3g.20gb": 8}, "b": {"nvidia.com/gpu": 8}}
    assert fleet["resources"] == {"nvidia.com/gpu": 12, "nvidia.com/mig-3g.20gb": 8}
    assert list(fleet["profiles"]) == ["3g.20gb"]
    assert fleet["nodes"]["b"]["profiles"] == {}
    assert fleet["nodes"]["b"]["gpus"] == 8


def test_kubernetes_name_differs_from_the_host() -> None:
    fleet = plan_fleet([node("k8s-gpu-1", "all-1g.5gb", host="dgx-1")])
    assert list(fleet["nodes"]) == ["k8s-gpu-1"]
    assert fleet["nodes"]["k8s-gpu-1"]["host"] == "dgx-1"
    with pytest.raises(MigPlanError, match=r"^GPU node dgx-1 \(Kubernetes node k8s-gpu-1\): config 'nope' not found"):
        plan_fleet([node("k8s-gpu-1", "nope", host="dgx-1")])


def test_unknown_layout_names_the_host() -> None:
    with pytest.raises(MigPlanError, match=r"^GPU node dgx-a100-07: config 'all-1g.6gb' not found; the file defines: all-1g.18gb"):
        plan_fleet([node("dgx-a100-07", "all-1g.6gb", A100, DGX_LAYOUTS)])


def test_every_failing_node_is_named_at_once() -> None:
    nodes = [node("a", "nope"), node("b", "all-1g.5gb"), node("c", "all-1g.5gb", {"count": 8, "pci_device_id": "0x233510DE"})]
    with pytest.raises(MigPlanError) as err:
        plan_fleet(nodes)
    problems = str(err.value).split("; GPU node ")
    assert len(problems) == 2, str(err.value)
    assert problems[0].startswith("GPU node a: config 'nope' not found")
    assert problems[1].startswith("c: config 'all-1g.5gb': GPU 0 (NVIDIA H200")


def test_two_hosts_with_one_kubernetes_name() -> None:
    with pytest.raises(MigPlanError, match=r"GPU node dgx-2 \(Kubernetes node gpu\): Kubernetes node gpu is listed twice \(also GPU node dgx-1\): "
                                           r"give each its own gpu_ops_k8s_node_name"):
        plan_fleet([node("gpu", "all-1g.5gb", host="dgx-1"), node("gpu", "all-1g.5gb", host="dgx-2")])


def test_unknown_strategy() -> None:
    with pytest.raises(MigPlanError, match=r"^unknown MIG strategy 'mix'; the device plugin knows mixed, single$"):
        plan_fleet([node("a", "all-1g.5gb")], "mix")


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({}, "nodes must be a list"),
        ([{"node": "x"}], "needs node, config, config_name and gpus; it lacks config, config_name, gpus"),
        ([node("", "all-1g.5gb")], "'node' must be the Kubernetes node name"),
        ([node("x", "all-1g.5gb", host=3)], "'host' must be the inventory host"),
        ([node("x", "all-1g.5gb", {"count": 0, "pci_device_id": "0x20B010DE"})], "GPU node x: 'gpus' shorthand"),
    ],
)
def test_bad_input(nodes: Any, message: str) -> None:
    with pytest.raises(MigPlanError, match=message):
        plan_fleet(nodes)


def test_expected_resources_is_the_fleets_expectation() -> None:
    nodes: List[Dict[str, Any]] = [node("dgx-1", "all-1g.5gb"), node("dgx-2", "half")]
    assert expected_resources(nodes) == {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}, "dgx-2": {"nvidia.com/gpu": 4, "nvidia.com/mig-3g.20gb": 8}}
    assert expected_resources([node("dgx-1", "all-1g.5gb")], "single") == {"dgx-1": {"nvidia.com/gpu": 56}}
    with pytest.raises(MigPlanError, match=r"^GPU node dgx-2: strategy 'single' needs one MIG profile on every GPU"):
        expected_resources([node("dgx-2", "all-balanced")], "single")
