# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role nginx_lb's config under load: HTTP and gRPC inference through nginx against the same clients going
straight to Triton, in one run, on loopback.

Bed (the same as tests/integration/test_nginx_lb_live.py): three Triton servers (CPU, python model sleeping
``--delay-ms`` per request) on 127.0.0.11-13 with the same ports, dnsmasq answering the headless Service name,
and two nginx 1.22 (Debian) running side by side:

- ``variable``: the config the role renders for open-source nginx < 1.27.3 (resolver variable; re-resolves,
  no upstream keepalive) - what Debian's 1.22 can run with re-resolution;
- ``keepalive``: the config the role renders for >= 1.27.3 (upstream zone + keepalive), with its one
  ``server NAME resolve`` line replaced by the three addresses (1.22 has no ``resolve``): the same proxy path
  as the resolve form, without re-resolution.

Load: closed loop, one outstanding request per backend (three client processes). ``direct``: client i talks to
Triton i. Through a proxy: each client talks to nginx. Every round runs every (protocol, target) phase for
``--seconds``, in a rotated order, so drift hits all alike; ratios are taken within a round, then the median
over rounds. Requests per backend are Triton's own ``nv_inference_request_success``.

Then the DNS behaviour, through the ``variable`` proxy (the form the tests run): a fourth Triton is added to the
answer while a gRPC client keeps its connection (time to its first request), then removed from DNS, and after
``valid`` + 1 s stopped (SIGTERM) while HTTP and gRPC clients run (failed requests), ``--cycles`` times.

    .venv/bin/python benchmarks/nginx_lb.py --rounds 5 --seconds 4 --out benchmarks/results/nginx_lb-DATE.json
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
FQDN = "triton-headless.triton.svc.cluster.local"
BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
NEWCOMER = "127.0.0.14"
MODEL = "sleeper"
VALID_S = 5.0
_SUCCESS = re.compile(r'^nv_inference_request_success\{[^}]*model="' + MODEL + r'"[^}]*\} (\d+(?:\.\d+)?)$', re.MULTILINE)
DATA = [float(i) for i in range(16)]
HTTP_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": DATA}]}).encode()


def served(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        match = _SUCCESS.search(resp.read().decode())
    return int(float(match.group(1))) if match else 0


def common_free_ports(hosts: Sequence[str], count: int) -> List[int]:
    chosen: List[int] = []
    for _attempt in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        ok = port not in chosen
        for host in hosts[1:]:
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no {count} ports free on all of {hosts}")


# --- load workers (separate processes: no GIL shared between clients) ------------------------------------


def worker(protocol: str, target: str, ready: Any, go: Any, seconds: float, queue: Any) -> None:
    """Connect to ``target`` (host:port), say ``ready``, wait for ``go``, then a closed loop for ``seconds``; puts
    (ok, errors, latencies in s)."""
    import http.client

    import numpy as np

    grpcclient: Any = importlib.import_module("tritonclient.grpc")
    latencies: List[float] = []
    errors = 0
    host, port = target.rsplit(":", 1)
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(url=target)
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(np.array(DATA, dtype=np.float32))
        client.infer(MODEL, inputs=[inp])  # connection up before the clock starts

        def once() -> bool:
            return client.infer(MODEL, inputs=[inp], client_timeout=10).as_numpy("OUTPUT0") is not None
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)

        def once() -> bool:
            conn.request("POST", f"/v2/models/{MODEL}/infer", body=HTTP_BODY, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200

        once()
    ready.release()
    go.wait(timeout=120)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            good = once()
        except Exception:  # any failure counts as one
            good = False
        if good:
            latencies.append(time.perf_counter() - t0)
        else:
            errors += 1
    queue.put((len(latencies), errors, latencies))


def run_phase(ctx: Any, protocol: str, targets: Sequence[str], seconds: float, metrics: Sequence[str]) -> Dict[str, Any]:
    queue = ctx.Queue()
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=worker, args=(protocol, t, ready, go, seconds, queue)) for t in targets]
    for p in procs:
        p.start()
    for _proc in procs:  # every client has imported its library and connected
        if not ready.acquire(timeout=120):
            raise RuntimeError("a load worker did not start")
    before = [served(m) for m in metrics]
    go.set()
    results = [queue.get(timeout=seconds + 60) for _proc in procs]
    for p in procs:
        p.join(timeout=30)
    after = [served(m) for m in metrics]
    lat = sorted(x for r in results for x in r[2])
    per_backend = [a - b for a, b in zip(after, before)]
    return {
        "requests": sum(r[0] for r in results),
        "errors": sum(r[1] for r in results),
        "throughput_rps": sum(r[0] for r in results) / seconds,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "per_backend": per_backend,
        "spread_max_min": (max(per_backend) / min(per_backend)) if min(per_backend) > 0 else None,
    }


