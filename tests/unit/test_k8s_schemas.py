# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of tests/k8s_schemas.py: strict validation of rendered objects, built-in kinds and CRD objects."""
from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:  # mypy names tests/k8s_schemas.py "tests.k8s_schemas" (tests/ is not on mypy_path)
    from tests.k8s_schemas import EXTRA_CRD_DIR, KUBE_VERSIONS, SchemaError, _to_draft7, crd_schemas, review, validate, validate_file
else:
    from k8s_schemas import EXTRA_CRD_DIR, KUBE_VERSIONS, SchemaError, _to_draft7, crd_schemas, review, validate, validate_file

Obj = dict[str, Any]


def namespace() -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mig-serving", "labels": {"app.kubernetes.io/part-of": "mig-serving"}}}


def deployment() -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "triton", "namespace": "mig-serving", "labels": {"app": "triton"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "triton"}},
            "template": {
                "metadata": {"labels": {"app": "triton"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/mig.config": "all-1g.18gb"},
                    "containers": [
                        {
                            "name": "triton",
                            "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                            "args": ["tritonserver", "--model-repository=/models"],
                            "ports": [{"name": "metrics", "containerPort": 8002}],
                            "resources": {"limits": {"nvidia.com/mig-1g.18gb": 1}, "requests": {"cpu": "2", "memory": "8Gi"}},
                        }
                    ],
                },
            },
        },
    }


def hpa(api_version: str = "autoscaling/v2") -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "triton", "namespace": "mig-serving"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
            "minReplicas": 1,
            "maxReplicas": 7,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {"metric": {"name": "nv_inference_queue_duration_us"}, "target": {"type": "AverageValue", "averageValue": "50"}},
                }
            ],
        },
    }


def apiservice(api_version: str = "apiregistration.k8s.io/v1") -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "APIService",
        "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
        "spec": {
            "service": {"name": "prometheus-adapter", "namespace": "monitoring"},
            "group": "custom.metrics.k8s.io",
            "version": "v1beta1",
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


def pdb(api_version: str = "policy/v1") -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "triton", "namespace": "mig-serving"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "triton"}}},
    }


def podmonitor() -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "triton", "namespace": "mig-serving", "labels": {"release": "kube-prometheus-stack"}},
        "spec": {
            "selector": {"matchLabels": {"app": "triton"}},
            "namespaceSelector": {"matchNames": ["mig-serving"]},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def scaledobject() -> Obj:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "triton", "namespace": "mig-serving"},
        "spec": {
            "scaleTargetRef": {"name": "triton"},
            "minReplicaCount": 1,
            "maxReplicaCount": 7,
            "pollingInterval": 15,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus-operated.monitoring:9090",
                        "query": "avg(nv_inference_queue_duration_us)",
                        "threshold": "50",
                    },
                }
            ],
        },
    }


def prometheusrule() -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mig-serving", "namespace": "mig-serving"},
        "spec": {
            "groups": [
                {
                    "name": "mig-serving.rules",
                    "interval": "30s",
                    "rules": [
                        {"record": "mig:queue_us:avg", "expr": "avg(nv_inference_queue_duration_us)"},
                        {"alert": "TritonDown", "expr": "up{job='triton'} == 0", "for": "5m", "labels": {"severity": "critical"}},
                    ],
                }
            ]
        },
    }


def raises(obj: Obj, *fragments: str, versions: tuple[str, ...] = KUBE_VERSIONS) -> str:
    """Validate, expect a SchemaError whose message contains every fragment; return the message."""
    with pytest.raises(SchemaError) as info:
        validate(obj, versions)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- built-in kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [namespace, deployment, hpa, apiservice, pdb], ids=lambda f: f.__name__)
def test_valid_builtin_objects_pass_every_version(make: Any) -> None:
    assert validate(make()) == ["1.29.0", "1.31.0", "1.33.0"]


