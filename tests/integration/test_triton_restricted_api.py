# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Triton's restricted APIs, live: role triton renders the Deployment and the key's Secret (playbooks/serving.yml
--tags triton, render mode, the example inventory); the real tritonserver (tests/servers/triton.py) then runs with
exactly the rendered container's arguments, given the environment the kubelet would give it (the key from the rendered
Secret through secretKeyRef, substituted into the arguments by the $(VAR) rule of core/v1 Container.args).

What Triton 2.51 answers, from its sources (triton-inference-server/server, src/http_server.cc RespondIfRestricted and
src/grpc/grpc_utils / grpc_server.cc; docs/customization_guide/inference_protocols.md "Limit Endpoint Access"): an HTTP
call of a restricted API without the header, or with another value, gets 403 and {"error": "This API is restricted,
expecting header '<header>'"}; a gRPC call gets status UNAVAILABLE, "This protocol is restricted, expecting header
'triton-grpc-protocol-<header>'". Inference, health and metadata stay open; model-config and statistics too, by the
role's default."""
from __future__ import annotations

import base64
import importlib
import secrets
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from multiprocessing import shared_memory
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.servers.processes import PortTaken
    from tests.servers.triton import TritonProcess, container_env, free_port, kube_expand, triton_server_args, write_model_repository
else:
    from ansible_run import ansible_env
    from servers.processes import PortTaken
    from servers.triton import TritonProcess, container_env, free_port, kube_expand, triton_server_args, write_model_repository

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HEADER = "triton-admin-key"
KEY_ENV = "TRITON_RESTRICTED_API_KEY"
REFUSED_HTTP = f"This API is restricted, expecting header '{HEADER}'"
REFUSED_GRPC = f"This protocol is restricted, expecting header 'triton-grpc-protocol-{HEADER}'"
START_ATTEMPTS = 3

# tritonclient ships no type information: typed as Any on purpose
httpclient: Any = importlib.import_module("tritonclient.http")
grpcclient: Any = importlib.import_module("tritonclient.grpc")
InferenceServerException: Any = importlib.import_module("tritonclient.utils").InferenceServerException


# --- the kubelet's $(VAR) substitution, as tests/servers/triton.py models it --------------------------------

# The table of kubernetes/kubernetes third_party/forked/golang/expansion/expand_test.go (doExpansionTest), which the
# model must reproduce: it decides what tritonserver receives in place of $(TRITON_RESTRICTED_API_KEY).
EXPANSION_ENV = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}
EXPANSION_CASES = [
    ("$(VAR_A)", "A"), ("$(VAR_A)-$(VAR_A)", "A-A"), ("___$(VAR_B)___", "___B___"), ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"), ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"), ("f000-$$VAR_A", "f000-$VAR_A"),
    ("foo\\$(VAR_C)bar", "foo\\Cbar"), ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"), ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
    ("$(VAR_REF)", "$(VAR_A)"), ("foo$(VAR_EMPTY)bar", "foobar"), ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
    ("$?_boo_$!", "$?_boo_$!"), ("$VAR_A", "$VAR_A"), ("$(VAR_DNE)", "$(VAR_DNE)"), ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("$$$$$$(VAR_A)", "$$$(VAR_A)"), ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"), ("$$$$$$$(VAR_A)", "$$$A"),
    ("$VAR_A)", "$VAR_A)"), ("${VAR_A}", "${VAR_A}"), ("$(VAR_B)_______$(A", "B_______$(A"), ("$(VAR_C)_______$(", "C_______$("),
    ("$(VAR_A)foobarzab$", "Afoobarzab$"), ("--$($($($($--", "--$($($($($--"), ("$(foo$$var)", "$(foo$$var)"), ("\n", "\n"),
]


@pytest.mark.parametrize(("text", "expected"), EXPANSION_CASES, ids=[c[0] for c in EXPANSION_CASES])
def test_kubelet_expansion_model_matches_upstream(text: str, expected: str) -> None:
    assert kube_expand(text, EXPANSION_ENV) == expected


