# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one-machine autoscaling loop (``make autoscale-demo``): what stands in for Kubernetes and for perf_analyzer.

- ``hpa``: the HPA controller's algorithm (autoscaling/v2, one Pods metric, AverageValue), pure, time injected.
- ``pods``: a Deployment stand-in: real Triton "pods" on 127.0.0.N, the kubelet's probes, the headless Service's DNS.
- ``loadgen``, ``loop``: the load generator with perf_analyzer's concurrency semantics, and the closed loop.

Test equipment only: nothing here ships in a role. See README.md.
"""
