# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The autoscaling loop closed on one machine, short profile (tests/autoscale/loop.py): 1 -> 2 -> 1 pods.

Real Triton pods, dnsmasq, nginx (rendered nginx_lb config), Prometheus (rendered PodMonitor settings and
PrometheusRule), the rendered adapter query; the HPA and Deployment stand-ins of tests/autoscale. One run, then
assertions on its record: the order of what happened and bounds, never tight timings (a loaded 2-core machine).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.autoscale.loop import PROFILES, run_closed_loop
else:
    from autoscale.loop import PROFILES, run_closed_loop

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._loadtest_report import validate_run, write_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return run_closed_loop(tmp_path_factory.mktemp("autoscale-loop"), profile="short", log=print)


def first(run: Dict[str, Any], event: str, after: float = -1.0, detail: Optional[str] = None) -> Optional[float]:
    return next((float(e["t"]) for e in run["events"] if e["event"] == event and float(e["t"]) >= after
                 and (detail is None or e["detail"] == detail)), None)


def test_the_run_is_a_valid_report_run(run: Dict[str, Any]) -> None:
    assert validate_run(run) == []
    assert run["source"] == "demo"
    assert run["settings"]["max_replicas"] == PROFILES["short"].max_replicas == 2
    assert {s["protocol"] for s in run["steps"]} == {"http", "grpc"}


def test_no_request_failed(run: Dict[str, Any]) -> None:
    assert run["failed_requests"] == 0, run.get("failed_errors")
    assert all(s["perf"]["Inferences/Second"] > 0 for s in run["steps"]), run["steps"]


def test_scale_up_follows_the_metric_over_target(run: Dict[str, Any]) -> None:
    target = run["settings"]["target_queue_us"]
    t_load = first(run, "load_start")
    assert t_load is not None
    t_over = first(run, "metric_over_target", t_load)
    t_up = first(run, "scale_up_decided", t_load)
    assert t_over is not None, run["events"]
    assert t_up is not None, run["events"]
    assert t_load <= t_over <= t_up
    # before the load the HPA's metric was under the target; some sample after the load start is over it
    assert all((s["metric_us"] or 0.0) <= target for s in run["samples"] if s["t"] < t_load)
    assert any((s["metric_us"] or 0.0) > target for s in run["samples"] if t_load <= s["t"] <= t_up + 1)
    assert max(s["hpa_current"] for s in run["samples"]) == 2
    assert all(s["hpa_current"] <= 2 for s in run["samples"])


def test_the_new_pod_gets_requests_through_nginx(run: Dict[str, Any]) -> None:
    t_up = first(run, "scale_up_decided")
    assert t_up is not None
    new_pod = next(e["detail"] for e in run["events"] if e["event"] == "pod_started" and e["t"] >= t_up)
    t_ready = first(run, "pod_ready", t_up, new_pod)
    t_dns = first(run, "pod_in_dns", t_up, new_pod)
    t_req = first(run, "first_request_new_pod", t_up, new_pod)
    assert t_ready is not None, run["events"]
    assert t_dns is not None, run["events"]
    assert t_req is not None, run["events"]
    assert t_up <= t_ready <= t_dns <= t_req
    served = max(s["requests"].get(new_pod, 0) for s in run["samples"])
    assert served >= 10, f"the new pod {new_pod} served {served} requests"
    stages = {s["stage"]: s["seconds"] for s in run["stages"]}
    assert len(stages) == 5, stages
    assert all(v is not None and v >= 0 for v in stages.values()), stages


def test_scale_down_after_the_load_stops(run: Dict[str, Any]) -> None:
    t_up = first(run, "scale_up_decided")
    assert t_up is not None
    t_down = first(run, "scale_down_decided", t_up)
    assert t_down is not None, run["events"]
    # the pod removed leaves DNS before it stops (the EndpointSlice first, then preStop, then SIGTERM)
    pod = next(e["detail"] for e in run["events"] if e["event"] == "pod_removed_from_dns" and e["t"] >= t_down)
    t_out = first(run, "pod_removed_from_dns", t_down, pod)
    t_stop = first(run, "pod_stopped", t_down, pod)
    assert t_out is not None
    assert t_stop is not None
    assert t_out <= t_stop
    assert run["samples"][-1]["hpa_current"] == 1
    assert run["samples"][-1]["ready_pods"] == 1


def test_the_report_renders(run: Dict[str, Any], tmp_path: Path) -> None:
    result = write_report(tmp_path / "report", run)
    names: List[str] = sorted(Path(f).name for f in result["files"])
    assert "report.md" in names
    assert "run.json" in names
    assert {"replicas.png", "latency.png", "requests.png"} <= set(names)
    for name in names:
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert result["summary"]["failed_requests"] == 0
    assert result["summary"]["peak_replicas"] == 2
