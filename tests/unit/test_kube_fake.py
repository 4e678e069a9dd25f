# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of tests/kube_fake: the official kubernetes client and the real kubernetes.core modules against it."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:  # mypy names tests/kube_fake "tests.kube_fake" (tests/ is not on mypy_path)
    from tests.kube_fake import FakeKube
    from tests.kube_fake.server import STOP_TIMEOUT_S
else:
    from kube_fake import FakeKube
    from kube_fake.server import STOP_TIMEOUT_S

BIN = Path(sys.executable).parent
Obj = Dict[str, Any]

MIG_NODE: Obj = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "dgx-h200-1", "labels": {"nvidia.com/mig.config": "all-1g.18gb", "nvidia.com/mig.strategy": "mixed"}},
    "status": {
        "capacity": {"cpu": "224", "nvidia.com/mig-1g.18gb": "56"},
        "allocatable": {"cpu": "220", "nvidia.com/mig-1g.18gb": "56"},
    },
}
PLAIN_NODE: Obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1", "labels": {"kubernetes.io/os": "linux"}},
                   "status": {"allocatable": {"cpu": "64", "memory": "512Gi"}}}


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server
    assert not server.running


def api_client(kube: FakeKube, tmp_path: Path, token: str | None = None) -> client.ApiClient:
    path = tmp_path / f"kubeconfig-{token or 'good'}"
    path.write_text(yaml.safe_dump(kube.kubeconfig(token=token)))
    api: client.ApiClient = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    return api


def dynamic_client(kube: FakeKube, tmp_path: Path) -> Any:
    return dynamic.DynamicClient(api_client(kube, tmp_path))  # type: ignore[no-untyped-call]


def status_of(error: ApiException) -> Obj:
    """The Status object an API error carried."""
    body: Obj = json.loads(error.body or "null")
    return body


