# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_kube_client.py: kubernetes.core's authentication options, the kubeconfig check, and requests
through the kubernetes client against tests/kube_fake (HTTPS on loopback, its CA, a bearer token)."""
from __future__ import annotations

import copy
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC  # type: ignore[import-untyped]
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._kube_client import (
    CLIENT_NAMES,
    KubeClientError,
    KubeconfigError,
    KubeRequestError,
    api_request,
    auth_settings,
    build_api_client,
    check_kubeconfig,
    check_kubeconfig_data,
    default_kubeconfig,
    kubeconfig_secrets,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import KubeTransport, VerifyError

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))
if TYPE_CHECKING:  # mypy names tests/kube_fake "tests.kube_fake" (tests/ is not on mypy_path)
    from tests.kube_fake import FakeKube
else:
    from kube_fake import FakeKube

NAMESPACES = "/api/v1/namespaces"


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


def _client(auth: Dict[str, Any]) -> Any:
    return build_api_client(auth, kube_config, kube_client)


def _get(api: Any, path: str = NAMESPACES) -> Tuple[int, Any]:
    status, body, _content_type = api_request(api, "GET", path, timeout=10)
    return status, json.loads(body)


def _last(kube: FakeKube, path: str = NAMESPACES) -> Any:
    return [r for r in kube.requests if r.path == path][-1]


# --- the options -------------------------------------------------------------------------------------------------


def test_every_kubernetes_core_auth_option_is_handled() -> None:
    """A kubernetes.core release adding an option must not have it accepted and silently ignored."""
    assert set(CLIENT_NAMES) == set(AUTH_ARG_SPEC)


def test_options_win_over_the_environment_and_both_env_names_count() -> None:
    env = {"K8S_AUTH_KUBECONFIG": "/env/kc", "K8S_AUTH_CONTEXT": "env-ctx", "K8S_AUTH_VERIFY_SSL": "no",
           "K8S_AUTH_SSL_CA_CERT": "/env/ca.pem", "K8S_AUTH_CLIENT_CERT": "/env/c.pem", "K8S_AUTH_KEY_FILE": "/env/k.pem",
           "K8S_AUTH_PERSIST_CONFIG": "True", "K8S_AUTH_IMPERSONATE_GROUPS": "a,,b", "K8S_AUTH_PROXY_HEADERS_USER_AGENT": "ua/1"}
    auth = auth_settings({"kubeconfig": "/opt/kc", "context": None, "validate_certs": None}, env)
    assert auth == {"kubeconfig": "/opt/kc", "context": "env-ctx", "validate_certs": False, "ca_cert": "/env/ca.pem",
                    "client_cert": "/env/c.pem", "client_key": "/env/k.pem", "persist_config": True,
                    "impersonate_groups": ["a", "b"], "proxy_headers": {"user_agent": "ua/1"}}
    assert auth_settings({"validate_certs": True}, {"K8S_AUTH_VALIDATE_CERTS": "false"}) == {"validate_certs": True}
    assert auth_settings({}, {"K8S_AUTH_VALIDATE_CERTS": "0"}) == {"validate_certs": False}
    assert auth_settings({"proxy_headers": {"basic_auth": None, "user_agent": None, "proxy_basic_auth": None}}, {}) == {}


def test_the_credentials_of_a_kubeconfig_mapping_are_found(kube: FakeKube) -> None:
    config = kube.kubeconfig()
    config["users"].append({"name": "oidc", "user": {"auth-provider": {"name": "oidc", "config": {"id-token": "idt", "client-secret": "cs"}}}})
    config["users"].append({"name": "cert", "user": {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"}})
    assert sorted(kubeconfig_secrets(config)) == sorted([kube.token, "idt", "cs", "Y2VydA==", "a2V5"])
    assert kubeconfig_secrets("/a/path") == []


def test_groups_without_a_user_are_refused_before_any_request() -> None:
    with pytest.raises(KubeClientError, match=r"impersonate_groups \['ops'\] needs impersonate_user: the API server refuses"):
        build_api_client({"impersonate_groups": ["ops"]}, object(), object())


def test_a_kubeconfig_of_another_type_is_refused() -> None:
    with pytest.raises(KubeClientError, match="kubeconfig must be a path or a kubeconfig mapping, not list"):
        build_api_client({"kubeconfig": ["a"]}, object(), object())


# --- the client against the fake API server ----------------------------------------------------------------------


def test_kubeconfig_file_https_ca_and_bearer_token(kube: FakeKube) -> None:
    api = _client({"kubeconfig": str(kube.kubeconfig_path)})
    status, body = _get(api)
    assert status == 200, body
    assert {ns["metadata"]["name"] for ns in body["items"]} >= {"default", "kube-system"}
    record = _last(kube)
    assert (record.status, record.auth_scheme, record.user_agent) == (200, "Bearer", "gpu-ops-serving-verify")


def test_kubeconfig_from_the_environment_and_as_a_mapping(kube: FakeKube) -> None:
    assert _get(_client(auth_settings({}, {"K8S_AUTH_KUBECONFIG": str(kube.kubeconfig_path)})))[0] == 200
    assert _get(_client({"kubeconfig": kube.kubeconfig(), "context": "kube-fake"}))[0] == 200


def test_the_context_chooses_the_cluster(kube: FakeKube, tmp_path: Path) -> None:
    config = kube.kubeconfig()
    config["clusters"].append({"name": "gone", "cluster": {"server": "https://127.0.0.1:9", "certificate-authority-data": "QQ=="}})
    config["contexts"].append({"name": "gone", "context": {"cluster": "gone", "user": "kube-fake-admin"}})
    config["current-context"] = "gone"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert _get(_client({"kubeconfig": str(path), "context": "kube-fake"}))[0] == 200
    with pytest.raises(KubeRequestError, match=r"GET https://127\.0\.0\.1:9/api/v1/namespaces: no answer from the API server"):
        api_request(_client({"kubeconfig": str(path)}), "GET", NAMESPACES, timeout=5)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_host_and_api_key_need_no_kubeconfig(kube: FakeKube) -> None:
    api = _client({"host": kube.url + "/", "api_key": kube.token, "ca_cert": str(kube.ca_path), "kubeconfig": None})
    assert api.configuration.host == kube.url
    assert _get(api)[0] == 200
    assert _get(_client({"host": kube.url, "api_key": kube.token, "validate_certs": False}))[0] == 200
    status, body = _get(_client({"host": kube.url, "api_key": "wrong", "ca_cert": str(kube.ca_path)}))
    assert (status, body["reason"]) == (401, "Unauthorized")


def test_host_overrides_the_kubeconfig_server_also_after_the_token_refresh_hook(kube: FakeKube) -> None:
    config = kube.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # the right CA, a port nothing serves
    api = _client({"kubeconfig": config, "host": kube.url})
    assert api.configuration.refresh_api_key_hook is not None  # a token user: the loader re-applies its settings per request
    assert _get(api)[0] == 200
    assert _get(api)[0] == 200


def test_an_api_key_overrides_the_kubeconfig_user(kube: FakeKube, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kube.kubeconfig(token="someone-else")))
    assert _get(_client({"kubeconfig": str(path)}))[0] == 401
    assert _get(_client({"kubeconfig": str(path), "api_key": kube.token}))[0] == 200


def test_username_and_password_are_sent_as_basic_auth(kube: FakeKube) -> None:
    """An API server without basic authentication (removed in Kubernetes 1.19) answers 401."""
    status, body = _get(_client({"host": kube.url, "username": "admin", "password": "pw", "ca_cert": str(kube.ca_path)}))
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert _last(kube).auth_scheme == "Basic"


def test_impersonation_headers_one_per_group(kube: FakeKube) -> None:
    api = _client({"kubeconfig": str(kube.kubeconfig_path), "impersonate_user": "jane", "impersonate_groups": ["ops", "viewers"]})
    assert _get(api)[0] == 200
    assert _last(kube).impersonate == (("Impersonate-User", "jane"), ("Impersonate-Group", "ops"), ("Impersonate-Group", "viewers"))


def test_the_default_kubeconfig_when_not_in_a_pod(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(kube.kubeconfig_path.read_text())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert _get(_client({}))[0] == 200


def test_nothing_to_connect_with_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeClientError) as exc:
        _client({})
    assert str(exc.value).startswith("Loading the in-cluster service account, else the kubeconfig (default) (context current): ConfigException:")
    assert str(exc.value).endswith("not in a pod and no kubeconfig found: set kubeconfig (or K8S_AUTH_KUBECONFIG), or host and credentials")


def test_a_bad_kubeconfig_is_named_before_the_client_reads_it(tmp_path: Path) -> None:
    class NoLoader:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the kubernetes client was asked ({name}) before the kubeconfig was checked")

    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nclusters: [\n")
    with pytest.raises(KubeClientError) as exc:
        build_api_client({"kubeconfig": str(path), "context": "prod"}, NoLoader(), kube_client)
    assert str(exc.value).startswith(f"Loading the kubeconfig {path} (context prod): {path}: not valid YAML"), str(exc.value)
    with pytest.raises(KubeClientError, match=f"Loading the kubeconfig {tmp_path / 'none'} .*: cannot read {tmp_path / 'none'}: No such file"):
        build_api_client({"kubeconfig": str(tmp_path / "none")}, NoLoader(), kube_client)
    with pytest.raises(KubeClientError, match=r"Loading the kubeconfig given as a mapping .*: the kubeconfig given as a mapping: 'clusters' is missing"):
        build_api_client({"kubeconfig": {"apiVersion": "v1"}}, NoLoader(), kube_client)


def test_the_transport_answers_every_status_and_names_a_request_without_answer(kube: FakeKube) -> None:
    transport = KubeTransport(_client({"kubeconfig": str(kube.kubeconfig_path)}), 10.0, lambda *a, **k: None)
    missing = transport.request("GET", "/api/v1/namespaces/nowhere")
    assert (missing.status, missing.json()["reason"]) == (404, "NotFound")
    listed = transport.request("GET", "/api/v1/namespaces", {"labelSelector": "kubernetes.io/metadata.name=default"})
    assert [ns["metadata"]["name"] for ns in listed.json()["items"]] == ["default"]
    assert _last(kube).query == {"labelSelector": ["kubernetes.io/metadata.name=default"]}
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = copy.deepcopy(kube.kubeconfig())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    dead = KubeTransport(_client({"kubeconfig": config}), 5.0, lambda *a, **k: None)
    with pytest.raises(VerifyError, match=f"GET https://127.0.0.1:{closed}/api/v1/namespaces: no answer from the API server"):
        dead.request("GET", NAMESPACES)


def test_the_older_generated_client_call_api() -> None:
    """kubernetes < 36 has no param_serialize: call_api(resource_path, method, ...) with _preload_content=False returns the
    urllib3 response and raises ApiException for a status >= 400 (as kubernetes.dynamic's DynamicClient.request called it)."""
    calls: List[Dict[str, Any]] = []

    class Answer:
        status, data, headers = 200, b'{"kind": "NamespaceList"}', {"Content-Type": "application/json"}

    class Refused(Exception):
        status, body, headers = 403, b'{"kind": "Status", "reason": "Forbidden"}', {"Content-Type": "application/json"}

    class OldApiClient:
        def call_api(self, resource_path: str, method: str, **kwargs: Any) -> Any:
            calls.append({"path": resource_path, "method": method, **kwargs})
            if resource_path.endswith("/secret"):
                raise Refused()
            return Answer()

    api = OldApiClient()
    assert api_request(api, "GET", NAMESPACES, {"limit": "1"}, timeout=3) == (200, b'{"kind": "NamespaceList"}', "application/json")
    assert api_request(api, "GET", NAMESPACES + "/secret") == (403, b'{"kind": "Status", "reason": "Forbidden"}', "application/json")
    assert calls[0] == {"path": NAMESPACES, "method": "GET", "query_params": [("limit", "1")],
                        "header_params": {"Accept": "application/json", "Content-Type": "application/json"}, "body": None,
                        "auth_settings": ["BearerToken"], "_preload_content": False, "_return_http_data_only": True, "_request_timeout": 3}


# --- the kubeconfig check (bad kubeconfigs: tests/data/bad_inputs/core.yaml) ----------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: prod
    cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: AAAA}
  - name: lab
    cluster: {server: "http://127.0.0.1:8080"}
