# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An opt-in test hook for tests/kube_fake: the DaemonSet controller's placement, which the fake alone does not do.

The fake's own DaemonSet controller only replaces a deleted pod on its node. `enable(kube)` adds what the real one
does on every sync (kubernetes pkg/controller/daemon/daemon_controller.go: `syncNodes` over `podsShouldBeOnNode`, with
`NodeShouldRunDaemonPod` deciding per node from the node selector, required node affinity and taints):

* a node that should run the DaemonSet's pod and has none that is not terminating gets one (a pod with a
  deletionTimestamp does not count: podsShouldBeOnNode skips it);
* a node that should not run it (its labels no longer match the node selector) has its pods deleted, gracefully
  (podControl.DeletePod: a plain DELETE, so the pod's terminationGracePeriodSeconds and the fake's kubelet decide when
  it is gone);
* a deleted pod is replaced only where the node still should run it (the replacement is the same syncNodes pass).

Whether a node should run the pod is the fake's own `_daemon_nodes` (the same rules the Pod Security sync uses), and
pods are created by the fake's own `_replace_daemon_pod` (name, labels, owner reference as the controller makes
them). The sync runs after every stored change, as a listener of the store, under its lock. `events` records what the
stand-in did: (time.monotonic(), "create" | "delete" | "gone", "namespace/pod", node)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

if TYPE_CHECKING:
    from tests.kube_fake import server
else:
    from kube_fake import server

Obj = Dict[str, Any]
Event = Tuple[float, str, str, str]


class DaemonPlacement:
    """The stand-in attached to one FakeKube (see the module docstring)."""

    def __init__(self, kube: server.FakeKube) -> None:
        self.cluster = kube.cluster
        self.events: List[Event] = []
        self._busy = False
        self._replace_original = self.cluster._replace_daemon_pod
        self._known: Dict[str, str] = {}  # pod uid -> "namespace/name" of every daemon pod seen, to record its removal

    def _daemon_pods(self, daemonset: Obj) -> List[Obj]:
        uid = daemonset["metadata"]["uid"]
        namespace = daemonset["metadata"]["namespace"]
        pods = []
        for (res, ns, _name), obj in self.cluster.objects.items():
            if res != self.cluster.key(server.PODS) or ns != namespace:
                continue
            ref = server._controller_of(obj)  # pylint: disable=protected-access
            if ref is not None and ref.get("kind") == "DaemonSet" and ref.get("uid") == uid:
                pods.append(obj)
        return pods

    def _replace(self, old: Obj) -> None:
        """The fake's replacement of a deleted daemon pod, only where its node still should run one and has none."""
        ref = server._controller_of(old)  # pylint: disable=protected-access
        if ref is None or ref.get("kind") != "DaemonSet":
            return
        daemonset = self.cluster.get(server.DAEMONSETS, str(old["metadata"]["namespace"]), str(ref.get("name")))
        node = str((old.get("spec") or {}).get("nodeName") or "")
        if daemonset is None or node not in self.cluster._daemon_nodes(daemonset):  # pylint: disable=protected-access
            return
        if any(_live(p) and p["spec"].get("nodeName") == node for p in self._daemon_pods(daemonset)):
            return
        self._replace_original(old)

    def sync(self) -> None:
        if self._busy:
            return  # the stand-in's own writes come back here: one pass at a time
        self._busy = True
        try:
            self._sync_once()
        finally:
            self._busy = False

    def _sync_once(self) -> None:
        now = time.monotonic()
        seen = set()
        daemonsets = [obj for (res, _ns, _n), obj in sorted(self.cluster.objects.items()) if res == self.cluster.key(server.DAEMONSETS)]
        for daemonset in daemonsets:
            wanted = set(self.cluster._daemon_nodes(daemonset))  # pylint: disable=protected-access
            pods = self._daemon_pods(daemonset)
            for pod in pods:
                seen.add(pod["metadata"]["uid"])
                self._known[pod["metadata"]["uid"]] = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            for pod in [p for p in pods if _live(p) and p["spec"].get("nodeName") not in wanted]:
                self.events.append((now, "delete", f"{pod['metadata']['namespace']}/{pod['metadata']['name']}", str(pod["spec"]["nodeName"])))
                self.cluster.delete(server.PODS, str(pod["metadata"]["namespace"]), str(pod["metadata"]["name"]), dry_run=False, options={})
            have = {p["spec"].get("nodeName") for p in self._daemon_pods(daemonset) if _live(p)}
            for node in sorted(wanted - have):
                template: Obj = {"metadata": {"namespace": daemonset["metadata"]["namespace"],
                                              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "controller": True,
                                                                   "name": daemonset["metadata"]["name"], "uid": daemonset["metadata"]["uid"]}]},
                                 "spec": {"nodeName": node}}
                before = {p["metadata"]["uid"] for p in self._daemon_pods(daemonset)}
                self._replace_original(template)
                for pod in self._daemon_pods(daemonset):
                    if pod["metadata"]["uid"] not in before:
                        seen.add(pod["metadata"]["uid"])
                        self._known[pod["metadata"]["uid"]] = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                        self.events.append((now, "create", self._known[pod["metadata"]["uid"]], node))
        for uid in [u for u in self._known if u not in seen]:
            self.events.append((now, "gone", self._known.pop(uid), ""))


def _live(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp")


def enable(kube: server.FakeKube) -> DaemonPlacement:
    """Attach the stand-in to a started or unstarted FakeKube and sync once; returns it (its `events`)."""
    placement = DaemonPlacement(kube)
    with kube.cluster.lock:
        kube.cluster._replace_daemon_pod = placement._replace  # type: ignore[method-assign]  # pylint: disable=protected-access
        kube.cluster.listeners.append(placement.sync)
        placement.sync()
    return placement
