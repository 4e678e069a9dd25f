# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Prometheus (Debian's 2.42) on loopback for tests, and helpers to feed it what the roles render.

    job = pod_monitor_job(pod_monitor, targets={"triton-0": "127.0.0.1:41234"})
    with prometheus_server(tmp_path, [job], rule_groups=prometheus_rule_groups(rule)) as prom:
        prom.query('namespace_pod:...{namespace="triton"}')

``pod_monitor_job`` turns a rendered PodMonitor into the scrape job the Prometheus Operator would generate for
it (interval, timeout, path, scheme, honor_labels, the target labels namespace/pod/container/endpoint/job, and the
endpoint's ``relabelings`` over the pods' labels and annotations as Kubernetes service discovery exposes them), with
loopback addresses standing in for the pod IPs. Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from .processes import PORT_ATTEMPTS, PortTaken, port_taken, start_retrying_port, stop_process_group
from .triton import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
READY_TIMEOUT_S = 30.0


def prometheus_rule_groups(rule: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The rule groups of a PrometheusRule object, as a Prometheus rule file holds them."""
    if (rule.get("apiVersion"), rule.get("kind")) != ("monitoring.coreos.com/v1", "PrometheusRule"):
        raise ValueError(f"not a PrometheusRule: {rule.get('apiVersion')} {rule.get('kind')}")
    return [dict(group) for group in rule["spec"]["groups"]]


def sd_label_name(name: str) -> str:
    """A Kubernetes label or annotation key as a meta label suffix: every character that may not be in a Prometheus
    label name becomes '_' (Prometheus discovery/kubernetes/pod.go builds __meta_kubernetes_pod_label_<key> and
    __meta_kubernetes_pod_annotation_<key> with strutil.SanitizeLabelName)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_meta_labels(labels: Mapping[str, str], annotations: Mapping[str, str]) -> Dict[str, str]:
    """The meta labels Kubernetes service discovery (role pod) gives a pod's targets for its labels and annotations:
    ``__meta_kubernetes_pod_label_<key>`` / ``..._labelpresent_<key>`` and ``..._annotation_<key>`` /
    ``..._annotationpresent_<key>`` (discovery/kubernetes/pod.go, podLabels)."""
    out: Dict[str, str] = {}
    for kind, items in (("label", labels), ("annotation", annotations)):
        for key, value in items.items():
            out[f"__meta_kubernetes_pod_{kind}_{sd_label_name(key)}"] = str(value)
            out[f"__meta_kubernetes_pod_{kind}present_{sd_label_name(key)}"] = "true"
    return out


# PodMonitor RelabelConfig field -> Prometheus relabel_config key (monitoring.coreos.com/v1 RelabelConfig)
_RELABEL_KEYS = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label", "regex": "regex",
                 "modulus": "modulus", "replacement": "replacement", "action": "action"}


