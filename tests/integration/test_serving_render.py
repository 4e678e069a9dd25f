# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/serving.yml in render mode on the example inventory (inside `unshare -n` where possible: no
cluster, no network): every object is valid for each Kubernetes version in KUBE_VERSIONS (strict), the
PodMonitor, PrometheusRule and KEDA ScaledObject against their CRDs' schemas; none of the seed article's
defects is there; names and intervals agree across roles by construction; bad input fails before anything is
written. The secrets (Grafana's admin password, Triton's restricted-API key) come as the vault_* variables the example
inventory reads; they land in the 0600 Secrets of <render_dir>/*_secrets only, and in no other file or log line."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env, offline_prefix
    from tests.k8s_schemas import CRD_DIR, KUBE_VERSIONS, crd_schemas, validate_file
else:
    from ansible_run import ansible_env, offline_prefix
    from k8s_schemas import CRD_DIR, KUBE_VERSIONS, crd_schemas, validate_file

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# Top-level keys of the charts' values.yaml we set (kube-prometheus-stack 67.8.0, prometheus-adapter 5.3.0 and
# keda 2.17.0 in their repositories): a misspelt key would be silently ignored by Helm.
KPS_KEYS = {"fullnameOverride", "grafana", "alertmanager", "prometheus", "prometheus-node-exporter"}
KPS_PROMETHEUS_SPEC_KEYS = {
    "replicas", "retention", "resources", "podMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues",
    "podMonitorSelector", "podMonitorNamespaceSelector", "ruleSelector", "ruleNamespaceSelector", "storageSpec",
}
ADAPTER_KEYS = {
    "affinity", "image", "logLevel", "metricsRelistInterval", "listenPort", "nodeSelector", "priorityClassName", "prometheus",
    "replicas", "podSecurityContext", "securityContext", "rbac", "psp", "serviceAccount", "resources", "rules", "service", "tls",
    "env", "extraArguments", "extraVolumes", "extraVolumeMounts", "tolerations", "podLabels", "podAnnotations",
    "podDisruptionBudget", "certManager", "strategy", "dnsConfig", "hostNetwork", "topologySpreadConstraints",
}
KEDA_KEYS = {"crds", "rbac"}
EXISTING_PROMETHEUS = "http://prometheus-operated.observability.svc:9090"
# What a vaulted group_vars/k8s_control/vault.yml gives the example inventory (tests only: no real secret)
GRAFANA_PASSWORD = "render-test-grafana-Pa55"
TRITON_KEY = "render-test-triton-key-0123456789"
VAULT = ["-e", f"vault_grafana_admin_password={GRAFANA_PASSWORD}", "-e", f"vault_triton_restricted_api_key={TRITON_KEY}"]
DEPRECATED_TRITON_FLAGS = ("--strict-model-config", "--model-store", "--tensorflow-version", "--allow-soft-placement", "--strict-readiness=false")


def render(out: Path, *extra: str, vault: bool = True, playbook: str = "playbooks/serving.yml",
           inventory: str = "inventories/dgx") -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [
        *offline_prefix(), str(BIN / "ansible-playbook"), playbook, "-i", inventory,
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        # the k8s_control host of the example inventory is reached locally: render mode only writes files
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", *(VAULT if vault else []), *extra,
    ]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def objects(out: Path) -> Dict[str, Dict[str, Any]]:
    """'component/kind/name' -> object, for every rendered object file."""
    found: Dict[str, Dict[str, Any]] = {}
    for path in sorted(out.rglob("*.yaml")):
        if path.parent == out or path.name.endswith(".values.yaml"):
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path
        found[f"{path.parent.name}/{docs[0]['kind']}/{docs[0]['metadata']['name']}"] = docs[0]
    return found


ADAPTER_LOG: List[str] = []


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving-adapter") / "out"
    proc = render(out)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    ADAPTER_LOG.append(proc.stdout + proc.stderr)
    return out


@pytest.fixture(scope="module")
def keda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving-keda") / "out"
    # also: an existing Prometheus (nothing of role monitoring rendered) and an NFS model repository
    proc = render(out, "-e", "gpu_ops_metrics_backend=keda", "-e", "triton_model_source=nfs", "-e", "triton_model_nfs_server=nfs.example.internal",
                  "-e", "triton_model_nfs_path=/export/models", "-e", "monitoring_install=false",
                  "-e", f"gpu_ops_prometheus_url={EXISTING_PROMETHEUS}", "-e", '{"gpu_ops_monitor_labels": {"prometheus": "main"}}')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def test_objects_per_role(adapter: Path, keda: Path) -> None:
    assert sorted(objects(adapter)) == [
        "autoscaling/HorizontalPodAutoscaler/triton-1g-18gb",
        "autoscaling/HorizontalPodAutoscaler/triton-1g-5gb",
        "autoscaling/HorizontalPodAutoscaler/triton-2g-10gb",
        "autoscaling/HorizontalPodAutoscaler/triton-3g-20gb",
        "custom_metrics/PrometheusRule/triton-queue-time",
        "monitoring/Namespace/monitoring",
        "monitoring_rules/ConfigMap/gpu-ops-layout",
        "monitoring_rules/ConfigMap/gpu-ops-mig-utilisation",
        "monitoring_rules/ConfigMap/gpu-ops-queue-time",
        "monitoring_rules/ConfigMap/gpu-ops-replicas",
        "monitoring_rules/ConfigMap/gpu-ops-requests",
        "monitoring_rules/PrometheusRule/gpu-ops-serving",
        "monitoring_secrets/Secret/kube-prometheus-stack-grafana-admin",
        "triton/Deployment/triton-1g-18gb",
        "triton/Deployment/triton-1g-5gb",
        "triton/Deployment/triton-2g-10gb",
        "triton/Deployment/triton-3g-20gb",
        "triton/Namespace/triton",
        "triton/NetworkPolicy/triton-default-deny",
        "triton/NetworkPolicy/triton-egress",
        "triton/NetworkPolicy/triton-ingress",
        "triton/PodDisruptionBudget/triton-1g-18gb",
        "triton/PodDisruptionBudget/triton-1g-5gb",
        "triton/PodDisruptionBudget/triton-2g-10gb",
        "triton/PodDisruptionBudget/triton-3g-20gb",
        "triton/PodMonitor/triton",
        "triton/Service/triton",
        "triton/Service/triton-1g-18gb-headless",
        "triton/Service/triton-1g-5gb-headless",
        "triton/Service/triton-2g-10gb-headless",
        "triton/Service/triton-3g-20gb-headless",
        "triton_secrets/Secret/triton-restricted-api",
    ]
    assert sorted(objects(keda)) == [
        "autoscaling/ScaledObject/triton-1g-18gb",  # KEDA owns the HPA: none of ours
        "autoscaling/ScaledObject/triton-1g-5gb",  # KEDA owns the HPA: none of ours
        "autoscaling/ScaledObject/triton-2g-10gb",  # KEDA owns the HPA: none of ours
        "autoscaling/ScaledObject/triton-3g-20gb",  # KEDA owns the HPA: none of ours
        "custom_metrics/Namespace/keda",
        "custom_metrics/PrometheusRule/triton-queue-time",
        "monitoring_rules/ConfigMap/gpu-ops-layout",
        "monitoring_rules/ConfigMap/gpu-ops-mig-utilisation",
        "monitoring_rules/ConfigMap/gpu-ops-queue-time",
        "monitoring_rules/ConfigMap/gpu-ops-replicas",
        "monitoring_rules/ConfigMap/gpu-ops-requests",
        "monitoring_rules/PrometheusRule/gpu-ops-serving",
        "triton/Deployment/triton-1g-18gb",
        "triton/Deployment/triton-1g-5gb",
        "triton/Deployment/triton-2g-10gb",
        "triton/Deployment/triton-3g-20gb",
        "triton/Namespace/triton",
        "triton/NetworkPolicy/triton-default-deny",
        "triton/NetworkPolicy/triton-egress",
        "triton/NetworkPolicy/triton-ingress",
        "triton/PersistentVolume/triton-triton-models",
        "triton/PersistentVolumeClaim/triton-models",
        "triton/PodDisruptionBudget/triton-1g-18gb",
        "triton/PodDisruptionBudget/triton-1g-5gb",
        "triton/PodDisruptionBudget/triton-2g-10gb",
        "triton/PodDisruptionBudget/triton-3g-20gb",
        "triton/PodMonitor/triton",
        "triton/Service/triton",
        "triton/Service/triton-1g-18gb-headless",
        "triton/Service/triton-1g-5gb-headless",
        "triton/Service/triton-2g-10gb-headless",
        "triton/Service/triton-3g-20gb-headless",
        "triton_secrets/Secret/triton-restricted-api",
    ]
    # the NetworkPolicies are applied before the pods exist; the Secrets are components of their own
    names = sorted(p.name for p in (adapter / "triton").glob("*.yaml"))
    assert names.index("02-networkpolicy-triton-default-deny.yaml") < names.index("05-deployment-triton-1g-18gb.yaml")


def test_every_object_is_valid_for_each_kubernetes_version(adapter: Path, keda: Path) -> None:
    assert KUBE_VERSIONS == ("1.29.0", "1.31.0", "1.33.0")
    crds = crd_schemas(CRD_DIR)
    for key in (("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"), ("keda.sh/v1alpha1", "ScaledObject")):
        assert key in crds, f"{key} has no CRD schema in {CRD_DIR}"
    for out in (adapter, keda):
        files = [p for p in sorted(out.rglob("*.yaml")) if p.parent != out and not p.name.endswith(".values.yaml")]
        assert sum(validate_file(p) for p in files) == len(files)


def test_none_of_the_seed_defects(adapter: Path) -> None:
    objs = objects(adapter)
    text = "\n".join(p.read_text() for p in adapter.rglob("*.yaml"))
    for removed in ("apps/v1beta1", "apps/v1beta2", "extensions/v1beta1", "autoscaling/v2beta1", "autoscaling/v2beta2", "apiregistration.k8s.io/v1beta1"):
        assert removed not in text, removed
    assert "cluster-admin" not in text
    assert not any(o["kind"] in ("ClusterRoleBinding", "RoleBinding", "ReplicationController") for o in objs.values())

    deploy = objs["triton/Deployment/triton-1g-5gb"]
    assert deploy["apiVersion"] == "apps/v1"
    assert "replicas" not in deploy["spec"], "spec.replicas under an HPA: every re-run would reset the HPA's count"
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["tritonserver"]
    args = container["args"]
    assert args[0] == "--model-repository=/models"
    assert "--allow-gpu-metrics=false" in args
    assert "--model-control-mode=none" in args
    assert not any(a.startswith(DEPRECATED_TRITON_FLAGS) for a in args), args
    assert not any("cd " in part for part in [*container["command"], *args])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["resources"]["limits"]["nvidia.com/mig-1g.5gb"] == 1
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(container["lifecycle"]["preStop"]["exec"]["command"][1]) + 30
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["readOnly"] is True
    assert next(m for m in container["volumeMounts"] if m["name"] == "models")["readOnly"] is True

    for name, headless in (("triton", False), ("triton-1g-5gb-headless", True)):
        svc = objs[f"triton/Service/{name}"]["spec"]
        assert svc.get("type", "ClusterIP") == "ClusterIP"
        assert (svc.get("clusterIP") == "None") is headless
        assert [p["name"] for p in svc["ports"]] == ["http", "grpc"], "the metrics port is on no Service"
    pdb = objs["triton/PodDisruptionBudget/triton-1g-5gb"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"] == deploy["spec"]["selector"]

    rule = objs["custom_metrics/PrometheusRule/triton-queue-time"]["spec"]["groups"][0]
    expr = rule["rules"][0]["expr"]
    assert "delta(" not in expr
    assert "rate(" in expr
    assert not re.search(r"\b1\s*\+", expr), expr
    assert "namespace=" not in expr, "no hard-coded namespace"


def test_names_and_intervals_agree_across_roles(adapter: Path) -> None:
    objs = objects(adapter)
    monitor = objs["triton/PodMonitor/triton"]
    rule = objs["custom_metrics/PrometheusRule/triton-queue-time"]
    hpa = objs["autoscaling/HorizontalPodAutoscaler/triton-1g-5gb"]
    kps = yaml.safe_load((adapter / "monitoring/kube-prometheus-stack.values.yaml").read_text())
    values = yaml.safe_load((adapter / "custom_metrics/prometheus-adapter.values.yaml").read_text())
    spec = kps["prometheus"]["prometheusSpec"]
    # Prometheus selects our PodMonitor and PrometheusRule whatever the chart's release-label defaults
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelector"]["matchLabels"].items() <= monitor["metadata"]["labels"].items()
    assert spec["ruleSelector"]["matchLabels"].items() <= rule["metadata"]["labels"].items()
    # scrape interval = rule evaluation interval; window = 4 scrapes (at least 4 s)
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    assert endpoint["interval"] == rule["spec"]["groups"][0]["interval"] == "1s"
    assert set(re.findall(r"\[(\w+)\]", rule["spec"]["groups"][0]["rules"][0]["expr"])) == {"4s"}
    # the adapter publishes the recorded series under the name the HPA consumes
    (custom,) = values["rules"]["custom"]
    recorded = rule["spec"]["groups"][0]["rules"][0]["record"]
    assert f'__name__="{recorded}"' in custom["seriesQuery"]
    assert custom["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "avg_time_queue_us"
    for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert field in custom["metricsQuery"]
    assert "namespace=" not in custom["metricsQuery"]
    assert custom["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert values["rules"]["default"] is False
    assert values["rbac"]["create"] is True
    assert values["prometheus"] == {"url": "http://kube-prometheus-stack-prometheus.monitoring.svc", "port": 9090, "path": ""}
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton-1g-5gb"}
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["type"] == "AverageValue"
    # maxReplicas: the MIG capacity of 1g.5gb across the example GPU nodes (56 on dgx-a100-01, 16 on dgx-a100-02)
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["maxReplicas"] == 72
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_helm_values_use_chart_keys_only(adapter: Path, keda: Path) -> None:
    kps = yaml.safe_load((adapter / "monitoring/kube-prometheus-stack.values.yaml").read_text())
    assert set(kps) <= KPS_KEYS, set(kps) - KPS_KEYS
    assert set(kps["prometheus"]["prometheusSpec"]) <= KPS_PROMETHEUS_SPEC_KEYS
    values = yaml.safe_load((adapter / "custom_metrics/prometheus-adapter.values.yaml").read_text())
    assert set(values) <= ADAPTER_KEYS, set(values) - ADAPTER_KEYS
    assert set(yaml.safe_load((keda / "custom_metrics/keda.values.yaml").read_text())) <= KEDA_KEYS
    index = yaml.safe_load((adapter / "helm-releases.yaml").read_text())["releases"]
    assert {(r["chart"], r["version"]) for r in index} == {("kube-prometheus-stack", "67.8.0"), ("prometheus-adapter", "5.3.0")}
    index = yaml.safe_load((keda / "helm-releases.yaml").read_text())["releases"]
    assert {(r["chart"], r["version"]) for r in index} == {("keda", "2.17.0")}


def test_secrets_stay_in_their_secrets(adapter: Path) -> None:
    """Grafana's password and Triton's key are in their 0600 Secrets only: in no other file (the Helm values, the
    Deployment) and in no line of the run's output."""
    objs = objects(adapter)
    grafana = objs["monitoring_secrets/Secret/kube-prometheus-stack-grafana-admin"]
    assert grafana["metadata"]["namespace"] == "monitoring"
    assert {k: base64.b64decode(v).decode() for k, v in grafana["data"].items()} == {"admin-user": "admin", "admin-password": GRAFANA_PASSWORD}
    key = objs["triton_secrets/Secret/triton-restricted-api"]
    assert {k: base64.b64decode(v).decode() for k, v in key["data"].items()} == {"key": TRITON_KEY}
    secret_files = set((adapter / "monitoring_secrets").glob("*.yaml")) | set((adapter / "triton_secrets").glob("*.yaml"))
    assert len(secret_files) == 2
    for path in secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    forms = [GRAFANA_PASSWORD, TRITON_KEY] + [base64.b64encode(v.encode()).decode() for v in (GRAFANA_PASSWORD, TRITON_KEY)]
    for path in adapter.rglob("*"):
        if path.is_file() and path not in secret_files:
            text = path.read_text()
            assert not [f for f in forms if f in text], path
    (log,) = ADAPTER_LOG
    assert not [f for f in forms if f in log], "a secret was logged"


def test_grafana_reads_its_admin_secret(adapter: Path) -> None:
    """kube-prometheus-stack 67.8.0 pins the grafana chart 8.8.x: with grafana.admin.existingSecret set, its
    templates/secret.yaml creates no Secret of its own (so adminPassword, prom-operator in kube-prometheus-stack's
    values, is never used) and templates/_pod.tpl reads GF_SECURITY_ADMIN_USER/PASSWORD from that Secret's userKey and
    passwordKey entries."""
    kps = yaml.safe_load((adapter / "monitoring/kube-prometheus-stack.values.yaml").read_text())
    assert kps["grafana"] == {"enabled": True, "admin": {"existingSecret": "kube-prometheus-stack-grafana-admin",
                                                         "userKey": "admin-user", "passwordKey": "admin-password"},
                              # the sidecar loads the dashboards the role ships as labelled ConfigMaps
                              "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1"}}}
    secret = objects(adapter)["monitoring_secrets/Secret/kube-prometheus-stack-grafana-admin"]
    assert set(secret["data"]) == {kps["grafana"]["admin"]["userKey"], kps["grafana"]["admin"]["passwordKey"]}


def test_grafana_from_an_existing_secret(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = render(out, "--tags", "monitoring", "-e", "monitoring_grafana_admin_existing_secret=grafana-admin-sealed",
                  "-e", "monitoring_grafana_admin_password_key=password", vault=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not (out / "monitoring_secrets").exists()
    kps = yaml.safe_load((out / "monitoring/kube-prometheus-stack.values.yaml").read_text())
    assert kps["grafana"]["admin"] == {"existingSecret": "grafana-admin-sealed", "userKey": "admin-user", "passwordKey": "password"}


def test_triton_network_policies(adapter: Path, keda: Path) -> None:
    """Default deny for the Triton pods; HTTP/gRPC from the load balancer's pods, metrics from Prometheus' pods, DNS
    out (an NFS or PVC repository is mounted by the kubelet, outside the pod's network)."""
    for out in (adapter, keda):
        objs = objects(out)
        # the policies select every pool's pods: the labels all pools share (the ClusterIP Service's selector)
        selector = objs["triton/Service/triton"]["spec"]["selector"]
        deny = objs["triton/NetworkPolicy/triton-default-deny"]["spec"]
        assert deny == {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"]}
        ingress = objs["triton/NetworkPolicy/triton-ingress"]["spec"]
        assert ingress["podSelector"]["matchLabels"] == selector
        assert ingress["ingress"] == [
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "triton"}},
                       "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nginx-lb"}}}],
             "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                       "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                                                       "operator.prometheus.io/name": "kube-prometheus-stack-prometheus"}}}],
             "ports": [{"protocol": "TCP", "port": 8002}]},
        ]
        egress = objs["triton/NetworkPolicy/triton-egress"]["spec"]
        assert egress["policyTypes"] == ["Egress"]
        assert egress["egress"] == [
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
    # the ports of the policy are the pod's
    container = objects(adapter)["triton/Deployment/triton-1g-5gb"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_prometheus_peer_is_the_charts_prometheus(adapter: Path, tmp_path: Path) -> None:
    """The Prometheus Operator labels the pods of a Prometheus object app.kubernetes.io/name=prometheus and
    operator.prometheus.io/name=<its name>; kube-prometheus-stack names it "<fullname>-prometheus" (its _helpers.tpl
    kube-prometheus-stack.prometheus.crname, fullname = fullnameOverride truncated to 26 characters) and selects its
    pods by exactly these two labels in templates/prometheus/service.yaml."""
    kps = yaml.safe_load((adapter / "monitoring/kube-prometheus-stack.values.yaml").read_text())
    crname = kps["fullnameOverride"][:26].removesuffix("-") + "-prometheus"
    (_lb, prometheus) = objects(adapter)["triton/NetworkPolicy/triton-ingress"]["spec"]["ingress"]
    assert prometheus["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": crname}
    # a release name longer than 26 characters: cut to 26 (prometheus-stack-for-gpus-), then one trailing "-" trimmed
    out = tmp_path / "long-release"
    proc = render(out, "--tags", "triton", "-e", "gpu_ops_monitoring_release=prometheus-stack-for-gpus-fleet")
    assert proc.returncode == 0, proc.stdout[-4000:]
    (_lb, prometheus) = objects(out)["triton/NetworkPolicy/triton-ingress"]["spec"]["ingress"]
    assert prometheus["from"][0]["podSelector"]["matchLabels"]["operator.prometheus.io/name"] == "prometheus-stack-for-gpus-prometheus"


def test_load_balancer_peer_is_the_load_balancers_pods(adapter: Path, tmp_path: Path) -> None:
    """The Triton pods admit the pods role nginx_lb renders, in the namespace it renders them in."""
    out = tmp_path / "lb"
    proc = render(out, playbook="playbooks/load_balancer.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    lb = objects(out)["nginx_lb/Deployment/nginx-lb"]
    (peer,) = objects(adapter)["triton/NetworkPolicy/triton-ingress"]["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": lb["metadata"]["namespace"]}
    assert peer["podSelector"]["matchLabels"].items() <= lb["spec"]["template"]["metadata"]["labels"].items()


def test_network_policies_off_removes_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert render(out, "--tags", "triton").returncode == 0
    assert len(list((out / "triton").glob("*-networkpolicy-*.yaml"))) == 3
    proc = render(out, "--tags", "triton", "-e", "triton_network_policies=false")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not list((out / "triton").glob("*-networkpolicy-*.yaml"))


def test_keda_backend_uses_the_same_series(keda: Path) -> None:
    objs = objects(keda)
    scaled = objs["autoscaling/ScaledObject/triton-1g-5gb"]["spec"]
    rule = objs["custom_metrics/PrometheusRule/triton-queue-time"]["spec"]["groups"][0]["rules"][0]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"].startswith(f"sum({rule['record']}{{namespace=\"triton\"")
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton-1g-5gb"}
    assert trigger["metadata"]["query"].endswith('pod=~"triton-1g-5gb-[a-z0-9]+-[a-z0-9]+"})')
    assert scaled["maxReplicaCount"] == 72
    # the existing Prometheus: KEDA queries it, and our PodMonitor and PrometheusRule carry the labels it selects
    assert trigger["metadata"]["serverAddress"] == EXISTING_PROMETHEUS
    assert objs["triton/PodMonitor/triton"]["metadata"]["labels"]["prometheus"] == "main"
    assert objs["custom_metrics/PrometheusRule/triton-queue-time"]["metadata"]["labels"]["prometheus"] == "main"
    assert not (keda / "monitoring").exists()
    assert "replicas" not in objs["triton/Deployment/triton-1g-5gb"]["spec"]
    assert not (keda / "custom_metrics/prometheus-adapter.values.yaml").exists()
    pv = objs["triton/PersistentVolume/triton-triton-models"]["spec"]
    assert pv["nfs"] == {"server": "nfs.example.internal", "path": "/export/models", "readOnly": True}
    assert pv["accessModes"] == ["ReadOnlyMany"]


def test_triton_alone_object_store_fixed_replicas(tmp_path: Path) -> None:
    """Role triton alone (--tags triton: the other roles are neither checked nor run), with fixed replicas and
    the model repository in an object store, credentials from a Secret."""
    out = tmp_path / "out"
    proc = render(out, "--tags", "triton", "-e", "triton_model_source=object_store", "-e", "triton_model_url=s3://models-bucket/triton",
                  "-e", "triton_model_credentials_secret=triton-s3", "-e", "gpu_ops_triton_autoscaled=false", "-e", "triton_replicas=3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["helm-releases.yaml", "triton", "triton_secrets"]
    deploy = objects(out)["triton/Deployment/triton-1g-5gb"]
    assert deploy["spec"]["replicas"] == 3
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "--model-repository=s3://models-bucket/triton"
    assert container["envFrom"] == [{"secretRef": {"name": "triton-s3"}}]
    assert not any(m["name"] == "models" for m in container["volumeMounts"])
    # Triton reads the store itself: DNS and the store's port may leave the pod
    egress = objects(out)["triton/NetworkPolicy/triton-egress"]["spec"]["egress"]
    assert egress[1] == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    assert len(egress) == 2


def test_rerender_changes_nothing(adapter: Path) -> None:
    proc = render(adapter)
    assert proc.returncode == 0
    assert "changed=0" in proc.stdout, proc.stdout[-3000:]


BAD_INPUT = [
    (['{"gpu_ops_serving_pools": ["7g.80gb"]}'],
     "gpu_ops_serving_pools[0]: profile 7g.80gb is in no GPU node's layout; the layouts provide: 1g.18gb, 1g.5gb, 2g.10gb, 3g.20gb"),
    (['{"gpu_ops_serving_pools": [{"profile": "1g.5gb", "max_replicas": 73}]}'],
     "max_replicas of the pools on 1g.5gb (triton-1g-5gb 73) add up to 73, more than the 72 1g.5gb devices"),
    (["autoscaling_min_replicas=9"], "autoscaling_min_replicas 9 is above the max_replicas of the pools that give no min_replicas "
                                     "(triton-2g-10gb max 8, triton-3g-20gb max 8)"),
    (['{"gpu_ops_serving_pools": [{"profile": "3g.20gb", "name": "triton"}]}'], "gpu_ops_serving_pools: a pool is named triton"),
    (["gpu_ops_metrics_backend=hpa"], "value of gpu_ops_metrics_backend must be one of: adapter, keda, got: hpa"),
    (["gpu_ops_triton_metrics_interval=1m"], "triton_metrics_interval: '1m' is not a duration in s or ms such as 1s or 500ms"),
    (["custom_metrics_rate_window=2s"], "custom_metrics_rate_window 2s is shorter than 3 x custom_metrics_scrape_interval"),
    (["gpu_ops_metric_name=QueueTime"], "custom_metrics_metric_name: 'QueueTime' is not a custom metric name"),
    (["gpu_ops_triton_autoscaled=false"], "gpu_ops_triton_autoscaled is false"),
    (["triton_image_tag=latest", "triton_model_source=nfs"], "triton_image_tag must be an explicit NGC release"),
    (["triton_model_source=nfs"], "triton_model_source must be nfs (with triton_model_nfs_server"),
    (["monitoring_chart_version=67.8"], "monitoring_chart_version: '67.8' is not an exact chart version such as 1.2.3"),
    (["custom_metrics_adapter_chart_version=latest"], "custom_metrics_adapter_chart_version: 'latest' is not an exact chart version"),
    (["monitoring_grafana_admin_password="], "monitoring_grafana_admin_password is empty: Grafana is installed"),
    (["monitoring_grafana_admin_password=prom-operator"], "monitoring_grafana_admin_password is kube-prometheus-stack's published default"),
    (['{"monitoring_extra_values": {"grafana": {"adminPassword": "hunter2-hunter2"}}}'], "monitoring_extra_values sets grafana's admin credentials"),
    (["triton_restricted_api_key="], "triton_restricted_api_key is empty"),
    (['{"triton_network_policy_prometheus_pod_labels": {}}'], "triton_network_policy_prometheus_pod_labels must be a non-empty mapping"),
    (["triton_model_source=object_store", "triton_model_url=s3://https://minio.example.internal:9000/models"],
     "triton_network_policy_object_store_ports [443] lacks port 9000 of triton_model_url"),
]


def test_bad_input_fails_before_anything_is_written(tmp_path: Path) -> None:
    """Each bad input in its own render, four at a time (each is a separate ansible-playbook run)."""

    def attempt(index: int) -> Optional[str]:
        extra, message = BAD_INPUT[index]
        out = tmp_path / f"out{index}"
        argv: List[str] = []
        for item in extra:
            argv += ["-e", item]
        proc = render(out, *argv)
        if proc.returncode == 0:
            return f"{extra}: the render succeeded"
        if message not in proc.stdout + proc.stderr:
            return f"{extra}: no {message!r} in\n{(proc.stdout + proc.stderr)[-3000:]}"
        if out.exists() and any(out.rglob("*")):
            return f"{extra}: files were written: {sorted(out.rglob('*'))}"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(attempt, range(len(BAD_INPUT))) if p]
    assert not problems, "\n\n".join(problems)


def test_pools_share_the_selector_and_carry_their_pool_and_profile(adapter: Path) -> None:
    """A Deployment, PDB and headless Service per pool, each selecting its pool's pods only; the shared Service,
    NetworkPolicies and PodMonitor select every pool's pods; the PodMonitor labels each target with its pool (pod label) and
    MIG profile (pod annotation: a profile may hold '+', which a label value may not). Mixed strategy: no node affinity."""
    objs = objects(adapter)
    shared = objs["triton/Service/triton"]["spec"]["selector"]
    pools = {"triton-1g-18gb": ("1g.18gb", 56, 1), "triton-1g-5gb": ("1g.5gb", 72, 1), "triton-2g-10gb": ("2g.10gb", 8, 2),
             "triton-3g-20gb": ("3g.20gb", 8, 3)}
    for name, (profile, capacity, weight) in pools.items():
        deploy = objs[f"triton/Deployment/{name}"]
        # the pool's LB weight (the profile's compute slices here), for the load test run without the fleet model
        assert deploy["metadata"]["annotations"] == {"gpu-ops.io/lb-weight": str(weight)}
        selector = deploy["spec"]["selector"]["matchLabels"]
        assert selector == {**shared, "gpu-ops.io/serving-pool": name}
        template = deploy["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpu-ops.mig-serving"
        assert template["metadata"]["annotations"] == {"gpu-ops.io/mig-profile": profile}
        assert template["spec"]["containers"][0]["resources"]["limits"] == {"memory": "16Gi", f"nvidia.com/mig-{profile}": 1}
        assert "affinity" not in template["spec"]
        assert objs[f"triton/PodDisruptionBudget/{name}"]["spec"]["selector"]["matchLabels"] == selector
        headless = objs[f"triton/Service/{name}-headless"]["spec"]
        assert (headless["clusterIP"], headless["publishNotReadyAddresses"], headless["selector"]) == ("None", False, selector)
        assert objs[f"autoscaling/HorizontalPodAutoscaler/{name}"]["spec"]["maxReplicas"] == capacity
    monitor = objs["triton/PodMonitor/triton"]["spec"]
    assert monitor["selector"]["matchLabels"] == shared
    # Prometheus' Kubernetes service discovery: __meta_kubernetes_pod_label_<name> / _annotation_<name>, the name with every
    # character that is not a letter, digit or '_' as '_' (prometheus discovery/kubernetes/pod.go, strutil.SanitizeLabelName)
    assert monitor["podMetricsEndpoints"][0]["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_label_gpu_ops_io_serving_pool"], "targetLabel": "pool", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_annotation_gpu_ops_io_mig_profile"], "targetLabel": "mig_profile", "action": "replace"},
    ]
    for policy in ("default-deny", "ingress", "egress"):
        assert objs[f"triton/NetworkPolicy/triton-{policy}"]["spec"]["podSelector"]["matchLabels"] == shared


def test_pools_given_and_the_single_strategy(tmp_path: Path) -> None:
    """Pools listed in gpu_ops_serving_pools: their own replicas, resources and names. Under the single strategy every profile
    is advertised as nvidia.com/gpu, so each pool's pods are pinned to the nodes whose layout has its profile."""
    out = tmp_path / "out"
    # the single strategy needs one profile per node: the all-balanced node gets all-1g.5gb here
    shutil.copytree(ROOT / "inventories" / "dgx", tmp_path / "inv" / "dgx")
    shutil.copytree(ROOT / "inventories" / "layouts", tmp_path / "inv" / "layouts")
    hosts_file = tmp_path / "inv" / "dgx" / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    hosts["all"]["children"]["gpu_nodes"]["hosts"]["dgx-a100-02"]["mig_layout_config"] = "all-1g.5gb"
    hosts_file.write_text(yaml.safe_dump(hosts))
    pools = [{"profile": "1g.18gb", "replicas": 2, "resources": {"requests": {"cpu": "1"}}},
             {"profile": "1g.5gb", "name": "small", "max_replicas": 10, "weight": 4}]
    proc = render(out, "--tags", "triton", "-e", "gpu_ops_triton_autoscaled=false", "-e", "gpu_ops_mig_strategy=single",
                  "-e", json.dumps({"gpu_ops_serving_pools": pools}), inventory=str(tmp_path / "inv" / "dgx"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    objs = objects(out)
    assert sorted(k for k in objs if "/Deployment/" in k) == ["triton/Deployment/small", "triton/Deployment/triton-1g-18gb"]
    big, small = objs["triton/Deployment/triton-1g-18gb"]["spec"], objs["triton/Deployment/small"]["spec"]
    assert (big["replicas"], small["replicas"]) == (2, 1)
    assert [objs[f"triton/Deployment/{n}"]["metadata"]["annotations"] for n in ("triton-1g-18gb", "small")] == [
        {"gpu-ops.io/lb-weight": "1"}, {"gpu-ops.io/lb-weight": "4"}]
    assert big["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": 1}}
    assert small["template"]["spec"]["containers"][0]["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": 1}

    def nodes(spec: Dict[str, Any]) -> List[str]:
        (term,) = spec["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        (expression,) = term["matchExpressions"]
        assert (expression["key"], expression["operator"]) == ("kubernetes.io/hostname", "In")
        return list(expression["values"])

    assert nodes(big) == ["dgx-h200-01"]
    assert nodes(small) == ["dgx-a100-01", "dgx-a100-02"]
    assert "triton/Service/small-headless" in objs
