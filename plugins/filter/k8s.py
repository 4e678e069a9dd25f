# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The k8s_namespace and k8s_restricted_security_context filters (documented in the .yml files of their names next to
this file)."""
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


# What the Pod Security Standards' restricted level requires of a pod, and of each container
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted): runAsNonRoot true, a non-zero
# runAsUser, seccompProfile RuntimeDefault (or Localhost), allowPrivilegeEscalation false, capabilities dropping ALL.
# readOnlyRootFilesystem is not required there; every container of the collection runs with it (writes go to mounts).
SECURITY_CONTEXT_LEVELS = ("pod", "container")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 2147483647


def k8s_restricted_security_context(level: Any, run_as: Any = None, fs_group: Any = None) -> Dict[str, Any]:
    found = []
    if level not in SECURITY_CONTEXT_LEVELS:
        found.append(f"input must be one of {', '.join(SECURITY_CONTEXT_LEVELS)}, got {level!r}")
    elif level == "pod" and not _is_id(run_as):
        found.append(f"run_as must be a non-root user id (1 to 2147483647) for a pod, got {run_as!r}")
    elif level == "container" and (run_as is not None or fs_group is not None):
        found.append("run_as and fs_group are pod settings, given for a container")
    if fs_group is not None and not _is_id(fs_group):
        found.append(f"fs_group must be a group id (1 to 2147483647), got {fs_group!r}")
    if found:
        raise AnsibleFilterError("k8s_restricted_security_context: " + "; ".join(found))
    if level == "container":
        return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    context: Dict[str, Any] = {"runAsNonRoot": True, "runAsUser": run_as, "runAsGroup": run_as}
    if fs_group is not None:
        context["fsGroup"] = fs_group
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"k8s_namespace": k8s_namespace, "k8s_restricted_security_context": k8s_restricted_security_context}
