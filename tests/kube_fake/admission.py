# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pod Security admission (k8s.io/pod-security-admission) as kube_fake runs it: namespace labels, levels, versions,
every baseline and restricted check, the messages, the pod and pod-controller paths.

Upstream, per piece (kubernetes/kubernetes, staging/src/k8s.io/pod-security-admission/):

* ``api/helpers.go`` ``PolicyToEvaluate``, ``ParseLevel``, ``ParseVersion``: the labels
  ``pod-security.kubernetes.io/{enforce,audit,warn}[-version]``; an unparsable level is ``restricted`` for enforce and
  ``privileged`` for audit and warn, an unparsable version ``latest``; the errors are
  ``metadata.labels[<label>]: Invalid value: "<v>": must be one of privileged, baseline, restricted`` /
  ``must be "latest" or "v1.x"``; unset labels default to ``privileged:latest`` (the default PodSecurityConfiguration).
* ``policy/registry.go`` ``EvaluatePod``: baseline checks (the ``Overlap`` ones only at the baseline level), then the
  restricted checks, each in the order of its file name (Go initialises a package's files in that order); a version
  newer than the newest the checks know, and ``latest``, are evaluated as that newest one (``maxVersion``).
* ``policy/checks.go`` ``AggregateCheckResults``/``ForbiddenDetail``: ``reason (detail), reason (detail)``.
* ``policy/check_*.go``: one function here per check file, same reason and detail texts.
* ``admission/admission.go``: ``ValidatePod`` (enforce, then warn; updates only when significant),
  ``ValidatePodController`` (warn only; Deployment, DaemonSet, StatefulSet, ReplicaSet, Job, CronJob,
  ReplicationController, PodTemplate), ``ValidateNamespace`` (label errors on create and on a changed error; when the
  enforce level tightens, warnings naming the existing pods that would violate it, nothing re-evaluated);
  ``admission/response.go``: the refusal is ``apierrors.NewForbidden``: ``pods "<name>" is forbidden: violates PodSecurity
  "restricted:latest": ...`` (403), the warnings ``would violate PodSecurity "<level>:<version>": ...``.

The checks are those of Kubernetes 1.31 (the fake's version): no ``hostProbesAndHostLifecycle`` (1.34) and no user
namespace relaxation (``hostUsers: false`` relaxes nothing: the UserNamespacesPodSecurityStandards gate is off).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

Obj = Dict[str, Any]

LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")
LEVELS = ("privileged", "baseline", "restricted")
_VERSION_RE = re.compile(r"^v1\.([0-9]|[1-9][0-9]*)$")

# pod-controller kinds whose pod template the admission plugin evaluates (admission.go defaultPodSpecResources)
POD_CONTROLLERS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob", "ReplicationController", "PodTemplate"}


@dataclass(frozen=True)
class LevelVersion:
    level: str
    minor: Optional[int]  # None: latest

    def __str__(self) -> str:
        return f"{self.level}:{'latest' if self.minor is None else f'v1.{self.minor}'}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion


DEFAULT = LevelVersion("privileged", None)


def policy_to_evaluate(labels: Optional[Dict[str, str]]) -> Tuple[Policy, List[Obj]]:
    """api.PolicyToEvaluate: the namespace's policy and its label errors (as field-error causes)."""
    labels = labels or {}
    errors: List[Obj] = []
    found: Dict[str, LevelVersion] = {}
    for mode in MODES:
        level, minor = DEFAULT.level, DEFAULT.minor
        level_label, version_label = f"{LABEL_PREFIX}{mode}", f"{LABEL_PREFIX}{mode}-version"
        if level_label in labels:
            value = labels[level_label]
            if value in LEVELS:
                level = value
            else:
                level = "restricted" if mode == "enforce" else "privileged"  # fail closed for enforce, open for audit and warn
                errors.append(_label_error(level_label, value, "must be one of privileged, baseline, restricted"))
        if version_label in labels:
            value = labels[version_label]
            match = _VERSION_RE.match(value)
            if value == "latest":
                minor = None
            elif match:
                minor = int(match.group(1))
            else:
                minor = None
                errors.append(_label_error(version_label, value, 'must be "latest" or "v1.x"'))
        found[mode] = LevelVersion(level, minor)
    return Policy(found["enforce"], found["audit"], found["warn"]), errors


def _label_error(label: str, value: str, detail: str) -> Obj:
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {json.dumps(value)}: {detail}", "field": f"metadata.labels[{label}]"}


# ---------------------------------------------------------------------------------------------------------------
# The checks


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _join_quote(items: List[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def _containers(spec: Obj) -> Iterator[Obj]:
    """visitContainers: init containers, containers, ephemeral containers, in that order."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                yield container


def _sc(container: Obj) -> Obj:
    value = container.get("securityContext")
    return value if isinstance(value, dict) else {}


def _pod_sc(spec: Obj) -> Obj:
    value = spec.get("securityContext")
    return value if isinstance(value, dict) else {}


def _name(container: Obj) -> str:
    return str(container.get("name", ""))


Result = Optional[Tuple[str, str]]  # None: allowed; else (forbidden reason, forbidden detail)


def _setters(pod_bad: bool, containers: List[str]) -> List[str]:
    setters = ["pod"] if pod_bad else []
    if containers:
        setters.append(f"{_plural('container', 'containers', len(containers))} {_join_quote(containers)}")
    return setters


def allow_privilege_escalation(_meta: Obj, spec: Obj) -> Result:
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return ("allowPrivilegeEscalation != false",
                f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must set securityContext.allowPrivilegeEscalation=false")
    return None


_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def app_armor_profile(meta: Obj, spec: Obj) -> Result:
    bad_values: set[str] = set()
    pod_profile = _pod_sc(spec).get("appArmorProfile")
    pod_bad = isinstance(pod_profile, dict) and pod_profile.get("type") not in ("RuntimeDefault", "Localhost")
    if pod_bad and isinstance(pod_profile, dict):
        bad_values.add(str(pod_profile.get("type", "")))
    containers = []
    for c in _containers(spec):
        profile = _sc(c).get("appArmorProfile")
        if isinstance(profile, dict) and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            containers.append(_name(c))
            bad_values.add(str(profile.get("type", "")))
    setters = _setters(pod_bad, containers)
    annotations = []
    for key, value in sorted((meta.get("annotations") or {}).items()):
        if key.startswith(_APPARMOR_ANNOTATION_PREFIX) and value and value != "runtime/default" and not str(value).startswith("localhost/"):
            annotations.append(f"{key}={json.dumps(value)}")
    values = sorted(bad_values) + annotations
    if annotations:
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if setters:
        return (_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
                f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(values)}")
    return None


_DEFAULT_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID",
                         "SETPCAP", "SETUID", "SYS_CHROOT"}


def _capabilities(container: Obj) -> Optional[Obj]:
    value = _sc(container).get("capabilities")
    return value if isinstance(value, dict) else None


def capabilities_baseline(_meta: Obj, spec: Obj) -> Result:
    bad: List[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        added = [str(x) for x in ((_capabilities(c) or {}).get("add") or []) if str(x) not in _DEFAULT_CAPABILITIES]
        if added:
            bad.append(_name(c))
            caps.update(added)
    if bad:
        return ("non-default capabilities", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must not include "
                f"{_join_quote(sorted(caps))} in securityContext.capabilities.add")
    return None


def capabilities_restricted(_meta: Obj, spec: Obj) -> Result:
    missing_drop: List[str] = []
    adding: List[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        capabilities = _capabilities(c)
        if capabilities is None:
            missing_drop.append(_name(c))
            continue
        if "ALL" not in [str(x) for x in capabilities.get("drop") or []]:
            missing_drop.append(_name(c))
        forbidden = [str(x) for x in capabilities.get("add") or [] if str(x) != "NET_BIND_SERVICE"]
        if forbidden:
            adding.append(_name(c))
            caps.update(forbidden)
    details = []
    if missing_drop:
        details.append(f'{_plural("container", "containers", len(missing_drop))} {_join_quote(missing_drop)} must set '
                       'securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_plural('container', 'containers', len(adding))} {_join_quote(adding)} must not include "
                       f"{_join_quote(sorted(caps))} in securityContext.capabilities.add")
    if details:
        return ("unrestricted capabilities", "; ".join(details))
    return None


def host_namespaces(_meta: Obj, spec: Obj) -> Result:
    found = sorted(key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key) is True)
    if found:
        return ("host namespaces", ", ".join(found))
    return None


def host_path_volumes(_meta: Obj, spec: Obj) -> Result:
    names = [str(v.get("name", "")) for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("hostPath") is not None]
    if names:
        return ("hostPath volumes", f"{_plural('volume', 'volumes', len(names))} {_join_quote(names)}")
    return None


def host_ports(_meta: Obj, spec: Obj) -> Result:
    bad: List[str] = []
    ports: set[int] = set()
    for c in _containers(spec):
        used = [int(p.get("hostPort") or 0) for p in c.get("ports") or [] if isinstance(p, dict) and int(p.get("hostPort") or 0) != 0]
        if used:
            bad.append(_name(c))
            ports.update(used)
    if bad:
        listed = sorted(str(p) for p in ports)  # sets.String: sorted as strings
        return ("hostPort", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} {_plural('uses', 'use', len(bad))} "
                f"{_plural('hostPort', 'hostPorts', len(listed))} {', '.join(listed)}")
    return None


def privileged(_meta: Obj, spec: Obj) -> Result:
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("privileged") is True]
    if bad:
        return ("privileged", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must not set securityContext.privileged=true")
    return None


def proc_mount(_meta: Obj, spec: Obj) -> Result:
    bad: List[str] = []
    kinds: set[str] = set()
    for c in _containers(spec):
        value = _sc(c).get("procMount")
        if value is not None and value != "Default":
            bad.append(_name(c))
            kinds.add(str(value))
    if bad:
        return ("procMount", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must not set securityContext.procMount to "
                f"{_join_quote(sorted(kinds))}")
    return None


_ALLOWED_VOLUME_SOURCES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret")


def restricted_volumes(_meta: Obj, spec: Obj) -> Result:
    names = sorted({str(v.get("name", "")) for v in spec.get("volumes") or []
                    if isinstance(v, dict) and not any(v.get(key) is not None for key in _ALLOWED_VOLUME_SOURCES)})
    if names:
        # fmt.Sprintf("volumes %q have restricted types", []string{...}): Go prints the quoted list in brackets, space-separated
        return ("restricted volume types", f"volumes [{' '.join(json.dumps(n) for n in names)}] have restricted types")
    return None


def run_as_non_root(_meta: Obj, spec: Obj) -> Result:
    pod_value = _pod_sc(spec).get("runAsNonRoot")
    pod_bad = pod_value is False
    pod_true = pod_value is True
    explicit: List[str] = []
    implicit: List[str] = []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if value is False:
                explicit.append(_name(c))
        elif not pod_true:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("runAsNonRoot != true", f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true",
                f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def _is_root(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


def run_as_user(_meta: Obj, spec: Obj) -> Result:
    pod_bad = _is_root(_pod_sc(spec).get("runAsUser"))
    containers = [_name(c) for c in _containers(spec) if _is_root(_sc(c).get("runAsUser"))]
    setters = _setters(pod_bad, containers)
    if setters:
        return ("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")
    return None


_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}


def se_linux_options(_meta: Obj, spec: Obj) -> Result:
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def valid(options: Obj) -> bool:
        ok = True
        if str(options.get("type") or "") not in _SELINUX_TYPES:
            ok = False
            bad_types.add(str(options.get("type")))
        for key in ("user", "role"):
            if options.get(key):
                ok = False
                flags[key] = True
        return ok

    pod_options = _pod_sc(spec).get("seLinuxOptions")
    pod_bad = isinstance(pod_options, dict) and not valid(pod_options)
    containers = []
    for c in _containers(spec):
        options = _sc(c).get("seLinuxOptions")
        if isinstance(options, dict) and not valid(options):
            containers.append(_name(c))
    setters = _setters(pod_bad, containers)
    if setters:
        data: List[str] = []
        if bad_types:  # upstream lists user/role only when a type is also bad (checks/seLinuxOptions_1_0)
            data.append(f"{_plural('type', 'types', len(bad_types))} {_join_quote(sorted(bad_types))}")
            if flags["user"]:
                data.append("user may not be set")
            if flags["role"]:
                data.append("role may not be set")
        return ("seLinuxOptions", f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}")
    return None


def _seccomp_type(options: Any) -> Tuple[bool, str]:
    """(set, type) of a seccompProfile."""
    if not isinstance(options, dict):
        return False, ""
    return True, str(options.get("type", ""))


def _seccomp(spec: Obj, restricted: bool) -> Result:
    bad_values: set[str] = set()
    pod_set, pod_type = _seccomp_type(_pod_sc(spec).get("seccompProfile"))
    pod_bad = pod_set and pod_type not in ("RuntimeDefault", "Localhost")
    if pod_bad:
        bad_values.add(pod_type)
    pod_ok = pod_set and not pod_bad
    explicit: List[str] = []
    implicit: List[str] = []
    for c in _containers(spec):
        is_set, kind = _seccomp_type(_sc(c).get("seccompProfile"))
        if is_set:
            if kind not in ("RuntimeDefault", "Localhost"):
                explicit.append(_name(c))
                bad_values.add(kind)
        elif not pod_ok:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to {_join_quote(sorted(bad_values))}")
    if restricted and implicit:
        return ("seccompProfile", f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} must set "
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


def seccomp_profile_baseline(_meta: Obj, spec: Obj) -> Result:
    return _seccomp(spec, restricted=False)


def seccomp_profile_restricted(_meta: Obj, spec: Obj) -> Result:
    return _seccomp(spec, restricted=True)


_SYSCTLS = {
    0: ["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start"],
    27: ["net.ipv4.ip_local_reserved_ports"],
    29: ["net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"],
}


def _sysctls_for(minor: int) -> Callable[[Obj, Obj], Result]:
    allowed = {name for since, names in _SYSCTLS.items() if since <= minor for name in names}

    def check(_meta: Obj, spec: Obj) -> Result:
        forbidden = [str(s.get("name", "")) for s in _pod_sc(spec).get("sysctls") or [] if isinstance(s, dict) and s.get("name") not in allowed]
        if forbidden:
            return ("forbidden sysctls", ", ".join(forbidden))
        return None

    return check


def windows_host_process(_meta: Obj, spec: Obj) -> Result:
    def host_process(sc: Obj) -> bool:
        options = sc.get("windowsOptions")
        return isinstance(options, dict) and options.get("hostProcess") is True

    containers = [_name(c) for c in _containers(spec) if host_process(_sc(c))]
    setters = _setters(host_process(_pod_sc(spec)), containers)
    if setters:
        return ("hostProcess", f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")
    return None


@dataclass(frozen=True)
class Check:
    """One check file of policy/: its ID, level, whether it overlaps a restricted check, and its versions (minor -> fn)."""

    id: str
    level: str
    overlap: bool
    versions: Tuple[Tuple[int, Callable[[Obj, Obj], Result]], ...]

    def at(self, minor: int) -> Optional[Callable[[Obj, Obj], Result]]:
        chosen = None
        for since, fn in self.versions:
            if since <= minor:
                chosen = fn
        return chosen


# in the order of their files' names (Go's byte order: "seLinux" before "seccomp")
CHECKS: Tuple[Check, ...] = (
    Check("allowPrivilegeEscalation", "restricted", False, ((8, allow_privilege_escalation),)),
    Check("appArmorProfile", "baseline", False, ((0, app_armor_profile),)),
    Check("capabilities_baseline", "baseline", True, ((0, capabilities_baseline),)),
    Check("capabilities_restricted", "restricted", False, ((22, capabilities_restricted),)),
    Check("hostNamespaces", "baseline", False, ((0, host_namespaces),)),
    Check("hostPathVolumes", "baseline", True, ((0, host_path_volumes),)),
    Check("hostPorts", "baseline", False, ((0, host_ports),)),
    Check("privileged", "baseline", False, ((0, privileged),)),
    Check("procMount", "baseline", False, ((0, proc_mount),)),
    Check("restrictedVolumes", "restricted", False, ((0, restricted_volumes),)),
    Check("runAsNonRoot", "restricted", False, ((0, run_as_non_root),)),
    Check("runAsUser", "restricted", False, ((23, run_as_user),)),
    Check("seLinuxOptions", "baseline", False, ((0, se_linux_options),)),
    Check("seccompProfile_baseline", "baseline", True, ((19, seccomp_profile_baseline),)),
    Check("seccompProfile_restricted", "restricted", False, ((19, seccomp_profile_restricted),)),
    Check("sysctls", "baseline", False, ((0, _sysctls_for(0)), (27, _sysctls_for(27)), (29, _sysctls_for(29)))),
    Check("windowsHostProcess", "baseline", False, ((0, windows_host_process),)),
)
NEWEST_CHECK_MINOR = max(since for check in CHECKS for since, _fn in check.versions)


def evaluate(lv: LevelVersion, meta: Obj, spec: Obj) -> List[Tuple[str, str]]:
    """checkRegistry.EvaluatePod + AggregateCheckResults: the (reason, detail) of every failed check, in order. A version
    newer than the newest check (``latest`` always) is evaluated as that newest one (checkRegistry.maxVersion)."""
    if lv.level == "privileged":
        return []
    minor = NEWEST_CHECK_MINOR if lv.minor is None else min(lv.minor, NEWEST_CHECK_MINOR)
    failed: List[Tuple[str, str]] = []
    ordered = [c for c in CHECKS if c.level == "baseline" and not c.overlap]
    ordered += [c for c in CHECKS if c.level == "baseline" and c.overlap] if lv.level == "baseline" else [c for c in CHECKS if c.level == "restricted"]
    for check in ordered:
        fn = check.at(minor)
        if fn is None:
            continue
        result = fn(meta or {}, spec or {})
        if result is not None:
            failed.append(result)
    return failed


def forbidden_detail(failed: List[Tuple[str, str]]) -> str:
    """AggregateCheckResult.ForbiddenDetail: ``reason (detail), reason (detail)``."""
    return ", ".join(f"{reason} ({detail})" if detail else reason for reason, detail in failed)


def forbidden_reason(failed: List[Tuple[str, str]]) -> str:
    return ", ".join(reason for reason, _detail in failed)


def pod_template(kind: str, obj: Obj) -> Optional[Tuple[Obj, Obj]]:
    """DefaultPodSpecExtractor.ExtractPodSpec: (metadata, spec) of a pod or a pod controller's template; None without one."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if kind == "Pod":
        return (obj.get("metadata") or {}, spec or {})
    if kind == "PodTemplate":
        template = obj.get("template")
    elif kind == "CronJob":
        template = (((spec or {}).get("jobTemplate") or {}).get("spec") or {}).get("template")
    elif kind in POD_CONTROLLERS:
        template = (spec or {}).get("template")
    else:
        return None
    if not isinstance(template, dict):
        return None
    return (template.get("metadata") or {}, template.get("spec") or {})


def significant_pod_update(new: Obj, old: Obj) -> bool:
    """admission.isSignificantPodUpdate: only images, container counts and seccomp annotations are re-evaluated."""
    seccomp_pod = "seccomp.security.alpha.kubernetes.io/pod"
    new_ann, old_ann = (new.get("metadata") or {}).get("annotations") or {}, (old.get("metadata") or {}).get("annotations") or {}
    if new_ann.get(seccomp_pod) != old_ann.get(seccomp_pod):
        return True
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}

    def container_changed(c: Obj, o: Obj) -> bool:
        key = "container.seccomp.security.alpha.kubernetes.io/" + _name(c)
        return bool(c.get("image") != o.get("image") or new_ann.get(key) != old_ann.get(key))

    for key in ("containers", "initContainers"):
        new_list, old_list = new_spec.get(key) or [], old_spec.get(key) or []
        if len(new_list) != len(old_list):
            return True
        if any(container_changed(c, o) for c, o in zip(new_list, old_list)):
            return True
    old_ephemeral = {_name(c): c for c in old_spec.get("ephemeralContainers") or []}
    return any(_name(c) not in old_ephemeral or container_changed(c, old_ephemeral[_name(c)]) for c in new_spec.get("ephemeralContainers") or [])


@dataclass
class Decision:
    """What the plugin answers for one pod or pod template: a refusal message (enforce) and warnings (warn)."""

    forbidden: Optional[str] = None
    warnings: Tuple[str, ...] = ()


def review_pod(policy: Policy, meta: Obj, spec: Obj, enforce: bool) -> Decision:
    """Admission.EvaluatePod: enforce (pods only), then warn unless refused. Audit annotations are not kept."""
    forbidden = None
    if enforce:
        failed = evaluate(policy.enforce, meta, spec)
        if failed:
            forbidden = f'violates PodSecurity "{policy.enforce}": {forbidden_detail(failed)}'
    warnings: Tuple[str, ...] = ()
    if forbidden is None:
        failed = evaluate(policy.warn, meta, spec)
        if failed:
            warnings = (f'would violate PodSecurity "{policy.warn}": {forbidden_detail(failed)}',)
    return Decision(forbidden, warnings)


def namespace_warnings(namespace: str, enforce: LevelVersion, pods: List[Obj]) -> List[str]:
    """Admission.EvaluatePodsInNamespace: the warnings of a namespace update that tightens the enforce level."""
    counts: Dict[str, Tuple[str, int]] = {}
    order: List[str] = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        failed = evaluate(enforce, meta, spec)
        if not failed:
            continue
        warning = forbidden_reason(failed)
        name = str(meta.get("name", ""))
        if warning not in counts:
            counts[warning] = (name, 1)
            order.append(warning)
        else:
            first, count = counts[warning]
            counts[warning] = (min(first, name), count + 1)
    if not order:
        return []
    out = [f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "{enforce}"']
    decorated = []
    for warning in order:
        first, count = counts[warning]
        if count == 1:
            decorated.append(f"{first}: {warning}")
        elif count == 2:
            decorated.append(f"{first} (and 1 other pod): {warning}")
        else:
            decorated.append(f"{first} (and {count - 1} other pods): {warning}")
    return out + sorted(decorated)
