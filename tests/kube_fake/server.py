# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small in-memory Kubernetes API server for tests (HTTPS, bearer token, real wire formats).

It serves what ``kubernetes.core.k8s`` (server-side apply) and ``kubernetes.core.k8s_info`` call through the
official ``kubernetes`` Python client: discovery, GET/LIST, POST, PUT, PATCH (apply, merge, strategic, JSON
patch) and DELETE of a fixed set of built-in resources and of the custom resources of the CRDs it holds, with
errors as ``Status`` objects, server-side apply field ownership (``metadata.managedFields``) and conflicts, schema
validation, immutable fields and Pod Security admission. See README.md next to this file for the rules it
reproduces and the ones it does not.

    with FakeKube() as kube:
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"}, "status": {...}})
        run_ansible(kubeconfig=kube.kubeconfig_path)
        assert any(r.content_type == "application/apply-patch+yaml" for r in kube.requests)
"""
from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import admission as psa
from .crds import (
    DEFAULT_EXTRA_LABEL_NS,
    NODE_FEATURE_KEY,
    apply_node_labels,
    crd_status,
    is_qualified_name,
    is_valid_label_value,
    node_labels,
    served_versions,
    version_priority,
)
from .jobs import run_job
from .metrics import MetricError, MetricsAdapter, hpa_status

if TYPE_CHECKING:
    from tests import k8s_schemas
else:
    try:  # imported as tests.kube_fake (python -m tests.kube_fake)
        from .. import k8s_schemas
    except ImportError:  # tests/ on sys.path (pytest, python tests/kube_fake/__main__.py)
        import k8s_schemas

Obj = Dict[str, Any]
FieldPath = Tuple[str, ...]

KUBE_VERSION = "v1.31.4"
MAX_BODY = 3 * 1024 * 1024  # the API server's request body limit (3 MiB)
CONNECTION_TIMEOUT_S = 30.0  # idle keep-alive connections and TLS handshakes are dropped after this
UPSTREAM_TIMEOUT_S = 10.0  # a service-proxy request to a backend (the metrics adapter's Prometheus queries: metrics.py, the same)
# stop() joins every thread within this: a connection ends as soon as its socket is shut down, a handler waiting on a
# backend within UPSTREAM_TIMEOUT_S
STOP_TIMEOUT_S = 15.0

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
VERBS = ["create", "delete", "get", "list", "patch", "update"]  # no watch, no deletecollection: not served


@dataclass(frozen=True)
class ResourceType:
    """One served resource, as discovery advertises it."""

    group: str
    version: str
    name: str
    singular: str
    kind: str
    namespaced: bool
    short_names: Tuple[str, ...] = ()
    has_status: bool = False  # status is a subresource: the main resource ignores writes to it
    has_generation: bool = False  # metadata.generation counts spec changes
    custom: bool = False  # a custom resource: served while its CRD exists, validated against the CRD's schema
    subresources: Tuple[Tuple[str, str, str, Tuple[str, ...]], ...] = ()  # (name, group/version, kind, verbs) served below an object

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name the API server uses in messages: "configmaps", "deployments.apps"."""
        return f"{self.name}.{self.group}" if self.group else self.name

    def discovery(self) -> Obj:
        entry: Obj = {"name": self.name, "singularName": self.singular, "namespaced": self.namespaced, "kind": self.kind, "verbs": list(VERBS)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry

    def discovery_subresources(self) -> List[Obj]:
        out: List[Obj] = []
        for sub, group_version, kind, verbs in self.subresources:
            group, _slash, version = group_version.rpartition("/")
            out.append({"name": f"{self.name}/{sub}", "singularName": "", "namespaced": self.namespaced, "group": group, "version": version,
                        "kind": kind, "verbs": list(verbs)})
        return out


RESOURCES: Tuple[ResourceType, ...] = (
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "events", "event", "Event", True, ("ev",)),
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), has_status=True),
    ResourceType("", "v1", "nodes", "node", "Node", False, ("no",), has_status=True),
    ResourceType("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", True, ("pvc",), has_status=True),
    ResourceType("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", False, ("pv",), has_status=True),
    ResourceType("", "v1", "pods", "pod", "Pod", True, ("po",), has_status=True,
                 subresources=(("eviction", "policy/v1", "Eviction", ("create",)), ("log", "v1", "Pod", ("get",)))),
    ResourceType("", "v1", "secrets", "secret", "Secret", True),
    ResourceType("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    ResourceType("", "v1", "services", "service", "Service", True, ("svc",), has_status=True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", False,
                 ("crd", "crds"), has_status=True, has_generation=True),
    ResourceType("apiregistration.k8s.io", "v1", "apiservices", "apiservice", "APIService", False, has_status=True),
    ResourceType("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ("ds",), has_status=True, has_generation=True),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",), has_status=True, has_generation=True),
    ResourceType("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",), has_status=True, has_generation=True),
    ResourceType("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, ("sts",), has_status=True, has_generation=True),
    ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", True, ("hpa",),
                 has_status=True),
    ResourceType("batch", "v1", "cronjobs", "cronjob", "CronJob", True, ("cj",), has_status=True, has_generation=True),
    ResourceType("batch", "v1", "jobs", "job", "Job", True, (), has_status=True, has_generation=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", True, ("netpol",), has_generation=True),
    ResourceType("node.k8s.io", "v1", "runtimeclasses", "runtimeclass", "RuntimeClass", False),
    ResourceType("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", True, ("pdb",), has_status=True,
                 has_generation=True),
)
GROUPS: Tuple[str, ...] = ("apiextensions.k8s.io", "apiregistration.k8s.io", "apps", "autoscaling", "batch", "networking.k8s.io", "node.k8s.io",
                           "policy")
GROUP_VERSIONS: Dict[str, str] = {r.group: r.version for r in RESOURCES if r.group}  # one served version per built-in group

# metadata the API server sets or that identifies the object: never part of a manager's field set
_UNOWNED_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apiserver names.SimpleNameGenerator's alphabet


class ApiError(Exception):
    """An error answered as a ``Status`` object (k8s.io/apimachinery/pkg/api/errors)."""

    def __init__(self, code: int, reason: str, message: str, details: Optional[Obj] = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message}
        if self.reason:  # StatusReasonUnknown is "" and omitted
            body["reason"] = self.reason
        body["details"] = self.details if self.details is not None else {}
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str) -> Obj:
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.name
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def modified_conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again", _details(rt, name))


def invalid(kind: str, group: str, name: str, causes: List[Obj]) -> ApiError:
    """422 Invalid, as errors.NewInvalid words it: `Kind "name" is invalid: field: message`."""
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: Obj = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = causes
    return ApiError(422, "Invalid", f'{kind}{"." + group if group else ""} "{name}" is invalid: {joined}', details)


def forbidden(resource: str, name: str, message: str) -> ApiError:
    """errors.NewForbidden: `pods "x" is forbidden: <reason>`."""
    return ApiError(403, "Forbidden", f'{resource} "{name}" is forbidden: {message}', {"name": name, "kind": resource.split(".", 1)[0]})


_REQUEST = threading.local()  # per handler thread: the warnings of the request being answered


def warn(text: str) -> None:
    """Add a warning to the answer of the request being served (a ``Warning: 299 - "<text>"`` header, deduplicated);
    outside a request (seeding, controllers started by a test) it is dropped."""
    warnings: Optional[List[str]] = getattr(_REQUEST, "warnings", None)
    if warnings is not None and text not in warnings:
        warnings.append(text)


def warning_header(text: str) -> str:
    """k8s.io/apimachinery/pkg/util/net NewWarningHeader(299, "-", text): the text quoted, `"` and `\\` escaped."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


METHOD_NOT_ALLOWED = ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
PATH_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (recorded after it was answered)."""

    method: str
    path: str
    query: Dict[str, List[str]]
    content_type: Optional[str]
    field_manager: Optional[str]
    status: int
    body: Any = None
    user_agent: Optional[str] = None
    time: str = ""  # when it was answered, RFC 3339 UTC with microseconds
    warnings: Tuple[str, ...] = ()  # the Warning headers' texts answered with it
    # the Authorization header's scheme ("Bearer", "Basic"; never the credential); None without the header
    auth_scheme: Optional[str] = None
    # the impersonation headers as sent, in order: ("Impersonate-User", name), one ("Impersonate-Group", group) per header
    impersonate: Tuple[Tuple[str, str], ...] = ()

    def to_json(self) -> Obj:
        """The record as one line of --requests-out: method, path, query, content_type, field_manager, user_agent, status, body, time,
        warnings when the answer carried any, impersonate when the request impersonated."""
        record: Obj = {"time": self.time, "method": self.method, "path": self.path, "query": self.query, "content_type": self.content_type,
                       "field_manager": self.field_manager, "user_agent": self.user_agent, "status": self.status, "body": self.body}
        if self.warnings:
            record["warnings"] = list(self.warnings)
        if self.impersonate:
            record["impersonate"] = [list(pair) for pair in self.impersonate]
        return record


# ---------------------------------------------------------------------------------------------------------------
# Field paths, managed fields and server-side apply


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _leaves(obj: Obj, prefix: FieldPath = ()) -> Dict[FieldPath, Any]:
    """Leaf paths of an object: scalars, lists (atomic here) and empty maps."""
    out: Dict[FieldPath, Any] = {}
    for key, value in obj.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path))
        else:
            out[path] = value
    return out


def _ownable(rt: ResourceType, obj: Obj, subresource: str = "") -> Obj:
    """The part of an object that field managers own: no type/identity metadata; status only through its subresource."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for key in _UNOWNED_META:
            meta.pop(key, None)
        if not meta:
            body.pop("metadata")
    if subresource == "status":
        return {"status": body["status"]} if "status" in body else {}
    if rt.has_status:
        body.pop("status", None)
    return body


def _get(obj: Any, path: FieldPath) -> Tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _set(obj: Obj, path: FieldPath, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    if value == {} and isinstance(obj.get(path[-1]), dict):
        return  # an empty map in an applied configuration merges into the live map
    obj[path[-1]] = copy.deepcopy(value)


def _delete(obj: Obj, path: FieldPath) -> None:
    """Remove a field, then the maps that it leaves empty (Go's omitempty drops them from the stored object)."""
    parents: List[Obj] = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 2, -1, -1):
        if parents[depth + 1]:
            break
        parents[depth].pop(path[depth], None)


def _related(a: FieldPath, b: FieldPath) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _path_string(path: FieldPath) -> str:
    return "".join(f".{key}" for key in path)  # fieldpath.Path.String() for map fields


def encode_fields(paths: Set[FieldPath]) -> Obj:
    """A field set as FieldsV1 (`{"f:metadata": {"f:labels": {"f:app": {}}}}`)."""
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    for path in paths:  # a path that is also a parent of another owned path is marked "."
        node = root
        for key in path:
            node = node[f"f:{key}"]
        if node and "." not in node:
            node["."] = {}
    return root


def decode_fields(fields: Obj, prefix: FieldPath = ()) -> Set[FieldPath]:
    out: Set[FieldPath] = set()
    for key, value in fields.items():
        if key == ".":
            out.add(prefix)
        elif key.startswith("f:"):
            path = (*prefix, key[2:])
            children = decode_fields(value, path) if isinstance(value, dict) and value else set()
            out.update(children or {path})
        elif prefix:  # k:/v:/i: list elements: this server keeps lists atomic, so the list is owned
            out.add(prefix)
    return out


