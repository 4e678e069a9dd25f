# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Strict schema validation of rendered Kubernetes objects, for several Kubernetes versions.

Built-in kinds are checked with ``kubernetes_validate.validate(obj, version, strict=True)``: an
apiVersion/kind without a schema in that Kubernetes version (removed, like ``autoscaling/v2beta1``, or
never existing) is an error. Objects of the CRDs vendored in ``tests/data/shared/conformance/crds``
are checked with ``jsonschema`` against the CRD's ``openAPIV3Schema``, translated from the OpenAPI v3
structural-schema dialect to Draft 7 the way the API server reads it with strict field validation
(unknown fields are errors, ``nullable``, ``x-kubernetes-int-or-string``, ``x-kubernetes-preserve-unknown-fields``,
list types ``set``/``map``), and their ``metadata`` against the ObjectMeta of each Kubernetes version.
CEL rules (``x-kubernetes-validations``) and ``format`` are not checked.

Usage::

    from k8s_schemas import validate, validate_file
    validate(rendered_object)           # raises SchemaError, returns the versions checked
    validate_file(Path("out.yaml"))     # every YAML document; returns how many
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "tests" / "data" / "shared" / "conformance" / "crds"
KUBE_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
_MAX_MESSAGE = 400  # jsonschema messages quote the whole failing instance; keep them readable

Schema = dict[str, Any]


class SchemaError(AssertionError):
    """A rendered object does not validate.

    Message: ``<kind> <namespace/name> (<apiVersion>) against Kubernetes <version>: <JSON path>: <problem>``.
    """


# --- CRDs ---------------------------------------------------------------------------------------


def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], Schema]:
    """``(apiVersion "group/version", kind)`` -> ``openAPIV3Schema`` of every served version of every CRD in ``crd_dir``.

    Loaded once per directory; the schemas are shared, do not modify them.
    """
    return dict(_load_crds(crd_dir.resolve()))


@functools.cache
def _load_crds(crd_dir: Path) -> Mapping[tuple[str, str], Schema]:
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"CRD directory {crd_dir} not found")
    schemas: dict[tuple[str, str], Schema] = {}
    for path in sorted([*crd_dir.glob("*.yaml"), *crd_dir.glob("*.yml")]):
        with path.open(encoding="utf-8") as handle:
            documents = list(yaml.safe_load_all(handle))
        for crd in documents:
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if not isinstance(schema, dict):
                    raise ValueError(f"{path}: CRD {kind} version {version.get('name')} has no openAPIV3Schema")
                key = (f"{group}/{version['name']}", kind)
                if key in schemas:
                    raise ValueError(f"{path}: {key} is defined twice in {crd_dir}")
                schemas[key] = schema
    if not schemas:
        raise ValueError(f"no CustomResourceDefinition found in {crd_dir}")
    return schemas


# Go's RE2 takes inline flags anywhere ("^(?i)(abort|warn)?$" in PrometheusRule); Python 3.11+ only at the start.
_GO_INLINE_FLAGS = re.compile(r"\(\?([ims]+)\)")


def _python_pattern(pattern: str) -> str:
    fixed = pattern.replace(r"\z", r"\Z")
    for _attempt in range(pattern.count("(?") + 1):
        try:
            re.compile(fixed)
        except re.error:
            match = _GO_INLINE_FLAGS.search(fixed, 1)
            if match is None:
                break
            # top-level flags apply to the rest of the expression: "^(?i)x" -> "^(?i:x)"
            fixed = f"{fixed[: match.start()]}(?{match.group(1)}:{fixed[match.end():]})"
        else:
            return fixed
    raise ValueError(f"CRD pattern {pattern!r} is not a regular expression Python can compile")


_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SUBSCHEMAS = ("items", "additionalProperties", "additionalItems", "not")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf")


