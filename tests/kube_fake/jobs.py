# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test hook, not an API rule: run a Job's pod as a Job controller and a kubelet would, with its container command
executed on this machine (kube_fake has no kubelet and no Job controller).

``run_job(kube, namespace, name, ...)`` (``FakeKube.complete_job``) does, in order:

1. the Job controller's pod create (pkg/controller/job/job_controller.go ``manageJob`` -> ``podControl
   .CreatePodsWithGenerateName``): a pod ``<job>-<5 characters>`` from the Job's template, with the labels the Job's
   strategy puts on the template (pkg/registry/batch/job/strategy.go ``generateSelector``: ``batch.kubernetes.io/
   controller-uid``, ``batch.kubernetes.io/job-name``, ``controller-uid``, ``job-name``) and a controller owner
   reference to the Job; it is admitted like any pod create (Pod Security). The Job's status gets ``startTime`` and
   ``active: 1``. The pod is bound to ``node`` and Pending, its container waiting (``ContainerCreating``), for
   ``pending_seconds``;
2. the kubelet starts it: phase Running, container ``running``, conditions Ready; the Job ``ready: 1``;
3. the container's ``command`` + ``args`` run here (``subprocess``, bounded by ``timeout``) with the container's
   ``env`` values, ``extra_env``, and ``PATH`` = ``bin_dirs`` then /usr/bin:/bin (the stand-ins for the image's
   programs). Each ``emptyDir`` volume's ``mountPath`` is a fresh directory of this run: the text ``<mountPath>/`` in
   the command, args and env values is replaced by that directory (no mount namespace here). Its stdout and stderr,
   interleaved as the container runtime writes them to one log, become the pod's log (``pods/{name}/log``);
4. the container terminates: ``terminated`` with the exit code, reason ``Completed`` (0) or ``Error``; the pod's
   phase Succeeded or Failed (kubelet ``getPhase`` with restartPolicy Never), Ready False (``PodCompleted``);
