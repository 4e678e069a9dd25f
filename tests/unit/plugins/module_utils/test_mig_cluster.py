# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re
from typing import Any, Dict, Optional

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import compare_nodes, node_view, report_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nfd import NFD_CRD

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


def test_unknown_strategy() -> None:
    with pytest.raises(MigPlanError, match="unknown MIG strategy 'none'"):
        compare_nodes([], {}, "none")


def test_matching_node_is_ok() -> None:
    node = k8s_node("dgx-1", {"nvidia.com/mig-1g.5gb": "56"}, {"nvidia.com/mig-1g.5gb.count": "56", "nvidia.com/mig-1g.5gb.memory": "4864"})
    result = compare_nodes([node], {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}})
    assert result == {"ok": True, "mismatches": [], "stale": [], "missing_nodes": [], "checked": ["dgx-1"], "gfd_labels_missing": [], "hint": ""}


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


# --- GFD's labels missing: the message names Node Feature Discovery ------------------------------------------------
# GFD hands its labels to NFD (a feature file or a NodeFeature object); only nfd-master writes them onto the Node
# (NVIDIA/k8s-device-plugin internal/lm/output.go). Without NFD the device plugin's allocatable resources appear and
# GFD's labels never do.
BALANCED = {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8}
GFD_LABELS = {"nvidia.com/gfd.timestamp": "1764892800", "nvidia.com/gpu.product": "A100-SXM4-40GB", "nvidia.com/mig.strategy": "mixed"}


def balanced_node(name: str, labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    return k8s_node(name, {k: str(v) for k, v in BALANCED.items()}, labels)


def test_allocatable_right_and_no_gfd_label_names_nfd() -> None:
    result = compare_nodes([balanced_node("dgx-2"), balanced_node("dgx-1")], {"dgx-1": BALANCED, "dgx-2": BALANCED})
    assert result["ok"] is False
    assert result["gfd_labels_missing"] == ["dgx-1", "dgx-2"]
    assert {(m["source"], m["actual"]) for m in result["mismatches"]} == {("label", None)}
    hint = result["hint"]
    assert hint.startswith("GPU feature discovery's labels (nvidia.com/mig-<profile>.count, nvidia.com/gfd.timestamp, ...) are missing on dgx-1, dgx-2")
    assert "only through Node Feature Discovery (NFD)" in hint
    assert hint.endswith(f"Is NFD running (CRD {NFD_CRD}, an nfd-master Deployment)?")


@pytest.mark.parametrize(
    ("nfd", "says"),
    [
        (
            {"crd": False, "masters": [], "workers": []},
            f"NFD is not running: no nfd-master runs in any namespace and the CRD {NFD_CRD} does not exist. "
            "Set gpu_plugins_nfd_enabled: auto (or true) so the device plugin chart deploys NFD, or install NFD.",
        ),
        (
            {"crd": True, "masters": [], "workers": ["DaemonSet nfd/nfd-worker"]},
            f"NFD is not running: no nfd-master runs in any namespace, nfd-worker runs without one (DaemonSet nfd/nfd-worker) "
            f"and the CRD {NFD_CRD} exists (a CRD left behind by an uninstalled NFD: Helm never deletes CRDs).",
        ),
        (
            {"crd": True, "masters": ["Deployment gpu-operator/gpu-operator-node-feature-discovery-master"], "workers": []},
            f"NFD: nfd-master runs (Deployment gpu-operator/gpu-operator-node-feature-discovery-master) and the CRD {NFD_CRD} "
            "exists. Check that nfd-master is ready and that its configuration lets GFD's labels through",
        ),
    ],
)
def test_hint_says_what_runs_of_nfd(nfd: Dict[str, Any], says: str) -> None:
    result = compare_nodes([balanced_node("dgx-1")], {"dgx-1": BALANCED}, "mixed", nfd)
    assert result["gfd_labels_missing"] == ["dgx-1"]
    assert says in result["hint"]
    assert report_table(result).splitlines()[1] == "dgx-1  nvidia.com/mig-1g.5gb   label   16        absent"


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (balanced_node("dgx-1", GFD_LABELS), "GFD's labels reach the node (its MIG strategy or layout is the problem, not NFD)"),
        (balanced_node("dgx-1", {"nvidia.com/mig-1g.5gb.count": "16"}), "some count labels arrived"),
        (k8s_node("dgx-1", {"nvidia.com/mig-1g.5gb": "16"}), "allocatable is wrong too: the device plugin is behind"),
        (balanced_node("dgx-1", {"nvidia.com/mig-1g.5gb.count": "7", "nvidia.com/mig-2g.10gb.count": "8",
                                 "nvidia.com/mig-3g.20gb.count": "8"}), "a count label is wrong, not absent"),
    ],
)
def test_no_nfd_hint_when_gfd_labels_arrive_or_allocatable_is_wrong(node: Dict[str, Any], why: str) -> None:
    result = compare_nodes([node], {"dgx-1": BALANCED}, "mixed", {"crd": False, "masters": [], "workers": []})
    assert result["ok"] is False, why
    assert result["gfd_labels_missing"] == [], why
    assert result["hint"] == "", why


def test_no_nfd_hint_under_single_or_when_all_is_well() -> None:
    node = k8s_node("dgx-1", {"nvidia.com/gpu": "56"})  # single: labels are not compared, so none are missing
    assert compare_nodes([node], {"dgx-1": {"nvidia.com/gpu": 56}}, "single")["gfd_labels_missing"] == []
    counts = {f"{k}.count": str(v) for k, v in BALANCED.items()}
    assert compare_nodes([balanced_node("dgx-1", counts)], {"dgx-1": BALANCED})["hint"] == ""


@pytest.mark.parametrize(
    ("nfd", "message"),
    [
        ("yes", "nfd must be a mapping {crd, masters, workers}"),
        ({"crd": "yes"}, f"nfd: crd must be true or false (whether the CRD {NFD_CRD} exists), not 'yes'"),
        ({"crd": True, "masters": "nfd-master"}, "nfd: masters must be a list of strings"),
        ({"crd": True, "master": []}, "nfd: unknown key(s) master; it takes crd, masters and workers"),
    ],
)
def test_bad_nfd_argument_is_named(nfd: Any, message: str) -> None:
    with pytest.raises(MigPlanError, match=re.escape(message)):
        compare_nodes([balanced_node("dgx-1")], {"dgx-1": BALANCED}, "mixed", nfd)
