# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: what a node must have (files, directories, symlinks, systemd units), described once,
compared without changing anything, and converged.

Not a public API; may change without notice. A description is two lists, ``files`` and ``units``, in the shape of
``description_argument_spec()``. The mig_node_files module converges a node to it (check mode and diff); the
mig_node_state module compares the node with the same description (``drift``) in the read it makes anyway, so a
role that hands one description to both knows from its single read whether anything must be written, and writes
exactly what was compared. ``differences`` is the one comparison both use.

Rules, as ansible.builtin.copy/file/systemd_service apply them: a file's content is compared by SHA-1 and written
atomically (a temporary file in the same directory, renamed over the old one, so a symlink there is replaced, not
followed); a directory is created with its missing parents, each given the entry's mode and owner; mode and owner
are compared on the path itself (lstat). What the description cannot turn into what it asks for without deleting
something (a directory where a file should be, a file where a directory or link should be) is reported and refused,
never removed. ``daemon_reload`` on an entry asks for ``systemctl daemon-reload`` after that entry changed (a unit
file or drop-in), before any unit is enabled.
"""
from __future__ import annotations

import contextlib
import copy
import grp
import hashlib
import os
import pwd
import re
import tempfile
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._node_state import file_state, unit_states

Runner = Callable[[List[str]], Tuple[int, str, str]]

FILE_STATES = ("file", "directory", "link")
# copy/template show no diff for a file larger than this (ansible's MAX_FILE_SIZE_FOR_DIFF); neither do we
MAX_DIFF_BYTES = 104448
_MODE = re.compile(r"^0?[0-7]{3}$")

_FILE_OPTIONS: Dict[str, Dict[str, Any]] = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": list(FILE_STATES), "default": "file"},
    "content": {"type": "str"},
    "src": {"type": "str"},
    "mode": {"type": "raw"},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
    "daemon_reload": {"type": "bool", "default": False},
}
_UNIT_OPTIONS: Dict[str, Dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "enabled": {"type": "bool", "default": True},
}


def description_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The ``files`` and ``units`` options (documented in the mig_node_files module), a new copy each call."""
    return {
        "files": {"type": "list", "elements": "dict", "default": [], "options": copy.deepcopy(_FILE_OPTIONS)},
        "units": {"type": "list", "elements": "dict", "default": [], "options": copy.deepcopy(_UNIT_OPTIONS)},
    }


class DescriptionError(ValueError):
    """The description itself is wrong (names the entry)."""


class ConvergeError(RuntimeError):
    """The node could not be brought to the description (names the path or unit)."""


class FileWant(NamedTuple):
    path: str
    state: str
    content: Optional[str]
    src: Optional[str]
    mode: Optional[int]
    uid: int
    gid: int
    daemon_reload: bool


class UnitWant(NamedTuple):
    name: str
    enabled: bool


