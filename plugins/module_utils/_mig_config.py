# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: parser and validator for nvidia-mig-parted's v1 config format.

Not a public API; may change without notice.

The format (``version: v1``, ``mig-configs``) is the collection's input language for MIG
layouts. This module checks everything that can be checked without knowing the GPUs:
structure, key names, types, profile syntax and device filters. Whether a layout fits a
given GPU model is the planner's job (``_mig_plan``).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._strict_yaml import (
    HAS_YAML,
    YAML_IMPORT_ERROR,
    HexInt,
    StrictYamlError,
    decode,
    line_of,
    load,
    to_plain,
)


class MigConfigError(ValueError):
    """A mig-parted config (or one profile string in it) is malformed."""


# No GPU holds more than 8 MIG devices of one profile (7 GPU instances, or 8 compute instances of one
# 8-slice instance); a larger count is a typo, refused before anything is sized from it.
MAX_PROFILE_COUNT = 64
# Entries over all named configs of one file (mig-parted's default file has about 150).
MAX_ENTRIES = 10000


# "1g.5gb", "1c.3g.20gb", "1g.10gb+me", "1g.24gb+gfx", "1g.24gb+me.all", "1g.24gb-me".
_PROFILE_RE = re.compile(
    r"^(?:(?P<c>[1-9][0-9]?)c\.)?(?P<g>[1-9][0-9]?)g\.(?P<gb>[1-9][0-9]{0,3})gb(?P<attr>\+me\.all|\+me|\+gfx|-me)?$"
)
_DEVICE_ID_RE = re.compile(r"^0[xX](?P<id>[0-9A-Fa-f]{8})(?::0[xX](?P<sub>[0-9A-Fa-f]{8}))?$")
# Attributes a profile name may carry, as nvidia-smi and mig-parted spell them.
PROFILE_ATTRIBUTES = ("+me", "+me.all", "+gfx", "-me")
MEDIA_EXTENSION_ATTRIBUTES = ("+me", "+me.all")


@dataclass(frozen=True, order=True)
class MigProfile:
    """One MIG device type as named in a config: ``[<C>c.]<G>g.<GB>gb[<attribute>]``."""

    gpu_slices: int
    memory_gb: int
    attribute: str = ""
    compute_slices: int = 0  # 0 means "the whole GPU instance" (C == G)

    @property
    def compute(self) -> int:
        return self.compute_slices or self.gpu_slices

    @property
    def gpu_instance_name(self) -> str:
        """The GPU-instance profile this device needs, e.g. ``3g.20gb`` for ``1c.3g.20gb``."""
        return f"{self.gpu_slices}g.{self.memory_gb}gb{self.attribute}"

    @property
    def media_extensions(self) -> bool:
        return self.attribute in MEDIA_EXTENSION_ATTRIBUTES

    def __str__(self) -> str:
        if self.compute_slices and self.compute_slices != self.gpu_slices:
            return f"{self.compute_slices}c.{self.gpu_instance_name}"
        return self.gpu_instance_name


def parse_profile(text: Any) -> MigProfile:
    """Parse a MIG profile name; ``MIG `` prefixes as nvidia-smi prints them are accepted."""
    if not isinstance(text, str):
        raise MigConfigError(f"MIG profile {text!r} must be a string such as '1g.10gb', not {type(text).__name__}")
    name = text.strip()
    if name.startswith("MIG "):
        name = name[4:].strip()
    m = _PROFILE_RE.match(name)
    if not m:
        raise MigConfigError(
            f"malformed MIG profile {text!r}: expected '<G>g.<GB>gb' or '<C>c.<G>g.<GB>gb', optionally followed by "
            f"one of {', '.join(PROFILE_ATTRIBUTES)} (for example '1g.10gb', '1c.3g.20gb', '1g.10gb+me')"
        )
    g = int(m.group("g"))
    c = int(m.group("c")) if m.group("c") else 0
    if c > g:
        raise MigConfigError(f"malformed MIG profile {text!r}: {c} compute slices do not fit a {g}-slice GPU instance")
    if c == g:
        c = 0
    return MigProfile(gpu_slices=g, memory_gb=int(m.group("gb")), attribute=m.group("attr") or "", compute_slices=c)


