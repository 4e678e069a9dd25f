# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on Node Feature Discovery (each documented in its own .yml next to this file): what a cluster runs of it, and
whether the NVIDIA device plugin chart deploys it. Bad input becomes an AnsibleFilterError starting with the filter's name."""
from __future__ import annotations

from typing import Any, Callable, Dict

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nfd import NfdError, decision, running


def nfd_running(crd: Any, workloads: Any = None, namespace: Any = "", release: Any = "") -> Dict[str, Any]:
    if not isinstance(namespace, str) or not isinstance(release, str):
        raise AnsibleFilterError(f"nfd_running: namespace and release must be strings (the chart's own release), not {namespace!r}, {release!r}")
    try:
        return running(crd, workloads, namespace, release)
    except NfdError as exc:
        raise AnsibleFilterError(f"nfd_running: {exc}") from None


def nfd_decision(found: Any, enabled: Any = "auto", gfd: Any = True) -> Dict[str, Any]:
    if not isinstance(gfd, bool):
        raise AnsibleFilterError(f"nfd_decision: gfd must be true or false (whether GPU feature discovery is deployed), not {gfd!r}")
    try:
        return decision(found, enabled, gfd)
    except NfdError as exc:
        raise AnsibleFilterError(f"nfd_decision: {exc}") from None


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"nfd_running": nfd_running, "nfd_decision": nfd_decision}