def relabel_config(relabeling: Mapping[str, Any]) -> Dict[str, Any]:
    """One PodMonitor ``relabelings`` item as the operator writes it into the Prometheus config (prometheus-operator
    pkg/prometheus/promcfg.go, generateRelabelConfig: the camelCase fields become Prometheus' snake_case keys, the
    action lower-cased); a field the operator knows and this does not model fails here."""
    unknown = set(relabeling) - set(_RELABEL_KEYS)
    if unknown:
        raise NotImplementedError(f"relabeling fields not modelled: {sorted(unknown)}")
    out = {_RELABEL_KEYS[key]: value for key, value in relabeling.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def pod_monitor_job(
    pod_monitor: Mapping[str, Any],
    targets: Mapping[str, str],
    *,
    container: str = "triton",
    job_name: Optional[str] = None,
    endpoint_index: int = 0,
    pod_labels: Optional[Mapping[str, Mapping[str, str]]] = None,
    pod_annotations: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> Dict[str, Any]:
    """The scrape config the Prometheus Operator derives from a PodMonitor endpoint; ``targets``: pod name -> host:port,
    ``pod_labels`` / ``pod_annotations``: pod name -> that pod's labels / annotations.

    As the operator generates it (prometheus-operator pkg/prometheus/promcfg.go, generatePodMonitorConfig): the target
    labels namespace, container, pod, job (``<namespace>/<name>``) and endpoint (the port name), then the endpoint's
    ``relabelings`` appended, which see the pod's meta labels (``pod_meta_labels``); the meta labels themselves are
    dropped after relabeling, as Prometheus drops every label starting with ``__``. Static targets stand in for the
    discovered pods (the selector's keep rules are not needed: only the pods given are targets)."""
    meta, spec = pod_monitor["metadata"], pod_monitor["spec"]
    endpoint = spec["podMetricsEndpoints"][endpoint_index]
    namespace = meta["namespace"]
    job = job_name or f"{namespace}/{meta['name']}"
    static = [
        {
            "targets": [address],
            "labels": {"namespace": namespace, "pod": pod, "container": container, "endpoint": str(endpoint["port"]), "job": job,
                       **pod_meta_labels((pod_labels or {}).get(pod, {}), (pod_annotations or {}).get(pod, {}))},
        }
        for pod, address in targets.items()
    ]
    job_config: Dict[str, Any] = {
        "job_name": f"podMonitor/{namespace}/{meta['name']}/{endpoint_index}" if job_name is None else job_name,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scrape_interval": endpoint["interval"],
        "scrape_timeout": endpoint.get("scrapeTimeout", endpoint["interval"]),
        "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http"),
        "static_configs": static,
    }
    relabelings = [relabel_config(r) for r in endpoint.get("relabelings") or []]
    if relabelings:
        job_config["relabel_configs"] = relabelings
    return job_config


@dataclass
class PrometheusProcess:
    host: str
    port: int
    pid: int
    log: Path
    config: Path
    proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False, compare=False)
    stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read().decode())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: Optional[float] = None) -> Dict[str, float]:
        """Instant query; returns {pod label (or the label set as JSON): value}. NaN values are kept as NaN."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        out: Dict[str, float] = {}
        if data["resultType"] == "scalar":
            return {"": float(data["result"][1])}
        for item in data["result"]:
            labels = item["metric"]
            key = labels.get("pod", json.dumps(labels, sort_keys=True))
            out[key] = float(item["value"][1])
        return out

    def series(self, expr: str) -> List[Tuple[Dict[str, str], float]]:
        """Instant query: every result's full label set and value (a vector; a scalar has no labels)."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    def window_samples(self, selector: str, window: str, at: float) -> Dict[str, List[Tuple[float, float]]]:
        """The raw samples of ``selector[window]`` at ``at``: {pod: [(timestamp, value), ...]} (what rate() sees)."""
        data = self._get("/api/v1/query", {"query": f"{selector}[{window}]", "time": f"{at:.3f}"})
        out: Dict[str, List[Tuple[float, float]]] = {}
        for item in data["result"]:
            out.setdefault(item["metric"].get("pod", ""), []).extend((float(t), float(v)) for t, v in item["values"])
        return out

    def targets_up(self) -> Dict[str, str]:
        data = self._get("/api/v1/targets", {"state": "active"})
        return {t["labels"].get("pod", t["scrapeUrl"]): t["health"] for t in data["activeTargets"]}

    def rule_health(self) -> List[Dict[str, Any]]:
        data = self._get("/api/v1/rules", {})
        return [rule for group in data["groups"] for rule in group["rules"]]

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; returns once it has exited. A second call does nothing."""
        if not self.stopped:
            stop_process_group(self.pid, timeout=10.0, name="prometheus", proc=self.proc)
            self.stopped = True


def _ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/-/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def prometheus_server(
    workdir: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    *,
    rule_groups: Sequence[Mapping[str, Any]] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    evaluation_interval: str = "1s",
) -> Iterator[PrometheusProcess]:
    """Start Prometheus with these scrape jobs and rule groups (promtool-checked first); stop it by PID on exit."""
    if not Path(PROMETHEUS).is_file():
        raise RuntimeError(f"{PROMETHEUS} is missing: `apt-get install prometheus` (Debian 12, 2.42)")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [dict(g) for g in rule_groups]}, sort_keys=False))
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "10s", "evaluation_interval": evaluation_interval},
                "rule_files": [str(rules)],
                "scrape_configs": [dict(c) for c in scrape_configs],
            },
            sort_keys=False,
        )
    )
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"promtool check config failed:\n{check.stdout}{check.stderr}")
    # a port left to the OS that another process takes before Prometheus binds it: again, on another
    attempts = 1 if port else PORT_ATTEMPTS
    server = start_retrying_port(lambda: _start(workdir, config, host, port or free_port(host)), _wait_ready,
                                 attempts=attempts, name="prometheus", output=lambda s: _tail(s.log))
    try:
        yield server
    finally:
        server.stop()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def _start(workdir: Path, config: Path, host: str, port: int) -> PrometheusProcess:
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    log = workdir / "prometheus.log"
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=1h",
        "--web.enable-lifecycle",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    return PrometheusProcess(host=host, port=port, pid=proc.pid, log=log, config=config, proc=proc)


def _wait_ready(server: PrometheusProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(server.host, server.port):
        if server.proc is not None and server.proc.poll() is not None:
            if port_taken(_tail(server.log)):
                raise PortTaken
            raise RuntimeError(f"prometheus exited {server.proc.returncode}:\n{_tail(server.log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"prometheus not ready in {READY_TIMEOUT_S:.0f} s:\n{_tail(server.log)}")
        time.sleep(0.1)


def is_number(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