def test_versions_argument_is_honoured() -> None:
    assert validate(deployment(), ["1.25.0"]) == ["1.25.0"]
    # autoscaling/v2beta2 was served until 1.25 and removed in 1.26
    assert validate(hpa("autoscaling/v2beta2"), ("1.25.0",)) == ["1.25.0"]
    raises(hpa("autoscaling/v2beta2"), "in Kubernetes 1.29.0 — removed or unknown")
    with pytest.raises(ValueError, match=r"no schemas for Kubernetes 1\.99\.0"):
        validate(namespace(), ["1.99.0"])


@pytest.mark.parametrize(
    ("obj", "api_version", "kind"),
    [
        (hpa("autoscaling/v2beta1"), "autoscaling/v2beta1", "HorizontalPodAutoscaler"),
        ({**deployment(), "apiVersion": "apps/v1beta1"}, "apps/v1beta1", "Deployment"),
        (apiservice("apiregistration.k8s.io/v1beta1"), "apiregistration.k8s.io/v1beta1", "APIService"),
        (pdb("policy/v1beta1"), "policy/v1beta1", "PodDisruptionBudget"),
        ({**namespace(), "apiVersion": "v2"}, "v2", "Namespace"),
    ],
    ids=["hpa-v2beta1", "deployment-v1beta1", "apiservice-v1beta1", "pdb-v1beta1", "never-existed"],
)
def test_removed_api_versions_fail(obj: Obj, api_version: str, kind: str) -> None:
    message = raises(obj)
    name = obj["metadata"]["name"]
    qualified = f"{obj['metadata']['namespace']}/{name}" if "namespace" in obj["metadata"] else name
    assert message == (
        f"{kind} {qualified} ({api_version}) against Kubernetes 1.29.0: "
        f"no schema for apiVersion {api_version} kind {kind} in Kubernetes 1.29.0 — removed or unknown"
    )


def test_unknown_field_in_deployment_spec_fails_naming_it() -> None:
    obj = deployment()
    obj["spec"]["replica"] = 2
    message = raises(obj, "Deployment mig-serving/triton (apps/v1) against Kubernetes 1.29.0: $.spec: ", "'replica'")
    assert "unexpected" in message


def test_unknown_nested_field_and_wrong_type_in_deployment_fail_with_path() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    raises(obj, "$.spec.template.spec.containers[0]: ", "'imagePullPolice'")
    obj = deployment()
    obj["spec"]["replicas"] = "2"
    raises(obj, "$.spec.replicas: ", "'2'")


def test_unknown_top_level_field_of_builtin_fails() -> None:
    raises({**namespace(), "spec2": {}}, "Namespace mig-serving (v1)", "'spec2'")


# --- objects every kind must have ------------------------------------------------------------


@pytest.mark.parametrize("make", [deployment, podmonitor], ids=lambda f: f.__name__)
def test_object_without_metadata_name_fails(make: Any) -> None:
    obj = make()
    del obj["metadata"]["name"]
    message = raises(obj, "against Kubernetes 1.29.0: $.metadata.name: missing")
    assert message.startswith(f"{obj['kind']} mig-serving/<no name> ({obj['apiVersion']})")
    obj["metadata"]["name"] = ""
    raises(obj, "$.metadata.name: missing")


def test_object_without_apiversion_kind_or_metadata_fails() -> None:
    for field in ("apiVersion", "kind", "metadata"):
        obj = deployment()
        del obj[field]
        raises(obj, f"$.{field}: missing")


# --- CRD objects ----------------------------------------------------------------------------------


def test_crd_schemas_reads_every_vendored_crd() -> None:
    schemas = crd_schemas()
    assert set(schemas) == {
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    }
    assert schemas[("monitoring.coreos.com/v1", "PodMonitor")]["properties"]["spec"]["required"] == ["selector"]
    assert schemas is not crd_schemas()  # a fresh mapping each call, loaded once