@dataclass(frozen=True)
class DeviceFilter:
    """``0xDDDDVVVV`` (device + vendor) with an optional ``:0xSSSSVVVV`` subsystem."""

    device_id: str
    subsystem_id: Optional[str] = None

    def matches(self, device_id: Optional[str], subsystem_id: Optional[str] = None) -> bool:
        if device_id is None or normalize_device_id(device_id) != self.device_id:
            return False
        if self.subsystem_id is None:
            return True
        return subsystem_id is not None and normalize_device_id(subsystem_id) == self.subsystem_id

    def __str__(self) -> str:
        return self.device_id if self.subsystem_id is None else f"{self.device_id}:{self.subsystem_id}"


def _number_hint(value: Any) -> str:
    """Why a PCI id given as a number is refused, and what to write instead."""
    if isinstance(value, bool) or not isinstance(value, int):
        return ""
    hint = f" (0x{value:08X} in hexadecimal)" if 0 <= value <= 0xFFFFFFFF else ""
    return (
        f"; it is a number{hint}, not a PCI id: a YAML loader reads an unquoted hex id as an integer, so quote it, "
        "e.g. '0x20B010DE'"
    )


def normalize_device_id(value: Any) -> str:
    """``0x20b010de`` -> ``0x20B010DE``; raise on anything but 8 hex digits after ``0x``.
    A hex integer as the strict loader keeps it (``HexInt``) is read as written."""
    if isinstance(value, HexInt):
        value = value.text
    m = re.match(r"^(?:0[xX])?([0-9A-Fa-f]{8})$", value.strip()) if isinstance(value, str) else None
    if not m:
        raise MigConfigError(
            f"malformed PCI device id {value!r}: expected 0x followed by 8 hex digits, e.g. 0x20B010DE{_number_hint(value)}"
        )
    return "0x" + m.group(1).upper()


def parse_device_filter(value: Any) -> DeviceFilter:
    """``'0xDDDDVVVV'`` or ``'0xDDDDVVVV:0xSSSSVVVV'``; an unquoted hex id kept by the strict loader is read as written."""
    if isinstance(value, HexInt):
        value = value.text
    m = _DEVICE_ID_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise MigConfigError(
            f"malformed device-filter {value!r}: expected '0xDDDDVVVV' or '0xDDDDVVVV:0xSSSSVVVV' (device and vendor id, "
            f"optionally the subsystem id), e.g. '0x20B010DE'{_number_hint(value)}"
        )
    sub = m.group("sub")
    return DeviceFilter("0x" + m.group("id").upper(), None if sub is None else "0x" + sub.upper())


ALL_DEVICES = "all"


@dataclass(frozen=True)
class ConfigEntry:
    """One item of a named config's list."""

    position: int  # 0-based index within the named config, for messages
    devices: Union[str, Tuple[int, ...]]  # "all" or GPU indices
    mig_enabled: bool
    mig_devices: Tuple[Tuple[MigProfile, int], ...] = ()
    device_filter: Tuple[DeviceFilter, ...] = ()

    def describe(self) -> str:
        filt = f", device-filter {', '.join(str(f) for f in self.device_filter)}" if self.device_filter else ""
        devs = self.devices if isinstance(self.devices, str) else list(self.devices)
        return f"entry {self.position + 1} (devices: {devs}{filt})"

    def applies_to(self, index: int, device_ids: Tuple[str, ...], subsystem_id: Optional[str]) -> bool:
        if self.devices != ALL_DEVICES and index not in self.devices:
            return False
        if not self.device_filter:
            return True
        return any(f.matches(d, subsystem_id) for f in self.device_filter for d in device_ids)

    def profile_counts(self) -> Dict[str, int]:
        return {str(p): n for p, n in self.mig_devices if n > 0}


@dataclass(frozen=True)
class MigConfigFile:
    version: str
    configs: Dict[str, Tuple[ConfigEntry, ...]] = field(default_factory=dict)

    def select(self, name: str) -> Tuple[ConfigEntry, ...]:
        if not isinstance(name, str) or not name:
            raise MigConfigError(f"config name must be a non-empty string, not {name!r}")
        if name not in self.configs:
            raise MigConfigError(f"config {name!r} not found; the file defines: {', '.join(sorted(self.configs))}")
        return self.configs[name]


_ENTRY_KEYS = ("devices", "mig-enabled", "mig-devices", "device-filter")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at(line: Optional[int]) -> str:
    return f" (line {line})" if line else ""