def _mode(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise DescriptionError(
            f"{where}: mode must be a quoted octal string such as '0644', got {value!r}"
            + (" (an unquoted YAML number: quote it)" if isinstance(value, int) and not isinstance(value, bool) else "")
        )
    if not _MODE.match(value):
        raise DescriptionError(f"{where}: mode {value!r} is not an octal mode such as '0644' (no symbolic modes, no special bits)")
    return int(value, 8)


def _owner_id(name: str, where: str, what: str) -> int:
    """The numeric id of a user (``what`` owner) or group (``what`` group) named on this node, or given as a number."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if what == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        raise DescriptionError(f"{where}: {what} {name!r} is not a {'user' if what == 'owner' else 'group'} on this node") from None


def parse_files(entries: Sequence[Dict[str, Any]]) -> List[FileWant]:
    """The ``files`` entries (already through the argument spec), checked and with owners resolved on this node."""
    wants: List[FileWant] = []
    seen: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        path = entry["path"]
        where = f"files[{index}] ({path})"
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            raise DescriptionError(f"{where}: path must be absolute and normalised (no '..', '//' or trailing '/')")
        if path in seen:
            raise DescriptionError(f"{where}: the same path as files[{seen[path]}]; describe each path once")
        seen[path] = index
        state = entry.get("state") or "file"
        content, src, mode = entry.get("content"), entry.get("src"), entry.get("mode")
        if state == "file" and (content is None or mode is None):
            raise DescriptionError(f"{where}: a file needs content and mode")
        if state == "directory" and (mode is None or content is not None):
            raise DescriptionError(f"{where}: a directory needs a mode and takes no content")
        if state == "link" and (not src or content is not None or mode is not None):
            raise DescriptionError(f"{where}: a link needs src (its target) and takes no content or mode")
        if state != "link" and src is not None:
            raise DescriptionError(f"{where}: src is for state=link only")
        wants.append(FileWant(
            path=path, state=state, content=content, src=src,
            mode=None if mode is None else _mode(mode, where),
            uid=_owner_id(entry.get("owner") or "root", where, "owner"), gid=_owner_id(entry.get("group") or "root", where, "group"),
            daemon_reload=bool(entry.get("daemon_reload")),
        ))
    return wants


def parse_units(entries: Sequence[Dict[str, Any]]) -> List[UnitWant]:
    wants: List[UnitWant] = []
    for index, entry in enumerate(entries):
        name = entry["name"]
        if not name or "/" in name or name in [w.name for w in wants]:
            raise DescriptionError(f"units[{index}]: {name!r} must be a unit name given once")
        wants.append(UnitWant(name=name, enabled=bool(entry.get("enabled", True))))
    return wants


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()  # nosec B324 - copy/template compare sha1; not a security use


def observe(path: str) -> Dict[str, Any]:
    """The path's state as file_state reports it, plus ``target`` for a symlink."""
    have = file_state(path)
    if have.get("islnk"):
        try:
            have["target"] = os.readlink(path)
        except OSError as exc:
            have["target"] = f"(unreadable: {exc.strerror})"
    return have


def _kind(have: Dict[str, Any]) -> str:
    if have.get("islnk"):
        return "link"
    if have.get("isdir"):
        return "directory"
    return "file" if have.get("isreg", True) else "special file"


def blocking(want: FileWant, have: Dict[str, Any]) -> Optional[str]:
    """Why ``want`` cannot be reached without deleting what is at its path, or None."""
    if not have.get("exists"):
        return None
    kind = _kind(have)
    if want.state == "file" and kind in ("directory", "special file"):
        return f"{want.path} is a {kind}, not a file: remove it by hand"
    if want.state in ("directory", "link") and kind != want.state:
        return f"{want.path} is a {kind}, not a {want.state}: remove it by hand"
    return None


def differences(want: FileWant, have: Dict[str, Any]) -> List[str]:
    """What differs between ``want`` and ``have`` (observe()), in words; empty when the path is as described."""
    if not have.get("exists"):
        return ["absent"]
    blocked = blocking(want, have)
    if blocked:
        return [blocked]
    found: List[str] = []
    if want.state == "link":
        if have.get("target") != want.src:
            found.append(f"links to {have.get('target')} instead of {want.src}")
    elif want.state == "file" and _kind(have) == "link":
        found.append("is a link, not a file")
        return found
    elif want.state == "file" and have.get("checksum") != sha1(want.content or ""):
        found.append("content differs")
    if want.mode is not None and have.get("mode") != f"{want.mode:04o}":
        found.append(f"mode {have.get('mode')} instead of {want.mode:04o}")
    if (have.get("uid"), have.get("gid")) != (want.uid, want.gid):
        found.append(f"owner {have.get('uid')}:{have.get('gid')} instead of {want.uid}:{want.gid}")
    return found


def unit_differences(want: UnitWant, have: Optional[Dict[str, str]]) -> List[str]:
    state = (have or {}).get("unit_file_state", "")
    if (have or {}).get("load_state") == "not-found":
        return ["no such unit"] if want.enabled else []
    if want.enabled and state != "enabled":
        return [f"not enabled (unit file state: {state or 'unknown'})"]
    if not want.enabled and state == "enabled":
        return ["enabled"]
    return []


def drift(files: Sequence[FileWant], units: Sequence[UnitWant], unit_state: Dict[str, Dict[str, str]]) -> List[Dict[str, str]]:
    """Read only: each path or unit of the description that differs on this node, with why (mig_node_state's RV drift)."""
    found = []
    for want in files:
        why = differences(want, observe(want.path))
        if why:
            found.append({"name": want.path, "kind": want.state, "why": "; ".join(why)})
    for unit in units:
        why = unit_differences(unit, unit_state.get(unit.name))
        if why:
            found.append({"name": unit.name, "kind": "unit", "why": "; ".join(why)})
    return found


def _text_for_diff(path: str, have: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """The current content to show in a diff (empty when absent), or a note saying why it is not shown."""
    if not have.get("exists") or _kind(have) != "file":
        return "", {}
    if have.get("size", 0) > MAX_DIFF_BYTES:
        return "", {"dst_larger": MAX_DIFF_BYTES}
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DIFF_BYTES + 1)
    except OSError:
        return "", {}
    try:
        return data.decode("utf-8"), {}
    except UnicodeDecodeError:
        return "", {"dst_binary": 1}


def _attributes(have: Dict[str, Any]) -> Dict[str, Any]:
    if not have.get("exists"):
        return {"state": "absent"}
    shown: Dict[str, Any] = {"state": _kind(have), "mode": have.get("mode"), "owner": f"{have.get('uid')}:{have.get('gid')}"}
    if "target" in have:
        shown["src"] = have["target"]
    return shown


def _wanted_attributes(want: FileWant) -> Dict[str, Any]:
    shown: Dict[str, Any] = {"state": want.state, "owner": f"{want.uid}:{want.gid}"}
    if want.mode is not None:
        shown["mode"] = f"{want.mode:04o}"
    if want.src is not None:
        shown["src"] = want.src
    return shown


def _diffs(want: FileWant, have: Dict[str, Any]) -> List[Dict[str, Any]]:
    diffs: List[Dict[str, Any]] = []
    before_attrs = _attributes(have)
    after_attrs = _wanted_attributes(want)
    new_file = want.state == "file" and not have.get("exists")  # its content says it all, as the copy module shows it
    if not new_file and {k: before_attrs.get(k) for k in after_attrs} != after_attrs:
        # state, mode, owner, link target: shown as the file module shows them
        diffs.append({"before_header": f"{want.path} (attributes)", "after_header": f"{want.path} (attributes)",
                      "before": {"path": want.path, **before_attrs}, "after": {"path": want.path, **after_attrs}})
    if want.state == "file":
        before, note = _text_for_diff(want.path, have)
        if before != want.content:
            diffs.append({"before_header": want.path, "after_header": want.path, "before": before, "after": want.content, **note})
    return diffs


def _chown(path: str, uid: int, gid: int) -> None:
    if hasattr(os, "lchown"):
        os.lchown(path, uid, gid)
    else:  # pragma: no cover - every POSIX node has lchown
        os.chown(path, uid, gid)


def _write_file(want: FileWant) -> None:
    parent = os.path.dirname(want.path)
    if not os.path.isdir(parent):
        raise ConvergeError(f"writing {want.path}: its directory {parent} does not exist (describe it before the file)")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(want.path)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((want.content or "").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), want.mode if want.mode is not None else 0o644)
            os.fchown(handle.fileno(), want.uid, want.gid)
        os.replace(tmp, want.path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConvergeError(f"writing {want.path}: {exc.strerror}") from None


def _make_directory(want: FileWant) -> List[str]:
    """Create the directory and its missing parents (each with the entry's mode and owner); the paths created."""
    missing: List[str] = []
    path = want.path
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
            os.chmod(created, want.mode if want.mode is not None else 0o755)
            os.chown(created, want.uid, want.gid)
        except OSError as exc:
            raise ConvergeError(f"creating directory {created}: {exc.strerror}") from None
    return missing


def _link(want: FileWant) -> None:
    parent = os.path.dirname(want.path)
    tmp = os.path.join(parent, f".{os.path.basename(want.path)}.{os.getpid()}.tmp")
    try:
        os.symlink(want.src or "", tmp)
        _chown(tmp, want.uid, want.gid)
        os.replace(tmp, want.path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConvergeError(f"linking {want.path} to {want.src}: {exc.strerror}") from None


def _apply(want: FileWant, have: Dict[str, Any]) -> List[str]:
    """Bring one path to ``want``; the directories created on the way (for the result)."""
    if want.state == "directory":
        if not have.get("exists"):
            return _make_directory(want)
    elif want.state == "link":
        if not have.get("exists") or have.get("target") != want.src:
            _link(want)
        if (have.get("uid"), have.get("gid")) != (want.uid, want.gid):
            _chown(want.path, want.uid, want.gid)
        return []
    elif not have.get("exists") or _kind(have) == "link" or have.get("checksum") != sha1(want.content or ""):
        _write_file(want)
        return []
    try:
        if want.mode is not None and have.get("mode") != f"{want.mode:04o}":
            os.chmod(want.path, want.mode)
        if (have.get("uid"), have.get("gid")) != (want.uid, want.gid):
            os.chown(want.path, want.uid, want.gid)
    except OSError as exc:
        raise ConvergeError(f"setting mode and owner of {want.path}: {exc.strerror}") from None
    return []


def converge(
    files: Sequence[FileWant], units: Sequence[UnitWant], run: Runner, check_mode: bool, with_diff: bool,
    set_context: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Bring the node to the description, in order: files, ``systemctl daemon-reload`` when an entry asking for it
    changed (systemd running), then units. In check mode nothing is written and the result says what would be.
    Returns changed, changes ({path or unit: [what differs]}), daemon_reload and, with ``with_diff``, diff."""
    changes: Dict[str, List[str]] = {}
    diffs: List[Dict[str, Any]] = []
    reload_needed = False
    for want in files:
        have = observe(want.path)
        why = differences(want, have)
        if not why:
            continue
        blocked = blocking(want, have)
        if blocked:
            raise ConvergeError(blocked)
        changes[want.path] = why
        if with_diff:
            diffs.extend(_diffs(want, have))
        reload_needed = reload_needed or want.daemon_reload
        if not check_mode:
            created = _apply(want, have)
            if len(created) > 1:
                changes[want.path] = [*why, "created with parents " + ", ".join(sorted(created)[:-1])]
            if set_context is not None:
                set_context(want.path)
    state, systemd_running = unit_states(run, [u.name for u in units]) if units else ({}, True)
    reloaded = reload_needed and systemd_running
    if reloaded and not check_mode:
        rc, out, err = run(["systemctl", "daemon-reload"])
        if rc != 0:
            raise ConvergeError(f"systemctl daemon-reload exited {rc}: {err.strip() or out.strip()}")
    for unit in units:
        why = unit_differences(unit, state.get(unit.name))
        if not why:
            continue
        changes[unit.name] = why
        action = "enable" if unit.enabled else "disable"
        if with_diff:
            diffs.append({"before_header": f"unit {unit.name}", "after_header": f"unit {unit.name}",
                          "before": {"unit": unit.name, "unit_file_state": state.get(unit.name, {}).get("unit_file_state") or "not-found"},
                          "after": {"unit": unit.name, "unit_file_state": "enabled" if unit.enabled else "disabled"}})
        if check_mode:
            continue
        # without systemd as PID 1 (an image build, a chroot) systemctl works on the unit files only
        argv = ["systemctl", action, "--", unit.name] if systemd_running else ["systemctl", "--root=/", action, "--", unit.name]
        rc, out, err = run(argv)
        if rc != 0:
            raise ConvergeError(f"systemctl {action} {unit.name} exited {rc}: {err.strip() or out.strip()}")
    result: Dict[str, Any] = {"changed": bool(changes), "changes": changes, "daemon_reload": reloaded, "systemd_running": systemd_running}
    if with_diff:
        result["diff"] = diffs
    return result
