# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every rendered variant is admitted by an API server that refuses what a real one refuses, and passes an
independent scanner (checkov) but for the findings listed with their reasons (issue 14).

The variants: nginx open source, Plus (rootless, as shipped), Plus with the root-master image in a baseline
namespace of its own, TLS, KEDA, an existing Prometheus, NFS and object-store model repositories. They are combined
into three renders (a render takes about a minute), so each setting is covered once.

playbooks/render.yml renders each variant once (inside `unshare -n` where possible); every rendered manifest (not the
Helm values files) is then server-side applied, Namespaces first and then in the order the plays apply them, with
k8s_objects' field manager, to tests/kube_fake with the vendored CRDs (ServiceMonitor, PodMonitor, PrometheusRule,
ScaledObject, NodeFeature, NodeFeatureRule) loaded. kube_fake enforces the schemas (unknown fields and wrong types
of an applied configuration are refused), the hand-written validation, immutable fields and Pod Security admission
by namespace label, and evaluates each Deployment's and DaemonSet's pod template as its controller's pod create
would be. Each variant must be admitted with no warning and no pod-security FailedCreate.

checkov (tests/checkov_scan.py: its own venv, offline) then scans the same render; every failed check must be listed
in tests/data/checkov-exceptions.yaml with the reason it does not apply, and every entry there must still be needed.
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import pytest
import yaml
from kubernetes import config, dynamic
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env, offline_prefix
    from tests.checkov_scan import Finding, load_exceptions, scan, unexplained, unused
    from tests.kube_fake.crds import load_crds
    from tests.kube_fake.server import FakeKube
else:
    from ansible_run import ansible_env, offline_prefix
    from checkov_scan import Finding, load_exceptions, scan, unexplained, unused
    from kube_fake.crds import load_crds
    from kube_fake.server import FakeKube

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Obj = Dict[str, Any]

pytestmark = pytest.mark.slow

FIELD_MANAGER = "gpu-ops-mig-serving"  # roles/k8s_objects/defaults/main.yml k8s_objects_field_manager
# the order the plays apply the roles: cluster.yml, serving.yml, load_balancer.yml; a role may render several components
# (<role>, <role>_secrets, ...), each a directory of the render
ROLES = ("gpu_plugins", "monitoring", "triton", "custom_metrics", "autoscaling", "nginx_lb")
PLUS = [
    "-e", "nginx_lb_edition=plus",
    "-e", "vault_nginx_plus_license_jwt=eyJhbGciOiJFUzI1NiJ9.TEST-LICENCE.sig",
    "-e", "vault_nginx_plus_registry_username=TEST-REGISTRY-USER",
    "-e", "vault_nginx_plus_registry_password=TEST-REGISTRY-PASSWORD",
]
EXISTING_PROMETHEUS = "http://prometheus-operated.observability.svc:9090"
# what a vaulted group_vars/k8s_control/vault.yml gives the example inventory (tests only: no real secret)
VAULT = ["-e", "vault_grafana_admin_password=admission-test-grafana-Pa55", "-e", "vault_triton_restricted_api_key=admission-test-triton-key-0123456789"]
KEDA = ["-e", "gpu_ops_metrics_backend=keda"]
EXISTING = ["-e", "monitoring_install=false", "-e", f"gpu_ops_prometheus_url={EXISTING_PROMETHEUS}",
            "-e", '{"gpu_ops_monitor_labels": {"prometheus": "main"}}']
NFS = ["-e", "triton_model_source=nfs", "-e", "triton_model_nfs_server=nfs.example.internal", "-e", "triton_model_nfs_path=/export/models"]
OBJECT_STORE = ["-e", "triton_model_source=object_store", "-e", "triton_model_url=s3://models-bucket/triton",
                "-e", "triton_model_credentials_secret=triton-s3"]
