# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CustomResourceDefinitions for kube_fake: the vendored CRDs, loading them, version ordering, the CRD status the
apiextensions controllers write, and nfd-master's part (NodeFeature objects to node labels).

    from kube_fake import FakeKube
    from kube_fake.crds import load_crds

    with FakeKube(nfd_master=True) as kube:
        load_crds(kube, ["NodeFeature", "servicemonitors.monitoring.coreos.com"])   # kinds or CRD names; None: all
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

if TYPE_CHECKING:
    from .server import FakeKube

Obj = Dict[str, Any]

TESTS = Path(__file__).resolve().parents[1]
# tests/data/shared mirrors /work/shared (ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject); tests/data/crds is ours (NFD)
VENDORED_CRD_DIRS: Tuple[Path, ...] = (TESTS / "data" / "shared" / "conformance" / "crds", TESTS / "data" / "crds")


@functools.cache
def _vendored() -> Tuple[Tuple[str, Obj], ...]:
    found: List[Tuple[str, Obj]] = []
    for directory in VENDORED_CRD_DIRS:
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    found.append((str(doc["metadata"]["name"]), doc))
    return tuple(found)


def vendored_crds() -> Dict[str, Obj]:
    """Every vendored CRD by name (``servicemonitors.monitoring.coreos.com``, ``nodefeatures.nfd.k8s-sigs.io``, ...); copies."""
    return {name: copy.deepcopy(doc) for name, doc in _vendored()}


def select_crds(names: Optional[Iterable[str]] = None) -> List[Obj]:
    """The vendored CRDs named by CRD name, kind or plural (``NodeFeature``, ``nodefeatures``); all when None.
    An unknown name is a KeyError listing what is vendored."""
    crds = vendored_crds()
    if names is None:
        return list(crds.values())
    chosen: List[Obj] = []
    for wanted in names:
        match = [doc for name, doc in crds.items()
                 if wanted in (name, doc["spec"]["names"]["kind"], doc["spec"]["names"]["plural"])]
        if not match:
            raise KeyError(f"no vendored CRD {wanted!r}; vendored: {', '.join(sorted(crds))}")
        chosen.extend(m for m in match if m not in chosen)
    return chosen