contexts:
  - {name: prod, context: {cluster: prod, user: admin, namespace: triton}}
  - {name: lab, context: {cluster: lab}}
users:
  - {name: admin, user: {token: secret}}
current-context: prod
preferences: {}
"""


def test_kubeconfig_current_context_and_an_explicit_one() -> None:
    assert check_kubeconfig(KUBECONFIG.encode(), "kc") == "prod"
    assert check_kubeconfig(KUBECONFIG.encode(), "kc", "lab") == "lab"  # no user, plain http: the client handles both


def test_kubeconfig_as_kube_fake_writes_it() -> None:
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kube-fake", "cluster": {"server": "https://127.0.0.1:40123", "certificate-authority-data": "QQ=="}}],
        "users": [{"name": "kube-fake-admin", "user": {"token": "t"}}],
        "contexts": [{"name": "kube-fake", "context": {"cluster": "kube-fake", "user": "kube-fake-admin"}}],
        "current-context": "kube-fake", "preferences": {},
    }
    assert check_kubeconfig(json.dumps(config).encode(), "kc") == "kube-fake"


def test_kubeconfig_refusal_names_the_file_and_the_line() -> None:
    bad = KUBECONFIG.replace('server: "https://10.0.0.1:6443"', "server: 10.0.0.1")
    with pytest.raises(KubeconfigError) as exc:
        check_kubeconfig(bad.encode(), "/etc/gpu-ops/kubeconfig")
    assert str(exc.value).startswith("/etc/gpu-ops/kubeconfig, line 5: cluster 'prod' has server '10.0.0.1', which is not an https:// URL")


def test_default_kubeconfig_is_the_one_the_client_would_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    home_config = tmp_path / ".kube" / "config"
    home_config.write_text(KUBECONFIG)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert default_kubeconfig() == str(home_config)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "other"))
    assert default_kubeconfig() is None  # named but absent: the client falls back to the in-cluster account
    monkeypatch.setenv("KUBECONFIG", f"{home_config}:{tmp_path / 'other'}")
    assert default_kubeconfig() is None  # several files: the client merges them


def test_a_kubeconfig_mapping_is_checked_like_a_file() -> None:
    config = yaml.safe_load(KUBECONFIG)
    assert check_kubeconfig_data(config, "the kubeconfig given as a mapping", "lab") == "lab"
    config["contexts"][0]["context"]["cluster"] = "nowhere"
    with pytest.raises(KubeconfigError, match="context 'prod' names cluster 'nowhere', which is not defined; clusters: lab, prod"):
        check_kubeconfig_data(config, "the kubeconfig given as a mapping")