5. the Job controller's finish (job_controller.go ``syncJob``; Kubernetes 1.31 adds the interim condition first and
   the terminal one once no pod is active, here in the same write): success (``succeeded >= completions``, default
   1) -> ``succeeded: 1``, ``completionTime``, conditions ``SuccessCriteriaMet`` and ``Complete`` (reason
   ``CompletionsReached``, "Reached expected number of succeeded pods"); failure with ``failed > backoffLimit`` ->
   ``failed: 1``, conditions ``FailureTarget`` and ``Failed`` (reason ``BackoffLimitExceeded``, "Job has reached the
   specified backoff limit"). A failure within the backoff limit only counts (no replacement pod is created here).

Not modelled: parallelism/completions above 1, indexed Jobs, init and sidecar containers, activeDeadlineSeconds,
pod failure and success policies, retries, a real mount namespace or image.
"""
from __future__ import annotations

import copy
import datetime
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from .server import FakeKube

Obj = Dict[str, Any]
_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphanums: generateName suffixes


@dataclass
class JobRun:
    """What the hook did: the pod's name, the container's exit code and its log."""

    pod: str
    exit_code: int
    log: str


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(kinds: Sequence[str], status: str, reason: str = "") -> List[Obj]:
    now = _now()
    out: List[Obj] = []
    for kind in kinds:
        cond: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
        if reason:
            cond["reason"] = reason
        out.append(cond)
    return out


def _job_condition(kind: str, reason: str, message: str) -> Obj:
    now = _now()
    return {"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message}


def run_job(kube: FakeKube, namespace: str, name: str, *, bin_dirs: Sequence[str] = (), extra_env: Optional[Mapping[str, str]] = None,
            node: str = "", pending_seconds: float = 0.5, timeout: float = 120.0) -> JobRun:
    job = kube.get_object("batch/v1", "Job", name, namespace)
    if job is None:
        raise LookupError(f"Job {namespace}/{name} not found")
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    pod_spec = template.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if len(containers) != 1 or pod_spec.get("initContainers"):
        raise ValueError("the Job hook runs pods of exactly one container and no init containers")
    container = containers[0]
    uid = str(job["metadata"]["uid"])
    labels = {**((template.get("metadata") or {}).get("labels") or {}),
              "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name}
    pod_name = f"{name}-" + "".join(secrets.choice(_CHARS) for _char in range(5))
    waiting = [{"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": False, "restartCount": 0,
                "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}}]
    pod: Obj = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {**pod_spec, "nodeName": node or "kube-fake-node"},
        "status": {"phase": "Pending", "conditions": _conditions(["PodScheduled"], "True"), "containerStatuses": waiting},
    }
    kube.add_object(pod, manager="kube-controller-manager")
    jobs = kube.cluster.resource_for("batch/v1", "Job")
    pods = kube.cluster.resource_for("v1", "Pod")
    started = _now()
    kube.write_status(jobs, namespace, name, {"startTime": started, "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}})
    time.sleep(max(0.0, pending_seconds))

    running = [{**waiting[0], "ready": True, "started": True, "containerID": f"containerd://{secrets.token_hex(32)}",
                "state": {"running": {"startedAt": _now()}}}]
    kube.write_status(pods, namespace, pod_name, {
        "phase": "Running", "startTime": started, "podIP": "10.244.0.99", "hostIP": "10.0.0.1",
        "conditions": _conditions(["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"], "True"),
        "containerStatuses": running})
    kube.write_status(jobs, namespace, name, {"startTime": started, "active": 1, "ready": 1, "terminating": 0, "uncountedTerminatedPods": {}})

    workdir = tempfile.mkdtemp(prefix="kube-fake-job-")
    try:
        mounts: Dict[str, str] = {}
        empty_dirs = {str(v.get("name")) for v in pod_spec.get("volumes") or [] if isinstance(v, dict) and "emptyDir" in v}
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") in empty_dirs:
                path = os.path.join(workdir, str(mount["name"]))
                os.makedirs(path, exist_ok=True)
                mounts[str(mount["mountPath"]).rstrip("/") + "/"] = path + "/"

        def local(text: str) -> str:
            for mount_path, path in mounts.items():
                text = text.replace(mount_path, path)
            return text

        argv = [local(str(a)) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        env = {str(e["name"]): local(str(e.get("value", ""))) for e in container.get("env") or [] if "value" in e}
        env.update(extra_env or {})
        env["PATH"] = os.pathsep.join([*bin_dirs, "/usr/bin", "/bin"])
        try:
            proc = subprocess.run(argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code, output = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            code, output = 137, exc.stdout or b""
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else str(output)
    kube.cluster.pod_logs[(namespace, pod_name, str(container["name"]))] = log

    finished = _now()
    ended = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": running[0]["state"]["running"]["startedAt"],
             "finishedAt": finished, "containerID": running[0]["containerID"]}
    terminated = [{**running[0], "ready": False, "started": False, "state": {"terminated": ended}}]
    kube.write_status(pods, namespace, pod_name, {
        "phase": "Succeeded" if code == 0 else "Failed", "startTime": started, "podIP": "10.244.0.99", "hostIP": "10.0.0.1",
        "conditions": [*_conditions(["PodReadyToStartContainers", "Initialized", "PodScheduled"], "True"),
                       *_conditions(["Ready", "ContainersReady"], "False", "PodCompleted")],
        "containerStatuses": terminated})
    spec = job.get("spec") or {}
    status: Obj = {"startTime": started, "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    if code == 0 and int(spec.get("completions", 1) or 1) <= 1:
        message = "Reached expected number of succeeded pods"
        status.update(succeeded=1, completionTime=finished, conditions=[_job_condition("SuccessCriteriaMet", "CompletionsReached", message),
                                                                        _job_condition("Complete", "CompletionsReached", message)])
    elif code != 0:
        status["failed"] = 1
        if int(spec.get("backoffLimit", 6)) < 1:  # failed (1) > backoffLimit
            message = "Job has reached the specified backoff limit"
            status["conditions"] = [_job_condition("FailureTarget", "BackoffLimitExceeded", message),
                                    _job_condition("Failed", "BackoffLimitExceeded", message)]
    kube.write_status(jobs, namespace, name, status)
    return JobRun(pod_name, code, log)
