# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/load_balancer.yml (role nginx_lb) rendered for real, without network (``unshare -n`` where possible):

- every object of every variant is valid for each Kubernetes version of tests/k8s_schemas.py (strict; the
  PodMonitor/ServiceMonitor against the prometheus-operator CRDs);
- every nginx.conf Debian's nginx 1.22 can load (the open-source ``variable`` form) passes ``nginx -t`` in an
  unprivileged prefix directory;
- the forms 1.22 cannot load (open source >= 1.27.3 with ``server ... resolve``, and NGINX Plus) are parsed with
  crossplane and checked directive by directive;
- the Deployment, Services and monitor carry what issue 7 asks (checksum annotation, probes, securityContext,
  client ports only on the clients' Service, Plus secrets and pull secret), and Plus secrets never reach the log;
- issue 14: every pod meets the Pod Security level of the namespace it goes to (Triton's, taken as restricted, or one
  the role creates and labels, never Triton's), checked with tests/kube_fake's Pod Security admission checks; the
  NetworkPolicy; the allow-lists (HTTP paths, gRPC methods) in every nginx.conf form; TLS from a Secret; host ports;
- bad input fails in preflight, naming the variable, before anything is written;
- apply mode (kubernetes.core, server-side apply) against the fake API server of tests/kube_fake: the Plus
  objects and Secrets arrive, Pod Security admits the pods, a second run changes nothing, and the secrets stay out of
  the log there too.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import crossplane
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env, offline_prefix
    from tests.k8s_schemas import KUBE_VERSIONS, validate_file
    from tests.kube_fake.admission import LevelVersion, evaluate
    from tests.kube_fake.server import FakeKube
    from tests.servers.nginx import write_test_pki
else:  # tests/k8s_schemas.py, importable by its file name once tests/ is on sys.path
    from ansible_run import ansible_env, offline_prefix
    from k8s_schemas import KUBE_VERSIONS, validate_file
    from kube_fake.admission import LevelVersion, evaluate
    from kube_fake.server import FakeKube
    from servers.nginx import write_test_pki

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# the resolver's valid= as the example inventory sets it (the role's default otherwise)
_INVENTORY_LB = yaml.safe_load((ROOT / "inventories/dgx/group_vars/k8s_control/nginx_lb.yml").read_text()) or {}
_ROLE_VALID = yaml.safe_load((ROOT / "roles/nginx_lb/defaults/main.yml").read_text())["nginx_lb_resolver_valid"]
VALID = f"valid={_INVENTORY_LB.get('nginx_lb_resolver_valid') or _ROLE_VALID}"

pytestmark = pytest.mark.slow

LICENCE = "eyJhbGciOiJFUzI1NiJ9.TEST-LICENCE-NEVER-LOGGED.sig"
REGISTRY_PASSWORD = "TEST-REGISTRY-PASSWORD-NEVER-LOGGED"
PLUS = [
    "-e", "nginx_lb_edition=plus",
    "-e", f"vault_nginx_plus_license_jwt={LICENCE}",
    "-e", "vault_nginx_plus_registry_username=TEST-REGISTRY-USER",
    "-e", f"vault_nginx_plus_registry_password={REGISTRY_PASSWORD}",
]

# the root-master Plus image: only in a namespace of its own that the role creates and labels baseline
PLUS_ROOT = [*PLUS, "-e", "nginx_lb_plus_unprivileged=false", "-e", "nginx_lb_create_namespace=true", "-e", "nginx_lb_namespace=nginx-lb",
             "-e", "nginx_lb_namespace_pod_security=baseline"]
HOST_PORTS = {"nginx_lb_host_ports": {"https": 443, "grpcs": 8444}, "nginx_lb_node_selector": {"node-role.gpu-ops/edge": "true"},
              "nginx_lb_network_policy_client_peers": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}

# name -> extra arguments. 'oss' is the inventory as shipped (open source 1.28.0: the resolve form; Plus there is the
# unprivileged image).
VARIANTS: Dict[str, List[str]] = {
    "oss": [],
    "oss-1.22": ["-e", "nginx_lb_oss_version=1.22.1"],
    "oss-1.24-servicemonitor": [
        "-e", "nginx_lb_oss_version=1.24.0", "-e", "nginx_lb_monitor_kind=ServiceMonitor", "-e", "nginx_lb_replicas=1",
        "-e", "nginx_lb_create_namespace=true", "-e", "nginx_lb_namespace=inference-lb",
        "-e", '{"nginx_lb_resolvers": ["127.0.0.53:5353", "10.96.0.10"]}',
    ],
    "plus": PLUS,
    "plus-root": PLUS_ROOT,
    "plus-api-write": [*PLUS, "-e", "nginx_lb_plus_api_write=true", "-e", "vault_nginx_plus_api_htpasswd=admin:$apr1$salt$hash",
                       "-e", "nginx_lb_plus_usage_report_endpoint=nim.example.internal:8443"],
    "oss-tls": ["-e", "nginx_lb_oss_version=1.22.1", "-e", "nginx_lb_tls_secret=inference-tls"],
    "oss-tls-host-ports": ["-e", "nginx_lb_oss_version=1.22.1", "-e", "nginx_lb_tls_secret=inference-tls", "-e", "nginx_lb_tls_plaintext=true",
                           "-e", "nginx_lb_create_namespace=true", "-e", "nginx_lb_namespace=edge-lb",
                           "-e", "nginx_lb_namespace_pod_security=privileged", "-e", json.dumps(HOST_PORTS)],
    "oss-no-policy": ["-e", "nginx_lb_oss_version=1.22.1", "-e", "nginx_lb_network_policy=false"],
    # one pool (an LB in front of one Deployment someone else runs): rendered as before pools, no split_clients
    # ... with the upstream zone set by the user
    "oss-one-pool": ["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "triton-headless", "weight": 1, "max_replicas": 8}]}),
                     "-e", "nginx_lb_upstream_zone_size=1m"],
    "oss-1.22-one-pool": ["-e", "nginx_lb_oss_version=1.22.1",
                          "-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "triton-headless", "weight": 1, "max_replicas": 8}]})],
}
# the variants Debian's nginx 1.22 can load (no `server ... resolve`, no Plus directives)
NGINX_122_LOADABLE = ("oss-1.22", "oss-1.24-servicemonitor", "oss-tls", "oss-tls-host-ports", "oss-no-policy", "oss-1.22-one-pool")
# issue 17: the serving pools of inventories/dgx (gpu_ops_pools, one per MIG profile, in the fleet's order): headless
# Service, weight (the profile's compute slices), max_replicas (the profile's capacity)
DGX_POOLS = [("triton-1g-18gb-headless", 1, 56), ("triton-1g-5gb-headless", 1, 72), ("triton-2g-10gb-headless", 2, 8),
             ("triton-3g-20gb-headless", 3, 8)]


def render(out: Path, *extra: str, verbose: bool = False, mode: str = "render") -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [
        *(offline_prefix() if mode == "render" else []), str(BIN / "ansible-playbook"), "playbooks/load_balancer.yml", "-i", "inventories/dgx",
        "-e", f"gpu_ops_k8s_mode={mode}", "-e", f"gpu_ops_render_dir={out}",
        # the k8s_control host of the example inventory is a placeholder address: render on this machine
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
        *(["-v"] if verbose else []), *extra,
    ]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


class Rendered:
    def __init__(self, out: Path, log: str) -> None:
        self.out = out
        self.log = log

    def files(self) -> List[Path]:
        return sorted(p for p in self.out.rglob("*.yaml") if p.parent != self.out)

    def obj(self, kind: str, name: str = "nginx-lb", component: str = "nginx_lb") -> Dict[str, Any]:
        found = list((self.out / component).glob(f"*-{kind.lower()}-{name}.yaml"))
        assert len(found) == 1, (kind, name, [p.name for p in (self.out / component).iterdir()])
        doc = yaml.safe_load(found[0].read_text())
        assert isinstance(doc, dict)
        return doc

    def namespace(self) -> Dict[str, Any] | None:
        """The Namespace the role rendered (nginx_lb_create_namespace), else None."""
        found = list((self.out / "nginx_lb_namespace").glob("*-namespace-*.yaml")) if (self.out / "nginx_lb_namespace").is_dir() else []
        assert len(found) <= 1, found
        if not found:
            return None
        doc = yaml.safe_load(found[0].read_text())
        assert isinstance(doc, dict)
        return doc

    def nginx_conf(self) -> str:
        conf = self.obj("ConfigMap", "nginx-lb-config")["data"]["nginx.conf"]
        assert isinstance(conf, str)
        return conf


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Rendered]:
    outs = {name: tmp_path_factory.mktemp(f"render-{name}") / "out" for name in VARIANTS}

    def one(name: str) -> Tuple[str, subprocess.CompletedProcess[str]]:
        return name, render(outs[name], *VARIANTS[name], verbose=name.startswith("plus"))

    results: Dict[str, Rendered] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores; each ansible-playbook uses one
        for name, proc in pool.map(one, VARIANTS):
            assert proc.returncode == 0, f"{name}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
            results[name] = Rendered(outs[name], proc.stdout + proc.stderr)
    return results


# --- crossplane helpers -------------------------------------------------------------------------------


Directive = Dict[str, Any]


def parse(conf: str, tmp: Path) -> List[Directive]:
    path = tmp / "nginx.conf"
    path.write_text(conf)
    payload = crossplane.parse(str(path), combine=True, check_ctx=True, check_args=True)
    assert payload["status"] == "ok", payload["errors"]
    parsed: List[Directive] = payload["config"][0]["parsed"]
    return parsed


def walk(block: List[Directive], path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Directive]]:
    for d in block:
        yield path, d
        if "block" in d:
            yield from walk(d["block"], (*path, " ".join([d["directive"], *d["args"]])))


def find(block: List[Directive], directive: str) -> List[Tuple[Tuple[str, ...], List[str]]]:
    return [(path, d["args"]) for path, d in walk(block) if d["directive"] == directive]


def server_by_listen(block: List[Directive], port: str) -> List[Directive]:
    for _path, d in walk(block):
        if d["directive"] == "server" and "block" in d:
            listens = [x["args"][0] for x in d["block"] if x["directive"] == "listen"]
            if port in listens:
                inner: List[Directive] = d["block"]
                return inner
    raise AssertionError(f"no server listens on {port}")


def in_server(server: List[Directive], directive: str) -> List[List[str]]:
    return [d["args"] for _p, d in walk(server) if d["directive"] == directive]


# --- Kubernetes objects -----------------------------------------------------------------------------------


def test_every_object_of_every_variant_is_valid_for_each_kubernetes_version(rendered: Dict[str, Rendered]) -> None:
    assert KUBE_VERSIONS == ("1.29.0", "1.31.0", "1.33.0")
    for name, r in rendered.items():
        files = r.files()
        assert files, name
        assert sum(validate_file(p) for p in files) == len(files), name


def test_objects_rendered_in_apply_order(rendered: Dict[str, Rendered]) -> None:
    names = [p.name for p in sorted((rendered["oss"].out / "nginx_lb").iterdir())]
    assert names == [  # the NetworkPolicy before the Deployment: its pods start isolated
        "01-configmap-nginx-lb-config.yaml", "02-networkpolicy-nginx-lb.yaml", "03-deployment-nginx-lb.yaml", "04-service-nginx-lb.yaml",
        "05-service-nginx-lb-status.yaml", "06-poddisruptionbudget-nginx-lb.yaml", "07-podmonitor-nginx-lb.yaml",
    ]
    assert not any("networkpolicy" in p.name for p in (rendered["oss-no-policy"].out / "nginx_lb").iterdir())
    assert not (rendered["oss"].out / "nginx_lb_secrets").exists()
    plus_secrets = sorted(p.name for p in (rendered["plus"].out / "nginx_lb_secrets").iterdir())
    assert plus_secrets == ["01-secret-nginx-lb-license.yaml", "02-secret-nginx-lb-registry.yaml"]
    write_secrets = sorted(p.name for p in (rendered["plus-api-write"].out / "nginx_lb_secrets").iterdir())
    assert write_secrets == [*plus_secrets, "03-secret-nginx-lb-api-auth.yaml"]
    sm = sorted(p.name for p in (rendered["oss-1.24-servicemonitor"].out / "nginx_lb").iterdir())
    assert sm[0] == "01-configmap-nginx-lb-config.yaml"
    ns = sorted(p.name for p in (rendered["oss-1.24-servicemonitor"].out / "nginx_lb_namespace").iterdir())
    assert ns == ["01-namespace-inference-lb.yaml"]
    assert not (rendered["oss"].out / "nginx_lb_namespace").exists()
    assert sm[-1] == "06-servicemonitor-nginx-lb.yaml"
    assert not any("poddisruptionbudget" in n for n in sm), "one replica: no PDB that would block every drain"


def test_rerender_changes_nothing(rendered: Dict[str, Rendered]) -> None:
    r = rendered["oss"]
    before = {p: p.read_bytes() for p in r.files()}
    proc = render(r.out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "changed=0" in proc.stdout, proc.stdout[-3000:]
    assert {p: p.read_bytes() for p in r.files()} == before


def test_deployment_runs_nginx_as_pid1_with_probes_and_a_config_checksum(rendered: Dict[str, Rendered]) -> None:
    r = rendered["oss"]
    dep = r.obj("Deployment")
    assert dep["apiVersion"] == "apps/v1"
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]
    assert pod["metadata"]["annotations"]["checksum/config"] == hashlib.sha256(r.nginx_conf().encode()).hexdigest()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    nginx, exporter = pod["spec"]["containers"]
    assert nginx["image"] == "docker.io/nginxinc/nginx-unprivileged:1.28.0"
    assert nginx["command"] == ["nginx", "-g", "daemon off;"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert nginx[probe]["httpGet"] == {"path": "/healthz", "port": "status"}, probe
    assert nginx["resources"]["requests"]["cpu"] == "500m"
    sc = nginx["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {p["name"]: p["containerPort"] for p in nginx["ports"]} == {"http": 8000, "grpc": 8001, "status": 8080}
    assert exporter["args"][0] == "--nginx.scrape-uri=http://127.0.0.1:8080/stub_status"
    assert "imagePullSecrets" not in pod["spec"]


def test_a_config_change_changes_the_checksum(rendered: Dict[str, Rendered]) -> None:
    sums = {name: r.obj("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for name, r in rendered.items()}
    confs = {name: r.nginx_conf() for name, r in rendered.items()}
    # the same nginx.conf only where the difference is outside it (the image's privileges, the NetworkPolicy)
    assert confs["plus"] == confs["plus-root"]
    assert confs["oss-1.22"] == confs["oss-no-policy"]
    assert len(set(confs.values())) == len(confs) - 2
    for a in rendered:
        for b in rendered:
            assert (sums[a] == sums[b]) == (confs[a] == confs[b]), (a, b)


def test_clients_service_has_only_inference_ports(rendered: Dict[str, Rendered]) -> None:
    r = rendered["oss"]
    svc = r.obj("Service")
    assert svc["spec"]["type"] == "LoadBalancer"  # as the dgx inventory sets it
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000), ("grpc", 8001)]
    assert svc["spec"]["ports"][1]["appProtocol"] == "kubernetes.io/h2c"
    status = r.obj("Service", "nginx-lb-status")
    assert status["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in status["spec"]["ports"]] == ["status", "metrics"]
    mon = r.obj("PodMonitor")
    assert mon["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert mon["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert mon["spec"]["selector"]["matchLabels"] == r.obj("Deployment")["spec"]["selector"]["matchLabels"]
    sm = rendered["oss-1.24-servicemonitor"].obj("ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= status["metadata"]["labels"].items()


def test_plus_pulls_with_its_secret_and_mounts_the_licence(rendered: Dict[str, Rendered]) -> None:
    r = rendered["plus"]
    pod = r.obj("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "nginx-lb-registry"}]
    assert pod["containers"][0]["image"] == "registry.example.internal/nginx-plus/rootless-base:r34"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["license"] == "/etc/nginx/license"
    assert {"name": "license", "secret": {"secretName": "nginx-lb-license", "defaultMode": 0o440}} in pod["volumes"]
    # the unprivileged (rootless) image by default, as the inventory ships it: uid 101, no capabilities
    assert pod["containers"][0]["image"].split("/")[-1].startswith("rootless-base:")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 101
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--nginx.plus" in pod["containers"][1]["args"]
    root = rendered["plus-root"].obj("Deployment")["spec"]["template"]["spec"]
    assert "runAsNonRoot" not in root["securityContext"]  # ...or the root-master one, in a namespace of its own
    assert root["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "SETGID", "SETUID"]}
    assert rendered["plus-root"].obj("Deployment")["metadata"]["namespace"] == "nginx-lb"
    lic = r.obj("Secret", "nginx-lb-license", component="nginx_lb_secrets")
    assert base64.b64decode(lic["data"]["license.jwt"]).decode() == LICENCE
    reg = r.obj("Secret", "nginx-lb-registry", component="nginx_lb_secrets")
    assert reg["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(reg["data"][".dockerconfigjson"]))["auths"]
    assert auths["registry.example.internal"]["password"] == REGISTRY_PASSWORD


def test_plus_secrets_never_reach_the_log(rendered: Dict[str, Rendered]) -> None:
    for name in ("plus", "plus-root", "plus-api-write"):
        log = rendered[name].log
        assert "nginx_lb_secrets" in log, "the secrets' tasks ran"
        assert LICENCE not in log, name
        assert REGISTRY_PASSWORD not in log, name
        assert "$apr1$salt$hash" not in log, name


# --- issue 14: Pod Security, namespace ownership, NetworkPolicy, TLS, host ports ----------------------------------


LEVELS = ("restricted", "baseline", "privileged")


def namespace_level(r: Rendered) -> str:
    """The enforce level of the namespace the pods go to: the one the role labels, else restricted (Triton's, as
    role triton labels it)."""
    ns = r.namespace()
    return "restricted" if ns is None else str(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"])


def pod_failures(r: Rendered, level: str) -> List[Tuple[str, str]]:
    """What Pod Security admission at ``level`` (latest) finds wrong with the Deployment's pod template."""
    template = r.obj("Deployment")["spec"]["template"]
    return evaluate(LevelVersion(level, None), template["metadata"], template["spec"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_meet_the_pod_security_level_of_their_namespace(rendered: Dict[str, Rendered], variant: str) -> None:
    r = rendered[variant]
    level = namespace_level(r)
    assert pod_failures(r, level) == []
    # and the level is the strictest that admits them: restricted unless the pod needs more
    needs = {"plus-root": "baseline", "oss-tls-host-ports": "privileged"}.get(variant, "restricted")
    assert level == needs, (variant, level)
    if needs != "restricted":
        stricter = LEVELS[LEVELS.index(needs) - 1]
        reasons = [reason for reason, _detail in pod_failures(r, stricter)]
        assert reasons, f"{variant} would pass {stricter} too"
        assert reasons == (["hostPort"] if needs == "privileged" else ["unrestricted capabilities", "runAsNonRoot != true"]), reasons


def test_created_namespaces_are_labelled_from_the_variable_and_never_tritons(rendered: Dict[str, Rendered]) -> None:
    created = {name: r.namespace() for name, r in rendered.items() if r.namespace() is not None}
    assert set(created) == {"oss-1.24-servicemonitor", "plus-root", "oss-tls-host-ports"}
    for name, ns in created.items():
        assert ns is not None
        assert ns["metadata"]["name"] != "triton", name
        labels = ns["metadata"]["labels"]
        levels = {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "audit", "warn")}
        assert len(levels) == 1, labels
        assert rendered[name].obj("Deployment")["metadata"]["namespace"] == ns["metadata"]["name"]


def test_network_policy_admits_clients_and_prometheus_and_lets_out_only_triton_and_dns(rendered: Dict[str, Rendered]) -> None:
    r = rendered["oss"]
    pol = r.obj("NetworkPolicy")
    spec = pol["spec"]
    assert spec["podSelector"]["matchLabels"] == r.obj("Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    clients, scrape = spec["ingress"]
    assert clients == {"ports": [{"port": 8000, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}]}  # no from: anyone
    assert scrape["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 9113, "protocol": "TCP"}]
    assert scrape["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        # prometheus-operator's labels on the pods of kube-prometheus-stack's Prometheus (CR <release>-prometheus)
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": "kube-prometheus-stack-prometheus"}},
    }]
    triton, dns = spec["egress"]
    assert triton == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "triton"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}}],
        "ports": [{"port": 8000, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}],
    }
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    # Plus: the usage reports leave too, on the endpoint's port (443 by default)
    plus_egress = rendered["plus"].obj("NetworkPolicy")["spec"]["egress"]
    assert plus_egress[2] == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    assert rendered["plus-api-write"].obj("NetworkPolicy")["spec"]["egress"][2]["ports"] == [{"port": 8443, "protocol": "TCP"}]
    # the TLS ports, and client peers when given
    edge = rendered["oss-tls-host-ports"].obj("NetworkPolicy")["spec"]["ingress"][0]
    assert [p["port"] for p in edge["ports"]] == [8000, 8001, 8443, 8444]
    assert edge["from"] == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]
    assert [p["port"] for p in rendered["oss-tls"].obj("NetworkPolicy")["spec"]["ingress"][0]["ports"]] == [8443, 8444]


def test_tls_mounts_the_secret_and_serves_only_tls_ports(rendered: Dict[str, Rendered]) -> None:
    r = rendered["oss-tls"]
    pod = r.obj("Deployment")["spec"]["template"]["spec"]
    nginx, exporter = pod["containers"]
    assert [(p["name"], p["containerPort"]) for p in nginx["ports"]] == [("https", 8443), ("grpcs", 8444), ("status", 8080)]
    assert {"name": "tls", "mountPath": "/etc/nginx/tls", "readOnly": True} in nginx["volumeMounts"]
    assert not [m for m in exporter.get("volumeMounts", []) if m["name"] == "tls"]
    assert {"name": "tls", "secret": {"secretName": "inference-tls", "defaultMode": 0o440,
                                      "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}} in pod["volumes"]
    svc = r.obj("Service")["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"], p["appProtocol"]) for p in svc] == [("https", 8443, "https", "https"), ("grpcs", 8444, "grpcs", "https")]
    both = [p["name"] for p in rendered["oss-tls-host-ports"].obj("Service")["spec"]["ports"]]
    assert both == ["http", "grpc", "https", "grpcs"]


def test_host_ports_on_dedicated_nodes(rendered: Dict[str, Rendered]) -> None:
    pod = rendered["oss-tls-host-ports"].obj("Deployment")["spec"]["template"]["spec"]
    ports = {p["name"]: p for p in pod["containers"][0]["ports"]}
    assert ports["https"] == {"name": "https", "containerPort": 8443, "protocol": "TCP", "hostPort": 443}
    assert ports["grpcs"]["hostPort"] == 8444
    assert "hostPort" not in ports["http"]
    assert "hostPort" not in ports["status"]
    assert pod["nodeSelector"] == {"node-role.gpu-ops/edge": "true"}
    for name in ("oss", "plus", "oss-tls"):
        assert all("hostPort" not in p for p in rendered[name].obj("Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"])


# --- nginx.conf: nginx -t for what Debian's 1.22 loads ------------------------------------------------------


@pytest.mark.parametrize("variant", NGINX_122_LOADABLE)
def test_nginx_122_loads_the_variable_form(rendered: Dict[str, Rendered], variant: str, tmp_path: Path) -> None:
    conf = rendered[variant].nginx_conf()
    assert "form 'variable'" in conf
    parsed = parse(conf, tmp_path)
    assert not find(parsed, "upstream")
    assert not find(parsed, "keepalive")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    # unprivileged paths: everything the config writes under /tmp goes to the prefix directory; the TLS Secret's files
    # (a test certificate) where the pod mounts them
    if "/etc/nginx/tls/" in conf:
        write_test_pki(prefix / "tls")
    (prefix / "nginx.conf").write_text(conf.replace("/tmp/", f"{prefix}/").replace("/etc/nginx/tls/", f"{prefix}/tls/"))
    proc = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    assert "nginx/1.22" in version, version


def test_nginx_122_rejects_the_resolve_form(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    # the reason the variable form exists: 1.22 has no `resolve` in upstream blocks
    conf = rendered["oss"].nginx_conf()
    (tmp_path / "nginx.conf").write_text(conf.replace("/tmp/", f"{tmp_path}/"))
    proc = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0
    assert 'invalid parameter "resolve"' in proc.stderr, proc.stderr


def test_variable_form_directives(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    parsed = parse(rendered["oss-1.22"].nginx_conf(), tmp_path)
    assert find(parsed, "resolver")[0][1] == ["10.96.0.10", VALID, "ipv6=off"]
    http = server_by_listen(parsed, "8000")
    # issue 17: a pool per request, in proportion to weight x max_replicas (56, 72, 16, 24 of 168), the rest to the last
    assert in_server(http, "set") == [["$triton_http", "${triton_pool}:8000"]]
    split = [d for _p, d in walk(parsed) if d["directive"] == "split_clients"]
    assert [d["args"] for d in split] == [["${request_id}", "$triton_pool"]]
    assert [[d["directive"], *d["args"]] for d in split[0]["block"]] == [
        ["33.33%", "triton-1g-18gb-headless.triton.svc.cluster.local"], ["42.85%", "triton-1g-5gb-headless.triton.svc.cluster.local"],
        ["9.52%", "triton-2g-10gb-headless.triton.svc.cluster.local"], ["*", "triton-3g-20gb-headless.triton.svc.cluster.local"]]
    assert in_server(server_by_listen(parsed, "8001"), "set") == [["$triton_grpc", "${triton_pool}:8001"]]
    # one pool: the name itself, no split
    one = parse(rendered["oss-1.22-one-pool"].nginx_conf(), tmp_path)
    assert in_server(server_by_listen(one, "8000"), "set") == [["$triton_http", "triton-headless.triton.svc.cluster.local:8000"]]
    assert in_server(server_by_listen(one, "8001"), "set") == [["$triton_grpc", "triton-headless.triton.svc.cluster.local:8001"]]
    assert not find(one, "split_clients")
    assert in_server(http, "proxy_pass") == [["http://$triton_http"]]
    assert in_server(http, "proxy_next_upstream") == [["error", "timeout"]]
    assert in_server(http, "proxy_read_timeout") == [["300s"]]
    grpc = server_by_listen(parsed, "8001")
    assert [d["args"] for d in grpc if d["directive"] == "listen"] == [["8001", "http2"]]
    assert in_server(grpc, "grpc_pass") == [["grpc://$triton_grpc"]]
    assert in_server(grpc, "grpc_next_upstream") == [["error", "timeout"]]
    status = server_by_listen(parsed, "8080")
    assert in_server(status, "stub_status") == [[]]
    assert in_server(status, "deny") == [["all"]]
    two = parse(rendered["oss-1.24-servicemonitor"].nginx_conf(), tmp_path)
    assert find(two, "resolver")[0][1] == ["127.0.0.53:5353", "10.96.0.10", VALID, "ipv6=off"]
    assert [d["args"] for d in server_by_listen(two, "8001") if d["directive"] == "listen"] == [["8001", "http2"]]


# --- nginx.conf: crossplane for >= 1.27.3 and Plus ---------------------------------------------------------


def _check_resolve_upstreams(parsed: List[Directive], one_pool: bool = False, zone: str = "320k") -> None:
    """``zone``: by default the size the fleet model gives the dgx pools (144 pods at most, 2 KiB each: 288 KiB, in
    64k steps), as the filter nginx_upstream_zone_size computes it."""
    upstreams = {d["args"][0]: d["block"] for _p, d in walk(parsed) if d["directive"] == "upstream"}
    assert set(upstreams) == {"triton_http", "triton_grpc"}
    for name, port in (("triton_http", "8000"), ("triton_grpc", "8001")):
        block = {d["directive"]: d["args"] for d in upstreams[name]}
        assert block["zone"] == [name, zone]
        servers = [d["args"] for d in upstreams[name] if d["directive"] == "server"]
        if one_pool:  # as before pools: no weight
            assert servers == [[f"triton-headless.triton.svc.cluster.local:{port}", "resolve", "max_fails=2", "fail_timeout=10s"]]
        else:  # issue 17: a server per pool, every pod of it weighted by the pool's weight
            assert servers == [[f"{service}.triton.svc.cluster.local:{port}", "resolve", f"weight={weight}", "max_fails=2", "fail_timeout=10s"]
                               for service, weight, _max in DGX_POOLS]
        assert block["keepalive"] == ["32"]
    http = server_by_listen(parsed, "8000")
    assert in_server(http, "proxy_pass") == [["http://triton_http"]]
    assert in_server(http, "proxy_http_version") == [["1.1"]]
    assert ["Connection", ""] in in_server(http, "proxy_set_header"), "upstream keepalive needs the Connection header cleared"
    grpc = server_by_listen(parsed, "8001")
    assert in_server(grpc, "http2") == [["on"]]
    assert in_server(grpc, "grpc_pass") == [["grpc://triton_grpc"]]
    assert find(parsed, "resolver")[0][1] == ["10.96.0.10", VALID, "ipv6=off"]
    assert not find(parsed, "set")


def test_oss_1_27_3_and_later_resolve_form(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    parsed = parse(rendered["oss"].nginx_conf(), tmp_path)
    _check_resolve_upstreams(parsed)
    assert not find(parsed, "split_clients")
    _check_resolve_upstreams(parse(rendered["oss-one-pool"].nginx_conf(), tmp_path), one_pool=True, zone="1m")
    for plus_only in ("health_check", "status_zone", "api", "mgmt"):
        assert not find(parsed, plus_only), plus_only
    assert find(parsed, "stub_status")


def test_plus_form(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    parsed = parse(rendered["plus"].nginx_conf(), tmp_path)
    _check_resolve_upstreams(parsed)
    http, grpc, status = (server_by_listen(parsed, p) for p in ("8000", "8001", "8080"))
    assert in_server(http, "health_check") == [["uri=/v2/health/ready", "interval=5s", "fails=2", "passes=1"]]
    assert in_server(grpc, "health_check") == [["type=grpc", "interval=5s", "fails=2", "passes=1"]]
    assert in_server(http, "status_zone") == [["triton_http"]]
    assert in_server(grpc, "status_zone") == [["triton_grpc"]]
    assert in_server(status, "api") == [["write=off"]]
    assert not in_server(status, "stub_status")
    assert ["all"] in in_server(status, "deny")
    assert ["0.0.0.0/0"] not in in_server(status, "allow")
    mgmt = [d for d in parsed if d["directive"] == "mgmt"]
    assert [(d["directive"], d["args"]) for d in mgmt[0]["block"]] == [
        ("license_token", ["/etc/nginx/license/license.jwt"]), ("state_path", ["/var/lib/nginx/state"]),
    ]


def test_plus_writable_api_needs_basic_auth(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    parsed = parse(rendered["plus-api-write"].nginx_conf(), tmp_path)
    status = server_by_listen(parsed, "8080")
    assert in_server(status, "api") == [["write=on"]]
    limit = [d for _p, d in walk(status) if d["directive"] == "limit_except"]
    assert limit[0]["args"] == ["GET", "HEAD"]
    assert {d["directive"]: d["args"] for d in limit[0]["block"]} == {
        "auth_basic": ["NGINX Plus API"], "auth_basic_user_file": ["/etc/nginx/api-auth/htpasswd"],
    }
    assert ["usage_report", ["endpoint=nim.example.internal:8443"]] in [[d["directive"], d["args"]] for _p, d in walk(parsed)]


# --- nginx.conf: what clients may call, TLS ------------------------------------------------------------------------


MODEL_RE = "(?!stats(?:[?]|$))[^/?]+(?:/versions/[0-9]+)?"
HTTP_ALLOWED = [
    "~^/v2/health/live(?:[?].*)?$", "~^/v2/health/ready(?:[?].*)?$", "~^/v2(?:[?].*)?$",
    *(f"~^/v2/models/{MODEL_RE}{suffix}(?:[?].*)?$" for suffix in ("", "/ready", "/config", "/infer", "/generate", "/generate_stream")),
]
GRPC_ALLOWED = [f"~^/inference\\.GRPCInferenceService/{m}$" for m in (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelInfer", "ModelStreamInfer")]
GRPC_ALLOWED.append("~^/grpc\\.health\\.v1\\.Health/Check$")


def maps(parsed: List[Directive]) -> Dict[str, List[List[str]]]:
    return {d["args"][1]: [x["args"] if x["directive"] == "default" else [x["directive"], *x["args"]] for x in d["block"]]
            for _p, d in walk(parsed) if d["directive"] == "map"}


@pytest.mark.parametrize("variant", ["oss", "oss-1.22", "plus", "oss-tls-host-ports"])
def test_allow_lists_guard_every_client_server(rendered: Dict[str, Rendered], variant: str, tmp_path: Path) -> None:
    parsed = parse(rendered[variant].nginx_conf(), tmp_path)
    m = maps(parsed)
    assert m["$nginx_lb_http_allowed"] == [["0"], *([regex, "1"] for regex in HTTP_ALLOWED)]
    assert m["$nginx_lb_grpc_allowed"] == [["0"], *([regex, "1"] for regex in GRPC_ALLOWED)]
    listens = {"oss-tls-host-ports": ("8000", "8001", "8443", "8444")}.get(variant, ("8000", "8001"))
    for port in listens:
        server = server_by_listen(parsed, port)
        kind = "grpc" if port in ("8001", "8444") else "http"
        ifs = [d for d in server if d["directive"] == "if"]
        assert [d["args"] for d in ifs] == [[f"$nginx_lb_{kind}_allowed", "=", "0"]], port
        assert [x["args"] for x in ifs[0]["block"]] == [["^", "/.nginx-lb-refused", "last"]]
        refused = {d["args"][1]: d["block"] for d in server if d["directive"] == "location" and d["args"][0] == "="}
        body = {d["directive"]: d["args"] for d in refused["/.nginx-lb-refused"] if d["directive"] != "add_header"}
        headers = [d["args"] for d in refused["/.nginx-lb-refused"] if d["directive"] == "add_header"]
        assert body["internal"] == []
        if kind == "http":  # 403 with a JSON error, like Triton's own errors
            assert body["default_type"] == ["application/json"]
            assert body["return"][0] == "403"
            assert json.loads(body["return"][1])["error"].startswith("forbidden by the load balancer")
        else:  # gRPC PERMISSION_DENIED: HTTP 200, application/grpc, grpc-status 7 and a grpc-message
            assert body["default_type"] == ["application/grpc"]
            assert body["return"] == ["200"]
            assert headers[0] == ["grpc-status", "7", "always"]
            assert headers[1][0] == "grpc-message"
    # Plus: one active health check per upstream, however many servers proxy to it
    if variant == "plus":
        assert len(find(parsed, "health_check")) == 2


def test_tls_servers(rendered: Dict[str, Rendered], tmp_path: Path) -> None:
    parsed = parse(rendered["oss-tls"].nginx_conf(), tmp_path)
    http_block = next(d for d in parsed if d["directive"] == "http")["block"]
    top = {d["directive"]: d["args"] for d in http_block}
    assert top["ssl_certificate"] == ["/etc/nginx/tls/tls.crt"]
    assert top["ssl_certificate_key"] == ["/etc/nginx/tls/tls.key"]
    assert top["ssl_protocols"] == ["TLSv1.2", "TLSv1.3"]
    listens = [d["args"] for _p, d in walk(parsed) if d["directive"] == "listen"]
    assert listens == [["8443", "ssl"], ["8444", "ssl", "http2"], ["8080"]]  # no plain-text client port
    assert in_server(server_by_listen(parsed, "8443"), "proxy_pass") == [["http://$triton_http"]]
    assert in_server(server_by_listen(parsed, "8444"), "grpc_pass") == [["grpc://$triton_grpc"]]


# --- bad input ---------------------------------------------------------------------------------------------


# (extra arguments, what the failure must say); run two at a time by the bad_runs fixture (the machine has two cores
# and ansible-playbook uses one)
BAD_INPUTS: List[Tuple[List[str], str]] = [
    (["-e", "nginx_lb_edition=enterprise"], "value of nginx_lb_edition must be one of: oss, plus, got: enterprise"),
    (["-e", "nginx_lb_edition=plus"],
     "missing: nginx_lb_plus_license_jwt, nginx_lb_plus_registry_username, nginx_lb_plus_registry_password"),
    (["-e", "nginx_lb_edition=plus", "-e", "vault_nginx_plus_license_jwt=x.y.z"],
     "missing: nginx_lb_plus_registry_username, nginx_lb_plus_registry_password"),
    ([*PLUS, "-e", "vault_nginx_plus_license_jwt= "], "missing: nginx_lb_plus_license_jwt"),
    ([*PLUS, "-e", "nginx_lb_plus_image="], "missing: nginx_lb_plus_image"),
    ([*PLUS, "-e", "nginx_lb_plus_api_write=true"], "nginx_lb_plus_api_write is true: set nginx_lb_plus_api_htpasswd"),
    (["-e", '{"nginx_lb_resolvers": []}'], "nginx_lb_resolvers must list the cluster DNS"),
    (["-e", '{"nginx_lb_resolvers": [""]}'], "nginx_lb_resolvers must list the cluster DNS"),
    (["-e", "nginx_lb_resolver_valid=soon"], "nginx_lb_resolver_valid: 'soon' is not an nginx time"),
    (["-e", "nginx_lb_oss_version=latest"], "nginx_lb_oss_version must be the nginx version of nginx_lb_oss_image, such as 1.28.0, not 'latest'"),
    (["-e", "nginx_lb_grpc_port=8000"], "must be distinct ports"),
    (["-e", '{"nginx_lb_status_allow": ["all"]}'], "nginx_lb_status_allow: 'all' admits every address"),
    (["-e", "nginx_lb_monitor_kind=Probe"], "value of nginx_lb_monitor_kind must be one of: PodMonitor, ServiceMonitor, none, got: Probe"),
    # issue 14: the root-master Plus image and host ports only in a namespace the role creates with their level
    ([*PLUS, "-e", "nginx_lb_plus_unprivileged=false"],
     "The root-master NGINX Plus image (nginx_lb_plus_unprivileged: false), which adds CHOWN, SETGID and SETUID and runs as root, "
     "needs Pod Security 'baseline', but namespace 'triton' enforces 'restricted'"),
    ([*PLUS, "-e", "nginx_lb_plus_unprivileged=false", "-e", "nginx_lb_create_namespace=true", "-e", "nginx_lb_namespace=nginx-lb"],
     "needs Pod Security 'baseline', but namespace 'nginx-lb' enforces 'restricted' (nginx_lb_namespace_pod_security)"),
    (["-e", "nginx_lb_create_namespace=true"],
     "nginx_lb_create_namespace is true, but nginx_lb_namespace 'triton' is Triton's namespace (nginx_lb_upstream_namespace)"),
    (["-e", json.dumps({k: v for k, v in HOST_PORTS.items() if k != "nginx_lb_network_policy_client_peers"}), "-e", "nginx_lb_tls_secret=t"],
     "Host ports (nginx_lb_host_ports), which baseline forbids, need Pod Security 'privileged'"),
    (["-e", json.dumps({"nginx_lb_host_ports": {"http": 80}})], "and needs nginx_lb_node_selector naming the dedicated nodes"),
    (["-e", json.dumps({"nginx_lb_host_ports": {"https": 443}, "nginx_lb_node_selector": {"a": "b"}})],
     "nginx_lb_host_ports maps client ports (http, grpc, as TLS settings enable them)"),
    (["-e", "nginx_lb_namespace_pod_security=open"],
     "value of nginx_lb_namespace_pod_security must be one of: restricted, baseline, privileged, got: open"),
    (["-e", '{"nginx_lb_http_allowed_paths": ["/v2/repository/.*"]}'], 'not allowed: ["/v2/repository/.*"]'),
    (["-e", '{"nginx_lb_http_allowed_paths": []}'], "nginx_lb_http_allowed_paths must list paths"),
    (["-e", '{"nginx_lb_grpc_allowed_methods": ["ModelInfer"]}'], "nginx_lb_grpc_allowed_methods must list full gRPC method names"),
    (["-e", '{"nginx_lb_tls_protocols": ["TLSv1"]}'], "value of nginx_lb_tls_protocols must be one or more of: TLSv1.2, TLSv1.3. Got no match for: TLSv1"),
    (["-e", '{"nginx_lb_tls_protocols": []}'], "nginx_lb_tls_protocols must list TLSv1.2 and/or TLSv1.3"),
    (["-e", "nginx_lb_tls_secret=Bad_Name"], "nginx_lb_tls_secret: 'Bad_Name' is not an RFC 1123 DNS subdomain"),
    (["-e", "nginx_lb_tls_secret=t", "-e", "nginx_lb_grpcs_port=9113"],
     "nginx_lb_https_port, nginx_lb_grpcs_port, nginx_lb_status_port, nginx_lb_metrics_port must be distinct ports"),
    (["-e", '{"nginx_lb_network_policy_client_peers": [{"ipblock": {"cidr": "10.0.0.0/8"}}]}'],
     'The NetworkPolicy needs nginx_lb_network_policy_client_peers (got [{"ipblock": {"cidr": "10.0.0.0/8"}}])'),
    (["-e", '{"nginx_lb_network_policy_usage_report_cidrs": ["anywhere"]}'], 'nginx_lb_network_policy_usage_report_cidrs to list CIDR blocks'),
    (["-e", "nginx_lb_network_policy_prometheus_namespace=Monitoring"], "nginx_lb_network_policy_prometheus_namespace: 'Monitoring' is not"),
    # issue 17: the pools behind the LB
    (["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "a-headless", "weight": 0, "max_replicas": 2}]})],
     "nginx_lb_upstream_pools: pool 0 (a-headless): weight must be an integer of at least 1, not 0"),
    (["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "a-headless", "weight": "heavy", "max_replicas": 2}]})],
     "argument 'weight' is of type str found in 'nginx_lb_upstream_pools'"),
    (["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "a-headless", "weight": 1}]})],
     "missing required arguments: max_replicas found in nginx_lb_upstream_pools"),
    (["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "A_pool", "weight": 1, "max_replicas": 2},
                                                    {"service": "b", "weight": 1, "max_replicas": 2},
                                                    {"service": "b", "weight": 1, "max_replicas": 2}]})],
     "nginx_lb_upstream_pools: pool 0 (A_pool): the service must be a headless Service name (an RFC 1035 label"),
    (["-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "b", "weight": 1, "max_replicas": 2},
                                                    {"service": "b", "weight": 1, "max_replicas": 2}]})],
     "nginx_lb_upstream_pools: pool 1 (b): the service is listed twice"),
    (["-e", "nginx_lb_oss_version=1.22.1",
      "-e", json.dumps({"nginx_lb_upstream_pools": [{"service": "a", "weight": 1, "max_replicas": 1},
                                                    {"service": "b", "weight": 100, "max_replicas": 200}]})],
     "pool a: its share weight x max_replicas (1 of 20001) is below 0.01%, the finest split_clients takes"),
    (["-e", '{"gpu_ops_pools": []}'], "gpu_ops_pools (the serving pools) is empty, or list the pools behind the load balancer in nginx_lb_upstream_pools"),
]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> Dict[int, Tuple[subprocess.CompletedProcess[str], Path]]:
    """Each bad input rendered once, in a directory of its own: (the run, the render dir it was given)."""
    base = tmp_path_factory.mktemp("bad-inputs")

    def one(index: int) -> Tuple[int, subprocess.CompletedProcess[str], Path]:
        work = base / f"case{index}"
        work.mkdir()
        out = work / "out"
        return index, render(out, *BAD_INPUTS[index][0]), out

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {index: (proc, out) for index, proc, out in pool.map(one, range(len(BAD_INPUTS)))}


@pytest.mark.parametrize("index", range(len(BAD_INPUTS)), ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_bad_input_fails_before_anything_is_written(bad_runs: Dict[int, Tuple[subprocess.CompletedProcess[str], Path]], index: int) -> None:
    message = BAD_INPUTS[index][1]
    proc, out = bad_runs[index]
    assert proc.returncode != 0, BAD_INPUTS[index][0]
    text = (proc.stdout + proc.stderr).replace("\n", " ")
    assert " ".join(message.split()) in " ".join(text.split()), (proc.stdout + proc.stderr)[-4000:]
    assert not out.exists() or not any(out.rglob("*")), "nothing may be written on bad input"


# --- apply mode ----------------------------------------------------------------------------------------------


def test_apply_mode_sends_the_objects_and_secrets_without_logging_them(tmp_path: Path) -> None:
    # the fake API server has no prometheus-operator CRDs and no controllers: no monitor, no readiness wait
    # a fresh cluster: the role creates the namespace before the Secrets and the Deployment
    extra = [*PLUS_ROOT, "-e", "nginx_lb_monitor_kind=none", "-e", "k8s_objects_wait=false"]
    with FakeKube() as kube:
        extra += ["-e", f"gpu_ops_kubeconfig={kube.kubeconfig_path}"]
        first = render(tmp_path / "unused", *extra, verbose=True, mode="apply")
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
        assert not (tmp_path / "unused").exists()
        patches = [r for r in kube.requests if r.method == "PATCH"]
        assert {r.content_type for r in patches} == {"application/apply-patch+yaml"}
        ns = kube.get_object("v1", "Namespace", "nginx-lb")
        assert ns is not None
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"  # the root-master Plus image
        assert kube.get_object("v1", "Namespace", "triton") is None  # Triton's is role triton's to create and label
        lic = kube.get_object("v1", "Secret", "nginx-lb-license", "nginx-lb")
        assert lic is not None
        assert base64.b64decode(lic["data"]["license.jwt"]).decode() == LICENCE
        assert kube.get_object("v1", "Secret", "nginx-lb-registry", "nginx-lb") is not None
        dep = kube.get_object("apps/v1", "Deployment", "nginx-lb", "nginx-lb")
        assert dep is not None
        assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "nginx-lb-registry"}]
        for kind, name in (("ConfigMap", "nginx-lb-config"), ("Service", "nginx-lb"), ("Service", "nginx-lb-status")):
            assert kube.get_object("v1", kind, name, "nginx-lb") is not None, (kind, name)
        assert kube.get_object("policy/v1", "PodDisruptionBudget", "nginx-lb", "nginx-lb") is not None
        assert kube.get_object("networking.k8s.io/v1", "NetworkPolicy", "nginx-lb", "nginx-lb") is not None
        # the pods the Deployment's ReplicaSet would create pass the namespace's Pod Security admission
        assert kube.pod_security_refusals() == []
        log = first.stdout + first.stderr
        assert LICENCE not in log
        assert REGISTRY_PASSWORD not in log
        second = render(tmp_path / "unused", *extra, mode="apply")
        assert second.returncode == 0, second.stdout[-3000:]
        assert "changed=0" in second.stdout, second.stdout[-3000:]