def _to_draft7(node: Any) -> Any:
    """One node of a CRD structural schema as Draft 7, as strict as the API server with strict field validation."""
    if not isinstance(node, dict):
        return node  # booleans (additionalProperties: true) and malformed nodes pass through
    out: Schema = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _to_draft7(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMAS:
            out[key] = _to_draft7(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_to_draft7(sub) for sub in value]
        elif key == "pattern" and isinstance(value, str):
            out[key] = _python_pattern(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            # OpenAPI 3.0 / Draft 4 boolean form -> Draft 7 number form
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in node:
                out[key] = node[bound]
        else:
            out[key] = value  # enum, default, example, description ...: data, not schemas
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        bound = "minimum" if key == "exclusiveMinimum" else "maximum"
        if node.get(key) is True:
            out.pop(bound, None)

    if node.get("x-kubernetes-int-or-string") is True and "type" not in out:
        out["type"] = ["integer", "string"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("x-kubernetes-embedded-resource") is True:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    if node.get("type") == "object" and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False  # the API server prunes, strict field validation rejects: unknown field
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type == "map" and node.get("x-kubernetes-list-map-keys"):
        out["x-kubernetes-list-map-keys"] = list(node["x-kubernetes-list-map-keys"])

    if node.get("nullable") is True:
        if "type" in out and not any(key in out for key in _SUBSCHEMA_LISTS):
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: Schema) -> Iterator[Any]:
    """``x-kubernetes-list-type: map``: no two items with the same values of the key fields."""
    if not validator.is_type(instance, "array"):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = json.dumps([item.get(name) for name in keys], sort_keys=True)
        if key in seen:
            values = ", ".join(f"{name}={item.get(name)!r}" for name in keys)
            yield jsonschema.ValidationError(f"duplicate entry {values} (items {seen[key]} and {index}; list-map-keys {keys})", path=[index])
        else:
            seen[key] = index


_CrdValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys})


@functools.cache
def _crd_validator(api_version: str, kind: str) -> Any:
    """Draft 7 validator for a CRD object, or ``None`` when (api_version, kind) is not one of the vendored CRDs."""
    raw = _load_crds(CRD_DIR.resolve()).get((api_version, kind))
    if raw is None:
        return None
    schema: Schema = _to_draft7(copy.deepcopy(raw))
    props = schema.setdefault("properties", {})
    props["metadata"] = {"type": "object"}  # checked against the Kubernetes version's ObjectMeta instead
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    schema["additionalProperties"] = False  # top level: only the declared fields (apiVersion, kind, metadata, spec, status)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    _CrdValidator.check_schema(schema)
    return _CrdValidator(schema)


# --- validation ---------------------------------------------------------------------------------


def _identity(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}, not a mapping>"
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name") or "<no name>"
    namespace = meta.get("namespace")
    qualified = f"{namespace}/{name}" if namespace else str(name)
    return f"{obj.get('kind') or '<no kind>'} {qualified} ({obj.get('apiVersion') or '<no apiVersion>'})"


def _error(obj: Any, version: str, what: str) -> SchemaError:
    return SchemaError(f"{_identity(obj)} against Kubernetes {version}: {what}")


def _describe(error: Any) -> str:
    message = str(error.message)
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"{error.json_path}: {message}"


def _check_required(obj: Any, version: str) -> None:
    if not isinstance(obj, dict):
        raise _error(obj, version, "a Kubernetes object must be a mapping")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise _error(obj, version, f"$.{field}: missing or not a non-empty string")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _error(obj, version, "$.metadata: missing or not a mapping")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise _error(obj, version, "$.metadata.name: missing or not a non-empty string")


def _validate_builtin(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise _error(obj, version, f"no schema for apiVersion {obj['apiVersion']} kind {obj['kind']} in Kubernetes {version} — removed or unknown") from None
    except kubernetes_validate.ValidationError as exc:
        raise _error(obj, version, _describe(exc)) from None


def _validate_crd(obj: dict[str, Any], version: str, validator: Any) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        raise _error(obj, version, _describe(error))
    # metadata is an ObjectMeta for custom resources too: check it strictly with this version's schema
    try:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise _error(obj, version, _describe(exc)) from None


def validate(obj: dict[str, Any], versions: Sequence[str] = KUBE_VERSIONS) -> list[str]:
    """Validate one object strictly for each Kubernetes version; raise SchemaError on the first problem.

    Objects of the vendored CRDs are checked against the CRD schema; everything else must have a built-in
    schema in each version. Returns the versions checked.
    """
    if isinstance(versions, str) or not versions:
        raise ValueError(f"versions must be a non-empty sequence of Kubernetes versions, not {versions!r}")
    _check_required(obj, versions[0])
    crd = _crd_validator(obj["apiVersion"], obj["kind"])
    checked: list[str] = []
    for version in versions:
        try:
            if crd is None:
                _validate_builtin(obj, version)
            else:
                _validate_crd(obj, version, crd)
        except kubernetes_validate.utils.VersionNotSupportedError:
            raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}") from None
        checked.append(version)
    return checked


def validate_file(path: Path, versions: Sequence[str] = KUBE_VERSIONS) -> int:
    """Validate every (non-empty) YAML document of ``path``; return how many were validated."""
    count = 0
    with Path(path).open(encoding="utf-8") as handle:
        documents = list(yaml.safe_load_all(handle))
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        try:
            validate(document, versions)
        except SchemaError as exc:
            raise SchemaError(f"{path} (document {number}): {exc}") from None
        count += 1
    return count
