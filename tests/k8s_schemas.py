# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Strict schema validation of rendered Kubernetes objects, for several Kubernetes versions.

Built-in kinds are checked with ``kubernetes_validate.validate(obj, version, strict=True)``: an
apiVersion/kind without a schema in that Kubernetes version (removed, like ``autoscaling/v2beta1``, or
never existing) is an error. Objects of the CRDs vendored in ``tests/data/shared/conformance/crds`` (and
``tests/data/crds``) are checked with ``jsonschema`` against the CRD's ``openAPIV3Schema``, translated from the OpenAPI v3
structural-schema dialect to Draft 7 the way the API server reads it with strict field validation
(unknown fields are errors, ``nullable``, ``x-kubernetes-int-or-string``, ``x-kubernetes-preserve-unknown-fields``,
list types ``set``/``map``), and their ``metadata`` against the ObjectMeta of each Kubernetes version.
CEL rules (``x-kubernetes-validations``) and ``format`` are not checked.

``review()`` walks one object the way the API server decodes and validates it (unknown fields, types, required
fields, enums, a CRD's patterns and bounds) and returns every problem with the paths the server prints; tests/kube_fake
uses it at admission.

Usage::

    from k8s_schemas import review, validate, validate_file
    validate(rendered_object)           # raises SchemaError, returns the versions checked
    validate_file(Path("out.yaml"))     # every YAML document; returns how many
    review(obj, "1.31.0").findings      # [Finding(kind="unknown", field="spec.foo", smd=".spec.foo", ...)]
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "tests" / "data" / "shared" / "conformance" / "crds"
# CRDs vendored by this repository (NFD's NodeFeature and NodeFeatureRule; tests/data/crds/SOURCE), checked as well
EXTRA_CRD_DIR = REPO_ROOT / "tests" / "data" / "crds"
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
    if raw is None and EXTRA_CRD_DIR.is_dir():
        raw = _load_crds(EXTRA_CRD_DIR.resolve()).get((api_version, kind))
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


# --- admission: what the API server's decoding and validation refuse ------------------------------
#
# tests/kube_fake reviews every written object with review(): the same schemas, walked structurally so that each
# problem has the kind the API server gives it and the paths it prints:
#
# * built-in kinds: the Go structs behind kubernetes_validate's strict schemas. An unknown field is dropped by the
#   decoder (fieldValidation Warn/Ignore) or refused (Strict: ``strict decoding error: unknown field "spec.x"``); a wrong
#   JSON type fails decoding (``json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type
#   int32``); a missing required field or a value outside an enum is a validation error (422);
# * custom resources: the CRD's structural schema. Unknown fields are pruned (or refused under Strict); types, enums,
#   patterns, bounds and required fields are validation errors (``spec.x in body must be of type integer: "string"``);
# * server-side apply: the applied configuration is converted to the typed schema first (structured-merge-diff): an
#   unknown field or a wrong type is ``.spec.x: field not declared in schema`` / ``expected numeric (int or float), got
#   string``, whatever fieldValidation says.

FINDING_KINDS = ("unknown", "type", "required", "enum", "invalid")


@dataclass(frozen=True)
class Finding:
    """One problem of an object, with the paths the API server prints for it.

    ``field`` is a field.Path (``spec.containers[0].image``, ``metadata.labels[app]``), ``smd`` the
    structured-merge-diff path (``.spec.containers[name="triton"].image``), ``json`` the encoding/json path
    (``spec.containers.image``); ``go_struct``/``go_type`` name the Go struct and field type for decoding errors.
    """

    kind: str
    field: str
    smd: str
    message: str
    value: Any = None
    json: str = ""
    go_struct: str = ""
    go_type: str = ""
    got: str = ""  # the JSON type found (type errors)


@dataclass
class Review:
    """review()'s answer: the findings and the object with its unknown fields pruned (a copy)."""

    findings: list[Finding]
    pruned: dict[str, Any]

    def of(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind in kinds]


@functools.cache
def _builtin_defs(version: str) -> Mapping[str, Schema]:
    directory = _schema_dir(version)
    with (directory / "_definitions.json").open(encoding="utf-8") as handle:
        defs: dict[str, Schema] = json.load(handle)["$defs"]
    return defs


def _schema_dir(version: str) -> Path:
    """kubernetes_validate's strict schema directory for the newest version not newer than ``version``."""
    wanted = tuple(int(p) for p in version.lstrip("v").split(".")[:2])
    root = Path(kubernetes_validate.__file__).resolve().parent / "kubernetes-json-schema"
    best: tuple[tuple[int, int], Path] | None = None
    for path in root.glob("v*-local-strict"):
        found = tuple(int(p) for p in path.name[1:].split("-")[0].split(".")[:2])
        if found <= wanted and (best is None or found > best[0]):
            best = ((found[0], found[1]), path)
    if best is None:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return best[1]


@functools.cache
def builtin_schema(api_version: str, kind: str, version: str) -> Schema | None:
    """The strict JSON schema of a built-in kind in Kubernetes ``version`` (kubernetes_validate's files), or None."""
    short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{short}.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        schema: Schema = json.load(handle)
    return schema


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _accepts(types: Any, value: Any, nullable: bool) -> bool:
    kinds = types if isinstance(types, list) else [types]
    found = _json_kind(value)
    if found == "null":
        return nullable or "null" in kinds
    return found in kinds or (found == "integer" and "number" in kinds)


def go_value(value: Any) -> str:
    """A value as Go's %#v prints the few shapes validation messages show (strings quoted, maps of strings, lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True)


class _Walker:
    """Walks an object along a schema: built-in (``$ref`` into kubernetes_validate's definitions) or CRD structural."""

    def __init__(self, defs: Mapping[str, Schema], crd: bool) -> None:
        self.defs = defs
        self.crd = crd
        self.findings: list[Finding] = []

    def resolve(self, schema: Schema) -> tuple[Schema, str]:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return self.defs[name], name
        return schema, ""

    def go_type(self, schema: Schema) -> str:
        resolved, name = self.resolve(schema)
        if name:
            parts = name.split(".")
            return f"{parts[-2]}.{parts[-1]}"
        types = resolved.get("type")
        kind = next((t for t in (types if isinstance(types, list) else [types]) if t != "null"), "")
        if kind == "integer":
            return str(resolved.get("format") or "int")
        if kind == "number":
            return "float64"
        if kind == "boolean":
            return "bool"
        if kind == "array":
            return "[]" + self.go_type(resolved.get("items") or {})
        if kind == "object" and isinstance(resolved.get("additionalProperties"), dict):
            return "map[string]" + self.go_type(resolved["additionalProperties"])
        return str(kind or "interface {}")

    def add(self, kind: str, fpath: str, spath: str, message: str, value: Any = None, **extra: str) -> None:
        self.findings.append(Finding(kind, fpath, spath or ".", message, value, **extra))

    def walk(self, value: Any, schema: Schema, fpath: str, spath: str, jpath: str, struct: str) -> Any:
        """Check ``value``; return it with unknown fields pruned."""
        resolved, name = self.resolve(schema)
        struct_here = name.rsplit(".", 1)[-1] if name else struct
        nullable = bool(resolved.get("nullable")) if self.crd else True
        if self.crd and resolved.get("x-kubernetes-int-or-string") is True:
            if not _accepts(["integer", "string"], value, nullable):
                self.type_error(value, fpath, spath, jpath, struct, schema, ["integer", "string"])
            return value
        branches = resolved.get("oneOf") or resolved.get("anyOf")
        if "type" not in resolved and isinstance(branches, list) and not self.crd:
            if not any(_accepts(b.get("type"), value, True) for b in branches if isinstance(b, dict)):
                kinds = [b.get("type") for b in branches if isinstance(b, dict)]
                flat = [str(t) for k in kinds for t in (k if isinstance(k, list) else [k]) if t and t != "null"]
                self.type_error(value, fpath, spath, jpath, struct, schema, flat)
            return value
        types = resolved.get("type")
        if types is not None and not _accepts(types, value, nullable):
            wanted = types if isinstance(types, list) else [types]
            self.type_error(value, fpath, spath, jpath, struct, schema, [t for t in wanted if t != "null"])
            return value
        if value is None:
            return value
        enum = resolved.get("enum")
        if isinstance(enum, list) and value not in enum and fpath not in ("apiVersion", "kind"):
            supported = ", ".join(json.dumps(v) for v in enum)
            self.add("enum", fpath, spath, f"Unsupported value: {go_value(value)}: supported values: {supported}", value)
        if isinstance(value, dict):
            return self.walk_object(value, resolved, fpath, spath, jpath, struct_here)
        if isinstance(value, list):
            return self.walk_list(value, resolved, fpath, spath, jpath, struct_here)
        if self.crd:
            self.crd_scalar(value, resolved, fpath, spath)
        return value

    def type_error(self, value: Any, fpath: str, spath: str, jpath: str, struct: str, schema: Schema, wanted: list[str]) -> None:
        """A value of the wrong JSON type: kube-openapi's message for custom resources (``spec.x in body must be of type
        integer: "string"``); for built-in kinds the decoder's and structured-merge-diff's are made by the caller."""
        got = _json_kind(value)
        want = ",".join(wanted) if wanted else "object"
        message = f'Invalid value: "{got}": {fpath} in body must be of type {want}: "{got}"' if self.crd else f"expected {want}, got {got}"
        self.add("type", fpath, spath, message, value, json=jpath, go_struct=struct, go_type=self.go_type(schema), got=got)

    def crd_scalar(self, value: Any, schema: Schema, fpath: str, spath: str) -> None:
        if isinstance(value, str):
            pattern = schema.get("pattern")
            if isinstance(pattern, str) and not re.search(_python_pattern(pattern), value):
                self.add("invalid", fpath, spath, f"Invalid value: {json.dumps(value)}: {fpath} in body should match '{pattern}'", value)
            if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
                self.add("invalid", fpath, spath, f"Too long: may not be more than {schema['maxLength']} bytes", value)
            if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
                self.add("invalid", fpath, spath,
                         f"Invalid value: {json.dumps(value)}: {fpath} in body should be at least {schema['minLength']} chars long", value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(schema.get("minimum"), (int, float)) and value < schema["minimum"]:
                self.add("invalid", fpath, spath, f"Invalid value: {value}: {fpath} in body should be greater than or equal to {schema['minimum']}", value)
            if isinstance(schema.get("maximum"), (int, float)) and value > schema["maximum"]:
                self.add("invalid", fpath, spath, f"Invalid value: {value}: {fpath} in body should be less than or equal to {schema['maximum']}", value)

    def walk_object(self, value: dict[str, Any], schema: Schema, fpath: str, spath: str, jpath: str, struct: str) -> dict[str, Any]:
        raw_props = schema.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        additional = schema.get("additionalProperties")
        preserve = self.crd and schema.get("x-kubernetes-preserve-unknown-fields") is True
        if self.crd and schema.get("x-kubernetes-embedded-resource") is True:
            props = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object",
                     "x-kubernetes-preserve-unknown-fields": True}, **props}
        closed = additional is False if not self.crd else (not isinstance(additional, dict) and additional is not True and not preserve)
        if self.crd and not props and not isinstance(additional, dict) and schema.get("type") != "object":
            closed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            child_f = f"{fpath}.{key}" if fpath else key
            child_s = f"{spath}.{key}"
            child_j = f"{jpath}.{key}" if jpath else key
            if key in props:
                out[key] = self.walk(item, props[key], child_f, child_s, child_j, struct)
            elif isinstance(additional, dict):
                out[key] = self.walk(item, additional, f"{fpath}[{key}]", child_s, child_j, struct)
            elif closed:
                self.add("unknown", child_f, child_s, "field not declared in schema", item)
            else:
                out[key] = item
        if self.crd and isinstance(schema.get("minProperties"), int) and len(value) < schema["minProperties"]:
            self.add("invalid", fpath, spath, f"Invalid value: {len(value)}: {fpath} in body should have at least {schema['minProperties']} properties", value)
        for required in schema.get("required") or []:
            if value.get(required) is None and required in props:
                self.add("required", f"{fpath}.{required}" if fpath else required, f"{spath}.{required}", "Required value")
        return out

    def walk_list(self, value: list[Any], schema: Schema, fpath: str, spath: str, jpath: str, struct: str) -> list[Any]:
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        out: list[Any] = []
        for index, item in enumerate(value):
            if keys and isinstance(item, dict):
                element = "[" + ",".join(f"{k}={json.dumps(item.get(k))}" for k in keys if k in item) + "]"
            elif schema.get("x-kubernetes-list-type") == "set" and not isinstance(item, (dict, list)):
                element = f"[={json.dumps(item)}]"
            else:
                element = f"[{index}]"
            out.append(self.walk(item, items, f"{fpath}[{index}]", f"{spath}{element}", jpath, struct) if items is not None else item)
        if self.crd:
            if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
                self.add("invalid", fpath, spath, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", value)
            if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
                self.add("invalid", fpath, spath, f"Invalid value: {len(value)}: {fpath} in body should have at least {schema['minItems']} items", value)
        return out


def review(obj: dict[str, Any], version: str = KUBE_VERSIONS[-1], crd_schema: Schema | None = None) -> Review:
    """Walk ``obj`` as the API server of Kubernetes ``version`` decodes and validates it; never raises for bad objects.

    ``crd_schema``: the ``openAPIV3Schema`` of the object's CRD version (custom resources); None for built-in kinds,
    whose schema comes from kubernetes_validate (KeyError when it has none). ``metadata`` of a custom resource is
    walked as the version's ObjectMeta, as the API server does.
    """
    defs = _builtin_defs(version)
    if crd_schema is None:
        schema = builtin_schema(str(obj.get("apiVersion", "")), str(obj.get("kind", "")), version)
        if schema is None:
            raise KeyError(f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {version}")
        walker = _Walker(defs, crd=False)
        pruned = walker.walk_object(copy.deepcopy(obj), schema, "", "", "", str(obj.get("kind", "")))
        return Review(walker.findings, pruned)
    walker = _Walker(defs, crd=True)
    body = {k: v for k, v in obj.items() if k != "metadata"}
    top = dict(crd_schema)
    top["properties"] = {k: v for k, v in (crd_schema.get("properties") or {}).items() if k not in ("metadata", "apiVersion", "kind")}
    top["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}})
    top["required"] = [r for r in crd_schema.get("required") or [] if r != "metadata"]
    top.pop("x-kubernetes-preserve-unknown-fields", None)
    pruned = walker.walk_object(copy.deepcopy(body), top, "", "", "", str(obj.get("kind", "")))
    if "metadata" in obj:
        meta_walker = _Walker(defs, crd=False)
        pruned["metadata"] = meta_walker.walk(copy.deepcopy(obj["metadata"]), {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                                              "metadata", ".metadata", "metadata", str(obj.get("kind", "")))
        walker.findings.extend(meta_walker.findings)
    ordered = {k: pruned[k] for k in obj if k in pruned}
    return Review(walker.findings, ordered)
