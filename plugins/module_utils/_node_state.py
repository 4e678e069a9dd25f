# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: read, in one pass, the parts of a GPU node's state the mig_layout role decides on.

Not a public API; may change without notice. Used by the mig_node_state module: the OS family, the installed
version of a package, the checksum/mode/owner of files, the state of systemd units and the processes that hold
a GPU. Everything here only reads.
"""
from __future__ import annotations

import hashlib
import os
import stat
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Runner = Callable[[List[str]], Tuple[int, str, str]]

# /etc/os-release ID or ID_LIKE -> Ansible's os_family
_FAMILIES = (
    ("Debian", ("debian", "ubuntu")),
    ("RedHat", ("rhel", "fedora", "centos", "rocky", "almalinux", "ol")),
    ("Suse", ("suse", "sles", "opensuse")),
)
UNIT_PROPERTIES = ("Id", "LoadState", "UnitFileState", "ActiveState")
MAX_CHECKSUM_BYTES = 64 * 1024 * 1024


class NodeStateError(RuntimeError):
    """A part of the node's state could not be read."""


def parse_os_release(text: str) -> Dict[str, str]:
    """Key/value pairs of an os-release file (quotes removed)."""
    values: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def os_family(os_release: Dict[str, str]) -> str:
    """Ansible's os_family for an os-release mapping: ID first, then ID_LIKE; the ID capitalised otherwise."""
    ids = [os_release.get("ID", "").lower(), *os_release.get("ID_LIKE", "").lower().split()]
    for ident in ids:
        for family, members in _FAMILIES:
            if ident in members:
                return family
    return os_release.get("ID", "unknown").capitalize() or "Unknown"


def read_os_family(paths: Sequence[str] = ("/etc/os-release", "/usr/lib/os-release")) -> str:
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                return os_family(parse_os_release(handle.read()))
        except OSError:
            continue
    raise NodeStateError(f"none of {', '.join(paths)} is readable: cannot tell the OS family")


def package_version(run: Runner, family: str, name: str) -> str:
    """Installed version of ``name`` (Debian: epoch:upstream-revision as dpkg prints it; RPM: version-release),
    or '' when it is not installed."""
    if family == "Debian":
        rc, out, err = run(["dpkg-query", "--show", "--showformat=${db:Status-Status} ${Version}", name])
        if rc == 127:
            raise NodeStateError(f"dpkg-query is missing on this {family} node: {err.strip()}")
        if rc != 0:
            if "no packages found" in (err + out).lower():
                return ""
            raise NodeStateError(f"dpkg-query --show {name} exited {rc}: {err.strip() or out.strip()}")
        status, _sep, version = out.strip().partition(" ")
        return version if status == "installed" else ""
    if family in ("RedHat", "Suse"):
        rc, out, err = run(["rpm", "-q", "--queryformat", "%{VERSION}-%{RELEASE}", name])
        if rc == 127:
            raise NodeStateError(f"rpm is missing on this {family} node: {err.strip()}")
        if rc != 0:
            if "is not installed" in (err + out):
                return ""
            raise NodeStateError(f"rpm -q {name} exited {rc}: {err.strip() or out.strip()}")
        return out.strip()
    raise NodeStateError(f"no package manager known for OS family {family!r}")


