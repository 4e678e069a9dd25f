# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The serving pools (gpu_ops_pools): one Triton Deployment per MIG profile, sized and weighted from the fleet model,
planned on the example inventory's real fleet (inventories/dgx: two DGX A100 and one DGX H200)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.filter import mig as mig_filters
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import read_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_fleet import plan_fleet
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_pools import PoolError, plan_pools, profile_slug

ROOT = Path(__file__).resolve().parents[4]
LAYOUTS, _RAW = read_config((ROOT / "inventories" / "layouts" / "dgx.yaml").read_bytes(), "dgx.yaml")
A100 = {"count": 8, "pci_device_id": "0x20B010DE"}
H200 = {"count": 8, "pci_device_id": "0x233510DE"}
# inventories/dgx/hosts.yml
FLEET = plan_fleet([
    {"node": "dgx-a100-01", "config": LAYOUTS, "config_name": "all-1g.5gb", "gpus": A100},
    {"node": "dgx-a100-02", "config": LAYOUTS, "config_name": "all-balanced", "gpus": A100},
    {"node": "dgx-h200-01", "config": LAYOUTS, "config_name": "all-1g.18gb", "gpus": H200},
])
FILTER = mig_filters.FilterModule().filters()["serving_pools"]


def table(pools: List[Dict[str, Any]]) -> List[Tuple[Any, ...]]:
    return [(p["name"], p["profile"], p["resource"], p["weight"], p["max_replicas"]) for p in pools]


def test_default_is_a_pool_per_profile_of_the_layouts_sized_to_its_capacity() -> None:
    # all-1g.5gb: 7 x 1g.5gb per A100; all-balanced: 2 x 1g.5gb + 2g.10gb + 3g.20gb; all-1g.18gb: 7 per H200
    assert table(plan_pools(FLEET, [], "triton")) == [
        ("triton-1g-18gb", "1g.18gb", "nvidia.com/mig-1g.18gb", 1, 56),
        ("triton-1g-5gb", "1g.5gb", "nvidia.com/mig-1g.5gb", 1, 72),
        ("triton-2g-10gb", "2g.10gb", "nvidia.com/mig-2g.10gb", 2, 8),
        ("triton-3g-20gb", "3g.20gb", "nvidia.com/mig-3g.20gb", 3, 8),
    ]
    pool = plan_pools(FLEET, None, "serve")[0]
    assert pool["headless"] == "serve-1g-18gb-headless"
    assert pool["capacity"] == 56
    assert pool["slices"] == 1
    assert [pool[k] for k in ("min_replicas", "replicas", "target_queue_time_us", "resources")] == [None] * 4


def test_explicit_pools_keep_their_order_and_values() -> None:
    pools = plan_pools(FLEET, ["3g.20gb", {"profile": "1g.5gb", "name": "small", "min_replicas": 2, "max_replicas": "40",
                                           "target_queue_time_us": 30000, "weight": 2,
                                           "resources": {"requests": {"cpu": "1"}}}])
    assert table(pools) == [("triton-3g-20gb", "3g.20gb", "nvidia.com/mig-3g.20gb", 3, 8), ("small", "1g.5gb", "nvidia.com/mig-1g.5gb", 2, 40)]
    assert pools[1]["min_replicas"] == 2
    assert pools[1]["target_queue_time_us"] == 30000
    assert pools[1]["resources"] == {"requests": {"cpu": "1"}}


def test_pools_sharing_a_profile_split_its_capacity() -> None:
    pools = plan_pools(FLEET, [{"profile": "1g.5gb", "name": "a", "max_replicas": 50}, {"profile": "1g.5gb", "name": "b", "max_replicas": 22}])
    assert [p["max_replicas"] for p in pools] == [50, 22]


@pytest.mark.parametrize(("pools", "message"), [
    (["4g.20gb"], "gpu_ops_serving_pools[0]: profile 4g.20gb is in no GPU node's layout; the layouts provide: 1g.18gb, 1g.5gb, 2g.10gb, 3g.20gb"),
    ([{"profile": "1g.5gb", "replica": 2}], "gpu_ops_serving_pools[0] has unknown keys replica; a pool takes profile, name"),
    ([{"profile": "1g.5gb", "max_replicas": 73}], "max_replicas of the pools on 1g.5gb (triton-1g-5gb 73) add up to 73, more than the 72"),
    ([{"profile": "1g.5gb", "max_replicas": 0}], "gpu_ops_serving_pools[0].max_replicas must be an integer, at least 1, not 0"),
    ([{"profile": "1g.5gb", "weight": True}], "gpu_ops_serving_pools[0].weight must be an integer, at least 1, not True"),
    ([{"profile": "2g.10gb", "min_replicas": 9}], "gpu_ops_serving_pools[0].min_replicas (9) is above the pool's max_replicas (8)"),
    (["1g.5gb", "1g.5gb"], "gpu_ops_serving_pools[0], gpu_ops_serving_pools[1]: pools sharing profile 1g.5gb (capacity 72) must each give max_replicas"),
    ([{"profile": "1g.5gb", "max_replicas": 1}, {"profile": "1g.5gb", "max_replicas": 1}],
     "gpu_ops_serving_pools[1]: the pool name triton-1g-5gb is also gpu_ops_serving_pools[0]'s"),
    ([{"profile": "1g.5gb", "name": "Big_Pool"}], "gpu_ops_serving_pools[0].name must be a DNS label of at most 54 characters"),
    ([{"profile": "1g.5gb", "resources": {"request": {}}}], "gpu_ops_serving_pools[0].resources must be a mapping with requests and/or limits"),
    ([7], "gpu_ops_serving_pools[0] must be a MIG profile or a mapping with profile"),
    ({"profile": "1g.5gb"}, "gpu_ops_serving_pools must be a list of MIG profiles or pool mappings"),
])
def test_bad_pools_are_refused_naming_the_entry(pools: Any, message: str) -> None:
    with pytest.raises(PoolError, match=None) as caught:
        plan_pools(FLEET, pools)
    assert message in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PoolError) as caught:
        plan_pools(FLEET, ["7g.40gb", {"profile": "1g.5gb", "min_replicas": -1}])
    assert "[0]: profile 7g.40gb" in str(caught.value)
    assert "[1].min_replicas must be" in str(caught.value)


def test_a_fleet_without_mig_profiles_has_nothing_to_serve_on() -> None:
    with pytest.raises(PoolError, match="no GPU node's layout provides a MIG profile"):
        plan_pools({"profiles": {}}, [])


def test_profile_slug_is_a_dns_label_part() -> None:
    assert [profile_slug(p) for p in ("1g.10gb+me", "1c.3g.20gb", "7g.141gb")] == ["1g-10gb-me", "1c-3g-20gb", "7g-141gb"]


def test_the_filter_names_itself_in_its_errors() -> None:
    assert FILTER(FLEET, ["2g.10gb"], "triton")[0]["name"] == "triton-2g-10gb"
    with pytest.raises(AnsibleFilterError, match=r"^serving_pools: gpu_ops_serving_pools\[0\]: profile 9g"):
        FILTER(FLEET, ["9g.99gb"])