@dataclass
class ManagedEntry:
    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    fields: Set[FieldPath]
    subresource: str = ""

    @classmethod
    def parse(cls, raw: Obj) -> ManagedEntry:
        return cls(str(raw.get("manager", "")), str(raw.get("operation", "Update")), str(raw.get("apiVersion", "")), str(raw.get("time", "")),
                   decode_fields(raw.get("fieldsV1") or {}), str(raw.get("subresource", "")))

    def same_key(self, other: ManagedEntry) -> bool:
        key = (self.manager, self.operation, self.subresource)
        if self.operation == "Update":  # Update entries are kept per API version, Apply entries are not
            return (*key, self.api_version) == (other.manager, other.operation, other.subresource, other.api_version)
        return key == (other.manager, other.operation, other.subresource)

    def printable(self) -> str:
        """printManager() of k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}" + (f" at {self.time}" if self.time else "")
        return text

    def encode(self) -> Obj:
        raw: Obj = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version, "time": self.time,
                    "fieldsType": "FieldsV1", "fieldsV1": encode_fields(self.fields)}
        if self.subresource:
            raw["subresource"] = self.subresource
        return raw


def _entries(obj: Optional[Obj]) -> List[ManagedEntry]:
    raw = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    return [ManagedEntry.parse(e) for e in raw if isinstance(e, dict)]


def _store_entries(obj: Obj, entries: List[ManagedEntry]) -> None:
    kept = sorted((e for e in entries if e.fields), key=lambda e: (e.operation, e.time, e.manager))
    meta = obj.setdefault("metadata", {})
    if kept:
        meta["managedFields"] = [e.encode() for e in kept]
    else:
        meta.pop("managedFields", None)


def conflict_error(conflicts: List[Tuple[ManagedEntry, FieldPath]]) -> ApiError:
    """errors.NewApplyConflict with the message of getConflictMessage() (managedfields/internal/conflict.go)."""
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {e.printable()}", "field": _path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.printable()}: {_path_string(path)}"
    else:
        by_manager: Dict[str, List[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(entry.printable(), []).append(_path_string(path))
        lines: List[str] = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {p}" for p in by_manager[manager])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def server_side_apply(rt: ResourceType, live: Optional[Obj], config: Obj, manager: str, force: bool) -> Obj:
    """Merge an applied configuration into the live object and move field ownership, or raise a 409 conflict.

    Maps merge field by field; scalars and lists are leaves (lists are atomic here). A leaf this apply would
    change that another manager owns is a conflict unless forced; a forced apply takes the field. Fields this
    manager applied before and no longer applies are removed unless another manager still owns them."""
    wanted = _leaves(_ownable(rt, config))
    entries = _entries(live)
    mine = next((e for e in entries if e.manager == manager and e.operation == "Apply" and not e.subresource), None)
    others = [e for e in entries if e is not mine]

    def changes(path: FieldPath, value: Any) -> bool:
        found, current = _get(live, path)
        if value == {}:
            return not (found and isinstance(current, dict))
        return not found or current != value

    conflicts: List[Tuple[ManagedEntry, FieldPath]] = []
    for entry in others:
        if entry.subresource:
            continue
        for owned in sorted(entry.fields):
            for path, value in wanted.items():
                covers = owned[: len(path)] == path and (len(owned) == len(path) or not isinstance(value, dict))
                inside = path[: len(owned)] == owned
                if (covers or inside) and changes(path, value):
                    conflicts.append((entry, owned))
                    break
    if conflicts and not force:
        raise conflict_error(conflicts)
    for entry, owned in conflicts:
        entry.fields.discard(owned)

    new = copy.deepcopy(live) if live is not None else {}
    still_owned = set().union(*(e.fields for e in others)) if others else set()
    for path in sorted(mine.fields if mine else set(), key=len, reverse=True):
        if path in wanted or any(_related(path, w) for w in wanted) or any(_related(path, o) for o in still_owned):
            continue
        _delete(new, path)
    for path, value in wanted.items():
        if value is None:
            _delete(new, path)
        else:
            _set(new, path, value)
    owned_now = {p for p, v in wanted.items() if v is not None}
    stamp = mine.time if mine is not None and mine.fields == owned_now else _now()
    others.append(ManagedEntry(manager, "Apply", rt.group_version, stamp, owned_now))
    _store_entries(new, others)
    return new


def track_update(rt: ResourceType, live: Optional[Obj], new: Obj, manager: str, subresource: str = "") -> None:
    """Record a non-apply write (create, update, patch): the writer takes every field it changed, without conflicts."""
    before = _leaves(_ownable(rt, live or {}, subresource))
    after = _leaves(_ownable(rt, new, subresource))
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    removed = {p for p in before if p not in after}
    entries = _entries(new)  # the writer's copy: the live entries, or what an update body sets
    for entry in entries:
        if entry.subresource == subresource:
            entry.fields = {f for f in entry.fields if not any(_related(f, p) for p in changed | removed)}
    probe = ManagedEntry(manager, "Update", rt.group_version, "", set(), subresource)
    mine = next((e for e in entries if e.same_key(probe)), None)
    if mine is None:
        mine = probe
        entries.append(mine)
    fields = (mine.fields | changed) - removed
    if fields != mine.fields or not mine.time:
        mine.time = _now()
    mine.fields = fields
    _store_entries(new, entries)


# ---------------------------------------------------------------------------------------------------------------
# Patches and selectors


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> List[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"json patch path {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch_parent(doc: Any, tokens: List[str]) -> Tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: /{'/'.join(tokens)}")
    return node, tokens[-1]


def json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)

    def read(path: str) -> Any:
        node: Any = doc
        for token in _pointer(path):
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise ApiError(422, "Invalid", f"doc is missing path: {path}")
        return node

    def remove(path: str) -> Any:
        parent, key = _json_patch_parent(doc, _pointer(path))
        if isinstance(parent, dict) and key in parent:
            return parent.pop(key)
        if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
            return parent.pop(int(key))
        raise ApiError(422, "Invalid", f"doc is missing path: {path}")

    def add(path: str, value: Any) -> None:
        parent, key = _json_patch_parent(doc, _pointer(path))
        if isinstance(parent, dict):
            parent[key] = value
        elif isinstance(parent, list) and (key == "-" or (key.isdigit() and int(key) <= len(parent))):
            parent.insert(len(parent) if key == "-" else int(key), value)
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: {path}")

    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise bad_request("invalid JSON patch operation")
        kind, path = op.get("op"), str(op["path"])
        if kind == "add":
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            remove(path)
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            add(path, remove(str(op.get("from"))))
        elif kind == "copy":
            add(path, copy.deepcopy(read(str(op.get("from")))))
        elif kind == "test":
            if read(path) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed: test failed")
        else:
            raise ApiError(422, "Invalid", f"Unexpected kind: {kind}")
    if not isinstance(doc, dict):
        raise bad_request("json patch did not produce an object")
    return doc


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


def _split_requirements(selector: str) -> List[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector(selector: str) -> Callable[[Dict[str, str]], bool]:
    """labels.Parse: =, ==, !=, in, notin, exists, !exists."""
    # each requirement as (key, operator, values); operators: exists, !, =, !=, in, notin
    requirements: List[Tuple[str, str, Set[str]]] = []
    for req in _split_requirements(selector):
        if m := re.fullmatch(rf"(!?)\s*({_KEY})", req):
            requirements.append((m.group(2), "!" if m.group(1) else "exists", set()))
        elif m := re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})", req):
            requirements.append((m.group(1), "!=" if m.group(3) == "!=" else "=", {m.group(4)}))
        elif m := re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^)]*)\)", req):
            requirements.append((m.group(1), m.group(3), {v.strip() for v in m.group(4).split(",")}))
        else:
            raise bad_request(f"unable to parse requirement: {req!r}")

    def matches(labels: Dict[str, str]) -> bool:
        for key, op, values in requirements:
            present = key in labels
            ok = {"exists": present, "!": not present, "=": present and labels.get(key) in values, "in": present and labels.get(key) in values,
                  "!=": labels.get(key) not in values, "notin": labels.get(key) not in values}[op]
            if not ok:
                return False
        return True

    return matches


# the field labels each kind's field-label conversion accepts beyond metadata.name/metadata.namespace, with their default
_FIELD_LABELS: Dict[str, Dict[str, str]] = {
    "Pod": {"spec.nodeName": "", "spec.restartPolicy": "", "spec.schedulerName": "", "spec.serviceAccountName": "", "spec.hostNetwork": "false",
            "status.phase": "", "status.podIP": "", "status.nominatedNodeName": ""},
    "Node": {"spec.unschedulable": "false"},
    "Namespace": {"status.phase": ""},
    "Secret": {"type": ""},
}


def _field_value(obj: Obj, name: str, default: str) -> str:
    found, value = _get(obj, tuple(name.split(".")))
    if not found or value is None:
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(selector: str, kind: str = "") -> Callable[[Obj], bool]:
    """fields.Parse, with the field labels the kind supports (pods: spec.nodeName, status.phase, ...; nodes: spec.unschedulable)."""
    supported = {"metadata.name": "", "metadata.namespace": "", **_FIELD_LABELS.get(kind, {})}
    tests: List[Callable[[Obj], bool]] = []
    for req in _split_requirements(selector):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise bad_request(f"invalid field selector: {req!r}")
        name, op, value = m.group(1), m.group(2), m.group(3).strip()
        if name not in supported:
            raise bad_request(f"field label not supported: {name}")

        def test(obj: Obj, n: str = name, v: str = value, neg: bool = op == "!=") -> bool:
            return (_field_value(obj, n, supported[n]) == v) != neg

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


class _NoTimestampLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it: timestamps stay strings."""


_NoTimestampLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _decode(body: bytes, content_type: str, yaml_ok: bool) -> Any:
    text = body.decode("utf-8", errors="replace")
    if yaml_ok:
        try:
            return yaml.load(text, Loader=_NoTimestampLoader)
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# Validation the API server writes by hand (pkg/apis/*/validation), for the kinds our roles render

_GO_JSON_KINDS = {"string": "string", "integer": "number", "number": "number", "boolean": "bool", "array": "array", "object": "object"}
_SMD_KINDS = {"integer": "numeric (int or float)", "number": "numeric (int or float)", "string": "string", "boolean": "bool", "array": "list",
              "object": "map"}
_LABEL_NAME_MESSAGE = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
                       "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LABEL_PREFIX_MESSAGE = ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
                         "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
                         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_VALUE_MESSAGE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                        "with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_APPS_WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet")
_IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"
# PersistentVolumeSpec fields that are not the volume source (PersistentVolumeSource is inlined in the spec)
_PV_NOT_SOURCE = ("accessModes", "capacity", "claimRef", "mountOptions", "nodeAffinity", "persistentVolumeReclaimPolicy", "storageClassName",
                  "volumeMode", "volumeAttributesClassName")


def _cause(reason: str, field: str, message: str) -> Obj:
    return {"reason": reason, "message": message, "field": field}


def _smd_message(finding: k8s_schemas.Finding) -> str:
    """structured-merge-diff's words for a field an applied configuration cannot carry."""
    if finding.kind == "unknown":
        return "field not declared in schema"
    wanted = finding.message.removeprefix("expected ").split(",")[0].split(" ")[0]
    expected = _SMD_KINDS.get(wanted, wanted)
    if expected.startswith("numeric"):
        return f"expected {expected}, got {finding.got}"
    return f"expected {expected}, got &value.valueUnstructured{{Value:{k8s_schemas.go_value(finding.value)}}}"


def go_selector(selector: Any) -> str:
    """A *metav1.LabelSelector as field.Invalid prints it (%#v of the dereferenced value)."""
    selector = selector if isinstance(selector, dict) else {}
    labels, expressions = selector.get("matchLabels"), selector.get("matchExpressions")
    labels_text = "map[string]string(nil)" if labels is None else k8s_schemas.go_value(labels) if labels else "map[string]string{}"
    if expressions is None:
        expressions_text = "[]v1.LabelSelectorRequirement(nil)"
    else:
        items = []
        for e in expressions:
            values = "[]string(nil)" if e.get("values") is None else k8s_schemas.go_value(list(e.get("values") or [])) if e.get("values") else "[]string{}"
            items.append(f'v1.LabelSelectorRequirement{{Key:{json.dumps(e.get("key", ""))}, Operator:{json.dumps(e.get("operator", ""))}, Values:{values}}}')
        expressions_text = "[]v1.LabelSelectorRequirement{" + ", ".join(items) + "}"
    return f"v1.LabelSelector{{MatchLabels:{labels_text}, MatchExpressions:{expressions_text}}}"


def _label_causes(labels: Any, field: str) -> List[Obj]:
    """ValidateLabels: every key a qualified name, every value a label value."""
    causes: List[Obj] = []
    for raw_key, value in (labels or {}).items() if isinstance(labels, dict) else ():
        key = str(raw_key)
        if not is_qualified_name(key):
            prefix, slash, _name = key.rpartition("/")
            message = _LABEL_PREFIX_MESSAGE if slash and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", prefix) \
                else _LABEL_NAME_MESSAGE
            causes.append(_cause("FieldValueInvalid", field, f"Invalid value: {json.dumps(key)}: {message}"))
        if isinstance(value, str) and not is_valid_label_value(value):
            causes.append(_cause("FieldValueInvalid", field, f"Invalid value: {json.dumps(value)}: {_LABEL_VALUE_MESSAGE}"))
    return causes


def _pod_spec_causes(spec: Any, field: str) -> List[Obj]:
    """validateContainers: a container needs an image (pods and pod templates)."""
    causes: List[Obj] = []
    if not isinstance(spec, dict):
        return causes
    for key in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(key) or []):
            if isinstance(container, dict) and not container.get("image"):
                causes.append(_cause("FieldValueRequired", f"{field}.{key}[{index}].image", "Required value"))
    return causes


def validate_object(rt: ResourceType, obj: Obj) -> List[Obj]:
    """The hand-written create and update validation kept here: labels, container images, an apps/v1 workload's selector
    matching its template (ValidateDeploymentSpec and friends), a CRD's name."""
    causes = _label_causes((obj.get("metadata") or {}).get("labels"), "metadata.labels")
    raw_spec = obj.get("spec")
    spec: Obj = raw_spec if isinstance(raw_spec, dict) else {}
    if rt.kind == "Pod" and not rt.custom:
        causes += _pod_spec_causes(spec, "spec")
    template_spec = psa.pod_template(rt.kind, obj) if rt.kind in psa.POD_CONTROLLERS and not rt.custom else None
    if template_spec is not None:
        field = "spec.jobTemplate.spec.template" if rt.kind == "CronJob" else "spec.template"
        causes += _label_causes(template_spec[0].get("labels"), f"{field}.metadata.labels")
        causes += _pod_spec_causes(template_spec[1], f"{field}.spec")
    if rt.kind in _APPS_WORKLOADS and rt.group == "apps" and isinstance(spec.get("selector"), dict):
        selector = spec["selector"]
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            causes.append(_cause("FieldValueInvalid", "spec.selector",
                                 f"Invalid value: {go_selector(selector)}: empty selector is invalid for {rt.kind.lower()}"))
        elif not selector_matches(selector, labels):
            causes.append(_cause("FieldValueInvalid", "spec.template.metadata.labels",
                                 f"Invalid value: {k8s_schemas.go_value(labels)}: `selector` does not match template `labels`"))
    if rt.kind == "CustomResourceDefinition":
        names = spec.get("names") or {}
        wanted = f"{names.get('plural', '')}.{spec.get('group', '')}"
        name = str((obj.get("metadata") or {}).get("name", ""))
        if name != wanted:
            causes.append(_cause("FieldValueInvalid", "metadata.name", f'Invalid value: {json.dumps(name)}: must be spec.names.plural+"."+spec.group'))
    return causes


def _immutable(field: str, value: Any) -> Obj:
    return _cause("FieldValueInvalid", field, f"Invalid value: {value}: field is immutable")


def _cluster_ips(service: Obj) -> List[str]:
    spec = service.get("spec") or {}
    ips = spec.get("clusterIPs")
    if isinstance(ips, list) and ips:
        return [str(ip) for ip in ips]
    return [str(spec["clusterIP"])] if spec.get("clusterIP") else []