def ansible(module: str, args: Obj, home: Path) -> Obj:
    """`ansible localhost -m module -a args` with the venv's ansible; the module's result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), TMPDIR=str(home), PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_DEPRECATION_WARNINGS="0")
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-m", module, "-a", json.dumps(args)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible printed no JSON report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result: Obj = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def test_client_reads_version_and_nodes_over_verified_tls(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_node(MIG_NODE)
    api = api_client(kube, tmp_path)
    assert api.configuration.verify_ssl
    assert Path(api.configuration.ssl_ca_cert).read_bytes() == kube.ca_path.read_bytes()

    assert client.VersionApi(api).get_code().git_version == "v1.31.4"
    nodes: Any = client.CoreV1Api(api).list_node()
    assert [n.metadata.name for n in nodes.items] == ["dgx-h200-1"]
    assert nodes.items[0].status.allocatable == {"cpu": "220", "nvidia.com/mig-1g.18gb": "56"}
    assert int(nodes.metadata.resource_version) >= int(nodes.items[0].metadata.resource_version)

    # the certificate is trusted through the generated CA only, and names 127.0.0.1
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(f"{kube.url}/version", context=ssl.create_default_context(), timeout=5)
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    request = urllib.request.Request(f"{kube.url}/version", headers={"Authorization": f"Bearer {kube.token}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(kube.ca_path)), timeout=5) as answer:
        assert json.load(answer)["gitVersion"] == "v1.31.4"
    assert [(r.method, r.path, r.status) for r in kube.requests if r.path.startswith("/api/v1/nodes")] == [("GET", "/api/v1/nodes", 200)]


def test_wrong_or_missing_token_is_401(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_node(MIG_NODE)
    with pytest.raises(ApiException) as wrong:
        client.CoreV1Api(api_client(kube, tmp_path, token="not-the-token")).list_node()
    assert wrong.value.status == 401
    unauthorized: Dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized"}
    unauthorized.update({"reason": "Unauthorized", "details": {}, "code": 401})
    assert status_of(wrong.value) == unauthorized
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{kube.url}/api/v1/nodes", context=context, timeout=5)
    assert missing.value.code == 401
    assert [r.status for r in kube.requests] == [401, 401]


def test_discovery_documents_and_unknown_paths(kube: FakeKube, tmp_path: Path) -> None:
    dyn = dynamic_client(kube, tmp_path)
    assert dyn.resources.get(api_version="v1", kind="Node").namespaced is False
    assert dyn.resources.get(api_version="v1", kind="ConfigMap").namespaced is True
    assert dyn.resources.get(api_version="apps/v1", kind="DaemonSet").name == "daemonsets"
    groups = dyn.request("GET", "/apis").to_dict()
    assert groups["kind"] == "APIGroupList"
    assert {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}} in groups["groups"]
    core = {r["name"] for r in dyn.request("GET", "/api/v1").to_dict()["resources"]}
    assert {"namespaces", "nodes", "configmaps", "services"} <= core
    for path in ("/openapi/v2", "/apis/storage.k8s.io/v1", "/apis/batch/v2", "/api/v1/namespaces/default/endpoints"):
        with pytest.raises(ApiException) as missing:
            dyn.request("GET", path)
        assert missing.value.status == 404, path
        assert status_of(missing.value)["message"] == "the server could not find the requested resource"


def test_ansible_k8s_server_side_apply_is_idempotent(kube: FakeKube, tmp_path: Path) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator", "labels": {"app.kubernetes.io/part-of": "mig-serving"}}}
    args = {"state": "present", "apply": True, "server_side_apply": {"field_manager": "gpu-ops"}, "definition": namespace, "wait": True,
            "kubeconfig": str(kube.kubeconfig_path)}

    first = ansible("kubernetes.core.k8s", args, tmp_path)
    assert not first.get("failed"), first
    assert first["changed"] is True
    stored = kube.get_object("v1", "Namespace", "gpu-operator")
    assert stored is not None
    assert stored["status"] == {"phase": "Active"}
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/part-of": "mig-serving", "kubernetes.io/metadata.name": "gpu-operator"}
    [entry] = stored["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsV1"]) == ("gpu-ops", "Apply", {"f:metadata": {"f:labels": {"f:app.kubernetes.io/part-of": {}}}})
    applies = [r for r in kube.requests if r.method == "PATCH"]
    assert [(r.path, r.content_type, r.field_manager, r.status) for r in applies] == [
        ("/api/v1/namespaces/gpu-operator", "application/apply-patch+yaml", "gpu-ops", 201)]
    assert applies[0].body["metadata"]["name"] == "gpu-operator"

    second = ansible("kubernetes.core.k8s", args, tmp_path)
    assert not second.get("failed"), second
    assert second["changed"] is False
    again = kube.get_object("v1", "Namespace", "gpu-operator")
    assert again == stored  # the same resourceVersion and managedFields: a no-op apply writes nothing
    assert [r.status for r in kube.requests if r.method == "PATCH"] == [201, 200]


def test_ansible_k8s_info_returns_the_seeded_nodes(kube: FakeKube, tmp_path: Path) -> None:
    kube.add_node(MIG_NODE)
    kube.add_node(PLAIN_NODE)
    before = kube.get_object("v1", "Node", "dgx-h200-1")
    assert before is not None
    relabelled = {**MIG_NODE, "metadata": {"name": "dgx-h200-1", "labels": {"nvidia.com/mig.config": "all-3g.71gb"}},
                  "status": {"allocatable": {"cpu": "220", "nvidia.com/mig-3g.71gb": "16"}}}
    after = kube.set_node("dgx-h200-1", relabelled)
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after["metadata"]["uid"] == before["metadata"]["uid"]

    result = ansible("kubernetes.core.k8s_info", {"kind": "Node", "kubeconfig": str(kube.kubeconfig_path)}, tmp_path)
    assert not result.get("failed"), result
    nodes = {n["metadata"]["name"]: n for n in result["resources"]}
    assert sorted(nodes) == ["cpu-1", "dgx-h200-1"]
    assert nodes["dgx-h200-1"]["metadata"]["labels"] == {"nvidia.com/mig.config": "all-3g.71gb"}
    assert nodes["dgx-h200-1"]["status"]["allocatable"] == {"cpu": "220", "nvidia.com/mig-3g.71gb": "16"}
    assert nodes["cpu-1"]["metadata"]["labels"] == PLAIN_NODE["metadata"]["labels"]
    assert nodes["cpu-1"]["status"]["allocatable"] == PLAIN_NODE["status"]["allocatable"]
    assert [(r.method, r.path) for r in kube.requests if "nodes" in r.path] == [("GET", "/api/v1/nodes")]


def test_conflicting_apply_is_409_unless_forced(kube: FakeKube, tmp_path: Path) -> None:
    configmaps = dynamic_client(kube, tmp_path).resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "device-plugin-config", "namespace": "default"},
            "data": {"config.yaml": "version: v1", "owner": "helm"}}
    configmaps.server_side_apply(body=body, field_manager="helm")

    # the same value is shared without conflict; a different one conflicts
    configmaps.server_side_apply(body={**body, "data": {"config.yaml": "version: v1"}}, field_manager="gpu-ops")
    with pytest.raises(ApiException) as conflict:
        configmaps.server_side_apply(body={**body, "data": {"config.yaml": "version: v2"}}, field_manager="gpu-ops")
    assert conflict.value.status == 409
    assert status_of(conflict.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "helm": .data.config.yaml', "reason": "Conflict",
        "details": {"causes": [{"type": "FieldManagerConflict", "message": 'conflict with "helm"', "field": ".data.config.yaml"}]}, "code": 409}
    live = kube.get_object("v1", "ConfigMap", "device-plugin-config", "default")
    assert live is not None
    assert live["data"]["config.yaml"] == "version: v1"

    forced = configmaps.server_side_apply(body={**body, "data": {"config.yaml": "version: v2"}}, field_manager="gpu-ops", force_conflicts=True)
    assert forced.data["config.yaml"] == "version: v2"
    owners = {e["manager"]: e["fieldsV1"] for e in forced.to_dict()["metadata"]["managedFields"]}
    assert owners == {"helm": {"f:data": {"f:owner": {}}}, "gpu-ops": {"f:data": {"f:config.yaml": {}}}}

    # apply without a field manager: the API server's 422
    with pytest.raises(ApiException) as no_manager:
        configmaps.server_side_apply(body=body)
    assert no_manager.value.status == 422
    assert status_of(no_manager.value)["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch')
    applies = [(r.field_manager, r.query.get("force"), r.status) for r in kube.requests if r.content_type == "application/apply-patch+yaml"]
    assert applies == [("helm", None, 201), ("gpu-ops", None, 200), ("gpu-ops", None, 409), ("gpu-ops", ["true"], 200), (None, None, 422)]


def test_ansible_k8s_reports_an_apply_conflict(kube: FakeKube, tmp_path: Path) -> None:
    definition = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mig-parted", "namespace": "default"}, "data": {"layout": "all-1g"}}
    dynamic_client(kube, tmp_path).resources.get(api_version="v1", kind="ConfigMap").server_side_apply(
        body=definition, field_manager="helm")
    wanted = {**definition, "data": {"layout": "all-7g"}}
    args = {"state": "present", "apply": True, "server_side_apply": {"field_manager": "gpu-ops"}, "definition": wanted,
            "kubeconfig": str(kube.kubeconfig_path)}
    refused = ansible("kubernetes.core.k8s", args, tmp_path)
    assert refused.get("failed") is True
    assert 'Apply failed with 1 conflict: conflict with \\"helm\\": .data.layout' in refused["msg"]
    forced = ansible("kubernetes.core.k8s", {**args, "server_side_apply": {"field_manager": "gpu-ops", "force_conflicts": True}}, tmp_path)
    assert forced["changed"] is True
    assert forced["result"]["data"] == {"layout": "all-7g"}
    assert [(r.field_manager, r.query.get("force"), r.status) for r in kube.requests if r.method == "PATCH"] == [
        ("helm", None, 201), ("gpu-ops", ["false"], 409), ("gpu-ops", ["true"], 200)]


def _kube_fake_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kube-fake")]


def test_stop_closes_everything() -> None:
    """stop() returns only once every thread of the server has ended, whatever state its connections are in: a
    connection that never speaks TLS, one half-way through the handshake, one kept alive after an answer, one whose
    request body never comes. The assertion is made right after stop() returns: no sleep, no retry."""
    kube = FakeKube().start()
    host, port = "127.0.0.1", int(kube.url.rsplit(":", 1)[1])
    kubeconfig = kube.kubeconfig_path
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    idle = socket.create_connection((host, port), timeout=5)  # a connection that never speaks TLS
    half = socket.create_connection((host, port), timeout=5)
    half.sendall(b"\x16\x03\x01\x02\x00\x01")  # the first bytes of a ClientHello, and no more
    kept = context.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="127.0.0.1")
    kept.sendall(f"GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {kube.token}\r\n\r\n".encode())
    assert kept.recv(4096).startswith(b"HTTP/1.1 200"), "answered: its connection thread is running"
    body = context.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="127.0.0.1")
    body.sendall(f"POST /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {kube.token}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
    running = _kube_fake_threads()
    assert {"kube-fake", "kube-fake-kubelet", "kube-fake-conn"} <= {t.name for t in running}
    started = time.monotonic()
    try:
        kube.stop()
        assert not [t.name for t in _kube_fake_threads()], "stop() returned with threads of the server still running"
        assert not [t.name for t in running if t.is_alive()]
    finally:
        for sock in (idle, half, kept, body):
            sock.close()
    assert time.monotonic() - started < STOP_TIMEOUT_S, "ended by the shut-down sockets, not by the time limit"
    assert not kube.running
    assert not kubeconfig.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=2):
        pass
    kube.stop()  # a second stop does nothing


def test_start_stop_repeatedly_leaves_no_thread() -> None:
    """Start and stop with a request in flight, many times over (the race the suite once lost under load)."""
    deadline = time.monotonic() + 60
    for _cycle in range(20):
        assert time.monotonic() < deadline, "20 start/stop cycles took over 60 s"
        kube = FakeKube().start()
        host, port = "127.0.0.1", int(kube.url.rsplit(":", 1)[1])
        sock = socket.create_connection((host, port), timeout=5)
        try:
            kube.stop()
            assert not _kube_fake_threads()
        finally:
            sock.close()


def test_a_service_name_must_be_a_dns_1035_label(kube: FakeKube, tmp_path: Path) -> None:
    """ValidateServiceName is NameIsDNS1035Label (kubernetes pkg/apis/core/validation/validation.go): a name that is a valid
    subdomain but starts with a digit, holds a dot or is longer than 63 characters is refused; a pool's <pool>-headless passes."""
    services = dynamic_client(kube, tmp_path).resources.get(api_version="v1", kind="Service")

    def body(name: str) -> Dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8000}]}}

    assert services.server_side_apply(body=body("triton-1g-5gb-headless"), field_manager="t").metadata.name == "triton-1g-5gb-headless"
    for name in ("1g-headless", "triton.headless", "t" * 64):
        with pytest.raises(ApiException) as refused:
            services.server_side_apply(body=body(name), field_manager="t")
        assert refused.value.status == 422, name
        assert "a DNS-1035 label must consist of lower case alphanumeric characters" in status_of(refused.value)["message"], name