# F5's root-master Plus image: it needs the baseline level, so a namespace of the LB's own (never Triton's restricted one)
PLUS_ROOT = [*PLUS, "-e", "nginx_lb_plus_unprivileged=false", "-e", "nginx_lb_create_namespace=true", "-e", "gpu_ops_lb_namespace=nginx-lb",
             "-e", "nginx_lb_namespace_pod_security=baseline"]
TLS = ["-e", "nginx_lb_tls_secret=inference-tls"]
# name -> extra arguments; the values are the roles' own (roles/*/defaults/main.yml, the inventory's group_vars)
VARIANTS: Dict[str, List[str]] = {
    # the inventory as shipped: nginx open source, prometheus-adapter, kube-prometheus-stack, models on a PVC
    "oss-adapter-pvc": [],
    # NGINX Plus as shipped (rootless image) with TLS, KEDA, models on NFS
    "plus-tls-keda-nfs": [*PLUS, *TLS, *KEDA, *NFS],
    # the root-master Plus image in its own baseline namespace, an existing Prometheus, models in an object store
    "plus-root-existing-prometheus-object-store": [*PLUS_ROOT, *EXISTING, *OBJECT_STORE],
}


def render(out: Path, extra: List[str]) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [*offline_prefix(), str(BIN / "ansible-playbook"), "playbooks/render.yml", "-i", "inventories/dgx", "-e", f"gpu_ops_render_dir={out}",
            *VAULT, *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480, check=False)


def _role_of(component: str) -> int:
    for index, role in enumerate(ROLES):
        if component == role or component.startswith(f"{role}_"):
            return index
    raise AssertionError(f"component {component!r} belongs to no role this test knows the order of: {ROLES}")


def manifests(out: Path) -> List[Tuple[str, Obj]]:
    """(component/file, object) of every rendered manifest: Namespaces first, then role by role in play order, the
    role's components by name, each component's files in their (apply) order."""
    components = sorted({p.parent.name for p in out.glob("*/[0-9]*.yaml")}, key=lambda c: (_role_of(c), c))
    found: List[Tuple[str, Obj]] = []
    for component in components:
        for path in sorted((out / component).glob("[0-9]*.yaml")):
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
            assert len(docs) == 1, path
            found.append((f"{component}/{path.name}", docs[0]))
    return sorted(found, key=lambda item: item[1]["kind"] != "Namespace")


_RENDERED: Dict[str, Path] = {}


@pytest.fixture
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The render of the variant named by the test's parameter, made once per variant for the whole module."""
    variant = str(request.param)
    if not _RENDERED:  # all of them at once, two at a time: the machine has two cores and ansible-playbook uses one
        outs = {name: tmp_path_factory.mktemp(f"admission-{name}") / "out" for name in VARIANTS}
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = dict(zip(VARIANTS, pool.map(lambda name: render(outs[name], VARIANTS[name]), VARIANTS)))
        for name, proc in runs.items():
            assert proc.returncode == 0, f"{name}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        _RENDERED.update(outs)
    return _RENDERED[variant]


def apply_all(kube: FakeKube, objects: List[Tuple[str, Obj]]) -> List[str]:
    """Server-side apply each object as kubernetes.core.k8s does for k8s_objects (apply, field manager, force false);
    the refusals, one line each."""
    client = config.new_client_from_config(config_file=str(kube.kubeconfig_path))  # type: ignore[no-untyped-call]
    dyn = dynamic.DynamicClient(client)  # type: ignore[no-untyped-call]
    refused: List[str] = []
    for where, obj in objects:
        try:
            resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            resource.server_side_apply(body=obj, field_manager=FIELD_MANAGER, force_conflicts=False)
        except ApiException as exc:
            refused.append(f"{where}: {exc.status} {exc.body}")
        except Exception as exc:  # a kind the fake does not serve: the dynamic client's ResourceNotFoundError
            refused.append(f"{where}: {type(exc).__name__}: {exc}")
    return refused


