#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This is a virtual module, entirely implemented as an action plugin (plugins/action/loadtest_report.py).

from __future__ import annotations

DOCUMENTATION = r"""
module: loadtest_report
short_description: Write the report of a load test (Markdown, PNG plots, raw CSV and JSON) into a directory
version_added: 0.1.0
description:
  - Turns one load-test run (what C(playbooks/loadtest.yml) samples on a cluster, or what the one-machine demo
    records) into a report directory O(dest) on the controller.
  - Writes C(report.md) (settings, summary, load steps, time-to-capacity stages when the run has them, events,
    requests per pod, the plots and links to the raw files), C(replicas.png) (HPA current and desired replicas, ready
    pods and C(settings.max_replicas) of the run over time; queue time per pod and the HPA metric against its target; the
    load steps shaded), C(latency.png) (throughput and p50/p99 latency per step, one series per protocol),
    C(requests.png) (requests per second per pod), C(samples.csv) (one row per sample, pods as columns),
    C(perf-<protocol>.csv) (the steps of each protocol in perf_analyzer's C(-f) CSV format) and C(run.json) (the run
    as given).
  - The run is checked first and every problem is reported at once, each naming its field (for example
    C(run.samples[3].t must be a number)); nothing is written for an invalid run.
  - The time over target integrates over the samples; a sampling interval counts whole when the sample that starts it
    is over C(settings.target_queue_us) of the run. The HPA metric of a sample is its C(metric_us), else the mean of its
    per-pod C(queue_us). Requests per pod come from the cumulative per-pod counters; a counter that drops is taken
    to have restarted from 0, as Prometheus' C(increase) function does.
  - Files of an earlier report in O(dest) are overwritten; other files there are left alone.
  - Runs on the controller, in the process of C(ansible-playbook), whatever the host's connection.
requirements:
  - matplotlib (on the controller; in the execution environment under AWX)
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
options:
  run:
    description:
      - The run, a dictionary with C(title), C(source) (V(cluster) or V(demo)), C(started) (ISO 8601), C(settings)
        (with C(target_queue_us), C(min_replicas), C(max_replicas), C(model), C(metric)), C(samples) (C(t),
        C(hpa_current), C(hpa_desired), C(metric_us), C(queue_us) and C(requests) per pod, C(ready_pods)),
        C(steps) (C(protocol), C(concurrency), C(start), C(end), C(perf) with one perf_analyzer CSV row), C(events),
        optional C(stages) and C(failed_requests). Other keys are kept in C(run.json) and otherwise ignored.
      - Exactly one of O(run) and O(run_file) is required.
    type: dict
  run_file:
    description:
      - Path of a C(run.json) on the controller holding the run, instead of O(run). A relative path is taken from the
        directory C(ansible-playbook) was started in.
    type: path
  dest:
    description:
      - The report directory on the controller, created when missing. A relative path is taken from the directory
        C(ansible-playbook) was started in.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    details:
      - Checks the run, the destination and that matplotlib can be imported, and returns the summary and the files a
        real run would write, without writing anything.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - The report is written again on every run, and reported as changed.
seealso:
  - name: perf_analyzer measurement modes and CSV output
    description: The C(-f) CSV format of Triton's perf_analyzer.
    link: https://github.com/triton-inference-server/perf_analyzer/blob/main/docs/measurements_metrics.md
"""

EXAMPLES = r"""
- name: Write the report of a recorded run
  gpu_ops.mig_serving.loadtest_report:
    run_file: reports/loadtest-20260131T120000Z/run.json
    dest: reports/loadtest-20260131T120000Z
  register: __report

- name: Show where it is
  ansible.builtin.debug:
    msg: "Report: {{ __report.report }}; {{ __report.summary.seconds_over_target }} s over target"
"""

RETURN = r"""
report:
  description: Path of C(report.md).
  returned: always
  type: str
  sample: /home/ops/reports/loadtest-20260131T120000Z/report.md
files:
  description: Every file written (in check mode, that would be written), C(report.md) last.
  returned: always
  type: list
  elements: str
  sample: [/home/ops/reports/r/run.json, /home/ops/reports/r/samples.csv, /home/ops/reports/r/perf-http.csv,
           /home/ops/reports/r/replicas.png, /home/ops/reports/r/latency.png, /home/ops/reports/r/requests.png,
           /home/ops/reports/r/report.md]
summary:
  description: The numbers of the run, as C(report.md) shows them.
  returned: always
  type: dict
  contains:
    duration_s:
      description: Seconds from the first sample to the last.
      type: float
    samples:
      description: Number of samples.
      type: int
    target_queue_us:
      description: The HPA target of the metric, microseconds.
      type: float
    peak_replicas:
      description: The highest HPA current replica count sampled (null without any).
      type: int
    peak_replicas_t:
      description: When it was first sampled, seconds since the run started.
      type: float
    peak_ready_pods:
      description: The most pods published behind the load balancer at a sample.
      type: int
    max_replicas:
      description: The HPA's maximum replica count of the run's settings.
      type: int
    max_replicas_reached:
      description: Whether the HPA current replica count reached max_replicas.
      type: bool
    max_replicas_reached_t:
      description: When it first did, seconds since the run started (null if never).
      type: float
    peak_metric_us:
      description: The highest HPA metric value sampled, microseconds.
      type: float
    seconds_over_target:
      description: Seconds the HPA metric stayed above the target.
      type: float
    first_over_target_t:
      description: When the metric was first sampled above the target (null if never).
      type: float
    failed_requests:
      description: Requests that failed during the run.
      type: int
    requests_total:
      description: Requests served by all pods during the run.
      type: int
    requests_per_pod:
      description: Requests each pod served during the run.
      type: dict
    request_share:
      description: Each pod's share of the requests, 0 to 1.
      type: dict
    steps:
      description: Per load step, C(protocol), C(concurrency), C(start), C(end), C(inferences_per_s), C(p50_ms), C(p99_ms).
      type: list
      elements: dict
    stages:
      description: The run's time-to-capacity stages, C(stage) and C(seconds).
      type: list
      elements: dict
    time_to_capacity_s:
      description: The sum of the stages' seconds (null without stages or when one is unknown).
      type: float
  sample:
    seconds_over_target: 10.0
    peak_replicas: 2
    max_replicas_reached: true
    failed_requests: 0
"""
