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
  Debian's 1.22 loads), with only listen addresses, the resolver address, Triton's ports and paths substituted, and
  one worker process: nginx keeps a resolver cache per worker, and with one the re-resolution the DNS tests wait for
  is the one query dnsmasq logs after a change (no test here sleeps for a fixed time; each polls, bounded).

Requests per backend are counted by each Triton itself (``nv_inference_request_success`` on its /metrics), not
by the proxy; that a gRPC client kept its connection is read from nginx's access log (``$connection``).

The allow-lists (what clients may call) are exercised with the real tritonclient clients, whose calls map one to one
onto Triton's HTTP paths and gRPC methods (Triton 2.51 http_server.cc HTTPAPIServer::Handle, grpc_service.proto):
inference, metadata, config and health pass; the model repository, shared memory, trace, log settings and statistics
get HTTP 403 with a JSON error (as Triton's own errors) or gRPC status PERMISSION_DENIED, and never reach Triton.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from tests.servers.nginx import ONE_POOL, NginxProcess, localize, loopback_swaps, nginx_server, render_role_config, version
    from tests.servers.ports import common_free_ports
    from tests.servers.triton import TritonProcess, ensure_triton_venv, triton_server, write_model_repository
else:  # tests/servers, importable once tests/ is on sys.path
    from servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from servers.nginx import ONE_POOL, NginxProcess, localize, loopback_swaps, nginx_server, render_role_config, version
    from servers.ports import common_free_ports
    from servers.triton import TritonProcess, ensure_triton_venv, triton_server, write_model_repository

pytestmark = pytest.mark.slow

grpc: Any = importlib.import_module("grpc")
InferenceServerException: Any = importlib.import_module("tritonclient.utils").InferenceServerException
grpcclient: Any = importlib.import_module("tritonclient.grpc")
httpclient: Any = importlib.import_module("tritonclient.http")

FQDN = "triton-headless.triton.svc.cluster.local"
BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14")


def _rendered_valid_s() -> float:
    """nginx_lb_resolver_valid as the render below gets it: the example inventory's, else the role's default (s/ms/m)."""
    root = Path(__file__).resolve().parents[2]
    inventory = yaml.safe_load((root / "inventories/dgx/group_vars/k8s_control/nginx_lb.yml").read_text()) or {}
    value = str(inventory.get("nginx_lb_resolver_valid") or yaml.safe_load((root / "roles/nginx_lb/defaults/main.yml").read_text())["nginx_lb_resolver_valid"])
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, f"nginx_lb_resolver_valid {value!r}: not a time this test reads"
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "s"]


VALID_S = _rendered_valid_s()  # nginx_lb_resolver_valid, as rendered
MODEL = "sleeper"
DELAY_MS = 5.0
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
HTTP_PATH = f"/v2/models/{MODEL}/infer"


def served(triton: TritonProcess) -> int:
    """Successful inferences of the model, as this Triton counts them."""
    return triton.successes(MODEL)


@dataclass
class Bed:
    tritons: Dict[str, TritonProcess]
    nginx: NginxProcess
    dns: DnsmasqProcess
    http_port: int
    grpc_port: int
    status_port: int
    stopped: List[str] = field(default_factory=list)
    dns_mark: int = 0

    def set_backends(self, hosts: Sequence[str]) -> None:
        """The headless Service's answer changes; dnsmasq answers so when this returns (its own check queries are done)."""
        self.dns.set_records({FQDN: list(hosts)})
        self.dns_mark = self.nginx_queries()

    def nginx_queries(self) -> int:
        """Queries for the Service's name in dnsmasq's log (after set_records returned, only nginx asks)."""
        try:
            return self.dns.log.read_text(errors="replace").count(f"query[A] {FQDN} from ")
        except OSError:
            return 0

    def counts(self, hosts: Sequence[str] | None = None) -> Dict[str, int]:
        return {h: served(self.tritons[h]) for h in (hosts or [h for h in BACKENDS if h not in self.stopped])}

    def wait_dns_settled(self) -> float:
        """Until nginx has asked dnsmasq again since the last set_backends (its cached answer expires valid= after the
        previous query; the next request then asks), sending health requests through the proxy meanwhile so that one
        arrives; then one more request, answered from the new answer. Returns the seconds it took; fails after
        valid + 3 s."""
        start = time.monotonic()
        deadline = start + VALID_S + 3.0
        while self.nginx_queries() <= self.dns_mark:
            assert time.monotonic() < deadline, f"nginx did not ask the DNS again within {VALID_S + 3.0:.0f} s:\n{self.dns.log_tail()}"
            poke(self.http_port)
            time.sleep(0.02)
        poke(self.http_port)
        return time.monotonic() - start