@pytest.mark.parametrize("rendered", sorted(VARIANTS), indirect=True)
def test_every_rendered_object_is_admitted(rendered: Path) -> None:
    objects = manifests(rendered)
    assert objects, f"nothing rendered under {rendered}"
    with FakeKube() as kube:
        load_crds(kube)
        refused = apply_all(kube, objects)
        warnings = [f"{r.method} {r.path}: {w}" for r in kube.requests for w in r.warnings]
        failed_creates = kube.pod_security_refusals()
        conditions = {f"{d['metadata']['namespace']}/{d['metadata']['name']}": c["message"]
                      for d in kube.objects("apps/v1", "Deployment") for c in (d.get("status") or {}).get("conditions") or []
                      if c.get("type") == "ReplicaFailure" and c.get("reason") == "FailedCreate"}
        events = [e["message"] for e in kube.objects("v1", "Event") if e.get("reason") == "FailedCreate"]
        stored = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for _where, o in objects
                  if kube.get_object(o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) is not None}
    assert not refused, "refused by the API server:\n" + "\n".join(refused)
    assert not warnings, "answered with warnings:\n" + "\n".join(warnings)
    assert not failed_creates, "pods the controllers could not create:\n" + "\n".join(
        f"{r['kind']} {r['namespace']}/{r['name']}: {r['message']}" for r in failed_creates)
    assert not conditions, f"Deployments with ReplicaFailure/FailedCreate: {conditions}"
    assert not events, f"FailedCreate events: {events}"
    assert len(stored) == len(objects), "every applied object is stored"


def test_the_fake_would_catch_a_refused_variant(tmp_path: Path) -> None:
    """The same path refuses what it must: a rendered Deployment whose pod runs as root in the restricted triton
    namespace is admitted as an object but its pods are refused (FailedCreate), an unknown field is refused."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}}
    pod_spec = {"containers": [{"name": "lb", "image": "nginx:1.27", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "lb", "namespace": "triton"},
                  "spec": {"selector": {"matchLabels": {"app": "lb"}}, "template": {"metadata": {"labels": {"app": "lb"}}, "spec": pod_spec}}}
    typo = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "triton"}, "spec": {"ports": [{"port": 80}], "selectr": {}}}
    with FakeKube() as kube:
        load_crds(kube)
        refused = apply_all(kube, [("ns", namespace), ("deploy", deployment), ("svc", typo)])
        failed_creates = kube.pod_security_refusals()
        warnings = [w for r in kube.requests for w in r.warnings]
    assert len(refused) == 1
    assert refused[0].startswith("svc: 500 ")
    assert ".spec.selectr: field not declared in schema" in refused[0]
    assert [(r["kind"], r["name"]) for r in failed_creates] == [("Deployment", "lb")]
    assert 'is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in failed_creates[0]["message"]
    assert any(w.startswith('would violate PodSecurity "restricted:latest"') for w in warnings)


_FINDINGS: Dict[str, List[Finding]] = {}


@pytest.mark.parametrize("rendered", sorted(VARIANTS), indirect=True)
def test_checkov_finds_nothing_unexplained(rendered: Path, request: pytest.FixtureRequest) -> None:
    findings = scan(rendered)
    _FINDINGS[str(request.node.callspec.params["rendered"])] = findings
    left = unexplained(findings, load_exceptions())
    assert not left, "checkov findings neither fixed nor listed in tests/data/checkov-exceptions.yaml:\n" + "\n".join(map(str, left))


def test_checkov_exceptions_are_all_still_needed() -> None:
    """Runs after the scans (pytest keeps the file's order); an entry no variant needs is stale."""
    if set(_FINDINGS) != set(VARIANTS):
        pytest.skip("needs every variant's scan in the same run (run the whole file)")
    stale = unused(_FINDINGS, load_exceptions())
    assert not stale, "entries no variant needs any more: " + ", ".join(f"{e.check_id} {e.name.pattern}" for e in stale)