def file_state(path: str) -> Dict[str, Any]:
    """exists, isdir, islnk, isreg, mode ('0644'), uid, gid, size and, for regular files, the sha1 checksum (as the
    copy module's). The path itself is examined (lstat): a symlink is reported as a link, not followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as exc:
        raise NodeStateError(f"stat {path}: {exc.strerror}") from None
    result: Dict[str, Any] = {
        "exists": True,
        "isdir": stat.S_ISDIR(st.st_mode),
        "islnk": stat.S_ISLNK(st.st_mode),
        "isreg": stat.S_ISREG(st.st_mode),
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
    }
    if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CHECKSUM_BYTES:
        digest = hashlib.sha1()  # nosec B324 - the copy/template modules compare sha1; not a security use
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 16), b""):
                    digest.update(block)
        except OSError as exc:
            raise NodeStateError(f"reading {path}: {exc.strerror}") from None
        result["checksum"] = digest.hexdigest()
    return result


def parse_systemctl_show(text: str) -> Dict[str, Dict[str, str]]:
    """``systemctl show --property=Id,... u1 u2`` output (blocks separated by blank lines) -> {Id: {prop: value}}."""
    units: Dict[str, Dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props: Dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def _offline_unit_states(run: Runner, names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """Unit file states read from disk (``systemctl --root=/ is-enabled``) where systemd is not PID 1
    (a chroot or an image build): whether a unit is running cannot be known there."""
    result: Dict[str, Dict[str, str]] = {}
    for name in names:
        rc, out, err = run(["systemctl", "--root=/", "is-enabled", "--", name])
        state = out.strip().splitlines()[0] if out.strip() else ""
        if rc != 0 and not state:
            if "no such file" in err.lower() or "not found" in err.lower():
                result[name] = {"load_state": "not-found", "unit_file_state": "", "active_state": "unknown"}
                continue
            raise NodeStateError(f"systemctl --root=/ is-enabled {name} exited {rc}: {err.strip()}")
        result[name] = {"load_state": "loaded", "unit_file_state": state, "active_state": "unknown"}
    return result


def unit_states(run: Runner, names: Sequence[str]) -> Tuple[Dict[str, Dict[str, str]], bool]:
    """LoadState/UnitFileState/ActiveState of each unit, keyed by the name asked for, and whether systemd runs
    (when it does not, the unit files' states are read from disk and active_state is ``unknown``)."""
    if not names:
        return {}, True
    rc, out, err = run(["systemctl", "show", "--property=" + ",".join(UNIT_PROPERTIES), "--", *names])
    if rc == 127 and "command not found" in err:  # no systemd at all (a minimal container)
        return {name: {"load_state": "unknown", "unit_file_state": "", "active_state": "unknown"} for name in names}, False
    if rc != 0:
        if "not been booted with systemd" in err or "Failed to connect to bus" in err:
            return _offline_unit_states(run, names), False
        raise NodeStateError(f"systemctl show exited {rc}: {err.strip() or out.strip()}")
    shown = list(parse_systemctl_show(out).values())
    # systemctl prints one block per unit, in the order asked; an alias is shown under its real Id.
    result: Dict[str, Dict[str, str]] = {}
    for name, props in zip(names, shown):
        result[name] = {
            "load_state": props.get("LoadState", ""),
            "unit_file_state": props.get("UnitFileState", ""),
            "active_state": props.get("ActiveState", ""),
        }
    for name in names[len(shown):]:
        result[name] = {"load_state": "not-found", "unit_file_state": "", "active_state": "inactive"}
    return result, True


def parse_compute_apps(text: str) -> List[Dict[str, str]]:
    """``nvidia-smi --query-compute-apps=pid,process_name,gpu_uuid --format=csv,noheader`` lines."""
    apps = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.lower().startswith("no running"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            raise NodeStateError(f"unexpected nvidia-smi --query-compute-apps line: {line!r}")
        apps.append({"pid": fields[0], "process_name": ",".join(fields[1:-1]), "gpu_uuid": fields[-1]})
    return apps


def compute_apps(run_smi: Optional[Runner]) -> List[Dict[str, str]]:
    if run_smi is None:
        raise NodeStateError("nvidia-smi is needed to list the processes holding the GPUs")
    rc, out, err = run_smi(["--query-compute-apps=pid,process_name,gpu_uuid", "--format=csv,noheader"])
    if rc != 0:
        raise NodeStateError(f"nvidia-smi --query-compute-apps exited {rc}: {err.strip() or out.strip()}")
    return parse_compute_apps(out)
