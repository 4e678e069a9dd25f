# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE: render mode of role k8s_objects, on the controller (the action plugin k8s_render is its only caller).

The render directory belongs to the user. ``<render_dir>/.gpu_ops-rendered`` (JSON) records, per component, the
files a render wrote there with the SHA-1 of what it wrote (null for a sensitive component: no digest of a secret is
kept). A render removes only files that record lists and that still hold what was written; a file the user changed
is kept and becomes theirs. The record is read and checked before anything is written (a render refused for it
changes nothing), and written after the files: a render stopped half-way leaves files the record does not list,
never a record listing a file the user wrote. ``<render_dir>/helm-releases.yaml`` indexes the Helm releases of every
component. Sensitive components are written 0600 in a 0700 directory.

Every step is planned first (:func:`plan`), then carried out (:func:`execute`), so check mode reports exactly what
a real run changes, and diff mode shows it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

RECORD_NAME = ".gpu_ops-rendered"
INDEX_NAME = "helm-releases.yaml"
RECORD_ABOUT = (
    "Files gpu_ops.mig_serving rendered into this directory, per component, with the SHA-1 of what was written. "
    "A render removes only files listed here that still hold what it wrote. Written by every render; do not edit."
)
RECORD_SHAPE = (
    'it is not version 1 of {"version": 1, "components": {COMPONENT: {FILE NAME: SHA-1 or null}}}, with plain file names'
)
_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# plain file names only: a record must never point a removal outside its component's directory
_PLAIN_NAME_RE = re.compile(r"^(?!\.\.?$)[^/\x00]+$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


class RenderError(Exception):
    """A render refused before anything was written or removed (or, for a write, naming what failed)."""


def sha1(content: str) -> str:
    return hashlib.sha1(content.encode("utf-8")).hexdigest()


def request_problems(component: Any, manifests: Any, releases: Any) -> List[str]:
    """What is wrong with the request itself, one message per problem."""
    out: List[str] = []
    if not isinstance(component, str) or not _COMPONENT_RE.match(component):
        out.append("the component must be a lower-case name of letters, digits and '_' (it names a directory), "
                   f"got '{component}'")
    if not isinstance(manifests, list):
        out.append("k8s_objects_manifests must be a list of objects")
    else:
        for index, obj in enumerate(manifests, 1):
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj or not isinstance(meta, dict) \
                    or "name" not in meta:
                out.append(f"object {index} needs apiVersion, kind and metadata.name")
            elif not isinstance(meta["name"], str) or not meta["name"] or "/" in meta["name"]:
                out.append("{} name '{}' is not an object name: it must be a non-empty string without '/' (it names a "
                           "file in render mode, a path segment for the API server)".format(obj["kind"], meta["name"]))
    if not isinstance(releases, list) or any(not isinstance(r, dict) or "release" not in r or "values" not in r
                                             for r in releases):
        out.append("k8s_objects_helm_releases must be a list of releases, each with release and values")
    return out


def rendered_files(manifests: List[Dict[str, Any]], releases: List[Dict[str, Any]],
                   dump: Callable[[Any], str]) -> List[Tuple[str, str]]:
    """(file name, content) of every object (NN-kind-name.yaml, in apply order) and Helm values file."""
    files = [(f"{index:02d}-{str(obj['kind']).lower()}-{obj['metadata']['name']}.yaml", "---\n" + dump(obj))
             for index, obj in enumerate(manifests, 1)]
    files += [("{}.values.yaml".format(r["release"]), "---\n" + dump(r["values"])) for r in releases]
    return files


@dataclass
class Plan:
    """Everything one render of one component does, decided before anything is done."""

    root: str
    component: str
    sensitive: bool
    # (path, content, reason) of each file to write; reason: 'created', 'changed' or 'mode'
    writes: List[Tuple[str, str, str]] = field(default_factory=list)
    # (path, old content or None) of each file to remove
    removes: List[Tuple[str, Optional[str]]] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    make_dir: bool = False
    dir_mode_fix: bool = False
    remove_dir: bool = False
    before: Dict[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return os.path.join(self.root, self.component)

    @property
    def changed(self) -> bool:
        return bool(self.writes or self.removes or self.make_dir or self.dir_mode_fix or self.remove_dir)


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def read_text(path: str) -> Optional[str]:
    """A file's text, or None when it cannot be read as UTF-8 text."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _look(paths: List[str]) -> List[Optional[os.stat_result]]:
    out = []
    for path in paths:
        try:
            out.append(_lstat(path))
        except OSError as exc:
            raise RenderError(f"cannot look at {path} ({exc.strerror or exc}): give gpu_ops_render_dir a path through directories only, that "
                              "this user can read and write") from None
    return out


def read_record(path: str) -> Dict[str, Any]:
    """The record of earlier renders, checked; an empty one when there is none."""
    if _lstat(path) is None:
        return {"version": 1, "components": {}}
    try:
        with open(path, encoding="utf-8") as handle:
            record: Dict[str, Any] = json.load(handle)
        reason = "" if _record_ok(record) else RECORD_SHAPE
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
    if reason:
        raise RenderError(
            f"{path} cannot be read as the record of the files gpu_ops.mig_serving rendered ({reason}). Nothing was written or "
            "removed. Restore it, or delete it: the next render then owns no earlier file and removes none of them "
            "(delete stale ones yourself).")
    return record


def _record_ok(record: Any) -> bool:
    if not isinstance(record, dict) or record.get("version") != 1 or not isinstance(record.get("components"), dict):
        return False
    for files in record["components"].values():
        if not isinstance(files, dict):
            return False
        for name, digest in files.items():
            if not _PLAIN_NAME_RE.match(name) or not (digest is None or (isinstance(digest, str) and _SHA1_RE.match(digest))):
                return False
    return True


def plan(root: str, component: str, files: List[Tuple[str, str]], sensitive: bool) -> Tuple[Plan, Dict[str, Any]]:
    """Decide what the render of one component writes and removes; raises RenderError before anything is done."""
    record_path = os.path.join(root, RECORD_NAME)
    directory = os.path.join(root, component)
    (root_st,) = _look([root])
    if root_st is not None and not stat.S_ISDIR(root_st.st_mode):
        raise RenderError(f"gpu_ops_render_dir {root} exists and is not a directory: give the path of a directory (it is "
                          "created when missing)")
    dir_st, record_st = _look([directory, record_path])
    if dir_st is not None and not stat.S_ISDIR(dir_st.st_mode):
        raise RenderError(f"{directory} exists and is not a directory: move it away, the objects of {component} are rendered into that "
                          "directory")
    if record_st is not None and not stat.S_ISREG(record_st.st_mode):
        raise RenderError(f"{record_path} is not a regular file: remove it (it is the record of the files gpu_ops.mig_serving "
                          "rendered there)")
    record = read_record(record_path)

    out = Plan(root=root, component=component, sensitive=sensitive)
    file_mode = 0o600 if sensitive else 0o644
    dir_mode = 0o700 if sensitive else 0o755
    if files:
        out.make_dir = dir_st is None
        out.dir_mode_fix = dir_st is not None and stat.S_IMODE(dir_st.st_mode) != dir_mode
    for name, content in files:
        path = os.path.join(directory, name)
        st = _lstat(path) if dir_st is not None else None
        old = read_text(path) if st is not None and stat.S_ISREG(st.st_mode) else None
        if st is None:
            out.writes.append((path, content, "created"))
        elif old != content:
            out.writes.append((path, content, "changed"))
            out.before[path] = old if old is not None else ""
        elif stat.S_IMODE(st.st_mode) != file_mode:
            out.writes.append((path, content, "mode"))

    names = {name for name, dummy in files}
    owned = record["components"].get(component, {})
    for name in sorted(set(owned) - names):
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue  # gone: forgotten
        old = read_text(path) if stat.S_ISREG(st.st_mode) else None
        digest = owned[name]
        if old is not None and (digest is None or sha1(old) == digest):
            out.removes.append((path, old))
        else:
            out.kept.append(path)
    if not files and component in record["components"] and dir_st is not None:
        left = set(os.listdir(directory)) - {os.path.basename(p) for p, dummy in out.removes}
        out.remove_dir = not left

    mine = {name: (None if sensitive else sha1(content)) for name, content in files}
    components = {k: v for k, v in record["components"].items() if k != component}
    if files:
        components[component] = mine
    new_record = {"about": RECORD_ABOUT, "version": 1, "components": components}
    return out, {"record": new_record, "record_exists": record_st is not None, "root_exists": root_st is not None}


def _atomic_write(path: str, content: str, mode: int) -> None:
    directory = os.path.dirname(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_if_changed(path: str, content: str, mode: int, check_mode: bool) -> bool:
    """Write one file of the render directory (the index, the record) when its content or mode differs."""
    st = _lstat(path)
    if st is not None and stat.S_ISREG(st.st_mode) and read_text(path) == content and stat.S_IMODE(st.st_mode) == mode:
        return False
    if not check_mode:
        _atomic_write(path, content, mode)
    return True


def execute(p: Plan, check_mode: bool) -> None:
    """Carry out a plan: the component's directory, its files, the removals."""
    if check_mode:
        return
    dir_mode = 0o700 if p.sensitive else 0o755
    file_mode = 0o600 if p.sensitive else 0o644
    try:
        if p.make_dir:
            os.makedirs(p.directory, mode=dir_mode)
            os.chmod(p.directory, dir_mode)
        elif p.dir_mode_fix:
            os.chmod(p.directory, dir_mode)
    except OSError as exc:
        raise RenderError(f"Creating {p.directory} failed ({exc.strerror or exc}): give gpu_ops_render_dir a directory this user can create and "
                          "write, below directories only.") from None
    for path, content, _dummy in p.writes:
        _atomic_write(path, content, file_mode)
    for path, _old in p.removes:
        os.unlink(path)
    if p.remove_dir:
        os.rmdir(p.directory)


def index_content(previous: Optional[str], component: str, releases: List[Dict[str, Any]],
                  load: Callable[[str], Any], dump: Callable[[Any], str]) -> str:
    """helm-releases.yaml: other components' entries kept, this component's replaced, sorted by release."""
    entries: List[Dict[str, Any]] = []
    if previous:
        try:
            data = load(previous)
        except Exception:  # pylint: disable=broad-except  # an unreadable index is rebuilt, as it only indexes
            data = None
        if isinstance(data, dict) and isinstance(data.get("releases"), list):
            entries = [r for r in data["releases"] if isinstance(r, dict) and r.get("component") != component]
    entries += [{"release": r["release"], "namespace": r.get("namespace"), "repository": r.get("repository"),
                 "chart": r.get("chart"), "version": r.get("version"),
                 "values_file": "{}/{}.values.yaml".format(component, r["release"]), "component": component}
                for r in releases]
    entries.sort(key=lambda r: str(r.get("release")))
    return "---\n" + dump({"releases": entries})


def record_content(record: Dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"
