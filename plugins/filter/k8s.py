# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The k8s_namespace filter (documented in k8s_namespace.yml next to this file)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._inputs import problems

# Pod Security Standards levels (k8s.io/pod-security-admission api.Level); every mode of the namespace gets the same one.
LEVELS = ("privileged", "baseline", "restricted")
MODES = ("enforce", "audit", "warn")


def k8s_namespace(name: Any, pod_security: Any, labels: Any = None) -> Dict[str, Any]:
    found = problems({"name": "namespace"}, {"name": name})
    if pod_security not in LEVELS:
        found.append(f"pod_security must be one of {', '.join(LEVELS)}, got {pod_security!r}")
    if labels is not None and not (isinstance(labels, Mapping) and all(isinstance(v, str) for v in labels.values())):
        found.append(f"labels must be a mapping of label names to strings, got {labels!r}")
    if found:
        raise AnsibleFilterError("k8s_namespace: " + "; ".join(found))
    metadata_labels = dict(labels or {})
    metadata_labels.update({f"pod-security.kubernetes.io/{mode}": pod_security for mode in MODES})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": metadata_labels}}


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"k8s_namespace": k8s_namespace}