def parse_entries(entries: Any, where: str, line: Optional[int] = None) -> Tuple[ConfigEntry, ...]:
    """Parse one named config: a non-empty list of entries. ``where`` prefixes every message; ``line``
    (of the config's name in its file) is named when the value itself is wrong."""
    if not isinstance(entries, list) or not entries:
        raise MigConfigError(
            f"{where}{_at(line)}: must be a non-empty list of entries (devices, mig-enabled, mig-devices), not {_brief(entries)}"
        )
    if len(entries) > MAX_ENTRIES:
        raise MigConfigError(f"{where}{_at(line)}: {len(entries)} entries, more than the {MAX_ENTRIES} a config may have")
    return tuple(_parse_entry(raw, pos, where) for pos, raw in enumerate(entries))


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_entry(raw: Any, pos: int, where: str) -> ConfigEntry:
    here = f"{where}, entry {pos + 1}{_at(line_of(raw))}"
    if not isinstance(raw, dict):
        raise MigConfigError(f"{here}: must be a mapping with keys {', '.join(_ENTRY_KEYS)}, not {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _ENTRY_KEYS)
    if unknown:
        raise MigConfigError(f"{here}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ENTRY_KEYS)}")

    if "devices" not in raw:
        raise MigConfigError(f"{here}: 'devices' is required ('all' or a list of GPU indices)")
    devices_raw = raw["devices"]
    devices: Union[str, Tuple[int, ...]]
    if devices_raw == ALL_DEVICES:
        devices = ALL_DEVICES
    elif isinstance(devices_raw, list):
        if not devices_raw:
            raise MigConfigError(f"{here}: 'devices' is an empty list; use 'all' or list GPU indices")
        bad = [d for d in devices_raw if not _is_int(d) or d < 0]
        if bad:
            raise MigConfigError(f"{here}: 'devices' must hold non-negative integer GPU indices; invalid: {_brief(bad)}")
        dupes = sorted(d for d, n in Counter(int(d) for d in devices_raw).items() if n > 1)
        if dupes:
            raise MigConfigError(f"{here}: 'devices' lists GPU index(es) {dupes} more than once")
        devices = tuple(int(d) for d in devices_raw)
    elif _is_int(devices_raw):
        raise MigConfigError(f"{here}: 'devices: {devices_raw}' is a bare integer; write a list, 'devices: [{devices_raw}]'")
    else:
        raise MigConfigError(f"{here}: 'devices' must be 'all' or a list of GPU indices, not {_brief(devices_raw)}")

    if "mig-enabled" not in raw:
        raise MigConfigError(f"{here}: 'mig-enabled' is required (true or false)")
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise MigConfigError(f"{here}: 'mig-enabled' must be true or false, not {_brief(enabled)}")

    mig_devices: List[Tuple[MigProfile, int]] = []
    if enabled and "mig-devices" not in raw:
        raise MigConfigError(f"{here}: 'mig-devices' is required when mig-enabled is true (use {{}} for no devices)")
    md = raw.get("mig-devices")
    if md is not None or "mig-devices" in raw:
        if not isinstance(md, dict):
            raise MigConfigError(f"{here}: 'mig-devices' must be a mapping of profile to count, not {_brief(md)}")
        if not enabled and md:
            raise MigConfigError(f"{here}: 'mig-devices' must be empty when mig-enabled is false (found {_brief(sorted(map(str, md)))})")
        seen: Dict[MigProfile, str] = {}
        for key, count in md.items():
            at = f"{here}, mig-devices{_at(line_of(md, key))}"
            try:
                profile = parse_profile(key)
            except MigConfigError as exc:
                raise MigConfigError(f"{at}: {exc}") from None
            if profile in seen:
                raise MigConfigError(f"{at}: {key!r} and {seen[profile]!r} name the same profile")
            seen[profile] = str(key)
            if not _is_int(count) or count < 0:
                raise MigConfigError(f"{at}: count for {key!r} must be a non-negative integer, not {_brief(count)}")
            if count > MAX_PROFILE_COUNT:
                raise MigConfigError(
                    f"{at}: count {count} for {key!r} is more MIG devices than any GPU holds (at most {MAX_PROFILE_COUNT} "
                    "of one profile are accepted; 7 is the usual maximum)"
                )
            mig_devices.append((profile, int(count)))
        if mig_devices and all(count == 0 for _prof, count in mig_devices):
            raise MigConfigError(f"{here}, mig-devices: every count is 0; use {{}} for a MIG-enabled GPU with no devices")

    filters: Tuple[DeviceFilter, ...] = ()
    if "device-filter" in raw:
        df = raw["device-filter"]
        items = [df] if isinstance(df, (str, int)) and not isinstance(df, bool) else df
        if not isinstance(items, list) or not items:
            raise MigConfigError(f"{here}: 'device-filter' must be a device id string or a non-empty list of them, not {_brief(df)}")
        try:
            filters = tuple(parse_device_filter(x) for x in items)
        except MigConfigError as exc:
            raise MigConfigError(f"{here}: {exc}") from None

    return ConfigEntry(
        position=pos, devices=devices, mig_enabled=enabled, mig_devices=tuple(mig_devices), device_filter=filters
    )


def parse_config(data: Any, source: str = "mig-parted config") -> MigConfigFile:
    """Parse a whole config: a mapping, or YAML/JSON text (str or bytes, read strictly: see ``load_yaml``).
    ``source`` (the file's path) names it in messages, with the line where the text gives one."""
    if isinstance(data, (str, bytes)):
        data = load_yaml(data, source)
    if data is None:
        raise MigConfigError(f"{source}: empty; a mig-parted config needs 'version: v1' and 'mig-configs'")
    if not isinstance(data, dict):
        raise MigConfigError(
            f"{source}: must be a mapping with 'version: v1' and 'mig-configs', not {type(data).__name__} ({_brief(data)})"
        )
    unknown = sorted(str(k) for k in data if k not in ("version", "mig-configs"))
    if unknown:
        raise MigConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; allowed: version, mig-configs")
    version = data.get("version")
    if version != "v1":
        raise MigConfigError(
            f"{source}{_at(line_of(data, 'version'))}: 'version' must be 'v1' (the only version mig-parted reads), not {_brief(version)}"
        )
    configs = data.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise MigConfigError(
            f"{source}{_at(line_of(data, 'mig-configs'))}: 'mig-configs' must be a non-empty mapping of config name to entries"
        )
    parsed: Dict[str, Tuple[ConfigEntry, ...]] = {}
    total = 0
    for name, entries in configs.items():
        if not isinstance(name, str) or not name:
            raise MigConfigError(f"{source}{_at(line_of(configs, name))}: config names must be non-empty strings, not {_brief(name)}")
        total += len(entries) if isinstance(entries, list) else 0
        if total > MAX_ENTRIES:
            raise MigConfigError(f"{source}: more than {MAX_ENTRIES} entries over all configs; is this the right file?")
        parsed[name] = parse_entries(entries, f"{source}, config {name!r}", line_of(configs, name))
    return MigConfigFile(version=str(version), configs=parsed)


def load_yaml(text: Union[str, bytes], source: str) -> Any:
    """Load a config file's content with the collection's strict loader (``_strict_yaml``): binary, non-UTF-8,
    non-YAML content, duplicate and complex keys are refused naming the file and the line; unquoted hex ids
    are kept as written. Falls back to JSON (duplicates refused too) where PyYAML is missing."""
    try:
        if not HAS_YAML:
            body = decode(text, source)
            try:
                return json.loads(body, object_pairs_hook=lambda pairs: _json_mapping(pairs, source))
            except ValueError as exc:
                raise MigConfigError(
                    f"{source}: PyYAML is not installed on this host ({YAML_IMPORT_ERROR}) and the file is not JSON ({exc}); "
                    "install python3-yaml"
                ) from None
        return load(text, source)
    except StrictYamlError as exc:
        raise MigConfigError(str(exc)) from None


def _json_mapping(pairs: List[Tuple[Any, Any]], source: str) -> Dict[Any, Any]:
    out: Dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MigConfigError(f"{source}: duplicate key {key!r}; rename or remove one")
        out[key] = value
    return out


def read_config(data: Union[str, bytes], source: str) -> Tuple[MigConfigFile, Dict[str, Any]]:
    """Load and validate a config file's content: ``(parsed, mapping)``, the mapping in plain types as the
    other entry points take it (filters, ``mig_verify``'s layout), with unquoted hex device filters as
    ``'0xDDDDVVVV'`` strings. Raises MigConfigError naming the file and, where it can, the line."""
    data_ = load_yaml(data, source)
    parsed = parse_config(data_, source)
    for entries in data_["mig-configs"].values():
        for entry in entries:
            df = entry.get("device-filter")
            if isinstance(df, HexInt):
                entry["device-filter"] = str(parse_device_filter(df))
            elif isinstance(df, list):
                entry["device-filter"] = [str(parse_device_filter(x)) if isinstance(x, HexInt) else x for x in df]
    plain: Dict[str, Any] = to_plain(data_)
    return parsed, plain