def test_crd_schemas_takes_served_versions_of_any_directory(tmp_path: Path) -> None:
    def version(name: str, served: bool) -> Obj:
        return {"name": name, "served": served, "storage": name == "v1", "schema": {"openAPIV3Schema": {"type": "object", "x-version": name}}}

    crd: Obj = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [version("v1", True), version("v1beta1", True), version("v1alpha1", False)],
        },
    }
    (tmp_path / "widgets.yaml").write_text("---\n" + yaml.safe_dump(crd) + "---\n", encoding="utf-8")
    schemas = crd_schemas(tmp_path)
    assert {key: schema["x-version"] for key, schema in schemas.items()} == {
        ("example.com/v1", "Widget"): "v1",
        ("example.com/v1beta1", "Widget"): "v1beta1",
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CustomResourceDefinition"):
        crd_schemas(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        crd_schemas(tmp_path / "missing")


@pytest.mark.parametrize("make", [podmonitor, scaledobject, prometheusrule], ids=lambda f: f.__name__)
def test_valid_crd_objects_pass(make: Any) -> None:
    assert validate(make()) == list(KUBE_VERSIONS)


def test_servicemonitor_passes_and_checks_endpoints() -> None:
    obj: Obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "dcgm-exporter", "namespace": "monitoring"},
        "spec": {"selector": {"matchLabels": {"app": "dcgm-exporter"}}, "endpoints": [{"port": "metrics", "interval": "15s"}]},
    }
    assert validate(obj) == list(KUBE_VERSIONS)
    obj["spec"]["endpoints"][0]["interval"] = "15 seconds"
    raises(obj, "$.spec.endpoints[0].interval: ", "does not match")


def test_podmonitor_port_of_wrong_type_fails() -> None:
    obj = podmonitor()
    obj["spec"]["podMetricsEndpoints"][0]["port"] = 8002
    message = raises(obj, "$.spec.podMetricsEndpoints[0].port: 8002 is not of type 'string'")
    assert message.startswith("PodMonitor mig-serving/triton (monitoring.coreos.com/v1) against Kubernetes 1.29.0: ")
    obj["spec"]["podMetricsEndpoints"][0] = {"portNumber": 8002}  # the integer form has its own field
    assert validate(obj)


def test_podmonitor_unknown_fields_fail() -> None:
    obj = podmonitor()
    obj["spec"]["podMetricEndpoints"] = obj["spec"].pop("podMetricsEndpoints")
    raises(obj, "$.spec: ", "'podMetricEndpoints' was unexpected")
    obj = podmonitor()
    obj["spec"]["podMetricsEndpoints"][0]["targetPorts"] = 8002
    raises(obj, "$.spec.podMetricsEndpoints[0]: ", "'targetPorts' was unexpected")
    obj = podmonitor()
    obj["spec"]["selector"]["matchLabel"] = {"app": "triton"}
    raises(obj, "$.spec.selector: ", "'matchLabel' was unexpected")


def test_podmonitor_missing_required_selector_fails() -> None:
    obj = podmonitor()
    del obj["spec"]["selector"]
    raises(obj, "$.spec: 'selector' is a required property")


def test_int_or_string_field() -> None:
    obj = podmonitor()
    endpoint = obj["spec"]["podMetricsEndpoints"][0]
    for good in (8002, "metrics"):
        endpoint["targetPort"] = good
        assert validate(obj)
    for bad in (True, 80.5, ["metrics"]):
        endpoint["targetPort"] = bad
        raises(obj, "$.spec.podMetricsEndpoints[0].targetPort: ")


def test_crd_object_unknown_top_level_field_fails() -> None:
    raises({**scaledobject(), "specs": {}}, "ScaledObject mig-serving/triton (keda.sh/v1alpha1) against Kubernetes 1.29.0: $: ", "'specs' was unexpected")


def test_crd_object_metadata_is_checked_as_objectmeta() -> None:
    obj = podmonitor()
    obj["metadata"]["labels"]["replicas"] = 2
    raises(obj, "$.metadata.labels.replicas: ")
    obj = podmonitor()
    obj["metadata"]["label"] = {"release": "x"}
    raises(obj, "$.metadata: ", "'label'")


