# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How many peers an nginx upstream zone of a given size holds: the figure behind the filter
nginx_upstream_zone_size (2 KiB per peer), which sizes role nginx_lb's zones.

Debian's nginx 1.22 (the only nginx here) cannot run ``server NAME resolve``; without ``resolve`` it resolves a
``server NAME`` once at start and copies every address into the zone as a peer with its name and server string
(ngx_http_upstream_zone_copy_peers), which is what the ``resolve`` form stores for each address it resolves. So: one
upstream ``u`` with ``zone u SIZE`` and one ``server`` line whose name dnsmasq answers with N addresses (over TCP when
the answer is large), ``nginx -t`` (it allocates the zone and the peers in it) for each N, bisected to the largest N
that fits. Names resolve through a resolv.conf bind-mounted in a mount namespace of nginx's own: needs root.

    sudo .venv/bin/python benchmarks/nginx_zone.py --sizes 64k 256k 512k 1m [--out benchmarks/results/X.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.dnsmasq import dnsmasq_server, query_a  # the test equipment
from tests.servers.nginx import check_config, version

NAME = "triton-1g-18gb-headless.triton.svc.cluster.local"
DNS_HOST = "127.0.0.156"
UPPER = 3000  # a DNS message holds at most 65535 bytes: about 4000 A records; enough for zones up to 2m


def addresses(count: int) -> List[str]:
    return [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(1, count + 1)]


def answer(count: int) -> List[str]:
    """The name's addresses now; none while dnsmasq re-reads its hosts file (a query lost then times out)."""
    try:
        return query_a(NAME, DNS_HOST, 53)
    except OSError:
        return []


def size_bytes(size: str) -> int:
    """An nginx size (``ngx_parse_size``) in bytes: 256k -> 262144."""
    unit = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(size[-1].lower(), 1)
    return int(size if unit == 1 else size[:-1]) * unit


def config(size: str) -> str:
    return (f"pid nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n"
            f"    upstream u {{\n        zone u {size};\n        server {NAME}:8000 weight=3 max_fails=2 fail_timeout=10s;\n    }}\n"
            f"    server {{ listen 127.0.0.1:1; location / {{ proxy_pass http://u; }} }}\n}}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64k", "256k", "512k", "1m"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: Dict[str, Any] = {"nginx": version(), "name": NAME, "date": time.strftime("%Y-%m-%d"), "zones": {}}
    with tempfile.TemporaryDirectory(prefix="nginx-zone-") as tmp:
        work = Path(tmp)
        resolv = work / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_HOST}\noptions timeout:2 attempts:2\n")
        with dnsmasq_server(work / "dns", {NAME: addresses(1)}, host=DNS_HOST, port=53) as dns:

            def fits(count: int, size: str) -> bool:
                dns.set_records({NAME: addresses(count)}, wait=False)
                deadline = time.monotonic() + 10.0
                while len(answer(count)) != count:  # re-read (SIGHUP) and answering, over TCP if large
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"dnsmasq does not answer {count} addresses")
                    time.sleep(0.05)
                proc = check_config(config(size), work / "nginx", resolv_conf=resolv)
                if proc.returncode != 0 and "no memory in upstream zone" not in proc.stderr:
                    raise RuntimeError(f"nginx -t failed for another reason:\n{proc.stderr[-2000:]}")
                return bool(proc.returncode == 0)

            for size in args.sizes:
                low, high = 0, UPPER
                while low < high:  # the largest count that fits
                    mid = (low + high + 1) // 2
                    if fits(mid, size):
                        low = mid
                    else:
                        high = mid - 1
                results["zones"][size] = low
                print(f"zone {size}: {low} peers", flush=True)
    sizes = sorted(results["zones"].items(), key=lambda item: item[1])
    if len(sizes) >= 2:
        (small, n_small), (big, n_big) = sizes[0], sizes[-1]
        results["bytes_per_peer"] = round((size_bytes(big) - size_bytes(small)) / (n_big - n_small))
        print(f"bytes per peer ({small} to {big}): {results['bytes_per_peer']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
