# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig_compare on the controller says exactly what mig_verify says on the node, for the same GPUs."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from mig_module_harness import FIXTURES, ModuleExit, a100_mig_node, h200_node

from ansible_collections.gpu_ops.mig_serving.plugins.filter.mig import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info, mig_verify

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

CONFIG = FIXTURES.parents[1] / "conformance" / "mig-parted" / "config-default.yaml"
FILTERS = FilterModule().filters()


@pytest.mark.parametrize(("node", "config"), [(h200_node, "all-disabled"), (h200_node, "all-1g.18gb"), (a100_mig_node, "all-3g.20gb"),
                                              (a100_mig_node, "all-1g.5gb"), (a100_mig_node, "all-disabled")])
def test_same_mismatches_as_mig_verify(run_module: Any, node: Any, config: str) -> None:
    gpus: List[Dict[str, Any]] = run_module(mig_info.main, {"backend": "nvidia_smi"}, node()).result["gpus"]
    verified: ModuleExit = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": config, "backend": "nvidia_smi",
                                                        "fail_on_mismatch": False}, node())
    plan = FILTERS["mig_plan"](yaml.safe_load(CONFIG.read_text()), config, gpus)
    assert FILTERS["mig_compare"](plan, gpus) == verified.result["mismatches"]


def test_the_a100_guide_node_differs_from_all_3g(run_module: Any) -> None:
    gpus = run_module(mig_info.main, {"backend": "nvidia_smi"}, a100_mig_node()).result["gpus"]
    plan = FILTERS["mig_plan"](yaml.safe_load(CONFIG.read_text()), "all-3g.20gb", gpus)
    mismatches = FILTERS["mig_compare"](plan, gpus)
    assert {"gpu": 0, "profile": "instance", "expected": "complete", "actual": mismatches[-1]["actual"]} == mismatches[-1]


def test_bad_input_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="mig_compare: input must be a plan"):
        FILTERS["mig_compare"]({"not": "a plan"}, [])
    with pytest.raises(AnsibleFilterError, match="mig_compare: malformed plan or GPU list"):
        FILTERS["mig_compare"]([{"index": 0}], [{"index": 0}])


# mig_cluster_compare: a node that advertises its MIG resources but none of GFD's labels (GFD's labels reach a node only
# through Node Feature Discovery: NVIDIA/k8s-device-plugin internal/lm/output.go) gets a hint naming NFD.
def _node(labels: Dict[str, str]) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "dgx-h200-01", "labels": {"kubernetes.io/hostname": "dgx-h200-01", **labels}},
            "status": {"allocatable": {"cpu": "224", "nvidia.com/mig-1g.18gb": "56"}}}


def test_cluster_compare_names_nfd_when_gfd_labels_are_missing() -> None:
    expected = {"dgx-h200-01": {"nvidia.com/mig-1g.18gb": 56}}
    nfd = {"crd": False, "masters": [], "workers": []}
    result = FILTERS["mig_cluster_compare"]([_node({})], expected, "mixed", nfd)
    assert result["ok"] is False
    assert result["gfd_labels_missing"] == ["dgx-h200-01"]
    assert "dgx-h200-01  nvidia.com/mig-1g.18gb  label   56        absent" in result["table"]
    assert "NFD is not running: no nfd-master runs in any namespace and the CRD nodefeatures.nfd.k8s-sigs.io does not exist" in result["hint"]
    assert "gpu_plugins_nfd_enabled: auto" in result["hint"]
    # once nfd-master has written GFD's labels the node is in its layout and there is nothing to explain
    labelled = _node({"nvidia.com/mig-1g.18gb.count": "56", "nvidia.com/mig.strategy": "mixed"})
    assert FILTERS["mig_cluster_compare"]([labelled], expected, "mixed", nfd) | {"table": ""} == {
        "ok": True, "mismatches": [], "stale": [], "missing_nodes": [], "checked": ["dgx-h200-01"], "gfd_labels_missing": [], "hint": "", "table": ""}


def test_cluster_compare_bad_nfd_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^mig_cluster_compare: nfd: crd must be true or false"):
        FILTERS["mig_cluster_compare"]([_node({})], {"dgx-h200-01": {"nvidia.com/mig-1g.18gb": 56}}, "mixed", {"crd": "no"})