def test_scaledobject_errors() -> None:
    obj = scaledobject()
    obj["spec"]["triggers"] = []
    raises(obj, "$.spec.triggers: [] should be non-empty")
    obj = scaledobject()
    obj["spec"]["minReplicaCount"] = "1"
    raises(obj, "$.spec.minReplicaCount: '1' is not of type 'integer'")
    obj = scaledobject()
    del obj["spec"]["scaleTargetRef"]
    raises(obj, "$.spec: 'scaleTargetRef' is a required property")


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ({"name": "mig-serving.rules", "rules": []}, "$.spec.groups: {"),
        ("mig-serving.rules", "$.spec.groups: 'mig-serving.rules' is not of type 'array'"),
        ([{"rules": [{"expr": "up"}]}], "$.spec.groups[0]: 'name' is a required property"),
        ([{"name": "g", "rules": [{"record": "r"}]}], "$.spec.groups[0].rules[0]: 'expr' is a required property"),
        ([{"name": "g", "rules": {"record": "r", "expr": "up"}}], "$.spec.groups[0].rules: "),
        ([{"name": "g", "rule": [{"record": "r", "expr": "up"}]}], "'rule' was unexpected"),
        ([{"name": "g", "interval": "30 s", "rules": []}], "$.spec.groups[0].interval: '30 s' does not match"),
        ([{"name": "g", "rules": []}, {"name": "g", "rules": []}], "$.spec.groups[1]: duplicate entry name='g'"),
        ([{"name": "g", "partial_response_strategy": "bogus", "rules": []}], "$.spec.groups[0].partial_response_strategy: "),
    ],
    ids=["mapping", "string", "no-name", "no-expr", "rules-mapping", "unknown-field", "bad-duration", "duplicate-name", "bad-strategy"],
)
def test_prometheusrule_malformed_groups_fail(groups: Any, fragment: str) -> None:
    obj = prometheusrule()
    obj["spec"]["groups"] = groups
    raises(obj, "PrometheusRule mig-serving/mig-serving (monitoring.coreos.com/v1) against Kubernetes 1.29.0: ", fragment)


def test_prometheusrule_go_regex_with_inline_flag() -> None:
    # the CRD's pattern is "^(?i)(abort|warn)?$": RE2 syntax that Python only takes rewritten
    obj = prometheusrule()
    for strategy in ("abort", "WARN", ""):
        obj["spec"]["groups"][0]["partial_response_strategy"] = strategy
        assert validate(obj)
    obj["spec"]["groups"][0]["rules"][0]["expr"] = 1  # expr is int-or-string
    assert validate(obj)


# --- CRD schema dialect ---------------------------------------------------------------------------


