# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The upstream zone of the role nginx_lb's ``resolve`` form holds a peer for every pod the pools can run, proven with
a real nginx and a real DNS server: Debian's nginx 1.22 loads the rendered upstreams (only ``resolve`` removed, which
1.22 lacks; and 1.22's spelling of ``http2``) while dnsmasq answers each pool's headless Service name with as many
addresses as the pool's max_replicas. Without ``resolve`` nginx resolves each name once, at start, through the system
resolver (a resolv.conf naming the dnsmasq, bind-mounted in a mount namespace of nginx's own: needs root), and copies
every address into the zone as a peer with its name and server string (ngx_http_upstream_zone_copy_peers), as the
``resolve`` form does for each address it resolves. ``nginx -t`` allocates the zone and the peers in it and fails
with "no memory in upstream zone" when they do not fit.

A fleet of 512 pods (8 H200 nodes of all-1g.18gb, 448, and 64 3g pods) gets 1024k per upstream, and nginx takes it;
the 256k the role used before does not hold them. What this cannot show: the ``resolve`` form re-resolving at run time
(1.27.3+) and NGINX Plus' per-peer state, for which the size leaves room (plugins/filter/nginx.py)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.dnsmasq import dnsmasq_server
    from tests.servers.nginx import check_config, localize, render_role_config, version
else:  # tests/servers, importable once tests/ is on sys.path
    from servers.dnsmasq import dnsmasq_server
    from servers.nginx import check_config, localize, render_role_config, version

pytestmark = pytest.mark.slow

SUFFIX = ".triton.svc.cluster.local"
POOLS: List[Dict[str, Any]] = [{"service": "triton-1g-18gb-headless", "weight": 1, "max_replicas": 448},
                               {"service": "triton-3g-40gb-headless", "weight": 3, "max_replicas": 64}]
ZONE = "1024k"  # 512 peers x 2 KiB
DNS_HOST = "127.0.0.155"
NO_MEMORY = 'no memory in upstream zone "triton_http"'


def pod_addresses(index: int, count: int) -> List[str]:
    return [f"10.{index}.{n // 256}.{n % 256}" for n in range(1, count + 1)]


@dataclass
class Bed:
    work: Path
    rendered: str
    resolv_conf: Path

    def check(self, name: str, zone: str) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered config with upstream zones of ``zone``, names resolved through the dnsmasq."""
        return check_config(loadable(self.rendered, self.work / name, zone), self.work / name, resolv_conf=self.resolv_conf)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    assert version().startswith("1.22."), "Debian 12's nginx: the resolve form without `resolve`"
    work = tmp_path_factory.mktemp("nginx-lb-zone")
    rendered = render_role_config(work / "render", "-e", "nginx_lb_oss_version=1.28.0", pools=POOLS)
    resolv_conf = work / "resolv.conf"
    resolv_conf.write_text(f"nameserver {DNS_HOST}\noptions timeout:2 attempts:2\n")
    # each pool's name answers with every pod it can run: over 512 bytes, so the resolver asks again over TCP
    records = {f"{pool['service']}{SUFFIX}": pod_addresses(index, int(pool["max_replicas"])) for index, pool in enumerate(POOLS)}
    with dnsmasq_server(work / "dns", records, host=DNS_HOST, port=53):
        yield Bed(work, rendered, resolv_conf)


def loadable(rendered: str, prefix: Path, zone: str) -> str:
    """The rendered config as 1.22 loads it: without `resolve`, `listen ... http2`, and the upstream zones of ``zone``."""
    swaps = {"listen 8001;\n        http2 on;": "listen 127.0.0.1:1 http2;"}
    for pool in POOLS:
        for port in ("8000", "8001"):
            swaps[f"server {pool['service']}{SUFFIX}:{port} resolve "] = f"server {pool['service']}{SUFFIX}:{port} "
    for upstream in ("triton_http", "triton_grpc"):
        swaps[f"zone {upstream} {ZONE};"] = f"zone {upstream} {zone};"
    return localize(rendered, prefix, swaps)


def test_the_rendered_zone_holds_every_pod_the_pools_can_run(bed: Bed) -> None:
    for upstream in ("triton_http", "triton_grpc"):
        assert bed.rendered.count(f"zone {upstream} {ZONE};") == 1, f"the render did not size {upstream}'s zone for 512 pods"
    proc = bed.check("sized", ZONE)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_former_fixed_zone_does_not(bed: Bed) -> None:
    """The 256k of earlier releases, on the same fleet: nginx cannot place the peers (the test above can fail)."""
    proc = bed.check("fixed", "256k")
    assert proc.returncode != 0
    assert NO_MEMORY in proc.stderr, proc.stderr[-3000:]