# --- the DNS behaviour -----------------------------------------------------------------------------------


class _Traffic:
    """HTTP and gRPC clients through one proxy, in threads, until stopped; counts successes and failures."""

    def __init__(self, proxy: Dict[str, int]) -> None:
        self.proxy = proxy
        self.stop = threading.Event()
        self.failures: List[str] = []
        self.ok = 0
        self.lock = threading.Lock()

    def _count(self, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.ok += 1
            else:
                self.failures.append(failure)

    def grpc_loop(self) -> None:
        import numpy as np

        grpcclient: Any = importlib.import_module("tritonclient.grpc")
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{self.proxy['grpc']}")
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(np.array(DATA, dtype=np.float32))
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                client.infer(MODEL, inputs=[inp], client_timeout=10)
                self._count(None)
            except Exception as exc:  # any failure counts
                self._count(f"grpc {exc}")
        client.close()

    def http_loop(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.proxy["http"], timeout=10)
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("POST", f"/v2/models/{MODEL}/infer", body=HTTP_BODY, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                self._count(None if resp.status == 200 else f"http {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self._count(f"http {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.proxy["http"], timeout=10)
        conn.close()


def dns_cycles(bed: Dict[str, Any], cycles: int) -> List[Dict[str, Any]]:
    """Add a fourth Triton to DNS under gRPC and HTTP clients (delay to its first request; the gRPC clients keep
    their connections), then remove it and stop it gracefully (failed requests)."""
    from tests.servers.triton import triton_server

    out: List[Dict[str, Any]] = []
    for _cycle in range(cycles):
        traffic = _Traffic(bed["proxies"]["variable"])
        with triton_server(bed["repo"], host=NEWCOMER, http_port=bed["ports"][0], grpc_port=bed["ports"][1], metrics_port=bed["ports"][2]) as newcomer:
            nginx = bed["nginx"]["variable"]
            start_line = len(nginx.access_lines())
            threads = [threading.Thread(target=loop) for loop in (traffic.grpc_loop, traffic.grpc_loop, traffic.http_loop, traffic.http_loop)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            base = served(newcomer.metrics_url)
            bed["dns"].set_records({FQDN: [*BACKENDS, NEWCOMER]})
            t0 = time.monotonic()
            delay = None
            while time.monotonic() - t0 < VALID_S + 10:
                if served(newcomer.metrics_url) > base:
                    delay = time.monotonic() - t0
                    break
                time.sleep(0.02)
            time.sleep(1.0)
            bed["dns"].set_records({FQDN: list(BACKENDS)})
            time.sleep(VALID_S + 1.0)
            settled = served(newcomer.metrics_url)
            time.sleep(1.0)
            late = served(newcomer.metrics_url) - settled
            newcomer.stop()
            time.sleep(1.5)
            traffic.stop.set()
            for t in threads:
                t.join(timeout=15)
            grpc_conns = {m.group(1) for line in nginx.access_lines()[start_line:]
                          if "/inference.GRPCInferenceService/ModelInfer" in line and (m := re.search(r"connection=(\d+)", line))}
        out.append({"new_backend_first_request_s": delay, "requests_after_removal_settled": late, "failed_requests": len(traffic.failures),
                    "failures": traffic.failures[:5], "ok_requests": traffic.ok, "grpc_client_connections": len(grpc_conns)})
    return out


# --- bed ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bed(delay_ms: float, workdir: Path) -> Iterator[Dict[str, Any]]:
    from tests.servers.dnsmasq import dnsmasq_server
    from tests.servers.nginx import localize, nginx_server, render_role_config
    from tests.servers.triton import ensure_triton_venv, triton_server, write_model_repository

    ensure_triton_venv()
    repo = write_model_repository(workdir / "models", delay_ms=delay_ms, name=MODEL)
    ports = common_free_ports([*BACKENDS, NEWCOMER], 3)
    variable_conf = render_role_config(workdir / "r1", "-e", "nginx_lb_oss_version=1.22.1")
    resolve_conf = render_role_config(workdir / "r2")
    with contextlib.ExitStack() as stack:
        tritons = [stack.enter_context(triton_server(repo, host=h, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])) for h in BACKENDS]
        dns = stack.enter_context(dnsmasq_server(workdir / "dns", {FQDN: list(BACKENDS)}))
        proxies: Dict[str, Dict[str, int]] = {}
        nginxes: Dict[str, Any] = {}
        for name, conf in (("variable", variable_conf), ("keepalive", resolve_conf)):
            lb = common_free_ports(["127.0.0.1"], 3)
            prefix = workdir / f"nginx-{name}"
            prefix.mkdir()
            subs = {
                "listen 8000;": f"listen 127.0.0.1:{lb[0]};",
                "listen 8080;": f"listen 127.0.0.1:{lb[2]};",
                "resolver 10.96.0.10 ": f"resolver {dns.resolver} ",
            }
            if name == "variable":
                subs |= {"listen 8001 http2;": f"listen 127.0.0.1:{lb[1]} http2;",
                         f'{FQDN}:8000"': f'{FQDN}:{ports[0]}"', f'{FQDN}:8001"': f'{FQDN}:{ports[1]}"'}
            else:
                subs |= {"listen 8001;\n        http2 on;": f"listen 127.0.0.1:{lb[1]} http2;"}
                for upstream_port, port in (("8000", ports[0]), ("8001", ports[1])):
                    line = f"server {FQDN}:{upstream_port} resolve max_fails=2 fail_timeout=10s;"
                    subs[line] = "\n        ".join(f"server {h}:{port} max_fails=2 fail_timeout=10s;" for h in BACKENDS)
            nginxes[name] = stack.enter_context(nginx_server(localize(conf, prefix, subs), prefix, ready_url=f"http://127.0.0.1:{lb[2]}/healthz"))
            proxies[name] = {"http": lb[0], "grpc": lb[1]}
        yield {"tritons": tritons, "dns": dns, "proxies": proxies, "nginx": nginxes, "repo": repo, "ports": ports}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()
    rounds: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nginx-lb-bench-") as tmp, bed(args.delay_ms, Path(tmp)) as b:
        metrics = [t.metrics_url for t in b["tritons"]]
        phases: List[Tuple[str, str]] = [(p, t) for p in ("http", "grpc") for t in ("direct", "variable", "keepalive")]
        for r in range(args.rounds):
            order = phases[r % len(phases):] + phases[: r % len(phases)]
            result: Dict[str, Any] = {"loadavg": os.getloadavg()}
            for protocol, target in order:
                if target == "direct":
                    port = b["ports"][0] if protocol == "http" else b["ports"][1]
                    targets = [f"{h}:{port}" for h in BACKENDS]
                else:
                    targets = [f"127.0.0.1:{b['proxies'][target][protocol]}"] * len(BACKENDS)
                result[f"{protocol}/{target}"] = run_phase(ctx, protocol, targets, args.seconds, metrics)
                print(f"round {r} {protocol}/{target}: {result[f'{protocol}/{target}']['throughput_rps']:.0f} req/s", file=sys.stderr)
            rounds.append(result)
        cycles = dns_cycles(b, args.cycles)
    summary: Dict[str, Any] = {}
    for protocol in ("http", "grpc"):
        for target in ("variable", "keepalive"):
            key = f"{protocol}/{target}"
            summary[key] = {
                "throughput_ratio_vs_direct": median([r[key]["throughput_rps"] / r[f"{protocol}/direct"]["throughput_rps"] for r in rounds]),
                "p50_overhead_ms": median([r[key]["p50_ms"] - r[f"{protocol}/direct"]["p50_ms"] for r in rounds]),
                "p99_overhead_ms": median([r[key]["p99_ms"] - r[f"{protocol}/direct"]["p99_ms"] for r in rounds]),
                "throughput_rps": median([r[key]["throughput_rps"] for r in rounds]),
                "p50_ms": median([r[key]["p50_ms"] for r in rounds]),
                "p99_ms": median([r[key]["p99_ms"] for r in rounds]),
                "spread_max_min": median([r[key]["spread_max_min"] or float("inf") for r in rounds]),
                "errors": sum(r[key]["errors"] for r in rounds),
            }
        direct = f"{protocol}/direct"
        summary[direct] = {
            "throughput_rps": median([r[direct]["throughput_rps"] for r in rounds]),
            "p50_ms": median([r[direct]["p50_ms"] for r in rounds]),
            "p99_ms": median([r[direct]["p99_ms"] for r in rounds]),
            "errors": sum(r[direct]["errors"] for r in rounds),
        }
    delays = [c["new_backend_first_request_s"] for c in cycles if c["new_backend_first_request_s"] is not None]
    summary["dns"] = {
        "new_backend_first_request_s_max": max(delays) if delays else None,
        "new_backend_first_request_s_median": median(delays) if delays else None,
        "failed_requests_on_graceful_removal": sum(c["failed_requests"] for c in cycles),
        "requests_after_removal_settled": sum(c["requests_after_removal_settled"] for c in cycles),
    }
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "delay_ms": args.delay_ms, "clients": len(BACKENDS),
                     "backends": list(BACKENDS), "resolver_valid_s": VALID_S, "cycles": args.cycles},
        "summary": summary,
        "rounds": rounds,
        "dns_cycles": cycles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