def test_structural_schema_translation() -> None:
    schema = _to_draft7(
        {
            "type": "object",
            "properties": {
                "nullable": {"type": "string", "nullable": True, "enum": ["a"]},
                "port": {"x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                "empty": {"type": "object"},
            },
        }
    )
    validator = jsonschema.Draft7Validator(schema)

    def ok(instance: Obj) -> bool:
        return bool(validator.is_valid(instance))

    assert ok({"nullable": None, "port": 1, "free": {"anything": [1]}, "labels": {"a": "b"}, "tags": ["x", "y"], "ratio": 0.5, "empty": {}})
    assert ok({"nullable": "a", "port": "http"})
    assert not ok({"nullable": "b"})
    assert not ok({"port": True})
    assert not ok({"port": None})
    assert not ok({"tags": ["x", "x"]})
    assert not ok({"ratio": 0})
    assert not ok({"labels": {"a": 1}})
    assert not ok({"empty": {"pruned": 1}})  # the API server would drop it: strict field validation rejects it
    assert not ok({"unknown": 1})


def test_schemas_are_not_modified_by_validation() -> None:
    before = copy.deepcopy(crd_schemas()[("monitoring.coreos.com/v1", "PrometheusRule")])
    validate(prometheusrule())
    assert crd_schemas()[("monitoring.coreos.com/v1", "PrometheusRule")] == before


# --- files ----------------------------------------------------------------------------------------


def test_validate_file_counts_documents(tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text("---\n" + yaml.safe_dump(deployment()) + "---\n# only a comment\n---\n" + yaml.safe_dump(podmonitor()), encoding="utf-8")
    assert validate_file(path) == 2
    assert validate_file(path, ("1.33.0",)) == 2
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n", encoding="utf-8")
    assert validate_file(empty) == 0


def test_validate_file_names_the_failing_document(tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(namespace()) + "---\n" + yaml.safe_dump(pdb("policy/v1beta1")), encoding="utf-8")
    with pytest.raises(SchemaError, match=re.escape(f"{path} (document 2): PodDisruptionBudget mig-serving/triton (policy/v1beta1)")):
        validate_file(path)


# --- review(): the API server's view of one object (tests/kube_fake's admission) -------------------


def test_review_of_a_valid_object_finds_nothing_and_copies_it() -> None:
    obj = deployment()
    result = review(obj, "1.31.0")
    assert result.findings == []
    assert result.pruned == obj
    assert result.pruned is not obj


def test_review_finds_unknown_fields_types_and_required_fields_with_the_servers_paths() -> None:
    obj = deployment()
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["hostIP"] = "0.0.0.0"
    container["ports"][0]["hostAddress"] = "x"  # unknown
    del container["name"]
    obj["spec"]["replicas"] = "2"
    obj["spec"]["paused"] = None  # null is what a Go pointer takes: no finding
    result = review(obj, "1.31.0")
    found = {(f.kind, f.field, f.smd) for f in result.findings}
    assert found == {("unknown", "spec.template.spec.containers[0].ports[0].hostAddress",
                      '.spec.template.spec.containers[].ports[containerPort=8002].hostAddress'),
                     ("required", "spec.template.spec.containers[0].name", ".spec.template.spec.containers[].name"),
                     ("type", "spec.replicas", ".spec.replicas")}
    [typed] = result.of("type")
    assert (typed.go_struct, typed.json, typed.go_type, typed.got) == ("DeploymentSpec", "spec.replicas", "int32", "string")
    assert "hostAddress" not in result.pruned["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert result.pruned["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostIP"] == "0.0.0.0"


def test_review_of_a_custom_resource_follows_the_structural_schema() -> None:
    schema = {"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object", "required": ["port"], "properties": {
        "port": {"x-kubernetes-int-or-string": True},
        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
        "size": {"type": "integer", "minimum": 1, "maximum": 3},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "note": {"type": "string", "nullable": True},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "tags": {"type": "array", "maxItems": 1, "items": {"type": "string"}}}}}}
    good = {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"},
            "spec": {"port": "http", "name": "abc", "size": 2, "mode": "a", "note": None, "free": {"any": {"thing": 1}}, "tags": ["x"]}}
    assert review(good, "1.31.0", schema).findings == []
    bad = {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t", "labelz": {}},
           "spec": {"port": True, "name": "ABCDEF", "size": 7, "mode": "c", "tags": ["x", "y"], "extra": 1}}
    messages = {f.field: f.message for f in review(bad, "1.31.0", schema).findings}
    assert messages == {
        "metadata.labelz": "field not declared in schema",
        "spec.port": 'Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"',
        "spec.name": "Too long: may not be more than 5 bytes",
        "spec.size": "Invalid value: 7: spec.size in body should be less than or equal to 3",
        "spec.mode": 'Unsupported value: "c": supported values: "a", "b"',
        "spec.tags": "Too many: 2: must have at most 1 items",
        "spec.extra": "field not declared in schema",
    }
    assert "extra" not in review(bad, "1.31.0", schema).pruned["spec"]


def test_the_repository_vendored_nfd_crds_are_known_to_validate() -> None:
    assert sorted(crd_schemas(EXTRA_CRD_DIR)) == [("nfd.k8s-sigs.io/v1alpha1", "NodeFeature"), ("nfd.k8s-sigs.io/v1alpha1", "NodeFeatureRule")]
    feature = {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature", "metadata": {"name": "gpu-1", "namespace": "nfd"},
               "spec": {"labels": {"nvidia.com/gpu.present": "true"}}}
    assert validate(feature) == list(KUBE_VERSIONS)
    with pytest.raises(SchemaError, match="labels"):
        validate({**feature, "spec": {"labels": {"a": 1}}})
