# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu_ops_lb_model_statistics, run for real (the set-up of tests/integration/test_nginx_lb_live.py, smaller): a real
Triton (tritonserver of the nvidia-pytriton wheel, CPU) behind real dnsmasq (the headless Service's name) and two real
nginx (Debian's 1.22) running the config role nginx_lb renders, one with gpu_ops_lb_model_statistics true and one with
it false (the default).

With it true, what perf_analyzer reads between its measurements passes (inference_profiler.cc asks for the model's
statistics when the server lists the "statistics" extension): GET /v2/models/<model>/stats and the gRPC method
inference.GRPCInferenceService/ModelStatistics, through the real tritonclient clients; Triton's own answer for an
unknown model (the probe of playbooks/loadtest.yml fails naming the model on it) comes back unchanged; the statistics
of every model (GET /v2/models/stats) stay refused. With it false both are refused (403 with the load balancer's JSON
error, gRPC PERMISSION_DENIED) and never reach Triton.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.dnsmasq import dnsmasq_server
    from tests.servers.nginx import localize, loopback_swaps, nginx_server, render_role_config, version
    from tests.servers.ports import common_free_ports
    from tests.servers.triton import ensure_triton_venv, triton_server, write_model_repository
else:
    from servers.dnsmasq import dnsmasq_server
    from servers.nginx import localize, loopback_swaps, nginx_server, render_role_config, version
    from servers.ports import common_free_ports
    from servers.triton import ensure_triton_venv, triton_server, write_model_repository

pytestmark = pytest.mark.slow

InferenceServerException: Any = importlib.import_module("tritonclient.utils").InferenceServerException
grpcclient: Any = importlib.import_module("tritonclient.grpc")
httpclient: Any = importlib.import_module("tritonclient.http")

# one serving pool's headless Service (role triton: <pool>-headless), the upstream server role nginx_lb renders for it
POOL = {"service": "triton-1g-5gb-headless", "weight": 1, "max_replicas": 7}
FQDN = "triton-1g-5gb-headless.triton.svc.cluster.local"
BACKEND = "127.0.0.21"
MODEL = "echo"
REFUSED_HTTP = "forbidden by the load balancer"


@dataclass
class Lb:
    http_port: int
    grpc_port: int
    access_lines: Any


@pytest.fixture(scope="module")
def lbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[bool, Lb]]:
    assert version().startswith("1.22."), "the variable form is what Debian 12's nginx runs"
    ensure_triton_venv()
    work = tmp_path_factory.mktemp("lb-statistics")
    repo = write_model_repository(work / "models", name=MODEL)
    t_http, t_grpc, t_metrics = common_free_ports([BACKEND], 3)
    rendered = {flag: render_role_config(work / str(flag), "-e", "nginx_lb_oss_version=1.22.1", "-e", f"gpu_ops_lb_model_statistics={str(flag).lower()}",
                                         pools=[POOL])
                for flag in (True, False)}
    with contextlib.ExitStack() as stack:
        stack.enter_context(triton_server(repo, host=BACKEND, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics))
        dns = stack.enter_context(dnsmasq_server(work / "dns", {FQDN: [BACKEND]}))
        out: Dict[bool, Lb] = {}
        for flag, conf_text in rendered.items():
            lb_http, lb_grpc, lb_status = common_free_ports(["127.0.0.1"], 3)
            prefix = work / f"nginx-{flag}"
            prefix.mkdir()
            conf = localize(conf_text, prefix, loopback_swaps(http=lb_http, grpc=lb_grpc, status=lb_status, resolver=dns.resolver,
                                                              service=FQDN, upstream_http=t_http, upstream_grpc=t_grpc))
            nginx = stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{lb_status}/healthz"))
            out[flag] = Lb(lb_http, lb_grpc, nginx.access_lines)
        yield out


def get(port: int, path: str) -> Tuple[int, Dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def test_statistics_pass_with_the_variable_true(lbs: Dict[bool, Lb]) -> None:
    lb = lbs[True]
    status, body = get(lb.http_port, f"/v2/models/{MODEL}/stats")
    assert status == 200, body
    assert [s["name"] for s in body["model_stats"]] == [MODEL]
    # the real clients perf_analyzer is built on (tritonclient), HTTP and gRPC
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{lb.http_port}")
    try:
        assert client.get_inference_statistics(MODEL)["model_stats"][0]["name"] == MODEL
    finally:
        client.close()
    channel = grpcclient.InferenceServerClient(url=f"127.0.0.1:{lb.grpc_port}")
    try:
        assert channel.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]["name"] == MODEL
    finally:
        channel.close()
    lines = [line for line in lb.access_lines() if "/inference.GRPCInferenceService/ModelStatistics" in line]
    assert lines, "the gRPC call went through nginx"
    assert "upstream=- " not in lines[-1], lines[-1]  # it reached Triton


def test_unknown_model_gets_tritons_own_answer_and_all_models_stay_refused(lbs: Dict[bool, Lb]) -> None:
    status, body = get(lbs[True].http_port, "/v2/models/resnet50/stats")
    assert status in (400, 404), body  # Triton's, not the load balancer's
    assert "resnet50" in body["error"]
    assert REFUSED_HTTP not in body["error"]
    status, body = get(lbs[True].http_port, "/v2/models/stats")
    assert status == 403
    assert REFUSED_HTTP in body["error"]


def test_statistics_refused_with_the_variable_false(lbs: Dict[bool, Lb]) -> None:
    lb = lbs[False]
    status, body = get(lb.http_port, f"/v2/models/{MODEL}/stats")
    assert status == 403
    assert REFUSED_HTTP in body["error"]
    channel = grpcclient.InferenceServerClient(url=f"127.0.0.1:{lb.grpc_port}")
    try:
        with pytest.raises(InferenceServerException) as refused:
            channel.get_inference_statistics(MODEL)
    finally:
        channel.close()
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED", refused.value
    lines = [line for line in lb.access_lines() if "/inference.GRPCInferenceService/ModelStatistics" in line]
    assert lines
    assert "upstream=- " in lines[-1], lines[-1]  # answered by nginx, never sent to Triton
