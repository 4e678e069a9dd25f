# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import (
    compare_nodes,
    expected_resources,
    node_view,
    report_table,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError

CONFIG = {
    "version": "v1",
    "mig-configs": {
        "all-1g.5gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
        "all-balanced": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}}],
        "half": [
            {"devices": [0, 1, 2, 3], "mig-enabled": False},
            {"devices": [4, 5, 6, 7], "mig-enabled": True, "mig-devices": {"3g.20gb": 2}},
        ],
    },
}
A100 = [{"index": i, "pci_device_id": "0x20B010DE"} for i in range(8)]


def k8s_node(name: str, allocatable: Dict[str, str], labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """A Node object as the API (and kubernetes.core.k8s_info) returns it: quantities are strings."""
    base_alloc = {"cpu": "255", "memory": "2113445440Ki", "pods": "110", "ephemeral-storage": "1798382986231"}
    base_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "nvidia.com/mig.config": "all-1g.5gb"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {**base_labels, **(labels or {})}},
        "status": {"allocatable": {**base_alloc, **allocatable}, "capacity": {**base_alloc, **allocatable}},
    }


def test_expected_resources_per_node() -> None:
    nodes = [
        {"node": "dgx-1", "config": CONFIG, "config_name": "all-1g.5gb", "gpus": A100},
        {"node": "dgx-2", "config": CONFIG, "config_name": "half", "gpus": A100},
    ]
    assert expected_resources(nodes) == {
        "dgx-1": {"nvidia.com/mig-1g.5gb": 56},
        "dgx-2": {"nvidia.com/gpu": 4, "nvidia.com/mig-3g.20gb": 8},
    }


def test_expected_single_refuses_non_uniform_naming_the_node() -> None:
    nodes = [{"node": "dgx-2", "config": CONFIG, "config_name": "all-balanced", "gpus": A100}]
    with pytest.raises(MigPlanError, match=r"^node dgx-2: strategy 'single' needs one MIG profile on every GPU"):
        expected_resources(nodes, "single")
    assert expected_resources([{"node": "dgx-1", "config": CONFIG, "config_name": "all-1g.5gb", "gpus": A100}], "single") == {
        "dgx-1": {"nvidia.com/gpu": 56}
    }


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({}, "nodes must be a list"),
        ([{"node": "x"}], "needs node, config, config_name and gpus"),
        ([{"node": "x", "config": CONFIG, "config_name": "nope", "gpus": A100}], "node x: config 'nope' not found"),
    ],
)
def test_expected_bad_input(nodes: Any, message: str) -> None:
    with pytest.raises((MigPlanError, ValueError), match=message):
        expected_resources(nodes)


def test_unknown_strategy() -> None:
    with pytest.raises(MigPlanError, match="unknown MIG strategy 'none'"):
        compare_nodes([], {}, "none")


def test_matching_node_is_ok() -> None:
    node = k8s_node("dgx-1", {"nvidia.com/mig-1g.5gb": "56"}, {"nvidia.com/mig-1g.5gb.count": "56", "nvidia.com/mig-1g.5gb.memory": "4864"})
    result = compare_nodes([node], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result == {"ok": True, "mismatches": [], "stale": [], "missing_nodes": [], "checked": ["dgx-1"]}


def test_wrong_count_and_missing_label() -> None:
    node = k8s_node("dgx-1", {"nvidia.com/mig-1g.5gb": "49"})
    result = compare_nodes([node], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result["ok"] is False
    assert result["mismatches"] == [
        {"node": "dgx-1", "resource": "nvidia.com/mig-1g.5gb", "source": "allocatable", "expected": 56, "actual": 49},
        {"node": "dgx-1", "resource": "nvidia.com/mig-1g.5gb", "source": "label", "expected": 56, "actual": None},
    ]
    assert report_table(result).splitlines() == [
        "NODE   RESOURCE               SOURCE       EXPECTED  ACTUAL",
        "dgx-1  nvidia.com/mig-1g.5gb  allocatable  56        49",
        "dgx-1  nvidia.com/mig-1g.5gb  label        56        absent",
    ]


def test_stale_types_from_an_earlier_layout() -> None:
    # was all-balanced, now all-1g.5gb: kubelet keeps the old resources at 0; GFD labels were refreshed
    node = k8s_node(
        "dgx-1",
        {"nvidia.com/mig-1g.5gb": "56", "nvidia.com/mig-2g.10gb": "0", "nvidia.com/mig-3g.20gb": "0", "nvidia.com/gpu": "0"},
        {"nvidia.com/mig-1g.5gb.count": "56"},
    )
    result = compare_nodes([node], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result["ok"] is True  # zero counts are reported, not failures
    assert [(s["resource"], s["actual"]) for s in result["stale"]] == [
        ("nvidia.com/gpu", 0),
        ("nvidia.com/mig-2g.10gb", 0),
        ("nvidia.com/mig-3g.20gb", 0),
    ]
    # a stale type still advertising devices means the node is not in its layout
    node["metadata"]["labels"]["nvidia.com/mig-3g.20gb.count"] = "8"
    result = compare_nodes([node], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result["ok"] is False
    assert result["mismatches"] == [{"node": "dgx-1", "resource": "nvidia.com/mig-3g.20gb", "source": "label", "expected": 0, "actual": 8}]


def test_missing_node() -> None:
    result = compare_nodes([k8s_node("other", {})], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result["ok"] is False
    assert result["missing_nodes"] == ["dgx-1"]
    assert "dgx-1  -         node    present   absent" in report_table(result)


def test_mixed_node_with_full_gpus() -> None:
    node = k8s_node(
        "dgx-2",
        {"nvidia.com/gpu": "4", "nvidia.com/mig-3g.20gb": "8"},
        {"nvidia.com/mig-3g.20gb.count": "8", "nvidia.com/gpu.count": "8"},  # GFD counts physical GPUs
    )
    result = compare_nodes([node], {"dgx-2": {"nvidia.com/gpu": 4, "nvidia.com/mig-3g.20gb": 8}})
    assert result["ok"] is True, result


def test_single_strategy_compares_allocatable_only() -> None:
    node = k8s_node("dgx-1", {"nvidia.com/gpu": "56"}, {"nvidia.com/gpu.count": "8", "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb"})
    assert compare_nodes([node], {"dgx-1": {"nvidia.com/gpu": 56}}, "single")["ok"] is True
    node["status"]["allocatable"]["nvidia.com/gpu"] = "8"
    assert compare_nodes([node], {"dgx-1": {"nvidia.com/gpu": 56}}, "single")["mismatches"] == [
        {"node": "dgx-1", "resource": "nvidia.com/gpu", "source": "allocatable", "expected": 56, "actual": 8}
    ]


def test_node_view_ignores_other_resources_and_bad_values() -> None:
    node = k8s_node("n", {"nvidia.com/mig-1g.5gb": "7", "example.com/foo": "3", "nvidia.com/mig-2g.10gb": "lots"})
    assert node_view(node, "mixed") == {"allocatable": {"nvidia.com/mig-1g.5gb": 7}, "labels": {}}