def load_crds(kube: FakeKube, names: Optional[Sequence[str]] = None) -> List[Obj]:
    """Create the vendored CRDs (``names``: CRD names, kinds or plurals; None: every one) in ``kube``, as
    ``kube.seed()`` would; a CRD that exists already is left as it is. Returns the stored CRDs."""
    stored: List[Obj] = []
    for crd in select_crds(names):
        live = kube.get_object("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
        stored.append(live if live is not None else kube.add_object(crd))
    return stored


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> Tuple[int, int, int, str]:
    """A sort key putting versions in the API server's discovery order (k8s.io/apimachinery/pkg/version
    CompareKubeAwareVersionStrings): GA before beta before alpha, higher numbers first, other strings last by name."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = int(match.group(1)), match.group(2), int(match.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, version)


def served_versions(crd: Obj) -> List[Obj]:
    versions = [v for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, dict) and v.get("served", True)]
    return sorted(versions, key=lambda v: version_priority(str(v.get("name", ""))))


def crd_status(crd: Obj, previous: Optional[Obj], now: str) -> Obj:
    """What the apiextensions controllers write at once: NamesAccepted and Established True, acceptedNames, storedVersions."""
    spec = crd.get("spec") or {}
    old = (previous or {}).get("status") or {}
    old_conditions = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}

    def condition(kind: str, reason: str, message: str) -> Obj:
        stamp = old_conditions.get(kind, {}).get("lastTransitionTime") if old_conditions.get(kind, {}).get("status") == "True" else None
        return {"type": kind, "status": "True", "lastTransitionTime": stamp or now, "reason": reason, "message": message}

    stored = [str(v["name"]) for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
    return {"conditions": [condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                           condition("Established", "InitialNamesAccepted", "the initial names have been accepted")],
            "acceptedNames": copy.deepcopy(spec.get("names") or {}),
            "storedVersions": sorted(set(old.get("storedVersions") or []) | set(stored))}


# ---------------------------------------------------------------------------------------------------------------
# nfd-master (kubernetes-sigs/node-feature-discovery pkg/nfd-master/nfd-master.go, pkg/validate/validate.go)

NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"  # nfdv1alpha1.NodeFeatureObjNodeNameLabel
FEATURE_LABELS_ANNOTATION = "nfd.node.kubernetes.io/feature-labels"  # nfdv1alpha1.FeatureLabelsAnnotation
FEATURE_LABEL_NS = "feature.node.kubernetes.io"
PROFILE_LABEL_NS = "profile.node.kubernetes.io"
NODE_FEATURE_KEY = ("nfd.k8s-sigs.io", "NodeFeature")
# the nvidia-device-plugin chart's values configure its NFD subchart with master.extraLabelNs: ["nvidia.com"]
DEFAULT_EXTRA_LABEL_NS: Tuple[str, ...] = ("nvidia.com",)

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_qualified_name(key: str) -> bool:
    """k8s.io/apimachinery/pkg/util/validation IsQualifiedName."""
    prefix, _slash, name = key.rpartition("/")
    if "/" in prefix:
        return False
    if _slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def is_valid_label_value(value: str) -> bool:
    """k8s.io/apimachinery/pkg/util/validation IsValidLabelValue."""
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def label_allowed(key: str, value: str, extra_ns: Iterable[str], denied_ns: Iterable[str]) -> bool:
    """nfdMaster.filterFeatureLabel with validate.Label: a valid, prefixed key and value; the kubernetes.io family only
    for feature.node.kubernetes.io, profile.node.kubernetes.io and their sub-namespaces; a namespace refused that way or
    by denyLabelNs (``*.suffix`` wildcards) is let through by extraLabelNs."""
    if not is_qualified_name(key):
        return False
    namespace = key.split("/", 1)[0] if "/" in key else ""
    if not namespace:
        return False  # ErrUnprefixedKeysNotAllowed
    not_allowed = (namespace == "kubernetes.io" or namespace.endswith(".kubernetes.io")) and not (
        namespace in (FEATURE_LABEL_NS, PROFILE_LABEL_NS) or namespace.endswith("." + FEATURE_LABEL_NS) or namespace.endswith("." + PROFILE_LABEL_NS))
    denied = any(namespace.endswith(d.lstrip("*")) if d.startswith("*") else namespace == d for d in denied_ns)
    if (not_allowed or denied) and namespace not in set(extra_ns):
        return False
    return is_valid_label_value(value)


def _with_default_ns(labels: Dict[str, str]) -> Dict[str, str]:
    """addNsToMapKeys: unprefixed names get feature.node.kubernetes.io/ unless the prefixed name is there too."""
    out: Dict[str, str] = {}
    for key, value in labels.items():
        if "/" in key:
            out[key] = value
        elif f"{FEATURE_LABEL_NS}/{key}" not in labels:
            out[f"{FEATURE_LABEL_NS}/{key}"] = value
    return out


def node_labels(node_name: str, node_features: List[Obj], nfd_namespace: str, extra_ns: Iterable[str], denied_ns: Iterable[str]) -> Dict[str, str]:
    """getAndMergeNodeFeatures + filterFeatureLabels: the labels nfd-master wants on a node, from the NodeFeature objects
    labelled with its name; objects of nfd-master's own namespace first, then by name and namespace, later ones win."""
    mine = [o for o in node_features if ((o.get("metadata") or {}).get("labels") or {}).get(NODE_NAME_LABEL) == node_name]
    mine.sort(key=lambda o: (o["metadata"].get("namespace") != nfd_namespace, o["metadata"]["name"], o["metadata"].get("namespace", "")))
    merged: Dict[str, str] = {}
    for obj in mine:
        raw = ((obj.get("spec") or {}).get("labels")) or {}
        merged.update(_with_default_ns({str(k): str(v) for k, v in raw.items()}))
    extra, denied = list(extra_ns), list(denied_ns)
    return {k: v for k, v in merged.items() if label_allowed(k, v, extra, denied)}


def apply_node_labels(node: Obj, wanted: Dict[str, str]) -> Optional[Obj]:
    """nfdMaster.updateNodeObject/createPatches (allowOverwrite true): remove the labels it set before and no longer
    wants (listed in the feature-labels annotation, default namespace left out), add or replace the wanted ones, keep the
    annotation current (removed when there is none). None when nothing changes."""
    new = copy.deepcopy(node)
    meta = new.setdefault("metadata", {})
    labels: Dict[str, str] = dict(meta.get("labels") or {})
    annotations: Dict[str, str] = dict(meta.get("annotations") or {})
    previous = [name if "/" in name else f"{FEATURE_LABEL_NS}/{name}" for name in (annotations.get(FEATURE_LABELS_ANNOTATION) or "").split(",") if name]
    for key in previous:
        if key not in wanted:
            labels.pop(key, None)
    labels.update(wanted)
    if wanted:
        annotations[FEATURE_LABELS_ANNOTATION] = ",".join(sorted(k.removeprefix(FEATURE_LABEL_NS + "/") for k in wanted))
    else:
        annotations.pop(FEATURE_LABELS_ANNOTATION, None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return None if new == node else new