def test_container_env_reads_the_secret_and_refuses_a_missing_one() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "triton"},
              "data": {"key": base64.b64encode(b"v4lue$(X)").decode()}}
    container = {"env": [{"name": "X", "value": "x"}, {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
                         {"name": "Y", "value": "$(X)-$(K)"}]}
    # a Secret's value is taken as it is; a later value is expanded against the ones before it
    assert container_env(container, [secret], "triton") == {"X": "x", "K": "v4lue$(X)", "Y": "x-v4lue$(X)"}
    with pytest.raises(LookupError, match="CreateContainerConfigError"):
        container_env(container, [], "triton")
    with pytest.raises(LookupError):
        container_env(container, [secret], "other-namespace")


# --- render, then run what was rendered ----------------------------------------------------------------------


def render(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [
        str(BIN / "ansible-playbook"), "playbooks/serving.yml", "--tags", "triton", "-i", "inventories/dgx",
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", *extra,
    ]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def load(path: Path) -> Dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return dict(docs[0])


class Bed:
    def __init__(self, out: Path, key: str, log: str, repo: Path) -> None:
        self.out, self.key, self.log, self.repo = out, key, log, repo
        self.deployment = load(next((out / "triton").glob("*-deployment-triton-1g-5gb.yaml")))
        self.secret_file = next((out / "triton_secrets").glob("*-secret-triton-restricted-api.yaml"))
        self.secret = load(self.secret_file)
        self.container: Dict[str, Any] = self.deployment["spec"]["template"]["spec"]["containers"][0]

    def args(self) -> List[str]:
        """The container's args as the kubelet passes them to tritonserver."""
        env = container_env(self.container, [self.secret], self.deployment["metadata"]["namespace"])
        return [kube_expand(a, env) for a in self.container["args"]]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Bed, TritonProcess]]:
    """Render with this machine's free ports and a local model repository, then start Triton with those args. A port
    taken by another process between choosing it and Triton binding it: chosen again, rendered again (bounded)."""
    base = tmp_path_factory.mktemp("restricted")
    repo = write_model_repository(base / "models")
    key = secrets.token_urlsafe(24)
    failures: List[str] = []
    for attempt in range(START_ATTEMPTS):
        out = base / f"out{attempt}"
        ports = [free_port() for _index in range(3)]
        proc = render(out, "-e", f"triton_http_port={ports[0]}", "-e", f"triton_grpc_port={ports[1]}", "-e", f"triton_metrics_port={ports[2]}",
                      "-e", f"triton_model_mount_path={repo}", "-e", "triton_model_control_mode=explicit", "-e", f"vault_triton_restricted_api_key={key}")
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        made = Bed(out, key, proc.stdout + proc.stderr, repo)
        try:
            with triton_server_args(made.args(), base) as server:
                yield made, server
                return
        except PortTaken:
            failures.append(f"attempt {attempt}: a port of {ports} was taken")
    pytest.fail("; ".join(failures))


def test_the_key_is_in_the_secret_only(bed: Tuple[Bed, TritonProcess]) -> None:
    made, _server = bed
    encoded = base64.b64encode(made.key.encode()).decode()
    assert made.secret["data"] == {"key": encoded}
    # GitOps users keep triton_secrets out of their repository: 0600 in a 0700 directory
    assert stat.S_IMODE(made.secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.secret_file.parent.stat().st_mode) == 0o700
    for path in made.out.rglob("*"):
        if path.is_file() and path != made.secret_file:
            text = path.read_text()
            assert made.key not in text, path
            assert encoded not in text, path
    assert made.key not in made.log, "the key was logged"
    assert encoded not in made.log, "the key was logged"
    assert [a for a in made.container["args"] if "-restricted-" in a] == [
        f"--http-restricted-api=model-repository,shared-memory,trace,logging:{HEADER}=$({KEY_ENV})",
        f"--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:{HEADER}=$({KEY_ENV})",
    ]
    assert made.container["env"] == [{"name": KEY_ENV, "valueFrom": {"secretKeyRef": {"name": "triton-restricted-api", "key": "key"}}}]
    # what tritonserver receives: the key itself, in place of the reference
    assert f"--http-restricted-api=model-repository,shared-memory,trace,logging:{HEADER}={made.key}" in made.args()


