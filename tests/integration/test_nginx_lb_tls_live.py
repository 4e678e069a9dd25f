# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS on the load balancer, run for real: the role's nginx.conf rendered with ``nginx_lb_tls_secret`` (TLS only, the
default with a Secret) in Debian's nginx 1.22, in front of a real Triton behind a real DNS server, on loopback.

The certificate is what a kubernetes.io/tls Secret holds (tls.crt with the chain, tls.key), made by a throw-away CA;
the files sit where the pod mounts the Secret (/etc/nginx/tls, moved under the test's prefix directory). Proven:

- HTTPS inference with curl and with Python (``ssl`` verifying against the test CA), and tritonclient's HTTP client;
- gRPC over TLS with tritonclient's gRPC client (``ssl=True``, the test CA as root), HTTP/2 negotiated by ALPN;
- a client that does not trust the CA is refused the handshake; the plain-text ports are not there at all;
- the allow-lists hold over TLS as well (403; PERMISSION_DENIED).
"""
from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.dnsmasq import dnsmasq_server
    from tests.servers.nginx import ONE_POOL, NginxProcess, Pki, localize, nginx_server, render_role_config, version, write_test_pki
    from tests.servers.ports import common_free_ports
    from tests.servers.triton import ensure_triton_venv, triton_server, write_model_repository
else:  # tests/servers, importable once tests/ is on sys.path
    from servers.dnsmasq import dnsmasq_server
    from servers.nginx import ONE_POOL, NginxProcess, Pki, localize, nginx_server, render_role_config, version, write_test_pki
    from servers.ports import common_free_ports
    from servers.triton import ensure_triton_venv, triton_server, write_model_repository

pytestmark = pytest.mark.slow

grpcclient: Any = importlib.import_module("tritonclient.grpc")
httpclient: Any = importlib.import_module("tritonclient.http")
InferenceServerException: Any = importlib.import_module("tritonclient.utils").InferenceServerException

FQDN = "triton-headless.triton.svc.cluster.local"
BACKEND = "127.0.0.21"
MODEL = "sleeper"
DATA = np.arange(8, dtype=np.float32)
BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [8], "datatype": "FP32", "data": DATA.tolist()}]}).encode()
CURL = shutil.which("curl") or "/usr/bin/curl"


@dataclass
class TlsBed:
    nginx: NginxProcess
    pki: Pki
    https_port: int
    grpcs_port: int
    conf: str

    def context(self) -> ssl.SSLContext:
        """A client context trusting the test CA only (hostname checked: the certificate names 127.0.0.1)."""
        return ssl.create_default_context(cafile=str(self.pki.ca))


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBed]:
    assert version().startswith("1.22.")
    ensure_triton_venv()
    work = tmp_path_factory.mktemp("nginx-lb-tls")
    repo = write_model_repository(work / "models", name=MODEL)
    t_http, t_grpc, t_metrics = common_free_ports([BACKEND], 3)
    https, grpcs, status = common_free_ports(["127.0.0.1"], 3)
    rendered = render_role_config(work, "-e", "nginx_lb_oss_version=1.22.1", "-e", "nginx_lb_tls_secret=inference-tls", pools=ONE_POOL)
    assert "TLS on" in rendered
    prefix = work / "nginx"
    pki = write_test_pki(prefix / "tls", dns_names=["nginx-lb.triton.svc"], ip_addresses=["127.0.0.1"])
    with contextlib.ExitStack() as stack:
        stack.enter_context(triton_server(repo, host=BACKEND, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics))
        dns = stack.enter_context(dnsmasq_server(work / "dns", {FQDN: [BACKEND]}))
        conf = localize(rendered, prefix, {
            "listen 8443 ssl;": f"listen 127.0.0.1:{https} ssl;",
            "listen 8444 ssl http2;": f"listen 127.0.0.1:{grpcs} ssl http2;",
            "listen 8080;": f"listen 127.0.0.1:{status};",
            "resolver 10.96.0.10 ": f"resolver {dns.resolver} ",
            f'{FQDN}:8000"': f'{FQDN}:{t_http}"',
            f'{FQDN}:8001"': f'{FQDN}:{t_grpc}"',
            "/etc/nginx/tls/": f"{prefix}/tls/",  # where the pod mounts the Secret
        })
        nginx = stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{status}/healthz"))
        yield TlsBed(nginx=nginx, pki=pki, https_port=https, grpcs_port=grpcs, conf=conf)


def test_tls_only_renders_no_plain_text_listener(bed: TlsBed) -> None:
    assert "listen 8000" not in bed.conf
    assert "listen 8001" not in bed.conf
    assert f"ssl_certificate {bed.pki.cert.parent}/tls.crt;" in bed.conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in bed.conf


def test_https_inference_with_curl_against_the_test_ca(bed: TlsBed) -> None:
    url = f"https://127.0.0.1:{bed.https_port}/v2/models/{MODEL}/infer"
    proc = subprocess.run([CURL, "-sS", "--cacert", str(bed.pki.ca), "-X", "POST", "-H", "Content-Type: application/json",
                           "--data-binary", BODY.decode(), "-w", "\n%{http_code} %{ssl_verify_result}", url],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    body, _sep, codes = proc.stdout.rpartition("\n")
    assert codes == "200 0", proc.stdout  # HTTP 200, certificate verified
    assert json.loads(body)["outputs"][0]["data"] == DATA.tolist()
    untrusted = subprocess.run([CURL, "-sS", "-o", "/dev/null", url], capture_output=True, text=True, timeout=30, check=False)
    assert untrusted.returncode == 60, untrusted  # curl: peer certificate cannot be authenticated with known CA certificates


def test_https_inference_and_allow_list_with_python(bed: TlsBed) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", bed.https_port, timeout=10, context=bed.context())
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["outputs"][0]["data"] == DATA.tolist()
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.request("POST", "/v2/repository/index", body=b"{}", headers={"Content-Type": "application/json"})
        refused = conn.getresponse()
        assert refused.status == 403
        assert "forbidden by the load balancer" in json.loads(refused.read())["error"]
    finally:
        conn.close()
    # tritonclient's HTTP client over TLS, trusting the test CA
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{bed.https_port}", ssl=True, ssl_options={"ca_certs": str(bed.pki.ca)})
    try:
        assert client.is_server_ready()
        inp = httpclient.InferInput("INPUT0", [8], "FP32")
        inp.set_data_from_numpy(DATA)
        out = client.infer(MODEL, inputs=[inp]).as_numpy("OUTPUT0")
        assert out is not None
        assert np.array_equal(out, DATA)
    finally:
        client.close()


def test_untrusted_client_is_refused_the_handshake(bed: TlsBed) -> None:
    with socket.create_connection(("127.0.0.1", bed.https_port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_alpn_offers_h2_for_grpc_and_http11_for_https(bed: TlsBed) -> None:
    for port, wanted in ((bed.grpcs_port, "h2"), (bed.https_port, "http/1.1")):
        ctx = bed.context()
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == wanted, port


def test_grpc_over_tls_with_tritonclient(bed: TlsBed) -> None:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpcs_port}", ssl=True, root_certificates=str(bed.pki.ca))
    try:
        assert client.is_server_live()
        assert client.get_model_metadata(MODEL).name == MODEL
        inp = grpcclient.InferInput("INPUT0", [8], "FP32")
        inp.set_data_from_numpy(DATA)
        out = client.infer(MODEL, inputs=[inp]).as_numpy("OUTPUT0")
        assert out is not None
        assert np.array_equal(out, DATA)
        with pytest.raises(InferenceServerException, match="forbidden by the load balancer") as refused:
            client.get_model_repository_index()
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
    finally:
        client.close()
    lines = bed.nginx.access_lines()
    assert any("ModelInfer HTTP/2.0\" 200 " in line and f"upstream={BACKEND}:" in line for line in lines), lines[-5:]


def test_grpc_client_without_the_ca_fails(bed: TlsBed) -> None:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{bed.grpcs_port}", ssl=True)  # the system roots only
    try:
        with pytest.raises(InferenceServerException) as failed:
            client.is_server_live(client_timeout=10)
        assert failed.value.status() == "StatusCode.UNAVAILABLE", failed.value
    finally:
        client.close()
