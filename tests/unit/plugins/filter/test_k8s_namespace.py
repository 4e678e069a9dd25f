# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The k8s_namespace filter: one Pod Security level for every admission mode, bad input refused by name."""
from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.filter.k8s import k8s_namespace, k8s_restricted_security_context


def test_namespace_with_labels_and_one_level_for_every_mode() -> None:
    ns = k8s_namespace("triton", "restricted", {"app.kubernetes.io/part-of": "serving"})
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton", "labels": {
        "app.kubernetes.io/part-of": "serving",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted"}}}


def test_the_level_overrides_a_pod_security_label_given_in_labels() -> None:
    ns = k8s_namespace("gpu", "privileged", {"pod-security.kubernetes.io/warn": "restricted"})
    assert set(ns["metadata"]["labels"].values()) == {"privileged"}


@pytest.mark.parametrize(("name", "level", "labels", "message"), [
    ("Triton", "restricted", None, "name: 'Triton' is not an RFC 1123 DNS label"),
    ("triton", "strict", None, "pod_security must be one of privileged, baseline, restricted, got 'strict'"),
    ("triton", "baseline", {"a": 1}, "labels must be a mapping of label names to strings"),
    ("triton", "baseline", ["a"], "labels must be a mapping"),
])
def test_bad_input_is_refused_naming_it(name: str, level: str, labels: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match="k8s_namespace: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        k8s_namespace(name, level, labels)


def test_restricted_pod_security_context_with_and_without_fs_group() -> None:
    assert k8s_restricted_security_context("pod", 1000, fs_group=1000) == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert "fsGroup" not in k8s_restricted_security_context("pod", 1000)


def test_restricted_container_security_context() -> None:
    assert k8s_restricted_security_context("container") == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize(("level", "run_as", "fs_group", "message"), [
    ("init", 1000, None, "input must be one of pod, container, got 'init'"),
    ("pod", None, None, "run_as must be a non-root user id"),
    ("pod", 0, None, "run_as must be a non-root user id .* got 0"),
    ("pod", True, None, "run_as must be a non-root user id"),
    ("pod", "1000", None, "run_as must be a non-root user id"),
    ("pod", 1000, -1, "fs_group must be a group id"),
    ("container", 1000, None, "run_as and fs_group are pod settings"),
])
def test_bad_security_context_input_is_refused_naming_it(level: Any, run_as: Any, fs_group: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match="k8s_restricted_security_context: .*" + message.replace("(", r"\(")):
        k8s_restricted_security_context(level, run_as, fs_group)