def test_inference_health_metadata_and_metrics_need_no_key(bed: Tuple[Bed, TritonProcess]) -> None:
    _made, server = bed
    data = np.arange(4, dtype=np.float32)
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        inp = httpclient.InferInput("INPUT0", [4], "FP32")
        inp.set_data_from_numpy(data)
        out = client.infer("sleeper", [inp]).as_numpy("OUTPUT0")
        assert out is not None
        np.testing.assert_array_equal(out, data)
    finally:
        client.close()
    grpc = grpcclient.InferenceServerClient(url=f"{server.host}:{server.grpc_port}")
    try:
        inp = grpcclient.InferInput("INPUT0", [4], "FP32")
        inp.set_data_from_numpy(data)
        np.testing.assert_array_equal(grpc.infer("sleeper", [inp]).as_numpy("OUTPUT0"), data)
        assert grpc.is_server_ready()
    finally:
        grpc.close()
    assert server.call("GET", "/v2/health/ready")[0] == 200
    # the server of NGC 24.10, the release the role pins (TESTBED.md: the wheel carries Triton 2.51)
    assert server.call("GET", "/v2")[1]["version"] == "2.51.0"
    assert server.call("GET", "/v2/models/sleeper")[1]["name"] == "sleeper"
    # the role's default leaves model-config and statistics open (clients and perf_analyzer read them)
    assert server.call("GET", "/v2/models/sleeper/config")[1]["backend"] == "python"
    assert server.call("GET", "/v2/models/sleeper/stats")[0] == 200
    with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
        assert b"nv_inference_request_success" in resp.read()


