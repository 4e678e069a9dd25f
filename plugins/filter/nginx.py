# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nginx_upstream_zone_size filter (documented in nginx_upstream_zone_size.yml next to this file)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from ansible.errors import AnsibleFilterError

# An upstream zone holds every peer of its upstream: with `server NAME resolve`, one per address the name resolves
# to, so one per ready pod of the pools behind it, up to the sum of their max_replicas. Measured with Debian's nginx
# 1.22 (tests/integration/test_nginx_lb_zone_live.py, docs/benchmarks.md): 834 bytes per peer (a name resolving to N
# addresses, each a peer with its name and server string; 288 fit in 256k, 1231 in 1m). The budget per peer is about
# 2.5 times that: room for the peers `resolve` adds before it frees the ones an answer dropped, and for NGINX Plus'
# per-peer state, which cannot be measured here. Never less than FLOOR (what the role used before, and what
# NGINX's own Kubernetes controllers start from); rounded up to whole STEPs.
PEER_BYTES = 2048
FLOOR_KIB = 256
STEP_KIB = 64


def nginx_upstream_zone_size(pools: Any) -> str:
    """The ``zone`` size for an upstream over ``pools`` (each with ``max_replicas``): ``320k`` for 144 peers."""
    if not isinstance(pools, list) or not pools:
        raise AnsibleFilterError(f"nginx_upstream_zone_size: the input must be a non-empty list of pools, got {pools!r}")
    peers = 0
    for index, pool in enumerate(pools):
        most = pool.get("max_replicas") if isinstance(pool, Mapping) else None
        if isinstance(most, str) and most.isdigit():  # -e and some templating hand integers over as text
            most = int(most)
        if isinstance(most, bool) or not isinstance(most, int) or most < 1:
            raise AnsibleFilterError(f"nginx_upstream_zone_size: pools[{index}].max_replicas must be an integer >= 1, got {most!r}")
        peers += most
    kib = -(-peers * PEER_BYTES // 1024)  # ceiling
    steps = -(-kib // STEP_KIB)
    return f"{max(FLOOR_KIB, steps * STEP_KIB)}k"


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"nginx_upstream_zone_size": nginx_upstream_zone_size}