def poke(port: int) -> None:
    """One health request through the proxy (it resolves the Service's name like every request)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/v2/health/ready")
            conn.getresponse().read()
        finally:
            conn.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    assert version().startswith("1.22."), "the variable form is what Debian 12's nginx runs"
    ensure_triton_venv()
    work = tmp_path_factory.mktemp("nginx-lb-live")
    repo = write_model_repository(work / "models", delay_ms=DELAY_MS, name=MODEL)
    t_http, t_grpc, t_metrics = common_free_ports(BACKENDS, 3)
    lb_http, lb_grpc, lb_status = common_free_ports(["127.0.0.1"], 3)
    rendered = render_role_config(work, "-e", "nginx_lb_oss_version=1.22.1", pools=ONE_POOL)
    assert "form 'variable'" in rendered
    with contextlib.ExitStack() as stack:
        tritons = {
            host: stack.enter_context(triton_server(repo, host=host, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics))
            for host in BACKENDS
        }
        dns = stack.enter_context(dnsmasq_server(work / "dns", {FQDN: list(BACKENDS[:3])}))
        prefix = work / "nginx"
        prefix.mkdir()
        conf = localize(rendered, prefix, loopback_swaps(http=lb_http, grpc=lb_grpc, status=lb_status, resolver=dns.resolver, service=FQDN,
                                                         upstream_http=t_http, upstream_grpc=t_grpc))
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
        self.threads = [threading.Thread(target=self._grpc, args=(client,), daemon=True) for client in range(grpc_clients)]
        self.threads += [threading.Thread(target=self._http, args=(grpc_clients + client,), daemon=True) for client in range(http_clients)]
        self.answered = [0] * len(self.threads)  # per client: calls answered, ok or not

    def _record(self, client: int, error: str | None) -> None:
        with self.lock:
            self.answered[client] += 1
            if error is None:
                self.ok += 1
            else:
                self.failures.append((time.monotonic(), error))

    def wait_answers_since(self, answers: int, what: str, timeout: float = 10.0) -> None:
        """Until every client has had ``answers`` answers since this call. Each client has one call in flight at a
        time, so with two or more, every call a client had in flight when this was called has been answered."""
        with self.lock:
            marks = list(self.answered)
        wait_until(lambda: all(now >= mark + answers for now, mark in zip(self.answered, marks)), timeout, what)

    def _grpc(self, client_no: int) -> None:
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{self.bed.grpc_port}")
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(DATA)
        deadline = time.monotonic() + self.limit_s
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    result = client.infer(MODEL, inputs=[inp], client_timeout=10)
                    out = result.as_numpy("OUTPUT0")
                    self._record(client_no, None if out is not None and np.array_equal(out, DATA) else "wrong output")
                except Exception as exc:  # every failure counts, whatever its kind
                    self._record(client_no, f"grpc: {exc}")
        finally:
            client.close()

    def _http(self, client_no: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.bed.http_port, timeout=10)
        deadline = time.monotonic() + self.limit_s
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    conn.request("POST", HTTP_PATH, body=HTTP_BODY, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        self._record(client_no, f"http {resp.status}: {body[:200]!r}")
                        continue
                    out = json.loads(body)["outputs"][0]["data"]
                    self._record(client_no, None if out == DATA.tolist() else "wrong output")
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    self._record(client_no, f"http: {exc!r}")
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


# --- what clients may call: the allow-lists ---------------------------------------------------------------------


REFUSED_MESSAGE = "forbidden by the load balancer"
SHM_REGISTER = {"key": "/gpu-ops-test-region", "offset": 0, "byte_size": 64}
# (method, path as sent, body): every Triton 2.51 HTTP endpoint outside the default allow-list, and paths that
# normalise to one (nginx matches locations on the normalised path, Triton routes on the raw one: the LB judges the
# raw one, which is what it forwards)
REFUSED_HTTP = [
    ("POST", "/v2/repository/index", {}),
    ("POST", f"/v2/repository/models/{MODEL}/unload", {}),
    ("POST", f"/v2/repository/models/{MODEL}/load", {}),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/region/r0/register", SHM_REGISTER),
    ("POST", "/v2/systemsharedmemory/unregister", {}),
    ("GET", "/v2/cudasharedmemory/status", None),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
    ("GET", f"/v2/models/{MODEL}/trace/setting", None),
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", {"log_verbose_level": 1}),
    ("GET", "/v2/models/stats", None),
    ("GET", "/v2/models/stats?format=json", None),
    ("GET", f"/v2/models/{MODEL}/stats", None),
    ("GET", f"/v2/models/{MODEL}/versions/1/stats", None),
    ("POST", f"/v2/models/{MODEL}/../../repository/index", {}),
    ("POST", "/v2/models/x%2F..%2F..%2Frepository/index", {}),
    ("POST", "//v2/repository/index", {}),
    ("GET", "/metrics", None),
]
# the same requests straight to one Triton succeed: what the LB refuses is there to be refused
DIRECT_OK: List[tuple[str, str, Any]] = [
    ("POST", "/v2/repository/index", {}), ("GET", "/v2/systemsharedmemory/status", None), ("GET", "/v2/trace/setting", None),
    ("GET", "/v2/logging", None), ("GET", "/v2/models/stats", None), ("GET", f"/v2/models/{MODEL}/stats", None),
]


def raw_http(host: str, port: int, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request with the path sent exactly as given."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def log_lines_for(bed: Bed, start_line: int, request: str) -> List[str]:
    """Access log lines since ``start_line`` whose request line is ``request`` (e.g. 'POST /v2/logging HTTP/1.1'),
    polled briefly: nginx writes a line once the response is sent."""
    deadline = time.monotonic() + 3.0
    while True:
        lines = [line for line in bed.nginx.access_lines()[start_line:] if f'"{request}"' in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


@pytest.mark.parametrize(("method", "path", "body"), REFUSED_HTTP, ids=[f"{m} {p}" for m, p, _b in REFUSED_HTTP])
def test_http_outside_the_allow_list_gets_403_and_never_reaches_triton(bed: Bed, method: str, path: str, body: Any) -> None:
    start = len(bed.nginx.access_lines())
    status, ctype, data = raw_http("127.0.0.1", bed.http_port, method, path, body)
    assert status == 403, (status, data[:300])
    assert ctype == "application/json"
    assert REFUSED_MESSAGE in json.loads(data)["error"]  # Triton's error shape: tritonclient shows the message
    lines = log_lines_for(bed, start, f"{method} {path} HTTP/1.1")
    assert len(lines) == 1, lines
    assert " 403 " in lines[0], lines[0]
    assert "upstream=- " in lines[0], lines[0]


def test_refused_http_endpoints_answer_when_asked_directly(bed: Bed) -> None:
    triton = bed.tritons[BACKENDS[0]]
    for method, path, body in DIRECT_OK:
        status, _ctype, data = raw_http(triton.host, triton.http_port, method, path, body)
        assert status == 200, (method, path, status, data[:300])


def test_http_allow_list_passes_inference_metadata_and_health(bed: Bed) -> None:
    start = len(bed.nginx.access_lines())
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{bed.http_port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata()["name"] == "triton"
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, model_version="1")
        assert client.get_model_metadata(MODEL)["name"] == MODEL
        assert client.get_model_metadata(MODEL, model_version="1")["versions"] == ["1"]
        assert client.get_model_config(MODEL)["name"] == MODEL
        inp = httpclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(DATA)
        for version in ("", "1"):
            out = client.infer(MODEL, inputs=[inp], model_version=version).as_numpy("OUTPUT0")
            assert out is not None
            assert np.array_equal(out, DATA)
        with pytest.raises(InferenceServerException, match=REFUSED_MESSAGE) as refused:  # the client's own call, refused
            client.get_model_repository_index()
        assert refused.value.status() == "403"
    finally:
        client.close()
    # Triton's generate extension (JSON keys are input names) passes too
    status, _ctype, data = raw_http("127.0.0.1", bed.http_port, "POST", f"/v2/models/{MODEL}/generate", {"INPUT0": [1.0, 2.0]})
    assert status == 200, data[:300]
    assert json.loads(data)["OUTPUT0"] == [1.0, 2.0]
    # 11 calls passed to a Triton (live, ready, server metadata, model ready x2, model metadata x2, config, infer x2,
    # generate), and only the repository index was answered by nginx itself
    wait_until(lambda: len(bed.nginx.access_lines()) >= start + 12, 3.0, "12 access log lines")
    lines = bed.nginx.access_lines()[start:]
    assert len([line for line in lines if "upstream=127.0.0." in line]) == 11, lines
    assert [line for line in lines if "upstream=- " in line] == [line for line in lines if "POST /v2/repository/index" in line], lines


GRPC_REFUSED = [
    ("RepositoryIndex", lambda c: c.get_model_repository_index()),
    ("RepositoryModelLoad", lambda c: c.load_model(MODEL)),
    ("RepositoryModelUnload", lambda c: c.unload_model(MODEL)),
    ("SystemSharedMemoryStatus", lambda c: c.get_system_shared_memory_status()),
    ("SystemSharedMemoryRegister", lambda c: c.register_system_shared_memory("r0", SHM_REGISTER["key"], 64)),
    ("SystemSharedMemoryUnregister", lambda c: c.unregister_system_shared_memory()),
    ("CudaSharedMemoryStatus", lambda c: c.get_cuda_shared_memory_status()),
    ("TraceSetting", lambda c: c.get_trace_settings()),
    ("LogSettings", lambda c: c.update_log_settings({"log_verbose_level": 1})),
    ("ModelStatistics", lambda c: c.get_inference_statistics(MODEL)),
]


@pytest.mark.parametrize(("method", "call"), GRPC_REFUSED, ids=[m for m, _c in GRPC_REFUSED])
def test_grpc_outside_the_allow_list_gets_permission_denied(bed: Bed, method: str, call: Callable[[Any], Any]) -> None:
    start = len(bed.nginx.access_lines())
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpc_port}")
    try:
        with pytest.raises(InferenceServerException, match=REFUSED_MESSAGE) as refused:
            call(client)
    finally:
        client.close()
    # the real client sees the gRPC status, with nginx's grpc-message
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED", refused.value
    assert REFUSED_MESSAGE in refused.value.message()
    lines = log_lines_for(bed, start, f"POST /inference.GRPCInferenceService/{method} HTTP/2.0")
    assert len(lines) == 1, lines
    assert " 200 0 " in lines[0], lines[0]
    assert "upstream=- " in lines[0], lines[0]


def test_refused_grpc_methods_answer_when_asked_directly_and_nothing_changed(bed: Bed) -> None:
    triton = bed.tritons[BACKENDS[0]]
    client = grpcclient.InferenceServerClient(url=f"{triton.host}:{triton.grpc_port}")
    try:
        index = client.get_model_repository_index(as_json=True)
        assert [m["name"] for m in index["models"]] == [MODEL]
        assert client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]["name"] == MODEL
        assert "settings" in client.get_log_settings(as_json=True)
        # the refused unload did not happen, on any backend
        for host in BACKENDS[:3]:
            other = grpcclient.InferenceServerClient(url=f"{host}:{triton.grpc_port}")
            try:
                assert other.is_model_ready(MODEL), host
                assert other.get_system_shared_memory_status(as_json=True) == {}, host  # no region registered
            finally:
                other.close()
    finally:
        client.close()


def test_grpc_allow_list_passes_inference_metadata_health_and_streaming(bed: Bed) -> None:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpc_port}")
    results: List[Any] = []
    done = threading.Event()

    def on_result(result: Any, error: Any) -> None:
        results.append(error if error is not None else result.as_numpy("OUTPUT0"))
        if len(results) == 3:
            done.set()

    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata().name == "triton"
        assert client.is_model_ready(MODEL)
        assert client.get_model_metadata(MODEL).name == MODEL
        assert client.get_model_config(MODEL).config.name == MODEL
        inp = grpcclient.InferInput("INPUT0", [16], "FP32")
        inp.set_data_from_numpy(DATA)
        out = client.infer(MODEL, inputs=[inp]).as_numpy("OUTPUT0")
        assert out is not None
        assert np.array_equal(out, DATA)
        client.start_stream(callback=on_result)  # ModelStreamInfer: one bidirectional HTTP/2 stream through nginx
        for _request in range(3):
            client.async_stream_infer(MODEL, inputs=[inp])
        assert done.wait(15.0), results
        client.stop_stream()
        assert len(results) == 3, results
        assert all(isinstance(r, np.ndarray) for r in results), results
        assert all(np.array_equal(r, DATA) for r in results), results
    finally:
        client.close()
    # the standard gRPC health service Triton serves (grpc.health.v1.Health/Check, empty service name: the server)
    with grpc.insecure_channel(f"127.0.0.1:{bed.grpc_port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert check(b"", timeout=5) == b"\x08\x01"  # HealthCheckResponse{status: SERVING}


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
        wait_until(lambda: load.ok >= 20, 10.0, "the gRPC client's first requests")
        base = served(newcomer)
        bed.set_backends(BACKENDS)  # the new pod is ready: it appears in the headless Service's answer
        t0 = time.monotonic()
        delay = None
        while time.monotonic() - t0 < VALID_S + 5:
            if served(newcomer) > base:
                delay = time.monotonic() - t0
                break
            time.sleep(0.05)
        after = load.ok
        wait_until(lambda: load.ok >= after + 50, 10.0, "50 more requests with the new backend in the answer")
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
        wait_until(lambda: served(leaving) > 0 and load.ok >= 20, 10.0, "requests reaching the backend about to leave")
        bed.set_backends(BACKENDS[:3])  # the pod is terminating: it leaves the Service's answer first
        took = bed.wait_dns_settled()
        assert took <= VALID_S + 1.0, f"nginx asked the DNS again only after {took:.2f} s"
        # A call a client had in flight when nginx took the new answer may still be on the leaving backend, and
        # Triton counts a call when it releases the request, just after answering it. Two answers per client later
        # every such call is answered; the third (a model delay or more later) leaves Triton time to count it.
        load.wait_answers_since(3, "three answers per client after nginx re-resolved")
        settled = served(leaving)
        mark = load.ok
        wait_until(lambda: load.ok >= mark + 100, 15.0, "100 requests after nginx re-resolved")
        assert served(leaving) == settled, "a backend removed from DNS still gets requests after nginx re-resolved"
        leaving.stop()  # then it stops (SIGTERM)
        bed.stopped.append(BACKENDS[3])
        mark = load.ok
        wait_until(lambda: load.ok >= mark + 100, 15.0, "100 requests after the backend stopped")
        ok_before_end = load.ok
    assert load.failures == [], load.failures[:5]
    assert ok_before_end > 200


def test_killed_backend_costs_at_most_the_in_flight_requests(bed: Bed) -> None:
    victim_host = BACKENDS[2]
    victim = bed.tritons[victim_host]
    clients = 4
    with Load(bed, grpc_clients=2, http_clients=2) as load:
        wait_until(lambda: served(victim) > 0 and load.ok >= 20, 10.0, "requests reaching the backend to be killed")
        ok_at_kill = load.ok
        os.kill(victim.pid, signal.SIGKILL)  # still in DNS: nginx finds out per request (connection refused)
        bed.stopped.append(victim_host)
        wait_until(lambda: load.ok - ok_at_kill > 100 or len(load.failures) > clients, 15.0, "100 requests after the kill")
        ok_after = load.ok - ok_at_kill
    assert len(load.failures) <= clients, load.failures
    assert ok_after > 100, "the survivors take the traffic"
    survivors = bed.counts(BACKENDS[:2])
    assert all(c > 0 for c in survivors.values())