def validate_update(rt: ResourceType, live: Obj, new: Obj) -> List[Obj]:
    """ValidateXUpdate: the fields that may not change (apps selectors, Service clusterIPs, immutable Secrets and
    ConfigMaps, a Secret's type, a PVC's spec, a PV's source and volumeMode, a Job's selector and template, a StatefulSet's
    spec outside the updatable fields)."""
    if rt.custom:
        return []
    old_spec, new_spec = live.get("spec") or {}, new.get("spec") or {}
    causes: List[Obj] = []
    selector_kind = (rt.group == "apps" and rt.kind in _APPS_WORKLOADS) or (rt.group == "batch" and rt.kind == "Job")
    if selector_kind and old_spec.get("selector") is not None and old_spec.get("selector") != new_spec.get("selector"):
        causes.append(_immutable("spec.selector", go_selector(new_spec.get("selector"))))
    if rt.kind == "StatefulSet":
        allowed = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds")
        if {k: v for k, v in old_spec.items() if k not in allowed} != {k: v for k, v in new_spec.items() if k not in allowed}:
            causes.append(_cause("FieldValueForbidden", "spec", "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                                 "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
    if rt.kind == "Job" and old_spec.get("template") != new_spec.get("template"):
        causes.append(_immutable("spec.template", json.dumps(new_spec.get("template"), sort_keys=True)))
    if rt.kind == "Job" and old_spec.get("completions") != new_spec.get("completions"):
        causes.append(_immutable("spec.completions", json.dumps(new_spec.get("completions"))))
    if rt.kind == "Service":
        old_ips, new_ips = _cluster_ips(live), _cluster_ips(new)
        types = (old_spec.get("type"), new_spec.get("type"))
        headless = old_ips == ["None"] and new_ips == ["None"]
        if "ExternalName" not in types and not headless and old_ips:
            if len(old_ips) == len(new_ips):
                causes += [_cause("FieldValueInvalid", f"spec.clusterIPs[{i}]", f"Invalid value: {k8s_schemas.go_value(new_ips)}: may not change once set")
                           for i, ip in enumerate(old_ips) if ip != new_ips[i]]
            elif len(old_ips) < len(new_ips) and new_ips[0] != old_ips[0]:
                causes.append(_cause("FieldValueInvalid", "spec.clusterIPs[0]", f"Invalid value: {k8s_schemas.go_value(new_ips)}: may not change once set"))
    if rt.kind in ("Secret", "ConfigMap") and live.get("immutable") is True:
        fields = ("data",) if rt.kind == "Secret" else ("data", "binaryData")
        if new.get("immutable") is not True:
            causes.append(_cause("FieldValueForbidden", "immutable", f"Forbidden: {_IMMUTABLE_WHEN_SET}"))
        causes += [_cause("FieldValueForbidden", f, f"Forbidden: {_IMMUTABLE_WHEN_SET}") for f in fields if (live.get(f) or {}) != (new.get(f) or {})]
    if rt.kind == "Secret" and (live.get("type") or "Opaque") != (new.get("type") or "Opaque"):
        causes.append(_immutable("type", json.dumps(new.get("type") or "")))
    if rt.kind == "PersistentVolumeClaim":
        bound = (live.get("status") or {}).get("phase") == "Bound"
        old_cmp, new_cmp = copy.deepcopy(old_spec), copy.deepcopy(new_spec)
        if bound:  # a bound claim may change its storage request (expansion)
            for spec in (old_cmp, new_cmp):
                spec.get("resources", {}).pop("requests", None)
        if old_cmp != new_cmp:
            causes.append(_cause("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation except resources.requests for bound claims\n"
                                 f"  old: {json.dumps(old_spec, sort_keys=True)}\n  new: {json.dumps(new_spec, sort_keys=True)}"))
    if rt.kind == "PersistentVolume":
        old_source = {k: v for k, v in old_spec.items() if k not in _PV_NOT_SOURCE}
        new_source = {k: v for k, v in new_spec.items() if k not in _PV_NOT_SOURCE}
        if old_source != new_source:
            causes.append(_cause("FieldValueForbidden", "spec.persistentvolumesource",
                                 "Forbidden: spec.persistentvolumesource is immutable after creation\n"
                                 f"  old: {json.dumps(old_source, sort_keys=True)}\n  new: {json.dumps(new_source, sort_keys=True)}"))
        if (old_spec.get("volumeMode") or "Filesystem") != (new_spec.get("volumeMode") or "Filesystem"):
            causes.append(_immutable("spec.volumeMode", json.dumps(new_spec.get("volumeMode"))))
    return causes


# ---------------------------------------------------------------------------------------------------------------
# The object store and the REST semantics


class Cluster:
    """In-memory objects with the API server's rules for create, read, update, patch, apply and delete."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: Dict[Tuple[str, str, str], Obj] = {}  # (resource key, namespace, name) -> object
        self.revision = 1
        self.pod_exit_seconds = 0.0  # how long a pod's containers take to stop after a graceful delete (the kubelet's part)
        self.terminations: Dict[Tuple[str, str, str], float] = {}  # (namespace, name, uid) of a terminating pod -> monotonic removal time
        self.controller_scale: Dict[Tuple[str, str], int] = {}  # (namespace, controller uid or kind/name) -> most pods seen at once
        self.listeners: List[Callable[[], None]] = []  # called (under the lock) after every stored change
        self.kube_version = KUBE_VERSION
        self.custom_types: Tuple[ResourceType, ...] = ()  # the custom resources of the stored CRDs, one per served version
        self.crd_schemas: Dict[Tuple[str, str], Optional[Obj]] = {}  # (group/version, kind) -> openAPIV3Schema
        self.refusals: Dict[Tuple[str, str, str], Obj] = {}  # (kind, namespace, name) -> the pod create a controller could not make
        self._workload_state: Dict[Tuple[str, str, str], str] = {}  # what each controller last evaluated (no repeat, no churn)
        self.nfd_master = False  # nfd-master's part: NodeFeature objects to node labels
        self.nfd_namespace = "node-feature-discovery"
        self.nfd_extra_label_ns: Tuple[str, ...] = DEFAULT_EXTRA_LABEL_NS
        self.nfd_deny_label_ns: Tuple[str, ...] = ()
        self._dry_depth = 0
        self._settling = False
        self.pod_logs: Dict[Tuple[str, str, str], str] = {}  # (namespace, pod, container) -> its log (the Job hook writes them)

    @staticmethod
    def key(rt: ResourceType) -> str:
        return f"{rt.group}/{rt.name}"

    # -- what is served: the built-in resources and the custom resources of the stored CRDs

    def served(self) -> Tuple[ResourceType, ...]:
        return RESOURCES + self.custom_types

    def resource_for(self, api_version: str, kind: str) -> ResourceType:
        for rt in self.served():
            if rt.group_version == api_version and rt.kind == kind:
                return rt
        raise ValueError(f"kube_fake does not serve {api_version} {kind}")

    def groups(self) -> List[Tuple[str, List[str]]]:
        """Every served API group with its versions, preferred first: the built-in groups, then those of the CRDs by name."""
        out: List[Tuple[str, List[str]]] = [(g, [GROUP_VERSIONS[g]]) for g in GROUPS]
        custom: Dict[str, List[str]] = {}
        for rt in self.custom_types:
            versions = custom.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for group in sorted(custom):
            if group in GROUP_VERSIONS:
                continue  # a CRD cannot add to a built-in group (the API server refuses such names)
            out.append((group, sorted(custom[group], key=version_priority)))
        return out

    def _sync_crds(self) -> None:
        """The apiextensions controllers: serve the custom resources of every stored CRD (each served version), stop serving
        those of deleted CRDs and delete their objects, as the CRD finalizer does."""
        crds = [o for (res, _ns, _n), o in sorted(self.objects.items()) if res == "apiextensions.k8s.io/customresourcedefinitions"]
        types: List[ResourceType] = []
        schemas: Dict[Tuple[str, str], Optional[Obj]] = {}
        for crd in crds:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            for version in served_versions(crd):
                subresources = version.get("subresources") or {}
                rt = ResourceType(str(spec.get("group", "")), str(version.get("name", "")), str(names.get("plural", "")),
                                  str(names.get("singular") or str(names.get("kind", "")).lower()), str(names.get("kind", "")),
                                  spec.get("scope") != "Cluster", tuple(names.get("shortNames") or ()), has_status="status" in subresources,
                                  has_generation=True, custom=True)
                types.append(rt)
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                schemas[(rt.group_version, rt.kind)] = schema if isinstance(schema, dict) else None
        self.custom_types = tuple(types)
        self.crd_schemas = schemas
        served = {self.key(rt) for rt in self.served()}
        for key in [k for k in self.objects if k[0] not in served]:
            del self.objects[key]

    def _bump(self) -> str:
        self.revision += 1
        return str(self.revision)

    def get(self, rt: ResourceType, namespace: str, name: str) -> Optional[Obj]:
        with self.lock:
            obj = self.objects.get((self.key(rt), namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and (self.key(NAMESPACES), "", namespace) not in self.objects:
            raise not_found(NAMESPACES, namespace)

    # -- decoding, validation and admission of a write, in the API server's order

    def _admit(self, rt: ResourceType, live: Optional[Obj], new: Obj, namespace: str, field_validation: str,
               apply_config: Optional[Obj] = None) -> Obj:
        """Run what the API server runs between reading a write and storing it; return the object to store.

        1. decoding: an applied configuration must fit the schema (structured-merge-diff, 500 as in 1.31); unknown fields
           of a create, update or patch are refused (fieldValidation=Strict, 400), warned about (Warn, the default) or
           dropped silently (Ignore), and dropped from what is stored; a wrong JSON type of a built-in kind is 400;
        2. validation (422 Invalid, every cause at once): required fields, enums, a custom resource's schema, the
           hand-written rules kept here (validate_object) and, for an update, the immutable fields (validate_update);
        3. validating admission: Pod Security (403 for a pod, warnings for a pod controller, namespace label checks).
        """
        name = str((new.get("metadata") or {}).get("name", ""))
        if apply_config is not None:
            typed = self._review(rt, apply_config).of("unknown", "type")
            if typed:
                texts = [f"{f.smd}: {_smd_message(f)}" for f in typed]
                joined = texts[0] if len(texts) == 1 else "errors:\n  " + "\n  ".join(texts)
                gvk = f"{rt.group}/{rt.version}, Kind={rt.kind}"
                raise ApiError(500, "", f"failed to create typed patch object ({namespace}/{name}; {gvk}): {joined}")
        review = self._review(rt, new)
        unknown = review.of("unknown")
        if unknown and apply_config is None:
            if field_validation == "Strict":
                raise bad_request("strict decoding error: " + ", ".join(f'unknown field "{f.field}"' for f in unknown))
            if field_validation == "Warn":
                for finding in unknown:
                    warn(f'unknown field "{finding.field}"')
        new = review.pruned
        causes: List[Obj] = []
        for finding in review.of("type"):
            if not rt.custom:
                raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '
                                  f"{_GO_JSON_KINDS.get(finding.got, finding.got)} into Go struct field {finding.go_struct}.{finding.json} "
                                  f"of type {finding.go_type}")
            causes.append(_cause("FieldValueTypeInvalid", finding.field, finding.message))
        reasons = {"required": "FieldValueRequired", "enum": "FieldValueNotSupported", "invalid": "FieldValueInvalid"}
        causes += [_cause(reasons[f.kind], f.field, f.message) for f in review.of("required", "enum", "invalid")]
        causes += validate_object(rt, new)
        if live is not None:
            causes += validate_update(rt, live, new)
        if rt.kind == "Namespace":
            causes += self._namespace_labels(live, new)
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)
        self._pod_security(rt, live, new, namespace, name)
        return new

    def _review(self, rt: ResourceType, obj: Obj) -> k8s_schemas.Review:
        version = self.kube_version.lstrip("v")
        obj = {**obj, "apiVersion": rt.group_version, "kind": rt.kind}  # a merged apply result carries neither
        if rt.custom:
            return k8s_schemas.review(obj, version, self.crd_schemas.get((rt.group_version, rt.kind)) or {"type": "object",
                                                                                                          "x-kubernetes-preserve-unknown-fields": True})
        return k8s_schemas.review(obj, version)

    def _namespace_labels(self, live: Optional[Obj], new: Obj) -> List[Obj]:
        """Admission.ValidateNamespace: invalid pod-security labels are refused on create, and on update when the error
        changed; an update that tightens the enforce level warns about the existing pods it would refuse."""
        labels = (new.get("metadata") or {}).get("labels") or {}
        policy, errors = psa.policy_to_evaluate(labels)
        if live is None:
            return errors
        old_policy, old_errors = psa.policy_to_evaluate((live.get("metadata") or {}).get("labels") or {})
        if errors and (not old_errors or [e["message"] for e in errors] != [e["message"] for e in old_errors]):
            return errors
        old_level, new_level = old_policy.enforce, policy.enforce
        if new_level == old_level or new_level.level == "privileged":
            return []
        if new_level.minor == old_level.minor and psa.LEVELS.index(new_level.level) <= psa.LEVELS.index(old_level.level):
            return []
        name = str(new["metadata"].get("name", ""))
        for text in psa.namespace_warnings(name, new_level, self._pods(name)):
            warn(text)
        return []

    def _pod_security(self, rt: ResourceType, live: Optional[Obj], new: Obj, namespace: str, name: str) -> None:
        """Admission.ValidatePod / ValidatePodController against the namespace's labels."""
        if rt.kind != "Pod" and rt.kind not in psa.POD_CONTROLLERS:
            return
        if rt.custom or not rt.namespaced:
            return
        ns_obj = self.objects.get((self.key(NAMESPACES), "", namespace)) or {}
        policy, _errors = psa.policy_to_evaluate((ns_obj.get("metadata") or {}).get("labels") or {})
        privileged = [lv.level == "privileged" for lv in (policy.enforce, policy.audit, policy.warn)]
        if all(privileged) or (rt.kind != "Pod" and all(privileged[1:])):
            return
        if rt.kind == "Pod" and live is not None and not psa.significant_pod_update(new, live):
            return
        template = psa.pod_template(rt.kind, new)
        if template is None:
            return
        decision = psa.review_pod(policy, template[0], template[1], enforce=rt.kind == "Pod")
        if decision.forbidden is not None:
            raise forbidden(rt.qualified, name, decision.forbidden)
        for text in decision.warnings:
            warn(text)

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        if rt.kind == "Namespace":
            if len(name) > 63 or not _LABEL_RE.match(name):
                message = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
                           "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
                raise invalid(rt.kind, rt.group, name, [{"reason": "FieldValueInvalid", "message": f'Invalid value: "{name}": {message}',
                                                         "field": "metadata.name"}])
        elif rt.kind == "Service" and not rt.custom and (len(name) > 63 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)):
            # ValidateServiceName = apimachineryvalidation.NameIsDNS1035Label (kubernetes pkg/apis/core/validation/validation.go;
            # the message: k8s.io/apimachinery/pkg/util/validation IsDNS1035Label)
            message = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, "
                       "and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                       "'[a-z]([-a-z0-9]*[a-z0-9])?')")
            raise invalid(rt.kind, rt.group, name, [{"reason": "FieldValueInvalid", "message": f'Invalid value: "{name}": {message}',
                                                     "field": "metadata.name"}])
        elif len(name) > 253 or not _SUBDOMAIN_RE.match(name):
            message = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and "
                       "end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
                       "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
            raise invalid(rt.kind, rt.group, name, [{"reason": "FieldValueInvalid", "message": f'Invalid value: "{name}": {message}',
                                                     "field": "metadata.name"}])

    @staticmethod
    def _check_identity(rt: ResourceType, obj: Any, namespace: str, name: Optional[str]) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if name is not None and meta.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        obj_ns = meta.get("namespace")
        if rt.namespaced and obj_ns not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        return obj

    def _finish_write(self, rt: ResourceType, live: Optional[Obj], new: Obj, namespace: str, name: str, subresource: str = "") -> Obj:
        """Apply the resource's strategy to a new state and store it; a no-op write changes nothing, like etcd's.

        subresource: "" writes through the main resource (status kept), "status" only the status, "*" both (seeding)."""
        new["apiVersion"], new["kind"] = rt.group_version, rt.kind
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for key, value in list(meta.items()):
            if value is None:
                meta.pop(key)
        if rt.kind == "Secret" and isinstance(new.get("stringData"), dict):
            data = new.setdefault("data", {})
            for key, value in new.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if live is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if rt.has_generation:
                meta["generation"] = 1
            if rt.kind == "Namespace":  # namespaceStrategy.PrepareForCreate
                spec = new["spec"] = new.get("spec") or {}
                finalizers = spec.get("finalizers") or []
                spec["finalizers"] = finalizers if "kubernetes" in finalizers else [*finalizers, "kubernetes"]
                new["status"] = {"phase": "Active"}
            elif rt.kind == "Secret":
                new.setdefault("type", "Opaque")
            elif rt.kind == "Pod":  # a seeded pod keeps its status; one created through the API is run by a kubelet at once
                if subresource != "*" or not isinstance(new.get("status"), dict) or not new["status"]:
                    new["status"] = _kubelet_pod_status(new)
            elif rt.custom:
                if rt.has_status and subresource != "*":  # the status subresource: a create does not set it
                    new.pop("status", None)
            elif rt.kind == "PersistentVolume":  # the PV controller marks a new volume Available at once
                new["status"] = {"phase": "Available"}
            elif rt.kind == "PersistentVolumeClaim":  # no binder runs here: a claim stays Pending
                new["status"] = {"phase": "Pending"}
            elif rt.has_status and rt.kind != "Node":  # nodes, like kubelet registrations, may be created with their status
                new["status"] = {}
        else:
            for key in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if key in live["metadata"]:
                    meta[key] = live["metadata"][key]
                else:
                    meta.pop(key, None)
            if subresource == "status":
                new = {**copy.deepcopy(live), "status": new.get("status", {}), "metadata": meta}
            elif rt.has_status and subresource != "*":
                if "status" in live:
                    new["status"] = copy.deepcopy(live["status"])
                else:
                    new.pop("status", None)
            if rt.kind == "Namespace" and subresource != "status":  # namespaceStrategy.PrepareForUpdate
                new["spec"] = {**(new.get("spec") or {}), "finalizers": copy.deepcopy((live.get("spec") or {}).get("finalizers", []))}
                if not new["spec"]["finalizers"]:
                    del new["spec"]["finalizers"]
            if rt.has_generation and _spec(new) != _spec(live):
                meta["generation"] = int(live["metadata"].get("generation", 1)) + 1
        if rt.kind == "Namespace":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if rt.kind == "CustomResourceDefinition" and subresource != "status":  # the naming and establishing controllers, at once
            new["status"] = crd_status(new, live, _now())
        if rt.kind in ("Node", "Pod"):  # NodeSpec/PodSpec are structs: always serialized, "spec": {} at least
            node_spec = new.get("spec")
            if not isinstance(node_spec, dict):
                node_spec = new["spec"] = {}
            if rt.kind == "Node" and node_spec.get("unschedulable") is False:
                del node_spec["unschedulable"]  # `json:"unschedulable,omitempty"`: false is not serialized
        meta["resourceVersion"] = live["metadata"].get("resourceVersion", "") if live is not None else ""
        new = _canonical(new)
        if live is not None and new == live:
            return copy.deepcopy(live)
        new["metadata"]["resourceVersion"] = self._bump()
        self.objects[(self.key(rt), namespace if rt.namespaced else "", name)] = new
        self._after_write(rt, namespace, name)
        return copy.deepcopy(new)

    # -- what controllers and kubelets do after a write, done at once

    def _after_write(self, rt: ResourceType, namespace: str, name: str) -> None:
        if self._dry_depth:
            return
        if rt.kind == "CustomResourceDefinition" and not rt.custom:
            self._sync_crds()
        if not self._settling:
            self._settling = True
            try:
                if rt.kind == "Node":
                    self._sync_node_taint(name)
                if rt.kind in ("Pod", "PodDisruptionBudget"):
                    self._sync_disruption_budgets(namespace)
                if self.nfd_master and (rt.kind in ("Node", "CustomResourceDefinition") or (rt.group, rt.kind) == NODE_FEATURE_KEY):
                    self._sync_nfd(name if rt.kind == "Node" else None)
                if not rt.custom and rt.kind in WORKLOAD_KINDS:
                    self._sync_workloads(rt.kind, namespace, name)
                elif not rt.custom and rt.kind == "Namespace":
                    self._sync_workloads(None, name, None)
                elif not rt.custom and rt.kind == "Node":
                    self._sync_workloads("DaemonSet", None, None)
            finally:
                self._settling = False
        for listener in self.listeners:
            listener()

    # -- the controllers that create pods: the pod create each would make, through Pod Security admission

    def _sync_workloads(self, kind: Optional[str], namespace: Optional[str], name: Optional[str]) -> None:
        """Evaluate, as the controller's pod create would be, the pod template of each matching workload against its
        namespace's enforce level; record a refusal where a real cluster shows it (see _refuse)."""
        for (res, ns, obj_name), obj in sorted(self.objects.items()):
            rt = next((r for r in RESOURCES if self.key(r) == res), None)
            if rt is None or rt.kind not in WORKLOAD_KINDS or (kind is not None and rt.kind != kind):
                continue
            if (namespace is not None and ns != namespace) or (name is not None and obj_name != name):
                continue
            self._sync_workload(rt, copy.deepcopy(obj))
        if kind is not None and namespace is not None and name is not None and self.get(self._kind_type(kind), namespace, name) is None:
            self._workload_state.pop((kind, namespace, name), None)  # deleted: its controller creates nothing any more
            self.refusals.pop((kind, namespace, name), None)

    @staticmethod
    def _kind_type(kind: str) -> ResourceType:
        return next(r for r in RESOURCES if r.kind == kind)

    def _pods_wanted(self, rt: ResourceType, obj: Obj) -> int:
        """How many pods the controller would create now: replicas (1 when unset), parallelism for a Job, and for a
        DaemonSet the nodes its template can run on."""
        spec = obj.get("spec") or {}
        if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            return int(spec["replicas"]) if isinstance(spec.get("replicas"), int) else 1
        if rt.kind == "Job":
            if spec.get("suspend") is True:
                return 0
            return int(spec["parallelism"]) if isinstance(spec.get("parallelism"), int) else 1
        if rt.kind == "DaemonSet":
            return len(self._daemon_nodes(obj))
        return 0

    def _daemon_nodes(self, daemonset: Obj) -> List[str]:
        """The nodes a DaemonSet's pods go to (nodeShouldRunDaemonPod): nodeSelector, required node affinity, taints
        tolerated (with the tolerations the DaemonSet controller adds to its pods)."""
        template = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
        tolerations = [t for t in template.get("tolerations") or [] if isinstance(t, dict)] + _DAEMON_TOLERATIONS
        names = []
        for node in [o for (res, _ns, _n), o in sorted(self.objects.items()) if res == self.key(NODES)]:
            labels = (node.get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in (template.get("nodeSelector") or {}).items()):
                continue
            if not _node_affinity_matches(template.get("affinity"), node):
                continue
            taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict) and t.get("effect") in ("NoSchedule", "NoExecute")]
            if all(any(_tolerates(tol, taint) for tol in tolerations) for taint in taints):
                names.append(str(node["metadata"]["name"]))
        return names

    def _sync_workload(self, rt: ResourceType, obj: Obj) -> None:
        namespace, name = str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])
        key = (rt.kind, namespace, name)
        ns_obj = self.objects.get((self.key(NAMESPACES), "", namespace)) or {}
        policy, _errors = psa.policy_to_evaluate((ns_obj.get("metadata") or {}).get("labels") or {})
        template = psa.pod_template(rt.kind, obj)
        wanted = self._pods_wanted(rt, obj) if template is not None else 0
        failed = psa.evaluate(policy.enforce, template[0], template[1]) if template is not None and wanted > 0 else []
        state = json.dumps([str(policy.enforce), template, wanted > 0, failed, obj["metadata"].get("uid")], sort_keys=True)
        if self._workload_state.get(key) == state:
            return  # nothing the controller sees changed: no new attempt, no new message
        self._workload_state[key] = state
        if not failed:
            self.refusals.pop(key, None)
            if rt.kind in ("Deployment", "ReplicaSet"):
                self._set_replica_failure(rt, obj, None)
            return
        message = f'violates PodSecurity "{policy.enforce}": {psa.forbidden_detail(failed)}'
        self._refuse(rt, obj, forbidden(PODS.qualified, self._controller_pod_name(rt, obj), message).message)

    def _controller_pod_name(self, rt: ResourceType, obj: Obj) -> str:
        """The name of the pod the controller would create: Deployment <name>-<pod-template-hash>-<5>, StatefulSet
        <name>-0, others <name>-<5> (generateName)."""
        name = str(obj["metadata"]["name"])
        suffix = "".join(secrets.choice(_GENERATE_CHARS) for _char in range(5))
        if rt.kind == "Deployment":
            return f"{name}-{pod_template_hash((obj.get('spec') or {}).get('template') or {})}-{suffix}"
        if rt.kind == "StatefulSet":
            return f"{name}-0"
        return f"{name}-{suffix}"

    def _refuse(self, rt: ResourceType, obj: Obj, message: str) -> None:
        """Record a pod create a controller could not make, where the real cluster shows it: a Deployment's (and a
        ReplicaSet's) status condition ReplicaFailure/FailedCreate with the API's message (the ReplicaSet controller's
        condition, copied to the Deployment by the deployment controller); for a DaemonSet, StatefulSet or Job a Warning
        Event FailedCreate on the object (their controllers only emit events)."""
        namespace, name = str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])
        self.refusals[(rt.kind, namespace, name)] = {"kind": rt.kind, "namespace": namespace, "name": name, "message": message}
        if rt.kind in ("Deployment", "ReplicaSet"):
            self._set_replica_failure(rt, obj, message)
            return
        if rt.kind == "StatefulSet":
            pod = f"{name}-0"
            text = f"create Pod {pod} in StatefulSet {name} failed error: {message}"
        else:
            text = f"Error creating: {message}"
        component = {"DaemonSet": "daemonset-controller", "StatefulSet": "statefulset-controller", "Job": "job-controller"}.get(rt.kind, "")
        self.record_event(obj, rt, "Warning", "FailedCreate", text, component)

    def record_event(self, obj: Obj, rt: ResourceType, kind: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about ``obj``, as a controller's EventRecorder writes it (a repeat bumps count and lastTimestamp)."""
        namespace, name = str(obj["metadata"].get("namespace") or "default"), str(obj["metadata"]["name"])
        now = _now()
        for (res, ns, event_name), event in sorted(self.objects.items()):
            involved = event.get("involvedObject") or {}
            if res == self.key(EVENTS) and ns == namespace and involved.get("uid") == obj["metadata"].get("uid") and event.get("reason") == reason \
                    and event.get("message") == message:
                new = copy.deepcopy(event)
                new["count"] = int(event.get("count") or 1) + 1
                new["lastTimestamp"] = now
                track_update(EVENTS, event, new, component)
                self._finish_write(EVENTS, event, new, namespace, event_name)
                return
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
                 "involvedObject": {"kind": rt.kind, "namespace": namespace, "name": name, "uid": obj["metadata"].get("uid"),
                                    "apiVersion": rt.group_version, "resourceVersion": obj["metadata"].get("resourceVersion")},
                 "reason": reason, "message": message, "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
                 "count": 1, "type": kind, "reportingComponent": component, "reportingInstance": ""}
        track_update(EVENTS, None, event, component)
        self._finish_write(EVENTS, None, event, namespace, event["metadata"]["name"])

    def _set_replica_failure(self, rt: ResourceType, obj: Obj, message: Optional[str]) -> None:
        """status.conditions ReplicaFailure (True, FailedCreate, message) set, or removed once a pod create succeeds."""
        namespace, name = str(obj["metadata"].get("namespace", "")), str(obj["metadata"]["name"])
        live = self.get(rt, namespace, name)
        if live is None:
            return
        status = copy.deepcopy(live.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        old = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
        others = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        if message is None:
            if old is None:
                return
            conditions = others
        else:
            if old is not None and old.get("message") == message:
                return
            now = _now()
            condition = {"type": "ReplicaFailure", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": "FailedCreate",
                         "message": message}
            if rt.kind == "ReplicaSet":
                condition.pop("lastUpdateTime")
            conditions = [*others, condition]
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        new = copy.deepcopy(live)
        new["status"] = status
        manager = "kube-controller-manager"
        track_update(rt, live, new, manager, subresource="status")
        self._finish_write(rt, live, new, namespace, name, subresource="status")

    # -- nfd-master

    def _sync_nfd(self, only_node: Optional[str]) -> None:
        """nfd-master: each node's labels from the NodeFeature objects naming it (crds.node_labels), as JSON patches by
        the manager nfd-master; the labels it set before and no longer wants are removed."""
        features = [o for (res, _ns, _n), o in sorted(self.objects.items()) if res == f"{NODE_FEATURE_KEY[0]}/nodefeatures"]
        for (res, _ns, node_name), node in sorted(self.objects.items()):
            if res != self.key(NODES) or (only_node is not None and node_name != only_node):
                continue
            wanted = node_labels(node_name, features, self.nfd_namespace, self.nfd_extra_label_ns, self.nfd_deny_label_ns)
            new = apply_node_labels(node, wanted)
            if new is None:
                continue
            live = copy.deepcopy(node)
            track_update(NODES, live, new, "nfd-master")
            self._finish_write(NODES, live, new, "", node_name)

    def _sync_node_taint(self, name: str) -> None:
        """The node lifecycle controller: an unschedulable Node carries the node.kubernetes.io/unschedulable:NoSchedule taint."""
        live = self.get(NODES, "", name)
        if live is None:
            return
        taints = [t for t in (live.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
        present = any(t.get("key") == UNSCHEDULABLE_TAINT and t.get("effect") == "NoSchedule" for t in taints)
        wanted = bool((live.get("spec") or {}).get("unschedulable"))
        if present == wanted:
            return
        new = copy.deepcopy(live)
        if wanted:
            taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
        else:
            taints = [t for t in taints if not (t.get("key") == UNSCHEDULABLE_TAINT and t.get("effect") == "NoSchedule")]
        if taints:
            new["spec"]["taints"] = taints
        else:
            new["spec"].pop("taints", None)
        track_update(NODES, live, new, "kube-controller-manager")
        self._finish_write(NODES, live, new, "", name)

    def _pods(self, namespace: str) -> List[Obj]:
        return [o for (res, ns, _n), o in sorted(self.objects.items()) if res == self.key(PODS) and ns == namespace]

    def _sync_disruption_budgets(self, namespace: str) -> None:
        """The disruption controller: every PodDisruptionBudget's status from the pods it selects."""
        pods = self._pods(namespace)
        counts: Dict[Tuple[str, str], int] = {}
        for pod in pods:
            ref = _controller_of(pod)
            if ref is not None:
                key = (namespace, str(ref.get("uid") or f"{ref.get('kind')}/{ref.get('name')}"))
                counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():  # a controller's scale: the most pods of it seen at once (no ReplicaSets here)
            self.controller_scale[key] = max(self.controller_scale.get(key, 0), count)
        for (res, ns, name), pdb in sorted(self.objects.items()):
            if res != self.key(PDBS) or ns != namespace:
                continue
            status = self._budget_status(pdb, pods)
            if status == pdb.get("status"):
                continue
            live = copy.deepcopy(pdb)
            new = copy.deepcopy(pdb)
            new["status"] = status
            track_update(PDBS, live, new, "kube-controller-manager", subresource="status")
            self._finish_write(PDBS, live, new, namespace, name, subresource="status")

    def _budget_status(self, pdb: Obj, pods: List[Obj]) -> Obj:
        """updatePdbStatus() of pkg/controller/disruption: expected, desired and current healthy pods, disruptions allowed."""
        spec = pdb.get("spec") or {}
        selector = spec.get("selector")
        # policy/v1: a null selector selects no pods, an empty one every pod of the namespace
        matching = [p for p in pods if isinstance(selector, dict) and selector_matches(selector, (p.get("metadata") or {}).get("labels") or {})]
        namespace = str(pdb["metadata"].get("namespace", ""))

        def scale() -> int:
            keys = set()
            for pod in matching:
                ref = _controller_of(pod)
                if ref is not None:  # unmanaged pods are left out of the expected count
                    keys.add((namespace, str(ref.get("uid") or f"{ref.get('kind')}/{ref.get('name')}")))
            return sum(self.controller_scale.get(k, 0) for k in keys)

        min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
        if max_unavailable is not None:
            expected = scale()
            desired = max(0, expected - _scaled(max_unavailable, expected))
        elif isinstance(min_available, str):
            expected = scale()
            desired = _scaled(min_available, expected)
        else:
            expected = len(matching)
            desired = int(min_available or 0)
        healthy = sum(1 for p in matching if _pod_ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp"))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        generation = int(pdb["metadata"].get("generation", 1))
        old = pdb.get("status") or {}
        old_condition: Obj = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
        flag = "True" if allowed > 0 else "False"
        condition = {"type": "DisruptionAllowed", "status": flag, "observedGeneration": generation,
                     "lastTransitionTime": old_condition.get("lastTransitionTime") if old_condition.get("status") == flag else _now(),
                     "reason": "SufficientPods" if allowed > 0 else "InsufficientPods", "message": ""}
        return {"observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": desired,
                "expectedPods": expected, "conditions": [condition]}

    def reap(self) -> None:
        """The kubelet's part of a graceful delete: remove each pod whose containers stopped (or whose grace period ran out)."""
        now = time.monotonic()
        with self.lock:
            for key, due in sorted(self.terminations.items()):
                if due > now:
                    continue
                namespace, name, uid = key
                live = self.objects.get((self.key(PODS), namespace, name))
                if live is not None and live["metadata"].get("uid") == uid:
                    self._remove(PODS, namespace, name)
                self.terminations.pop(key, None)

    def list(self, rt: ResourceType, namespace: Optional[str], labels: Optional[str], fields: Optional[str]) -> Obj:
        label_test = label_selector(labels) if labels else None
        field_test = field_selector(fields, rt.kind) if fields else None
        with self.lock:
            items = []
            for (res, ns, _name), obj in sorted(self.objects.items()):
                if res != self.key(rt) or (namespace is not None and ns != namespace):
                    continue
                if label_test and not label_test(obj.get("metadata", {}).get("labels") or {}):
                    continue
                if field_test and not field_test(obj):
                    continue
                item = copy.deepcopy(obj)
                item.pop("apiVersion", None)  # list items carry no type meta on the wire
                item.pop("kind", None)
                items.append(item)
            return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version, "metadata": {"resourceVersion": str(self.revision)}, "items": items}

    def create(self, rt: ResourceType, namespace: str, body: Any, manager: str, dry_run: bool, seed: bool = False,
               field_validation: str = "Warn") -> Obj:
        obj = self._check_identity(rt, copy.deepcopy(body), namespace, None)
        meta = obj["metadata"]
        name = meta.get("name") or ""
        with self.lock:
            if not name and meta.get("generateName"):
                name = str(meta["generateName"]) + "".join(secrets.choice(_GENERATE_CHARS) for _char in range(5))
            if not name:
                raise invalid(rt.kind, rt.group, "", [{"reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
                                                       "field": "metadata.name"}])
            self._validate_name(rt, name)
            if meta.get("resourceVersion"):
                raise bad_request("resourceVersion should not be set on objects to be created")
            self._require_namespace(rt, namespace)
            if self.get(rt, namespace, name) is not None:
                raise already_exists(rt, name)
            meta.pop("managedFields", None)
            meta["name"] = name
            obj = self._admit(rt, None, obj, namespace, field_validation)
            track_update(rt, None, obj, manager)
            if dry_run:
                return self._dry(rt, None, obj, namespace, name)
            return self._finish_write(rt, None, obj, namespace, name, subresource="*" if seed else "")

    def _dry(self, rt: ResourceType, live: Optional[Obj], new: Obj, namespace: str, name: str) -> Obj:
        saved = (dict(self.objects), self.revision)
        self._dry_depth += 1
        try:
            return self._finish_write(rt, live, new, namespace, name)
        finally:
            self.objects, self.revision = saved
            self._dry_depth -= 1

    def replace(self, rt: ResourceType, namespace: str, name: str, body: Any, manager: str, dry_run: bool, field_validation: str = "Warn") -> Obj:
        obj = self._check_identity(rt, copy.deepcopy(body), namespace, name)
        with self.lock:
            live = self.get(rt, namespace, name)
            if live is None:
                raise not_found(rt, name)
            wanted_rv = obj["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != live["metadata"].get("resourceVersion"):
                raise modified_conflict(rt, name)
            if obj["metadata"].get("managedFields") is None:
                obj["metadata"]["managedFields"] = live["metadata"].get("managedFields")
            obj["metadata"]["name"] = name
            obj = self._admit(rt, live, obj, namespace, field_validation)
            track_update(rt, live, obj, manager)
            return (self._dry if dry_run else self._finish_write)(rt, live, obj, namespace, name)

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, body: bytes, query: Dict[str, List[str]],
              user_agent_manager: str, dry_run: bool) -> Tuple[int, Obj]:
        manager = (query.get("fieldManager") or [""])[0]
        force_raw = query.get("force")
        field_validation = field_validation_of(query)
        if content_type == APPLY_PATCH:
            if not manager:
                cause = {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}
                raise invalid("PatchOptions", "meta.k8s.io", "", [cause])
            force = _parse_bool(force_raw[0]) if force_raw else False
            config = self._check_identity(rt, _decode(body, content_type, yaml_ok=True), namespace, name)
            if config.get("apiVersion") != rt.group_version:
                raise bad_request(f"Incorrect version specified in apply patch. Specified patch version: {config.get('apiVersion', '')}, "
                                  f"expected: {rt.group_version}")
            if config.get("kind") != rt.kind:
                raise bad_request(f"the kind in the apply patch ({config.get('kind', '')}) does not match the resource's kind ({rt.kind})")
            if config["metadata"].get("managedFields") is not None:
                raise bad_request("metadata.managedFields must be nil")
            with self.lock:
                live = self.get(rt, namespace, name)
                wanted_rv = config["metadata"].get("resourceVersion")
                if wanted_rv and (live is None or wanted_rv != live["metadata"].get("resourceVersion")):
                    raise modified_conflict(rt, name)
                if live is None:
                    self._validate_name(rt, name)
                    self._require_namespace(rt, namespace)
                new = server_side_apply(rt, live, config, manager, force)
                if live is None and rt.kind == "Node" and "status" in config:
                    new["status"] = copy.deepcopy(config["status"])
                new.setdefault("metadata", {})["name"] = name
                new = self._admit(rt, live, new, namespace, field_validation, apply_config=config)
                result = (self._dry if dry_run else self._finish_write)(rt, live, new, namespace, name)
                return (201 if live is None else 200), result
        if force_raw is not None:
            cause = {"reason": "FieldValueForbidden", "message": "Forbidden: may not be specified for non-apply patch", "field": "force"}
            raise invalid("PatchOptions", "meta.k8s.io", "", [cause])
        patch = _decode(body, content_type, yaml_ok=False)
        with self.lock:
            live = self.get(rt, namespace, name)
            if live is None:
                raise not_found(rt, name)
            if content_type == JSON_PATCH:
                new = json_patch(live, patch)
            else:  # merge and strategic merge: the same for maps, scalars and lists without merge keys
                if not isinstance(patch, dict):
                    raise bad_request("the patch is not a JSON object")
                new = merge_patch(live, {k: v for k, v in patch.items() if not k.startswith("$")})
            self._check_identity(rt, new, namespace, name)
            wanted_rv = new["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != live["metadata"].get("resourceVersion"):
                raise modified_conflict(rt, name)
            new["metadata"]["managedFields"] = live["metadata"].get("managedFields")
            new = self._admit(rt, live, new, namespace, field_validation)
            track_update(rt, live, new, manager or user_agent_manager)
            return 200, (self._dry if dry_run else self._finish_write)(rt, live, new, namespace, name)

    def delete(self, rt: ResourceType, namespace: str, name: str, dry_run: bool, options: Optional[Obj] = None) -> Obj:
        """DELETE with DeleteOptions (gracePeriodSeconds, preconditions); pods are deleted gracefully, the rest at once."""
        options = options or {}
        with self.lock:
            live = self.get(rt, namespace, name)
            if live is None:
                raise not_found(rt, name)
            preconditions = options.get("preconditions") or {}
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field)
                if wanted is not None and wanted != live["metadata"].get(field):
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition failed: {label} in precondition: '
                                   f'{wanted}, {label} in object meta: {live["metadata"].get(field)}', _details(rt, name))
            if rt.kind == "Namespace":
                if name in ("default", "kube-system", "kube-public"):  # the NamespaceLifecycle admission plugin
                    raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted', _details(rt, name))
                # the namespace controller's work, done at once: the answer shows the namespace Terminating
                live["metadata"]["deletionTimestamp"] = _now()
                live["status"] = {"phase": "Terminating"}
                live = _canonical(live)
                if not dry_run:
                    live["metadata"]["resourceVersion"] = self._bump()
                    for key in [k for k in self.objects if k[1] == name]:
                        del self.objects[key]
                    del self.objects[(self.key(rt), "", name)]
                    self.terminations = {k: v for k, v in self.terminations.items() if k[0] != name}
                    self._after_write(rt, "", name)
                return live
            if rt.kind == "Pod":
                return self._delete_pod(live, options, dry_run)
            if not dry_run:
                self._remove(rt, namespace, name)
                if rt.kind == "Job":
                    self._collect_dependents(live, options)
            details = _details(rt, name)
            details["uid"] = live["metadata"]["uid"]
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> None:
        self._bump()
        gone = self.objects.pop((self.key(rt), namespace if rt.namespaced else "", name))
        self._after_write(rt, namespace, name)
        if rt.kind == "Pod":
            for key in [k for k in self.pod_logs if k[:2] == (namespace, name)]:
                del self.pod_logs[key]
            self._replace_daemon_pod(gone)

    def _collect_dependents(self, owner: Obj, options: Obj) -> None:
        """The garbage collector for a deleted Job (pkg/controller/garbagecollector): with propagationPolicy Background
        or Foreground its pods (controller owner reference with the Job's uid) are deleted; Orphan, or none given (the
        batch/v1 Job's default, DefaultGarbageCollectionPolicy OrphanDependents), leaves them. Foreground's wait for
        the dependents is not modelled: the pods go at once, before the Job is answered gone."""
        if options.get("propagationPolicy") not in ("Background", "Foreground"):
            return
        uid = owner["metadata"].get("uid")
        namespace = str(owner["metadata"].get("namespace", ""))
        for pod in [o for (res, ns, _n), o in sorted(self.objects.items()) if res == self.key(PODS) and ns == namespace]:
            if any(isinstance(r, dict) and r.get("uid") == uid and r.get("controller") for r in pod["metadata"].get("ownerReferences") or []):
                self._remove(PODS, namespace, str(pod["metadata"]["name"]))

    def pod_log(self, namespace: str, name: str, container: str) -> str:
        """GET pods/{name}/log: the API server picks the container (pkg/registry/core/pod/strategy.go LogLocation), the
        kubelet checks its state before it streams (pkg/kubelet/kubelet_pods.go validateContainerLogStatus); both
        refusals reach the client as 400 BadRequest with that text."""
        with self.lock:
            pod = self.get(PODS, namespace, name)
            if pod is None:
                raise not_found(PODS, name)
            names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
            if not container:
                if len(names) != 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")
                container = names[0]
            elif container not in names:
                raise bad_request(f"container {container} is not valid for pod {name}")
            statuses = {str(s.get("name")): s for s in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(s, dict)}
            if container not in statuses:
                raise bad_request(f'container "{container}" in pod "{name}" is not available')
            state = statuses[container].get("state") or {}
            if "running" not in state and "terminated" not in state:
                reason = (state.get("waiting") or {}).get("reason")
                if reason == "ErrImagePull":
                    raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: image can\'t be pulled')
                if reason == "ImagePullBackOff":
                    raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: trying and failing to pull image')
                if reason:
                    raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start - no logs yet')
            return self.pod_logs.get((namespace, name, container), "")

    def _replace_daemon_pod(self, old: Obj) -> None:
        """The DaemonSet controller: a deleted pod of an existing DaemonSet comes back on its node, under a new name."""
        ref = _controller_of(old)
        if ref is None or ref.get("kind") != "DaemonSet":
            return
        namespace, node_name = str(old["metadata"]["namespace"]), str((old.get("spec") or {}).get("nodeName") or "")
        daemonset = self.get(DAEMONSETS, namespace, str(ref.get("name")))
        if daemonset is None or (ref.get("uid") and ref["uid"] != daemonset["metadata"]["uid"]) or self.get(NODES, "", node_name) is None:
            return
        template = (daemonset.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        labels = {**(template_meta.get("labels") or {}), "pod-template-generation": str(daemonset["metadata"].get("generation", 1))}
        meta: Obj = {"generateName": f"{daemonset['metadata']['name']}-", "namespace": namespace, "labels": labels,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": daemonset["metadata"]["name"],
                                          "uid": daemonset["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]}
        if template_meta.get("annotations"):
            meta["annotations"] = copy.deepcopy(template_meta["annotations"])
        spec = {**copy.deepcopy(template.get("spec") or {}), "nodeName": node_name}
        saved = getattr(_REQUEST, "warnings", None)
        _REQUEST.warnings = None  # the controller's request, not the client's: its warnings are not the client's answer
        try:
            self.create(PODS, namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, "kube-controller-manager", dry_run=False)
        except ApiError as exc:  # refused (Pod Security, validation): the controller reports it and creates nothing
            self._refuse(DAEMONSETS, daemonset, exc.message)
        finally:
            _REQUEST.warnings = saved

    def _delete_pod(self, live: Obj, options: Obj, dry_run: bool) -> Obj:
        """Graceful pod deletion (podStrategy.CheckGracefulDelete, rest.BeforeDelete); answers the pod (ReturnDeletedObject)."""
        meta, spec = live["metadata"], live.get("spec") or {}
        namespace, name = str(meta["namespace"]), str(meta["name"])
        grace_raw = options.get("gracePeriodSeconds")
        if grace_raw is None:
            grace_raw = spec.get("terminationGracePeriodSeconds", 30)
        grace = int(grace_raw)
        if grace < 0:
            grace = 1
        if not spec.get("nodeName") or (live.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            grace = 0  # an unscheduled or finished pod is deleted at once
        if meta.get("deletionTimestamp") and grace != 0 and grace >= int(meta.get("deletionGracePeriodSeconds") or 0):
            return live  # already terminating, no sooner than asked
        if grace == 0:
            if not dry_run:
                self._remove(PODS, namespace, name)
            return live
        new = copy.deepcopy(live)
        deadline = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=grace)
        new["metadata"]["deletionTimestamp"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        new = _canonical(new)
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = self._bump()
        self.objects[(self.key(PODS), namespace, name)] = new
        self._after_write(PODS, namespace, name)
        answer = copy.deepcopy(new)
        exit_raw = (meta.get("annotations") or {}).get(EXIT_SECONDS_ANNOTATION)
        stops_after = min(float(grace), float(exit_raw) if exit_raw is not None else self.pod_exit_seconds)
        self.terminations[(namespace, name, str(meta["uid"]))] = time.monotonic() + stops_after
        if stops_after <= 0:
            self.reap()
        return answer

    def evict(self, namespace: str, name: str, body: Any, dry_run: bool) -> Tuple[int, Obj]:
        """POST pods/{name}/eviction (pkg/registry/core/pod/storage/eviction.go): delete the pod unless its PodDisruptionBudget forbids it."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")
        if body.get("apiVersion") not in (None, "", "policy/v1", "policy/v1beta1") or body.get("kind") not in (None, "", "Eviction"):
            raise bad_request(f"not a Eviction object: {body.get('apiVersion')}, Kind={body.get('kind')}")
        meta = body.get("metadata") or {}
        if (meta.get("name") or "") != name:
            raise bad_request("name in URL does not match name in Eviction object")
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        options = dict(body.get("deleteOptions") or {})
        if options.get("dryRun"):
            FakeKube._dry_run({"dryRun": list(options["dryRun"])})
            dry_run = True
        success: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        with self.lock:
            pod = self.get(PODS, namespace, name)
            if pod is None:
                raise not_found(PODS, name)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
                self.delete(PODS, namespace, name, dry_run, options)  # canIgnorePDB: no budget is consulted
                return 201, success
            labels = pod["metadata"].get("labels") or {}
            budgets = [o for (res, ns, _n), o in sorted(self.objects.items()) if res == self.key(PDBS) and ns == namespace
                       and isinstance((o.get("spec") or {}).get("selector"), dict) and _selector_set(o["spec"]["selector"])
                       and selector_matches(o["spec"]["selector"], labels)]  # a null or empty selector matches nothing here
            if len(budgets) > 1:
                return 500, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", "code": 500}
            if budgets:
                pdb = budgets[0]
                pdb_name, status = str(pdb["metadata"]["name"]), pdb.get("status") or {}
                policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
                current, desired = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
                unready_ok = not _pod_ready(pod) and (policy == "AlwaysAllow" or (current >= desired > 0))
                if not unready_ok:
                    if int(status.get("observedGeneration", 0)) < int(pdb["metadata"].get("generation", 1)):
                        raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                                       {"causes": [{"reason": "DisruptionBudget",
                                                    "message": f"The disruption budget {pdb_name} is still being processed by the server."}],
                                        "retryAfterSeconds": 10})
                    if int(status.get("disruptionsAllowed", 0)) <= 0:
                        raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                                       {"causes": [{"reason": "DisruptionBudget",
                                                    "message": f"The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"}]})
            self.delete(PODS, namespace, name, dry_run, options)
            return 201, success


UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
EXIT_SECONDS_ANNOTATION = "kube-fake.test/exit-seconds"  # kube_fake only: how long this pod's containers take to stop


def _kubelet_pod_status(pod: Obj) -> Obj:
    """What a kubelet reports for a pod it started at once; a pod bound to no node stays Pending (no scheduler here)."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return {"phase": "Pending"}
    now = _now()
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return {"phase": "Running", "conditions": conditions, "startTime": now}


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def _controller_of(pod: Obj) -> Optional[Obj]:
    """metav1.GetControllerOf: the owner reference with controller: true."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def _selector_set(selector: Obj) -> bool:
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def selector_matches(selector: Obj, labels: Dict[str, str]) -> bool:
    """metav1.LabelSelectorAsSelector(selector).Matches(labels): matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(str(op))
        if not ok:
            return False
    return True


def _scaled(value: Any, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent(value, total, roundUp=true)."""
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].isdigit():
        raise bad_request(f"invalid value for IntOrString: invalid type: string is not a percentage: {text}")
    return math.ceil(int(text[:-1]) * total / 100)


NAMESPACES = next(r for r in RESOURCES if r.name == "namespaces")
NODES = next(r for r in RESOURCES if r.name == "nodes")
PODS = next(r for r in RESOURCES if r.name == "pods")
DAEMONSETS = next(r for r in RESOURCES if r.name == "daemonsets")
PDBS = next(r for r in RESOURCES if r.name == "poddisruptionbudgets")
EVENTS = next(r for r in RESOURCES if r.name == "events")
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job")
# the tolerations the DaemonSet controller adds to its pods (util.AddOrUpdateDaemonPodTolerations), NoSchedule/NoExecute ones
_DAEMON_TOLERATIONS: List[Obj] = [{"key": k, "operator": "Exists", "effect": e} for k, e in (
    ("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"), ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"))]


def _tolerates(toleration: Obj, taint: Obj) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    if not toleration.get("key") and toleration.get("operator") != "Exists":
        return False
    if (toleration.get("operator") or "Equal") == "Exists":
        return True
    return bool((toleration.get("value") or "") == (taint.get("value") or ""))


def _node_affinity_matches(affinity: Any, node: Obj) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution: any term whose expressions (In, NotIn, Exists, DoesNotExist, Gt, Lt)
    and fields (metadata.name) all match."""
    terms = ((((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {})
             .get("nodeSelectorTerms")) if isinstance(affinity, dict) else None
    if not terms:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": str(node["metadata"]["name"])}

    def requirement(values: Dict[str, str], expr: Obj) -> bool:
        key, op, wanted = str(expr.get("key", "")), expr.get("operator"), [str(v) for v in expr.get("values") or []]
        present, value = key in values, values.get(key)
        if op in ("Gt", "Lt"):
            try:
                return present and (int(str(value)) > int(wanted[0]) if op == "Gt" else int(str(value)) < int(wanted[0]))
            except (ValueError, IndexError):
                return False
        return {"In": present and value in wanted, "NotIn": not present or value not in wanted, "Exists": present,
                "DoesNotExist": not present}.get(str(op), False)

    for term in terms:
        if not isinstance(term, dict) or (not term.get("matchExpressions") and not term.get("matchFields")):
            continue
        if all(requirement(labels, e) for e in term.get("matchExpressions") or []) and all(requirement(fields, e) for e in term.get("matchFields") or []):
            return True
    return False


def pod_template_hash(template: Obj) -> str:
    """A stable pod-template-hash: FNV-32a of the template's JSON, encoded as rand.SafeEncodeString encodes the decimal
    (upstream hashes the Go struct dump, so the value differs from a real cluster's)."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_GENERATE_CHARS[b % len(_GENERATE_CHARS)] for b in str(value).encode())


_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers", "managedFields")


def _canonical(obj: Obj) -> Obj:
    """Fields in the order the API server's Go structs serialize them: kind, apiVersion, metadata (ObjectMeta order), ..., status."""
    meta = obj.get("metadata") or {}
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered_meta.update({k: v for k, v in meta.items() if k not in ordered_meta})
    out: Obj = {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"), "metadata": ordered_meta}
    out.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata", "status")})
    if "status" in obj:
        out["status"] = obj["status"]
    return out


def _spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _parse_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad_request(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


def field_validation_of(query: Dict[str, List[str]]) -> str:
    """The fieldValidation query parameter: Strict, Warn (the default since 1.27) or Ignore; anything else is 400."""
    value = (query.get("fieldValidation") or ["Warn"])[0] or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", "Strict", "Warn"')
    return value


def _parse_bool(text: str) -> bool:
    """strconv.ParseBool, as the API server reads query parameters."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise bad_request(f'strconv.ParseBool: parsing "{text}": invalid syntax')


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def _accepts(accept: Optional[str]) -> Optional[str]:
    """The media type to answer in, from the Accept header; None when nothing acceptable was offered."""
    if not accept:
        return "application/json"
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media, params = parts[0].lower(), {p.split("=", 1)[0].strip() for p in parts[1:] if "=" in p}
        if params & {"as", "g", "v"}:  # Table, PartialObjectMetadata, aggregated discovery: not served
            continue
        if media in ("application/json", "application/*", "*/*"):
            return "application/json"
        if media == "application/yaml":
            return "application/yaml"
    return None


@dataclass(frozen=True)
class RawAnswer:
    """An answer passed through as it came (the service proxy's)."""

    body: bytes
    content_type: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-fake"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: List[bytes] = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        kube = self.server.kube
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query, keep_blank_values=True)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
        manager = (query.get("fieldManager") or [""])[0] or None
        body: bytes = b""
        parsed: Any = None
        status = 500
        warnings: List[str] = []
        _REQUEST.warnings = warnings
        try:
            body = self._read_body()
            if body:
                try:
                    parsed = yaml.load(body.decode("utf-8", errors="replace"), Loader=_NoTimestampLoader)
                except yaml.YAMLError:
                    parsed = body.decode("utf-8", errors="replace")
            media = _accepts(self.headers.get("Accept"))
            if not kube.authorized(self.headers.get("Authorization")):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if media is None:
                raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json, application/yaml")
            status, answer = kube.route(method, path, query, content_type, body, self.headers.get("User-Agent") or "")
        except ApiError as exc:
            status, answer = exc.code, exc.status()
            media = "application/json"
        except Exception as exc:  # an internal error is answered as the API server does: 500 Status
            status, answer = 500, ApiError(500, "InternalError", f"Internal error occurred: {exc!r}").status()
            media = "application/json"
        finally:
            _REQUEST.warnings = None
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        authorization = self.headers.get("Authorization")
        # each header line as sent: an API server reads one group per Impersonate-Group header (net/http Header values)
        impersonate = tuple((name, value) for name, value in self.headers.items() if name.lower() in ("impersonate-user", "impersonate-group"))
        kube.record(RecordedRequest(method, path, query, content_type, manager, status, parsed, self.headers.get("User-Agent"), stamp,
                                    tuple(warnings), authorization.split(" ", 1)[0] if authorization else None, impersonate))
        if isinstance(answer, RawAnswer):
            payload, media = answer.body, answer.content_type
        elif isinstance(answer, str):
            payload, media = answer.encode(), "text/plain; charset=utf-8"
        elif media == "application/yaml":
            payload = yaml.safe_dump(answer, sort_keys=False).encode()
        else:
            payload = json.dumps(answer, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for text in warnings:
            self.send_header("Warning", warning_header(text))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    """One thread per connection (process_request is ours, ThreadingMixIn's bookkeeping is not used). Every connection
    thread is kept until it has ended and joined by FakeKube.stop(); the threads are daemons only so that a bug in the
    fake cannot hold the interpreter at exit."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, kube: FakeKube, context: ssl.SSLContext) -> None:
        self.kube = kube
        self.ssl_context = context
        self.live_lock = threading.Lock()
        # guarded by live_lock: the socket each connection reads from now (its TLS socket once wrapped), every
        # connection thread not known to have ended, and whether stop() began (no connection starts or wraps after)
        self.live_sockets: Set[socket.socket] = set()
        self.threads: List[threading.Thread] = []
        self.closing = False
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            if self.closing:
                with contextlib.suppress(OSError):
                    request.close()
                return
            self.threads = [t for t in self.threads if t.is_alive()]
            thread = threading.Thread(target=self._serve_connection, args=(request, client_address), daemon=True, name="kube-fake-conn")
            self.threads.append(thread)
            self.live_sockets.add(request)
            thread.start()  # under the lock: close_connections() never sees a thread it cannot join

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        conn: Optional[socket.socket] = None
        try:
            request.settimeout(CONNECTION_TIMEOUT_S)
            # The TLS socket takes the connection over (wrapping detaches the plain socket). Wrapped under the lock, so
            # that close_connections() shuts down whichever of the two is live, never a detached one.
            with self.live_lock:
                if self.closing:
                    return
                conn = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                self.live_sockets.discard(request)
                self.live_sockets.add(conn)
            conn.do_handshake()  # off the accept loop
            _Handler(conn, client_address, self)
        except (OSError, ssl.SSLError, ValueError):  # ValueError: a read on a socket stop() closed
            pass
        finally:
            for sock in (conn, request):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            with self.live_lock:
                self.live_sockets.discard(request)
                if conn is not None:
                    self.live_sockets.discard(conn)

    def close_connections(self) -> List[threading.Thread]:
        """Refuse new connections, shut every live one down (a blocked read, handshake or write returns) and return
        every connection thread that may still run, for the caller to join."""
        with self.live_lock:
            self.closing = True
            sockets, threads = list(self.live_sockets), list(self.threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return threads


# ---------------------------------------------------------------------------------------------------------------
# TLS material and the public API


def _certificates(directory: Path) -> Tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it; returns (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-fake-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class FakeKube:
    """A Kubernetes API server in a thread: HTTPS on 127.0.0.1 (free port), bearer token, in-memory objects.

    ``with FakeKube() as kube:`` starts it and writes ``kube.kubeconfig_path``; leaving the block stops it,
    closes its connections, joins its threads (bounded) and removes its files."""

    def __init__(self, token: Optional[str] = None, kube_version: str = KUBE_VERSION, pod_exit_seconds: float = 0.0,
                 requests_out: Optional[Path] = None, state_out: Optional[Path] = None, nfd_master: bool = False,
                 nfd_extra_label_ns: Iterable[str] = DEFAULT_EXTRA_LABEL_NS, nfd_deny_label_ns: Iterable[str] = (),
                 nfd_namespace: str = "node-feature-discovery") -> None:
        """pod_exit_seconds: how long pods take to stop after a graceful delete or eviction (0: at once; the annotation
        kube-fake.test/exit-seconds overrides it per pod; the grace period caps it). requests_out: append every request
        there as a JSON line when answered. state_out: rewrite every object there (a v1 List) after every change.
        nfd_master: run nfd-master's part (NodeFeature objects to node labels) with its extraLabelNs, denyLabelNs and the
        namespace it runs in (its NodeFeature objects are merged first)."""
        self.token = token or secrets.token_urlsafe(24)
        self.kube_version = kube_version
        self.cluster = Cluster()
        self.cluster.kube_version = kube_version
        self.cluster.pod_exit_seconds = pod_exit_seconds
        self.cluster.nfd_master = nfd_master
        self.cluster.nfd_extra_label_ns = tuple(nfd_extra_label_ns)
        self.cluster.nfd_deny_label_ns = tuple(nfd_deny_label_ns)
        self.cluster.nfd_namespace = nfd_namespace
        self.requests_out = requests_out
        self.state_out = state_out
        self._requests: List[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._reaper: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._dir: Optional[Path] = None
        self.url = ""
        self.ca_path = Path()
        self.kubeconfig_path = Path()
        self.metrics_adapter: Optional[MetricsAdapter] = None  # custom.metrics.k8s.io behind its APIService(s); None: no adapter runs
        self.service_backends: Dict[Tuple[str, str, str], str] = {}  # (namespace, service, port name or "") -> http://host:port
        self._seed_namespaces()
        if state_out is not None:
            self.cluster.listeners.append(self.write_state)
            self.write_state()

    def _seed_namespaces(self) -> None:
        self.cluster.objects.clear()
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            obj: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            track_update(NAMESPACES, None, obj, "kube-apiserver")
            self.cluster._finish_write(NAMESPACES, None, obj, "", name)

    # -- lifecycle

    def start(self) -> FakeKube:
        if self._server is not None:
            raise RuntimeError("FakeKube is already running")
        self._dir = Path(tempfile.mkdtemp(prefix="kube-fake-"))
        self.ca_path, cert_path, key_path = _certificates(self._dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        self._server = _Server(self, context)
        port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{port}"
        self.kubeconfig_path = self._dir / "kubeconfig"
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="kube-fake")
        self._thread.start()
        self._stopping.clear()
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="kube-fake-kubelet")
        self._reaper.start()
        return self

    def _reap_loop(self) -> None:
        while not self._stopping.wait(0.05):  # ends with stop()
            self.cluster.reap()

    def stop(self) -> None:
        """Stop serving, end every connection and join every thread this server started, within STOP_TIMEOUT_S in
        all; remove the files. A thread still alive then is a bug of the fake: RuntimeError names it."""
        server, thread, reaper = self._server, self._thread, self._reaper
        self._server = self._thread = self._reaper = None
        self._stopping.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        threads: List[threading.Thread] = []
        if server is not None:
            server.shutdown()  # returns once serve_forever has: no connection is accepted after
            server.server_close()
            threads = server.close_connections()
        threads += [t for t in (thread, reaper) if t is not None]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        stuck = sorted({t.name for t in threads if t.is_alive()})
        if stuck:
            raise RuntimeError(f"kube_fake: threads {stuck} still run {STOP_TIMEOUT_S:.0f} s after stop() began: a connection "
                               "or handler that does not end when its socket is shut down (fix it in tests/kube_fake/server.py)")

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def kubeconfig(self, token: Optional[str] = None) -> Obj:
        """The kubeconfig written to kubeconfig_path (another token gives one for a wrong user)."""
        ca_data = base64.b64encode(self.ca_path.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-fake", "cluster": {"server": self.url, "certificate-authority-data": ca_data}}],
            "users": [{"name": "kube-fake-admin", "user": {"token": token or self.token}}],
            "contexts": [{"name": "kube-fake", "context": {"cluster": "kube-fake", "user": "kube-fake-admin"}}],
            "current-context": "kube-fake",
            "preferences": {},
        }

    # -- requests

    def authorized(self, header: Optional[str]) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token.encode())

    def record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)
            if self.requests_out is not None:
                with self.requests_out.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(request.to_json(), separators=(",", ":"), default=str) + "\n")

    def state(self) -> Obj:
        """Every stored object (with apiVersion and kind), as a v1 List; metadata.resourceVersion is the store's revision."""
        with self.cluster.lock:
            items = [copy.deepcopy(o) for _k, o in sorted(self.cluster.objects.items())]
            return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(self.cluster.revision)}, "items": items}

    def write_state(self) -> None:
        """Rewrite state_out atomically (a reader never sees half a file)."""
        if self.state_out is None:
            return
        tmp = self.state_out.with_name(f".{self.state_out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_out)

    @property
    def requests(self) -> List[RecordedRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # -- seeding and inspection (what kubelets and controllers would do)

    def add_object(self, obj: Obj, manager: str = "kube-fake") -> Obj:
        """Create any served object as a POST by `manager` would; returns the stored object.

        A Pod keeps the status given (else a kubelet runs it at once: Running and Ready on its node, Pending
        without spec.nodeName); an owner reference without uid gets the uid of the named owner if it exists."""
        rt = self.cluster.resource_for(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        namespace = str((obj.get("metadata") or {}).get("namespace") or "default") if rt.namespaced else ""
        obj = copy.deepcopy(obj)
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if isinstance(ref, dict) and not ref.get("uid"):
                with contextlib.suppress(ValueError):
                    owner = self.get_object(str(ref.get("apiVersion", "")), str(ref.get("kind", "")), str(ref.get("name", "")), namespace)
                    if owner is not None:
                        ref["uid"] = owner["metadata"]["uid"]
        return self.cluster.create(rt, namespace, obj, manager, dry_run=False, seed=rt.kind == "Pod")

    def seed(self, documents: List[Any]) -> List[Obj]:
        """Create objects from parsed YAML documents (v1 Lists are unpacked): Namespaces first, then Nodes (as add_node),
        then the rest in the given order. A Namespace that exists already (default, kube-system, ...) is left as it is."""
        objects: List[Obj] = []
        for doc in documents:
            if isinstance(doc, dict) and doc.get("kind") == "List":
                objects.extend(o for o in doc.get("items") or [] if isinstance(o, dict))
            elif isinstance(doc, dict):
                objects.append(doc)
            elif doc is not None:
                raise ValueError(f"a seed document is not an object: {doc!r}")
        rank = {"Namespace": 0, "CustomResourceDefinition": 0, "Node": 1}
        stored: List[Obj] = []
        for obj in sorted(objects, key=lambda o: rank.get(str(o.get("kind")), 2)):
            if obj.get("kind") == "Namespace" and self.get_object("v1", "Namespace", str((obj.get("metadata") or {}).get("name"))):
                continue
            stored.append(self.add_node(obj) if obj.get("kind") == "Node" else self.add_object(obj))
        return stored

    def add_node(self, obj: Obj) -> Obj:
        """Register a Node, status included, as the kubelet does."""
        if obj.get("kind") != "Node" or obj.get("apiVersion") != "v1":
            raise ValueError("add_node needs an object of apiVersion v1, kind Node")
        stored = self.add_object({k: v for k, v in obj.items() if k != "status"}, manager="kubelet")
        if "status" not in obj:
            return stored
        # the kubelet registers the Node, then reports its status through the status subresource
        return self.set_node(stored["metadata"]["name"], {**stored, "status": obj["status"]})

    def set_node(self, name: str, obj: Obj) -> Obj:
        """Replace a Node's labels, annotations, spec and status (a kubelet/device plugin update); bumps resourceVersion."""
        with self.cluster.lock:
            live = self.cluster.get(NODES, "", name)
            if live is None:
                raise KeyError(name)
            new = copy.deepcopy(obj)
            new.setdefault("metadata", {})
            new["metadata"]["managedFields"] = live["metadata"].get("managedFields")
            track_update(NODES, live, new, "kubelet")
            track_update(NODES, live, new, "kubelet", subresource="status")
            return self.cluster._finish_write(NODES, live, new, "", name, subresource="*")  # main resource and status in one write

    def patch_node(self, name: str, patch: Obj) -> Obj:
        """set_node with a JSON merge patch of the current Node (e.g. {"status": {"allocatable": {...}}})."""
        live = self.get_object("v1", "Node", name)
        if live is None:
            raise KeyError(name)
        return self.set_node(name, merge_patch(live, patch))

    def delete_node(self, name: str) -> None:
        self.cluster.delete(NODES, "", name, dry_run=False)

    def get_object(self, api_version: str, kind: str, name: str, namespace: Optional[str] = None) -> Optional[Obj]:
        rt = self.cluster.resource_for(api_version, kind)
        return self.cluster.get(rt, (namespace or "default") if rt.namespaced else "", name)

    def objects(self, api_version: str, kind: str, namespace: Optional[str] = None) -> List[Obj]:
        rt = self.cluster.resource_for(api_version, kind)
        with self.cluster.lock:
            return [copy.deepcopy(o) for (res, ns, _n), o in sorted(self.cluster.objects.items())
                    if res == Cluster.key(rt) and (namespace is None or ns == namespace)]

    def pod_security_refusals(self) -> List[Obj]:
        """The pod creates the controllers could not make because Pod Security refused them, one per workload:
        ``{"kind", "namespace", "name", "message"}`` (message: the API's ``pods "x" is forbidden: violates PodSecurity
        ...``), sorted by kind, namespace, name. Empty when every workload's pods would be admitted."""
        with self.cluster.lock:
            return [copy.deepcopy(v) for _k, v in sorted(self.cluster.refusals.items())]

    def events(self, namespace: Optional[str] = None, involved: Optional[Tuple[str, str]] = None) -> List[Obj]:
        """The core/v1 Events stored (by the fake's controllers), optionally of one namespace and one (kind, name)."""
        return [e for e in self.objects("v1", "Event", namespace)
                if involved is None or ((e.get("involvedObject") or {}).get("kind"), (e.get("involvedObject") or {}).get("name")) == involved]

    def load_crds(self, names: Optional[List[str]] = None) -> List[Obj]:
        """crds.load_crds(self, names): create vendored CRDs (CRD names, kinds or plurals; None: all)."""
        from .crds import load_crds  # noqa: PLC0415 -- crds imports this module for typing only

        return load_crds(self, names)

    # -- routing

    def route(self, method: str, path: str, query: Dict[str, List[str]], content_type: Optional[str], body: bytes,
              user_agent: str) -> Tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["apis", CUSTOM_METRICS_GROUP]:
            return self._custom_metrics(method, parts[2:], query)
        if len(parts) >= 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "services" and parts[6] == "proxy":
            return self._service_proxy(method, parts[3], parts[5], "/" + "/".join(parts[7:]) + ("/" if path.endswith("/") and len(parts) > 7 else ""),
                                       query, content_type, body)
        if method == "GET" and parts[:2] == ["apis", "apiregistration.k8s.io"]:
            self._sync_apiservices()
        if method == "GET" and parts[:2] == ["apis", "autoscaling"]:
            self._sync_hpas()
        if method == "GET":
            document = self._discovery(parts)
            if document is not None:
                return 200, document
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis" and parts[1] in dict(self.cluster.groups()):
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise PATH_NOT_FOUND
        return self._resource_request(method, group, version, rest, query, content_type or "", body, user_agent)

    def _discovery(self, parts: List[str]) -> Any:
        if parts == ["version"]:
            major, minor = self.kube_version.lstrip("v").split(".")[:2]
            return {"major": major, "minor": minor, "gitVersion": self.kube_version, "gitCommit": "0" * 40, "gitTreeState": "clean",
                    "buildDate": "2024-12-10T11:37:56Z", "goVersion": "go1.22.9", "compiler": "gc", "platform": "linux/amd64"}
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return "ok"
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("https://")}]}
        if parts == ["api", "v1"]:
            return {"kind": "APIResourceList", "groupVersion": "v1",
                    "resources": [d for r in RESOURCES if not r.group for d in (r.discovery(), *r.discovery_subresources())]}
        groups = dict(self.cluster.groups())
        if parts == ["apis"]:
            aggregated = self._metrics_group()
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [_group(g, v) for g, v in self.cluster.groups()] + ([aggregated] if aggregated else [])}
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], groups[parts[1]])}
        if len(parts) == 3 and parts[0] == "apis" and parts[1] in groups and parts[2] in groups[parts[1]]:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{parts[1]}/{parts[2]}",
                    "resources": [d for r in self.cluster.served() if r.group == parts[1] and r.version == parts[2]
                                  for d in (r.discovery(), *r.discovery_subresources())]}
        return None

    def _resource_request(self, method: str, group: str, version: str, rest: List[str], query: Dict[str, List[str]], content_type: str,
                          body: bytes, user_agent: str) -> Tuple[int, Any]:
        served = {r.name: r for r in self.cluster.served() if r.group == group and r.version == version}
        if not served:
            raise PATH_NOT_FOUND
        namespace: Optional[str] = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served and served[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in served or len(rest) > 3:
            raise PATH_NOT_FOUND
        rt = served[rest[0]]
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else ""
        if subresource and subresource not in {sub[0] for sub in rt.subresources}:
            raise PATH_NOT_FOUND
        if namespace is not None and not rt.namespaced:
            raise PATH_NOT_FOUND
        dry_run = self._dry_run(query)
        if not content_type and method != "PATCH":
            content_type = "application/json"  # NegotiateInputSerializer: no Content-Type means the first supported type
        manager_from_agent = user_agent.split("/", maxsplit=1)[0] or "unknown"  # the API server's default field manager
        manager = (query.get("fieldManager") or [""])[0] or manager_from_agent
        ns = (namespace or "") if rt.namespaced else ""
        if name is None:
            if method == "GET":
                if _parse_bool((query.get("watch") or ["false"])[0]):
                    raise METHOD_NOT_ALLOWED  # watch is not served (and not advertised in the verbs)
                return 200, self.cluster.list(rt, namespace if rt.namespaced else None, (query.get("labelSelector") or [""])[0],
                                              (query.get("fieldSelector") or [""])[0])
            if method == "POST" and (namespace is not None or not rt.namespaced):
                if content_type not in ("application/json", "application/yaml"):
                    raise _unsupported_media()
                obj = _decode(body, content_type, yaml_ok=content_type == "application/yaml")
                return 201, self.cluster.create(rt, ns, obj, manager, dry_run, field_validation=field_validation_of(query))
            raise METHOD_NOT_ALLOWED
        if rt.namespaced and namespace is None:
            raise PATH_NOT_FOUND
        if subresource == "log":
            if method != "GET":
                raise METHOD_NOT_ALLOWED
            # text/plain, as the API server streams a container's log (pkg/registry/core/pod/rest/log.go)
            return 200, self.cluster.pod_log(ns, name, (query.get("container") or [""])[0])
        if subresource == "eviction":
            if method != "POST":
                raise METHOD_NOT_ALLOWED
            if content_type not in ("application/json", "application/yaml"):
                raise _unsupported_media()
            return self.cluster.evict(ns, name, _decode(body, content_type, content_type == "application/yaml"), dry_run)
        if method == "GET":
            obj = self.cluster.get(rt, ns, name)
            if obj is None:
                raise not_found(rt, name)
            return 200, obj
        if method == "PUT":
            if content_type not in ("application/json", "application/yaml"):
                raise _unsupported_media()
            return 200, self.cluster.replace(rt, ns, name, _decode(body, content_type, content_type == "application/yaml"), manager, dry_run,
                                             field_validation_of(query))
        if method == "PATCH":
            if content_type not in (APPLY_PATCH, MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH):
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: "
                               f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_PATCH}")
            return self.cluster.patch(rt, ns, name, content_type, body, query, manager_from_agent, dry_run)
        if method == "DELETE":
            options = _decode(body, content_type, content_type == "application/yaml") if body.strip() else {}
            if not isinstance(options, dict):
                raise bad_request("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")
            if "gracePeriodSeconds" in query:
                options["gracePeriodSeconds"] = _parse_int(query["gracePeriodSeconds"][0], "gracePeriodSeconds")
            if options.get("dryRun"):
                dry_run = dry_run or self._dry_run({"dryRun": list(options["dryRun"])})
            return 200, self.cluster.delete(rt, ns, name, dry_run, options)
        raise METHOD_NOT_ALLOWED

    # -- the aggregation layer: custom.metrics.k8s.io (prometheus-adapter) behind its APIService(s)

    def _metric_apiservices(self) -> List[Obj]:
        """The APIServices registering custom.metrics.k8s.io, by versionPriority (highest first), as the aggregator orders them."""
        services = [o for o in self.objects("apiregistration.k8s.io/v1", "APIService") if (o.get("spec") or {}).get("group") == CUSTOM_METRICS_GROUP]
        return sorted(services, key=lambda o: (-int(o["spec"].get("versionPriority") or 0), o["metadata"]["name"]))

    def _metrics_group(self) -> Optional[Obj]:
        services = self._metric_apiservices()
        if not services:
            return None
        versions = [{"groupVersion": f"{CUSTOM_METRICS_GROUP}/{o['spec']['version']}", "version": o["spec"]["version"]} for o in services]
        return {"name": CUSTOM_METRICS_GROUP, "versions": versions, "preferredVersion": versions[0]}

    def _adapter_unavailable(self) -> Optional[ApiError]:
        if self.metrics_adapter is None or self.metrics_adapter.down:
            return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        return None

    def _custom_metrics(self, method: str, rest: List[str], query: Dict[str, List[str]]) -> Tuple[int, Any]:
        group = self._metrics_group()
        if group is None:
            raise PATH_NOT_FOUND
        if method != "GET":
            raise METHOD_NOT_ALLOWED
        if not rest:
            return 200, {"kind": "APIGroup", "apiVersion": "v1", **group}
        version = rest[0]
        if version not in {v["version"] for v in group["versions"]}:
            raise PATH_NOT_FOUND
        unavailable = self._adapter_unavailable()  # from here on the aggregator proxies to the adapter
        if unavailable is not None:
            raise unavailable
        adapter = self.metrics_adapter
        assert adapter is not None
        try:
            if len(rest) == 1:
                return 200, adapter.resource_list(version)
            if len(rest) == 6 and rest[1] == "namespaces" and rest[3] == "pods":
                namespace, target, metric = rest[2], rest[4], rest[5]
                if target == "*":
                    selector = (query.get("labelSelector") or [""])[0]
                    pods = [p["metadata"]["name"] for p in self.cluster.list(PODS, namespace, selector or None, None)["items"]]
                    return 200, adapter.metric_value_list(version, namespace, pods, metric)
                return 200, adapter.metric_value_list(version, namespace, [target], metric, single=target)
        except MetricError as exc:
            raise ApiError(exc.code, exc.reason, exc.message) from None
        raise PATH_NOT_FOUND

    def _sync_apiservices(self) -> None:
        """The aggregator's availability controller: condition Available of every APIService."""
        rt = self.cluster.resource_for("apiregistration.k8s.io/v1", "APIService")
        for svc in self.objects("apiregistration.k8s.io/v1", "APIService"):
            spec = svc.get("spec") or {}
            service = spec.get("service")
            if not service:
                cond = (True, "Local", "Local APIServices are always available")
            elif spec.get("group") != CUSTOM_METRICS_GROUP or self.metrics_adapter is None:
                cond = (False, "ServiceNotFound", f'service/{service.get("name")} in "{service.get("namespace")}" is not present')
            elif self.metrics_adapter.down:
                url = f"https://{service.get('name')}.{service.get('namespace')}.svc:{service.get('port', 443)}/apis/{spec.get('group')}/{spec.get('version')}"
                refused = "dial tcp 10.96.0.45:443: connect: connection refused"
                cond = (False, "FailedDiscoveryCheck", f'failing or missing response from {url}: Get "{url}": {refused}')
            else:
                cond = (True, "Passed", "all checks passed")
            self._write_status(rt, "", svc, {"conditions": [_set_condition(svc, "Available", *cond)]})

    def _sync_hpas(self) -> None:
        """The HPA controller, synced when an HPA is read: status from the scale target's ready pods and the custom metrics API."""
        rt = self.cluster.resource_for("autoscaling/v2", "HorizontalPodAutoscaler")
        for hpa in self.objects("autoscaling/v2", "HorizontalPodAutoscaler"):
            namespace = hpa["metadata"]["namespace"]
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            target = self.get_object("apps/v1", "Deployment", str(ref.get("name")), namespace) if ref.get("kind") == "Deployment" else None
            if target is None:
                message = f'the HPA controller was unable to get the target\'s current scale: deployments/scale.apps "{ref.get("name")}" not found'
                self._write_status(rt, namespace, hpa, {"currentReplicas": 0, "desiredReplicas": 0,
                                                        "conditions": [_set_condition(hpa, "AbleToScale", False, "FailedGetScale", message)]})
                continue
            match = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            pods = [p["metadata"]["name"] for p in self.objects("v1", "Pod", namespace)
                    if selector_matches({"matchLabels": match}, p["metadata"].get("labels") or {}) and _pod_ready(p)]

            def values(metric: str, ns: str = namespace, names: List[str] = pods) -> Dict[str, float]:
                unavailable = self._adapter_unavailable() if self._metrics_group() else PATH_NOT_FOUND
                if unavailable is not None:
                    raise MetricError(unavailable.code, unavailable.reason, unavailable.message)
                assert self.metrics_adapter is not None
                return self.metrics_adapter.values(ns, names, metric)

            self._write_status(rt, namespace, hpa, hpa_status(hpa, pods, values))

    def write_status(self, rt: ResourceType, namespace: str, name: str, status: Obj) -> None:
        """Replace an object's status as its controller or kubelet does (the status subresource); for test hooks."""
        live = self.cluster.get(rt, namespace, name)
        if live is None:
            raise LookupError(f"{rt.kind} {namespace}/{name} not found")
        self._write_status(rt, namespace, live, status)

    def complete_job(self, namespace: str, name: str, **options: Any) -> Any:
        """A test hook, not an API rule (kube_fake has no kubelet and no Job controller): create the Job's pod, run its
        container's command on this machine, record the output as the pod's log and finish the pod and the Job as the
        Job controller does. Options and what is (not) modelled: tests/kube_fake/jobs.py run_job."""
        return run_job(self, namespace, name, **options)

    def _write_status(self, rt: ResourceType, namespace: str, live: Obj, status: Obj) -> None:
        with self.cluster.lock:
            current = self.cluster.get(rt, namespace, live["metadata"]["name"])
            if current is None:
                return
            new = copy.deepcopy(current)
            new["status"] = status
            track_update(rt, current, new, "kube-controller-manager", "status")
            self.cluster._finish_write(rt, current, new, namespace, current["metadata"]["name"], subresource="status")

    # -- the service proxy subresource

    def _service_proxy(self, method: str, namespace: str, target: str, path: str, query: Dict[str, List[str]], content_type: Optional[str],
                       body: bytes) -> Tuple[int, Any]:
        """/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH, forwarded to the backend the test set for the Service's port."""
        if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise METHOD_NOT_ALLOWED
        fields = target.split(":")
        if len(fields) == 3:
            fields = fields[1:]
        name, port = fields[0], (fields[1] if len(fields) > 1 else "")
        services = next(r for r in RESOURCES if r.name == "services")
        service = self.cluster.get(services, namespace, name)
        if service is None:
            raise not_found(services, name)
        ports = (service.get("spec") or {}).get("ports") or []
        chosen = next((p for p in ports if port in (str(p.get("name", "")), str(p.get("port", "")))), None) if port else (ports[0] if len(ports) == 1 else None)
        backend = self.service_backends.get((namespace, name, str((chosen or {}).get("name", "")))) or self.service_backends.get((namespace, name, ""))
        if chosen is None or backend is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{target}"')
        url = backend.rstrip("/") + path + (("?" + urlencode(query, doseq=True)) if query else "")
        request = urllib.request.Request(url, data=body if method != "GET" else None, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT_S) as resp:
                return int(resp.status), RawAnswer(resp.read(), resp.headers.get("Content-Type") or "application/octet-stream")
        except urllib.error.HTTPError as exc:
            return int(exc.code), RawAnswer(exc.read(), exc.headers.get("Content-Type") or "application/octet-stream")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            split = urlsplit(backend)
            detail = "connect: connection refused" if isinstance(reason, ConnectionRefusedError) else str(reason)
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {split.hostname}:{split.port}: {detail}") from None

    @staticmethod
    def _dry_run(query: Dict[str, List[str]]) -> bool:
        values = query.get("dryRun") or []
        for value in values:
            if value != "All":
                raise invalid("PatchOptions", "meta.k8s.io", "", [{"reason": "FieldValueNotSupported",
                                                                   "message": f'Unsupported value: "{value}": supported values: "All"',
                                                                   "field": "dryRun"}])
        return bool(values)


def _set_condition(obj: Obj, kind: str, status: bool, reason: str, message: str) -> Obj:
    """A condition as controllers write it: lastTransitionTime kept while the status stays."""
    old: Obj = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})
    flag = "True" if status else "False"
    stamp = old.get("lastTransitionTime") if old.get("status") == flag else None
    return {"type": kind, "status": flag, "lastTransitionTime": stamp or _now(), "reason": reason, "message": message}


def _unsupported_media() -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")


def _group(name: str, versions: List[str]) -> Obj:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


__all__ = ["RESOURCES", "ApiError", "FakeKube", "RecordedRequest", "ResourceType", "label_selector", "merge_patch", "selector_matches",
           "server_side_apply"]
