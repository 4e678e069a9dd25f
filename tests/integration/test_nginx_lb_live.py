# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role nginx_lb's rendered config, run for real: Debian's nginx 1.22 in front of real Triton servers behind a
real DNS server, all on loopback, as in a cluster:

- four Triton "pods" (tritonserver from the nvidia-pytriton wheel, CPU, a python model) on 127.0.0.11-14, all on
  the SAME HTTP/gRPC/metrics ports, like pods behind a headless Service;
- dnsmasq on 127.0.0.153 answering the headless Service's name ``triton-headless.triton.svc.cluster.local`` from
  a hosts file it re-reads on SIGHUP (pods becoming ready or going away);
- nginx running the open-source config the role renders for nginx < 1.27.3 (the resolver-variable form, which
  Debian's 1.22 loads), with only listen addresses, the resolver address, Triton's ports and paths substituted.

Requests per backend are counted by each Triton itself (``nv_inference_request_success`` on its /metrics), not
by the proxy; that a gRPC client kept its connection is read from nginx's access log (``$connection``).
"""
from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from tests.servers.nginx import NginxProcess, localize, nginx_server, render_role_config, version
    from tests.servers.ports import common_free_ports
    from tests.servers.triton import TritonProcess, ensure_triton_venv, triton_server, write_model_repository
else:  # tests/servers, importable once tests/ is on sys.path
    from servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from servers.nginx import NginxProcess, localize, nginx_server, render_role_config, version
    from servers.ports import common_free_ports
    from servers.triton import TritonProcess, ensure_triton_venv, triton_server, write_model_repository

pytestmark = pytest.mark.slow

grpcclient: Any = importlib.import_module("tritonclient.grpc")
httpclient: Any = importlib.import_module("tritonclient.http")

FQDN = "triton-headless.triton.svc.cluster.local"
BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14")
VALID_S = 5.0  # the role's default nginx_lb_resolver_valid, as rendered
MODEL = "sleeper"
DELAY_MS = 5.0
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
HTTP_PATH = f"/v2/models/{MODEL}/infer"
_SUCCESS = re.compile(r'^nv_inference_request_success\{[^}]*model="' + MODEL + r'"[^}]*\} (\d+(?:\.\d+)?)$', re.MULTILINE)


def served(triton: TritonProcess) -> int:
    """Successful inferences of the model, as this Triton counts them."""
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    match = _SUCCESS.search(text)
    return int(float(match.group(1))) if match else 0


@dataclass
class Bed:
    tritons: Dict[str, TritonProcess]
    nginx: NginxProcess
    dns: DnsmasqProcess
    http_port: int
    grpc_port: int
    status_port: int
    stopped: List[str] = field(default_factory=list)

    def set_backends(self, hosts: Sequence[str]) -> None:
        self.dns.set_records({FQDN: list(hosts)})

    def counts(self, hosts: Sequence[str] | None = None) -> Dict[str, int]:
        return {h: served(self.tritons[h]) for h in (hosts or [h for h in BACKENDS if h not in self.stopped])}

    def wait_dns_settled(self) -> None:
        time.sleep(VALID_S + 1.0)  # nginx keeps an answer for valid=; one more second for the next lookup


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    assert version().startswith("1.22."), "the variable form is what Debian 12's nginx runs"
    ensure_triton_venv()
    work = tmp_path_factory.mktemp("nginx-lb-live")
    repo = write_model_repository(work / "models", delay_ms=DELAY_MS, name=MODEL)
    t_http, t_grpc, t_metrics = common_free_ports(BACKENDS, 3)
    lb_http, lb_grpc, lb_status = common_free_ports(["127.0.0.1"], 3)
    rendered = render_role_config(work, "-e", "nginx_lb_oss_version=1.22.1")
    assert "form 'variable'" in rendered
    with contextlib.ExitStack() as stack:
        tritons = {
            host: stack.enter_context(triton_server(repo, host=host, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics))
            for host in BACKENDS
        }
        dns = stack.enter_context(dnsmasq_server(work / "dns", {FQDN: list(BACKENDS[:3])}))
        prefix = work / "nginx"
        prefix.mkdir()
        conf = localize(rendered, prefix, {
            "listen 8000;": f"listen 127.0.0.1:{lb_http};",
            "listen 8001 http2;": f"listen 127.0.0.1:{lb_grpc} http2;",
            "listen 8080;": f"listen 127.0.0.1:{lb_status};",
            "resolver 10.96.0.10 ": f"resolver {dns.resolver} ",
            f'{FQDN}:8000"': f'{FQDN}:{t_http}"',
            f'{FQDN}:8001"': f'{FQDN}:{t_grpc}"',
        })
        nginx = stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{lb_status}/healthz"))
        yield Bed(tritons=tritons, nginx=nginx, dns=dns, http_port=lb_http, grpc_port=lb_grpc, status_port=lb_status)


# --- clients -------------------------------------------------------------------------------------------------


DATA = np.arange(16, dtype=np.float32)
HTTP_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": DATA.tolist()}]}).encode()


class Load:
    """Closed-loop clients (gRPC: one tritonclient channel each, kept for the whole run; HTTP: one keep-alive
    connection each) until stopped; every failure is recorded with its time."""

    def __init__(self, bed: Bed, grpc_clients: int, http_clients: int, limit_s: float = 60.0) -> None:
        self.bed = bed
        self.limit_s = limit_s
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: List[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._grpc, daemon=True) for _client in range(grpc_clients)]
        self.threads += [threading.Thread(target=self._http, daemon=True) for _client in range(http_clients)]

    def _record(self, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.ok += 1
            else:
                self.failures.append((time.monotonic(), error))

    def _grpc(self) -> None:
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{self.bed.grpc_port}")
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(DATA)
        deadline = time.monotonic() + self.limit_s
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    result = client.infer(MODEL, inputs=[inp], client_timeout=10)
                    out = result.as_numpy("OUTPUT0")
                    self._record(None if out is not None and np.array_equal(out, DATA) else "wrong output")
                except Exception as exc:  # every failure counts, whatever its kind
                    self._record(f"grpc: {exc}")
        finally:
            client.close()

    def _http(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.bed.http_port, timeout=10)
        deadline = time.monotonic() + self.limit_s
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    conn.request("POST", HTTP_PATH, body=HTTP_BODY, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        self._record(f"http {resp.status}: {body[:200]!r}")
                        continue
                    out = json.loads(body)["outputs"][0]["data"]
                    self._record(None if out == DATA.tolist() else "wrong output")
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    self._record(f"http: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.bed.http_port, timeout=10)
        finally:
            conn.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)


def grpc_log_since(bed: Bed, start_line: int) -> List[str]:
    return [line for line in bed.nginx.access_lines()[start_line:] if GRPC_PATH in line]


# --- tests ---------------------------------------------------------------------------------------------------


def test_http_and_grpc_inference_through_the_proxy(bed: Bed) -> None:
    hclient = httpclient.InferenceServerClient(url=f"127.0.0.1:{bed.http_port}")
    try:
        assert hclient.is_server_ready()
        assert hclient.get_model_metadata(MODEL)["name"] == MODEL
        hin = httpclient.InferInput("INPUT0", [16], "FP32")
        hin.set_data_from_numpy(DATA)
        hout = hclient.infer(MODEL, inputs=[hin]).as_numpy("OUTPUT0")
        assert hout is not None
        assert np.array_equal(hout, DATA)
    finally:
        hclient.close()
    gclient = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpc_port}")
    try:
        assert gclient.is_server_live()
        gin = grpcclient.InferInput("INPUT0", [16], "FP32")
        gin.set_data_from_numpy(DATA)
        gout = gclient.infer(MODEL, inputs=[gin]).as_numpy("OUTPUT0")
        assert gout is not None
        assert np.array_equal(gout, DATA)
    finally:
        gclient.close()
    upstreams = re.findall(r"upstream=(\S+)", "\n".join(bed.nginx.access_lines()))
    assert upstreams
    assert all(u.split(":")[0] in BACKENDS[:3] for u in upstreams), upstreams


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_requests_spread_over_all_backends(bed: Bed, protocol: str) -> None:
    before = bed.counts(BACKENDS[:3])
    n = 150
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpc_port}")  # ONE connection
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(DATA)
        try:
            for _request in range(n):
                client.infer(MODEL, inputs=[inp])
        finally:
            client.close()
    else:
        conn = http.client.HTTPConnection("127.0.0.1", bed.http_port, timeout=10)  # ONE keep-alive connection
        try:
            for _request in range(n):
                conn.request("POST", HTTP_PATH, body=HTTP_BODY, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
        finally:
            conn.close()
    # Triton counts a request in its metrics just after it has answered it: poll briefly for the last ones
    deadline = time.monotonic() + 5.0
    while True:
        after = bed.counts(BACKENDS[:3])
        per = {h: after[h] - before[h] for h in BACKENDS[:3]}
        if sum(per.values()) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(per.values()) == n, per
    # nginx picks among the resolved addresses per request: each of 3 gets about n/3; 20 of 150 is far below chance
    assert all(c >= 20 for c in per.values()), per
    assert served(bed.tritons[BACKENDS[3]]) == 0, "not in DNS yet: no traffic"


def test_new_backend_gets_traffic_within_valid_plus_1s_on_the_same_grpc_connection(bed: Bed) -> None:
    newcomer = bed.tritons[BACKENDS[3]]
    start_line = len(bed.nginx.access_lines())
    with Load(bed, grpc_clients=1, http_clients=0) as load:
        time.sleep(1.0)
        base = served(newcomer)
        bed.set_backends(BACKENDS)  # the new pod is ready: it appears in the headless Service's answer
        t0 = time.monotonic()
        delay = None
        while time.monotonic() - t0 < VALID_S + 5:
            if served(newcomer) > base:
                delay = time.monotonic() - t0
                break
            time.sleep(0.05)
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert delay is not None, "the new backend never got a request"
    assert delay <= VALID_S + 1.0, f"first request after {delay:.2f} s"
    deadline = time.monotonic() + 3.0  # nginx logs an HTTP/2 stream just after the client has its answer
    while len(lines := grpc_log_since(bed, start_line)) < load.ok and time.monotonic() < deadline:
        time.sleep(0.05)
    connections = {re.search(r"connection=(\d+)", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(lines) >= load.ok
    assert len(connections) == 1, f"the client's requests came over {len(connections)} connections"
    assert any(f"upstream={BACKENDS[3]}:" in line for line in lines)


def test_graceful_removal_stops_traffic_without_failed_requests(bed: Bed) -> None:
    bed.set_backends(BACKENDS)
    bed.wait_dns_settled()
    leaving = bed.tritons[BACKENDS[3]]
    with Load(bed, grpc_clients=2, http_clients=2) as load:
        time.sleep(1.0)
        assert served(leaving) > 0
        bed.set_backends(BACKENDS[:3])  # the pod is terminating: it leaves the Service's answer first
        bed.wait_dns_settled()
        settled = served(leaving)
        time.sleep(1.5)
        assert served(leaving) == settled, "a backend removed from DNS still gets requests after valid + 1 s"
        leaving.stop()  # then it stops (SIGTERM)
        bed.stopped.append(BACKENDS[3])
        time.sleep(1.5)
        ok_before_end = load.ok
    assert load.failures == [], load.failures[:5]
    assert ok_before_end > 100


def test_killed_backend_costs_at_most_the_in_flight_requests(bed: Bed) -> None:
    victim_host = BACKENDS[2]
    victim = bed.tritons[victim_host]
    clients = 4
    with Load(bed, grpc_clients=2, http_clients=2) as load:
        time.sleep(1.0)
        assert served(victim) > 0
        ok_at_kill = load.ok
        os.kill(victim.pid, signal.SIGKILL)  # still in DNS: nginx finds out per request (connection refused)
        bed.stopped.append(victim_host)
        time.sleep(3.0)
        ok_after = load.ok - ok_at_kill
    assert len(load.failures) <= clients, load.failures
    assert ok_after > 100, "the survivors take the traffic"
    survivors = bed.counts(BACKENDS[:2])
    assert all(c > 0 for c in survivors.values())
