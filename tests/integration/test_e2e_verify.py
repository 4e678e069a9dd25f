# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/verify.yml's end-to-end play (module serving_verify) against real serving components on loopback.

- two real Triton servers (the tritonserver of the nvidia-pytriton wheel, CPU) on 127.0.0.11 and .12, on the same
  ports like two pods behind the headless Service, each serving a working model ``echo`` and a model ``failing``
  whose every inference returns an error;
- a real Prometheus scraping them with the scrape settings our rendered PodMonitor implies (``pod`` label = the pod
  names below) and evaluating our rendered PrometheusRule;
- a real nginx running the rendered nginx_lb config (the resolver-variable form Debian's 1.22 loads), resolving the
  headless Service's name through a real dnsmasq;
- kube_fake seeded with the objects playbooks/render.yml renders (the kinds it serves: Namespace, Deployment,
  Services, PDBs, HPA, ConfigMap), the APIService v1beta1.custom.metrics.k8s.io the prometheus-adapter chart creates,
  and the two Triton pods (Ready, named as Prometheus' ``pod`` label says); its custom metrics API answers from the
  real Prometheus with the rendered adapter rule, its HPA status is computed from that, and its service proxy for
  the nginx-lb Service goes to the real nginx.

Proven: the play passes and reports both pods' values, the HPA's metric and an inference through the LB; each
failure (a pod missing from the metric, the HPA on a wrong metric name, a failing model, the adapter down, nginx
stopped) fails the play with a message naming the check and what was seen. Not proven: a real API server's
aggregation layer, a real prometheus-adapter binary, a real HPA controller, KEDA (see docs/modules.md).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List

import pytest
import yaml
from ansible.module_utils.urls import open_url
from kubernetes import config as kube_config

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import KubeTransport, Verifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.kube_fake.metrics import MetricsAdapter
    from tests.kube_fake.server import PODS as POD_RESOURCE
    from tests.kube_fake.server import RESOURCES, FakeKube
    from tests.servers.dnsmasq import dnsmasq_server
    from tests.servers.nginx import NginxProcess, localize, loopback_swaps, nginx_server, version
    from tests.servers.ports import common_free_ports
    from tests.servers.prometheus import pod_monitor_job, prometheus_rule_groups, prometheus_server
    from tests.servers.triton import ensure_triton_venv, service_time, triton_server, write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from kube_fake.metrics import MetricsAdapter
    from kube_fake.server import PODS as POD_RESOURCE
    from kube_fake.server import RESOURCES, FakeKube
    from servers.dnsmasq import dnsmasq_server
    from servers.nginx import NginxProcess, localize, loopback_swaps, nginx_server, version
    from servers.ports import common_free_ports
    from servers.prometheus import pod_monitor_job, prometheus_rule_groups, prometheus_server
    from servers.triton import ensure_triton_venv, service_time, triton_server, write_model_repository
    from vault_vars import VAULT_ARGS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAMESPACE = "triton"
METRIC = "avg_time_queue_us"
# one serving pool (gpu_ops_serving_pools, in the render and the bed's inventory): its Deployment, HPA and headless Service
POOL = "triton-1g-5gb"
POOLS_VAR = {"gpu_ops_serving_pools": ["1g.5gb"]}
PODS = {f"{POOL}-7c9d8b6f5-x2k4p": "127.0.0.11", f"{POOL}-7c9d8b6f5-m8q3z": "127.0.0.12"}
UNSCRAPED_POD = f"{POOL}-7c9d8b6f5-q4w9n"
FQDN = f"{POOL}-headless.triton.svc.cluster.local"
LB_EXTERNAL_IP = "10.0.20.10"  # the LB Service's external address (see the bed)
ADAPTER_APISERVICE = {  # what the prometheus-adapter chart creates (roles/custom_metrics/README.md)
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
    "spec": {"service": {"name": "prometheus-adapter", "namespace": "monitoring", "port": 443}, "group": "custom.metrics.k8s.io",
             "version": "v1beta1", "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100, "versionPriority": 100},
}
SERVED_KINDS = {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret", "ServiceAccount"}

_FAILING_MODEL = '''\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("failing on purpose (test model)"))
                for _request in requests]
'''


def run_playbook(home: Path, argv: List[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = ansible_env(home)
    env.pop("K8S_AUTH_KUBECONFIG", None)
    return subprocess.run([str(BIN / "ansible-playbook"), *argv, *VAULT_ARGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def write_inventory(work: Path, kubeconfig: Path) -> Path:
    """inventories/dgx, with the control host local and its kubeconfig the fake's."""
    inv = work / "inv"
    shutil.copytree(ROOT / "inventories" / "dgx", inv)
    shutil.copytree(ROOT / "inventories" / "layouts", work / "layouts")
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["children"]["k8s_control"]["hosts"] = {"k8s-admin-01": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    all_vars = yaml.safe_load((inv / "group_vars" / "all.yml").read_text())
    all_vars["gpu_ops_kubeconfig"] = str(kubeconfig)
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars))
    serving = inv / "group_vars" / "k8s_control" / "serving.yml"  # where the example inventory sets the pools
    serving.write_text(serving.read_text().replace("gpu_ops_serving_pools: []", f"gpu_ops_serving_pools: {json.dumps(POOLS_VAR['gpu_ops_serving_pools'])}"))
    return inv


class Bed:
    def __init__(self, work: Path, kube: FakeKube, inventory: Path, nginx: NginxProcess, rendered: Dict[str, Any]) -> None:
        self.work, self.kube, self.inventory, self.nginx, self.rendered = work, kube, inventory, nginx, rendered

    @property
    def adapter(self) -> MetricsAdapter:
        assert self.kube.metrics_adapter is not None
        return self.kube.metrics_adapter

    def verify(self, *extra: str) -> Dict[str, Any]:
        """Run the serving play of playbooks/verify.yml; the serving_verify task's result and the report's lines."""
        proc = run_playbook(self.work, ["playbooks/verify.yml", "-i", str(self.inventory), "--limit", "k8s_control", "--tags", "serving",
                                        "-e", "gpu_ops_verify_serving_delay=1", *extra])
        assert "TASK [Ask the cluster]" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def _one(docs: Iterable[Dict[str, Any]], kind: str, name: str) -> Dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    assert version().startswith("1.22."), "the variable form is what Debian 12's nginx runs"
    ensure_triton_venv()
    work = tmp_path_factory.mktemp("e2e-verify")
    out = work / "rendered"
    # what site.yml's apply stages create, rendered (the cluster GPU layer is not needed here)
    proc = run_playbook(work, ["playbooks/render.yml", "-i", "inventories/dgx", "-e", f"gpu_ops_render_dir={out}",
                               "-e", "nginx_lb_oss_version=1.22.1", "-e", json.dumps(POOLS_VAR), "--skip-tags", "cluster"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    docs = {p.relative_to(out).as_posix(): yaml.safe_load(p.read_text()) for p in sorted(out.glob("*/[0-9]*.yaml"))}
    objects = [d for d in docs.values() if d["kind"] in SERVED_KINDS]
    assert {d["kind"] for d in objects} >= {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler"}, sorted(docs)
    pod_monitor = _one(docs.values(), "PodMonitor", "triton")
    rule = _one(docs.values(), "PrometheusRule", "triton-queue-time")
    adapter_rules = yaml.safe_load((out / "custom_metrics" / "prometheus-adapter.values.yaml").read_text())["rules"]["custom"]
    nginx_conf = _one(docs.values(), "ConfigMap", "nginx-lb-config")["data"]["nginx.conf"]
    deployment = _one(objects, "Deployment", POOL)

    repo = write_model_repository(work / "models", name="echo")
    (repo / "failing" / "1").mkdir(parents=True)
    (repo / "failing" / "1" / "model.py").write_text(_FAILING_MODEL)
    (repo / "failing" / "config.pbtxt").write_text((repo / "echo" / "config.pbtxt").read_text().replace('name: "echo"', 'name: "failing"'))
    t_http, t_grpc, t_metrics = common_free_ports(list(PODS.values()), 3)
    lb_http, lb_grpc, lb_status = common_free_ports(["127.0.0.1"], 3)
    with contextlib.ExitStack() as stack:
        tritons = {pod: stack.enter_context(triton_server(repo, host=ip, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics))
                   for pod, ip in PODS.items()}
        for triton in tritons.values():  # requests, so every pod's series exist
            service_time(triton.http_url, "echo", samples=3)
        job = pod_monitor_job(pod_monitor, {pod: f"{t.host}:{t.metrics_port}" for pod, t in tritons.items()})
        prom = stack.enter_context(prometheus_server(work / "prometheus", [job], rule_groups=prometheus_rule_groups(rule)))
        dns = stack.enter_context(dnsmasq_server(work / "dns", {FQDN: list(PODS.values())}))
        prefix = work / "nginx"
        prefix.mkdir()
        conf = localize(nginx_conf, prefix, loopback_swaps(http=lb_http, grpc=lb_grpc, status=lb_status, resolver=dns.resolver, service=FQDN,
                                                           upstream_http=t_http, upstream_grpc=t_grpc, one_worker=False))
        nginx = stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{lb_status}/healthz"))

        kube = stack.enter_context(FakeKube())
        # the LB Service is of type LoadBalancer (inventories/dgx): serving_verify needs an external address on it. No
        # load-balancer provider runs here, and kube_fake keeps no Service status from a seed, so it gets one through
        # spec.externalIPs, which kubectl's EXTERNAL-IP column (and serving_verify) count the same way
        objects = [({**o, "spec": {**o["spec"], "externalIPs": [LB_EXTERNAL_IP]}} if o["kind"] == "Service" and o["metadata"]["name"] == "nginx-lb" else o)
                   for o in objects]
        kube.seed([*objects, ADAPTER_APISERVICE])
        for pod, ip in PODS.items():
            kube.add_object(triton_pod(pod, ip, deployment["spec"]["template"]))
        kube.metrics_adapter = MetricsAdapter(prom.url, adapter_rules)
        kube.service_backends[(NAMESPACE, "nginx-lb", "http")] = f"http://127.0.0.1:{lb_http}"
        deadline = time.monotonic() + 45  # the recording rule needs two scrapes of each pod
        values: Dict[str, float] = {}
        while time.monotonic() < deadline and set(values) != set(PODS):
            with contextlib.suppress(Exception):
                values = kube.metrics_adapter.values(NAMESPACE, list(PODS), METRIC)
            time.sleep(0.5)
        assert set(values) == set(PODS), (values, prom.targets_up())
        yield Bed(work, kube, write_inventory(work, kube.kubeconfig_path), nginx, {"deployment": deployment})


def triton_pod(name: str, ip: str, template: Dict[str, Any]) -> Dict[str, Any]:
    """A pod the ReplicaSet made from the Deployment's template (kube_fake admits it as the namespace's Pod Security level says)."""
    labels = template["metadata"]["labels"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**labels, "pod-template-hash": "7c9d8b6f5"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{POOL}-7c9d8b6f5", "uid": str(uuid.uuid4()),
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {**template["spec"], "nodeName": "dgx-a100-01"},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]},
    }


def test_pass_reports_every_pod_the_hpa_and_an_inference(bed: Bed) -> None:
    # the LB refuses the repository index (not on its allow-list), so the model to send an inference to is named
    run = bed.verify("-e", "gpu_ops_verify_serving_retries=5", "-e", "gpu_ops_verify_serving_model=echo")
    assert run["rc"] == 0, run["stdout"][-5000:] + run["stderr"][-2000:]
    out = run["stdout"]
    for pod in PODS:
        assert f"{pod}=" in out, out[-3000:]
    assert f"custom metric {METRIC} (custom.metrics.k8s.io/v1beta1)" in out
    assert f"HPA {POOL}: {METRIC} = " in out
    assert f"pool {POOL}: 2 ready, 0 not ready, HPA " in out
    assert "ScalingActive True" in out
    assert "inference through service proxy triton/nginx-lb:http: model echo answered 200 in" in out
    # the inference went through the real nginx
    assert any("/v2/models/echo/infer" in line and '" 200 ' in line for line in bed.nginx.access_lines()), bed.nginx.log_tail()
    proxied = [r for r in bed.kube.requests if r.path.startswith("/api/v1/namespaces/triton/services/nginx-lb:http/proxy/")]
    assert [r.method for r in proxied][-2:] == ["GET", "POST"], proxied  # the model's metadata, then the inference
    assert f"load balancer Service triton/nginx-lb (LoadBalancer): external {LB_EXTERNAL_IP}" in out, out[-3000:]
    hpa = bed.kube.get_object("autoscaling/v2", "HorizontalPodAutoscaler", POOL, NAMESPACE)
    assert hpa is not None
    assert hpa["status"]["currentMetrics"][0]["pods"]["metric"]["name"] == METRIC


def test_v1beta2_preferred_when_registered(bed: Bed) -> None:
    """With a v1beta2 APIService of higher versionPriority as well, the module reads v1beta2 (metric.name, not metricName)."""
    v1beta2 = json.loads(json.dumps(ADAPTER_APISERVICE).replace("v1beta1", "v1beta2"))
    v1beta2["spec"]["versionPriority"] = 200
    bed.kube.add_object(v1beta2)
    try:
        client = kube_config.new_client_from_config(config_file=str(bed.kube.kubeconfig_path))  # type: ignore[no-untyped-call]
        transport = KubeTransport(client, 10.0, open_url)
        params = {"namespace": NAMESPACE, "triton_deployments": [POOL], "triton_selector": {}, "metric_name": METRIC, "hpa_names": [POOL],
                  "keda_scaled_object": "", "check_hpa": True, "check_lb": False, "retries": 0, "delay": 0}
        outcome = Verifier(transport, params).run()
        assert outcome["errors"] == {}, outcome
        assert outcome["reports"]["custom_metrics"]["api_version"] == "custom.metrics.k8s.io/v1beta2"
        assert set(outcome["reports"]["custom_metrics"]["pods"]) == set(PODS)
        raw = [r for r in bed.kube.requests if r.path.startswith("/apis/custom.metrics.k8s.io/v1beta2/namespaces/triton/pods/*/")]
        assert raw, bed.kube.requests[-5:]
        assert raw[-1].status == 200
        assert raw[-1].query["labelSelector"] == [f"app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton,gpu-ops.io/serving-pool={POOL}"]
        assert outcome["reports"]["pools"][POOL]["ready"] == sorted(PODS)
    finally:
        bed.kube.cluster.delete(next(r for r in RESOURCES if r.kind == "APIService"), "", "v1beta2.custom.metrics.k8s.io", dry_run=False)


def test_failures_name_the_pod_the_metric_and_the_model(bed: Bed) -> None:
    """A Ready pod Prometheus does not scrape, the HPA on a wrong metric name and a failing model, in one run."""
    bed.kube.add_object(triton_pod(UNSCRAPED_POD, "127.0.0.13", bed.rendered["deployment"]["spec"]["template"]))
    hpa = bed.kube.get_object("autoscaling/v2", "HorizontalPodAutoscaler", POOL, NAMESPACE)
    assert hpa is not None
    wrong = json.loads(json.dumps(hpa).replace(f'"name": "{METRIC}"', '"name": "avg_time_queue_ms"'))
    wrong["metadata"].pop("resourceVersion")
    hpa_rt = next(r for r in RESOURCES if r.kind == "HorizontalPodAutoscaler")
    bed.kube.cluster.replace(hpa_rt, NAMESPACE, POOL, wrong, "test", dry_run=False)
    try:
        run = bed.verify("-e", "gpu_ops_verify_serving_retries=1", "-e", "gpu_ops_verify_serving_model=failing")
    finally:
        bed.kube.cluster.delete(POD_RESOURCE, NAMESPACE, UNSCRAPED_POD, dry_run=False, options={"gracePeriodSeconds": 0})
        restored = bed.kube.get_object("autoscaling/v2", "HorizontalPodAutoscaler", POOL, NAMESPACE)
        assert restored is not None
        hpa["metadata"].pop("resourceVersion")
        bed.kube.cluster.replace(hpa_rt, NAMESPACE, POOL, hpa, "test", dry_run=False)
    out = run["stdout"]
    assert run["rc"] != 0, out[-3000:]
    assert "serving stack verification failed after 2 attempt(s)" in out, out[-4000:]
    assert f"custom metrics: custom metrics API lists {METRIC} for 2 of 3 Triton pods: missing {UNSCRAPED_POD}" in out, out[-4000:]
    assert f"HPA: HPA triton/{POOL} does not scale on Pods {METRIC}: its metrics are Pods avg_time_queue_ms" in out, out[-4000:]
    assert ("load balancer: load balancer (service proxy triton/nginx-lb:http): inference on model failing answered 500: "
            '{"error": "failing on purpose (test model)"}\n') in out, out[-4000:]


def test_failures_adapter_down_and_nginx_stopped(bed: Bed) -> None:
    """Last: it stops nginx. The adapter is down (the aggregator answers 503) and nothing listens behind the LB Service;
    then the same in check mode, where the play reports what it would verify without failing."""
    bed.adapter.down = True
    bed.nginx.stop()
    # and the LB Service loses its address: what a LoadBalancer Service shows with no provider (EXTERNAL-IP <pending>)
    services = next(r for r in RESOURCES if r.name == "services")
    bed.kube.cluster.patch(services, NAMESPACE, "nginx-lb", "application/merge-patch+json", b'{"spec": {"externalIPs": null}}',
                           {"fieldManager": ["e2e-test"]}, "e2e-test", False)
    try:
        run = bed.verify("-e", "gpu_ops_verify_serving_retries=0")
        # the module only reads: it runs in check mode too, once (no waiting by default), and the play reports instead of failing
        check = bed.verify("--check")
    finally:
        bed.adapter.down = False
    out = run["stdout"]
    assert run["rc"] != 0, out[-3000:]
    assert check["rc"] == 0, check["stdout"][-4000:]
    assert "Check mode: would verify the serving stack after apply; now: serving stack verification failed after 1 attempt(s):" in check["stdout"]
    assert "ScalingActive is False (FailedGetPodsMetric)" in check["stdout"]
    assert "custom metrics: APIService v1beta1.custom.metrics.k8s.io not available: FailedDiscoveryCheck: failing or missing response from" in out, out[-4000:]
    assert (f"HPA: HPA triton/{POOL} ScalingActive is False (FailedGetPodsMetric): the HPA was unable to compute the replica count: "
            f"unable to get metric {METRIC}: unable to fetch metrics from custom metrics API: the server is currently unable to handle the request") in out
    assert ("Service triton/nginx-lb is of type LoadBalancer, but no load-balancer provider has assigned it an external address "
            "(status.loadBalancer.ingress is empty: kubectl shows EXTERNAL-IP <pending>)") in out, out[-4000:]
    assert ("load balancer: load balancer (service proxy triton/nginx-lb:http): POST /v2/repository/index answered 503 ServiceUnavailable: "
            "error trying to reach service: dial tcp 127.0.0.1:") in out, out[-4000:]
