# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nginx_upstream_zone_size filter: a zone for every pod the pools can run, 2 KiB a peer, at least 256k, whole 64k
steps; bad pools refused by index. That the sizes hold that many peers in a real nginx is
tests/integration/test_nginx_lb_zone_live.py."""
from __future__ import annotations

from typing import Any, List

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.filter.nginx import nginx_upstream_zone_size


@pytest.mark.parametrize(("max_replicas", "size"), [
    ([1], "256k"),                     # the floor
    ([128], "256k"),                   # 256 KiB exactly
    ([129], "320k"),                   # one peer over: the next 64k step
    ([56, 72, 8, 8], "320k"),          # inventories/dgx: 144 pods, 288 KiB
    ([448], "896k"),                   # 8 H200 nodes of all-1g.18gb
    ([1000, "24"], "2048k"),           # a count given as text (-e) counts
])
def test_sized_for_every_pod_the_pools_can_run(max_replicas: List[Any], size: str) -> None:
    assert nginx_upstream_zone_size([{"service": f"p{i}", "max_replicas": m} for i, m in enumerate(max_replicas)]) == size


@pytest.mark.parametrize(("pools", "message"), [
    ([], "the input must be a non-empty list of pools, got []"),
    ("triton", "the input must be a non-empty list of pools, got 'triton'"),
    ([{"max_replicas": 8}, {"max_replicas": 0}], "pools[1].max_replicas must be an integer >= 1, got 0"),
    ([{"max_replicas": True}], "pools[0].max_replicas must be an integer >= 1, got True"),
    ([{"service": "x"}], "pools[0].max_replicas must be an integer >= 1, got None"),
    ([8], "pools[0].max_replicas must be an integer >= 1, got None"),
])
def test_bad_pools_are_refused_naming_the_entry(pools: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=r"^nginx_upstream_zone_size: ") as err:
        nginx_upstream_zone_size(pools)
    assert message in str(err.value)