# (method, path, body): one call of each restricted API group, as a client of Triton's HTTP/REST extensions sends it
Call = Tuple[str, str, Optional[Dict[str, Any]]]
RESTRICTED_READS: List[Call] = [
    ("POST", "/v2/repository/index", {}),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("GET", "/v2/trace/setting", None),
    ("GET", "/v2/logging", None),
]
RESTRICTED_WRITES: List[Call] = [
    ("POST", "/v2/repository/models/sleeper/unload", {}),
    ("POST", "/v2/repository/models/sleeper/load", {}),
    ("POST", "/v2/systemsharedmemory/region/bed/register", {"key": "/nowhere", "offset": 0, "byte_size": 16}),
    ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
    ("POST", "/v2/logging", {"log_verbose_level": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), RESTRICTED_READS + RESTRICTED_WRITES,
                         ids=[f"{m} {p}" for m, p, _b in RESTRICTED_READS + RESTRICTED_WRITES])
def test_http_refuses_a_restricted_api_without_the_key(bed: Tuple[Bed, TritonProcess], method: str, path: str,
                                                       body: Optional[Mapping[str, Any]]) -> None:
    made, server = bed
    for headers in ({}, {HEADER: made.key[:-1]}, {HEADER: made.key + "x"}, {"authorization": made.key}):
        assert server.call(method, path, body, headers) == (403, {"error": REFUSED_HTTP}), headers


def test_http_with_the_key_controls_models_shared_memory_trace_and_logging(bed: Tuple[Bed, TritonProcess]) -> None:
    made, server = bed
    key = {HEADER: made.key}
    assert server.call("POST", "/v2/repository/index", {}, key) == (200, [{"name": "sleeper", "version": "1", "state": "READY"}])
    # explicit model control: unload and load again through the restricted model-repository API
    assert server.call("POST", "/v2/repository/models/sleeper/unload", {}, key)[0] == 200
    assert server.call("GET", "/v2/models/sleeper/ready")[0] == 400
    assert server.call("POST", "/v2/repository/models/sleeper/load", {}, key)[0] == 200
    assert server.call("GET", "/v2/models/sleeper/ready")[0] == 200
    # a real system shared-memory region, registered and unregistered
    region = shared_memory.SharedMemory(create=True, size=64)
    try:
        register = {"key": "/" + region.name, "offset": 0, "byte_size": 64}
        assert server.call("POST", "/v2/systemsharedmemory/region/bed/register", register, key)[0] == 200
        assert server.call("GET", "/v2/systemsharedmemory/status", None, key) == (200, [{"name": "bed", **register}])
        assert server.call("POST", "/v2/systemsharedmemory/region/bed/unregister", {}, key)[0] == 200
    finally:
        region.close()
        region.unlink()
    status, trace = server.call("POST", "/v2/trace/setting", {"trace_rate": "5"}, key)
    assert (status, trace["trace_rate"]) == (200, "5")
    status, logging = server.call("POST", "/v2/logging", {"log_verbose_level": 1}, key)
    assert (status, logging["log_verbose_level"]) == (200, 1)
    assert server.call("POST", "/v2/logging", {"log_verbose_level": 0}, key)[0] == 200


def test_grpc_refuses_without_the_key_and_answers_with_it(bed: Tuple[Bed, TritonProcess]) -> None:
    made, server = bed
    client = grpcclient.InferenceServerClient(url=f"{server.host}:{server.grpc_port}")
    calls = [client.get_model_repository_index, client.get_system_shared_memory_status, client.get_trace_settings, client.get_log_settings]
    try:
        for method in calls:
            for headers in (None, {f"triton-grpc-protocol-{HEADER}": "wrong"}, {HEADER: made.key}):
                with pytest.raises(InferenceServerException) as refused:
                    method(headers=headers)
                assert str(refused.value.status()) == "StatusCode.UNAVAILABLE"
                assert refused.value.message() == REFUSED_GRPC
        key = {f"triton-grpc-protocol-{HEADER}": made.key}
        index = client.get_model_repository_index(headers=key, as_json=True)
        assert [m["name"] for m in index["models"]] == ["sleeper"]
        assert client.get_system_shared_memory_status(headers=key, as_json=True) == {}
        assert client.get_log_settings(headers=key, as_json=True)["settings"]["log_verbose_level"]["uint32_param"] in (0, 1)
        assert "trace_level" in client.get_trace_settings(headers=key, as_json=True)["settings"]
    finally:
        client.close()


def test_no_restricted_apis_renders_neither_arguments_nor_secret(tmp_path: Path) -> None:
    """triton_restricted_apis: [] needs no key; a re-render into the same directory removes the earlier Secret."""
    out = tmp_path / "out"
    assert render(out, "-e", "vault_triton_restricted_api_key=0123456789abcdef-render").returncode == 0
    assert (out / "triton_secrets").is_dir()
    proc = render(out, "-e", '{"triton_restricted_apis": []}')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not (out / "triton_secrets").exists()
    container = load(next((out / "triton").glob("*-deployment-triton-1g-5gb.yaml")))["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if "-restricted-" in a]
    assert "env" not in container


def test_an_existing_secret_is_referenced_not_rendered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = render(out, "-e", "triton_restricted_api_secret=triton-admin", "-e", "triton_restricted_api_secret_key=token")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not (out / "triton_secrets").exists()
    container = load(next((out / "triton").glob("*-deployment-triton-1g-5gb.yaml")))["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": KEY_ENV, "valueFrom": {"secretKeyRef": {"name": "triton-admin", "key": "token"}}}]


@pytest.mark.parametrize(("extra", "message"), [
    ([], "triton_restricted_api_key is empty: triton_restricted_apis (model-repository, shared-memory, trace, logging) need a key"),
    (["vault_triton_restricted_api_key=tooshort"], "triton_restricted_api_key must be at least 16 printable ASCII characters"),
    (["vault_triton_restricted_api_key=0123456789abcdef-ok", '{"triton_restricted_apis": ["health", "trace"]}'],
     "triton_restricted_apis: health cannot be restricted: the kubelet's startup, readiness and liveness probes send no header"),
    (["vault_triton_restricted_api_key=0123456789abcdef-ok", "triton_restricted_api_secret=triton-admin"],
     "triton_restricted_api_key and triton_restricted_api_secret are both set"),
])
def test_bad_key_settings_fail_before_anything_is_written(tmp_path: Path, extra: List[str], message: str) -> None:
    out = tmp_path / "out"
    argv: List[str] = []
    for item in extra:
        argv += ["-e", item]
    proc = render(out, *argv)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert message in text, text[-3000:]
    assert "tooshort" not in text, "the key was echoed"
    assert "0123456789abcdef-ok" not in text, "the key was echoed"
    assert not out.exists() or not any(out.rglob("*"))
