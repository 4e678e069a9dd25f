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
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR: Optional[str] = None
except ImportError as _exc:  # pragma: no cover - exercised on nodes without PyYAML
    HAS_YAML = False
    YAML_IMPORT_ERROR = str(_exc)


class MigConfigError(ValueError):
    """A mig-parted config (or one profile string in it) is malformed."""


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


def normalize_device_id(value: str) -> str:
    """``0x20b010de`` -> ``0x20B010DE``; raise on anything but 8 hex digits after ``0x``."""
    m = re.match(r"^(?:0[xX])?([0-9A-Fa-f]{8})$", value.strip()) if isinstance(value, str) else None
    if not m:
        raise MigConfigError(f"malformed PCI device id {value!r}: expected 0x followed by 8 hex digits, e.g. 0x20B010DE")
    return "0x" + m.group(1).upper()


def parse_device_filter(value: Any) -> DeviceFilter:
    m = _DEVICE_ID_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise MigConfigError(
            f"malformed device-filter {value!r}: expected '0xDDDDVVVV' or '0xDDDDVVVV:0xSSSSVVVV' (device and vendor id, "
            "optionally the subsystem id), e.g. '0x20B010DE'"
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


def parse_entries(entries: Any, where: str) -> Tuple[ConfigEntry, ...]:
    """Parse one named config: a non-empty list of entries. ``where`` prefixes every message."""
    if not isinstance(entries, list) or not entries:
        raise MigConfigError(f"{where}: must be a non-empty list of entries (devices, mig-enabled, mig-devices)")
    return tuple(_parse_entry(raw, pos, where) for pos, raw in enumerate(entries))


def _parse_entry(raw: Any, pos: int, where: str) -> ConfigEntry:
    here = f"{where}, entry {pos + 1}"
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
            raise MigConfigError(f"{here}: 'devices' must hold non-negative integer GPU indices; invalid: {bad}")
        dupes = sorted({d for d in devices_raw if devices_raw.count(d) > 1})
        if dupes:
            raise MigConfigError(f"{here}: 'devices' lists GPU index(es) {dupes} more than once")
        devices = tuple(devices_raw)
    elif _is_int(devices_raw):
        raise MigConfigError(f"{here}: 'devices: {devices_raw}' is a bare integer; write a list, 'devices: [{devices_raw}]'")
    else:
        raise MigConfigError(f"{here}: 'devices' must be 'all' or a list of GPU indices, not {devices_raw!r}")

    if "mig-enabled" not in raw:
        raise MigConfigError(f"{here}: 'mig-enabled' is required (true or false)")
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise MigConfigError(f"{here}: 'mig-enabled' must be true or false, not {enabled!r}")

    mig_devices: List[Tuple[MigProfile, int]] = []
    if enabled and "mig-devices" not in raw:
        raise MigConfigError(f"{here}: 'mig-devices' is required when mig-enabled is true (use {{}} for no devices)")
    md = raw.get("mig-devices")
    if md is not None or "mig-devices" in raw:
        if not isinstance(md, dict):
            raise MigConfigError(f"{here}: 'mig-devices' must be a mapping of profile to count, not {md!r}")
        if not enabled and md:
            raise MigConfigError(f"{here}: 'mig-devices' must be empty when mig-enabled is false (found {sorted(md)})")
        seen: Dict[MigProfile, str] = {}
        for key, count in md.items():
            try:
                profile = parse_profile(key)
            except MigConfigError as exc:
                raise MigConfigError(f"{here}, mig-devices: {exc}") from None
            if profile in seen:
                raise MigConfigError(f"{here}, mig-devices: {key!r} and {seen[profile]!r} name the same profile")
            seen[profile] = str(key)
            if not _is_int(count) or count < 0:
                raise MigConfigError(f"{here}, mig-devices: count for {key!r} must be a non-negative integer, not {count!r}")
            mig_devices.append((profile, count))
        if mig_devices and all(count == 0 for _prof, count in mig_devices):
            raise MigConfigError(f"{here}, mig-devices: every count is 0; use {{}} for a MIG-enabled GPU with no devices")

    filters: Tuple[DeviceFilter, ...] = ()
    if "device-filter" in raw:
        df = raw["device-filter"]
        items = [df] if isinstance(df, str) else df
        if not isinstance(items, list) or not items:
            raise MigConfigError(f"{here}: 'device-filter' must be a device id string or a non-empty list of them")
        try:
            filters = tuple(parse_device_filter(x) for x in items)
        except MigConfigError as exc:
            raise MigConfigError(f"{here}: {exc}") from None

    return ConfigEntry(
        position=pos, devices=devices, mig_enabled=enabled, mig_devices=tuple(mig_devices), device_filter=filters
    )


def parse_config(data: Any, source: str = "mig-parted config") -> MigConfigFile:
    """Parse a whole config: a mapping, or YAML/JSON text. ``source`` names it in messages."""
    if isinstance(data, (str, bytes)):
        data = load_yaml(data, source)
    if not isinstance(data, dict):
        raise MigConfigError(f"{source}: must be a mapping with 'version: v1' and 'mig-configs', not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in ("version", "mig-configs"))
    if unknown:
        raise MigConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; allowed: version, mig-configs")
    version = data.get("version")
    if version != "v1":
        raise MigConfigError(f"{source}: 'version' must be 'v1' (the only version mig-parted reads), not {version!r}")
    configs = data.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise MigConfigError(f"{source}: 'mig-configs' must be a non-empty mapping of config name to entries")
    parsed: Dict[str, Tuple[ConfigEntry, ...]] = {}
    for name, entries in configs.items():
        if not isinstance(name, str) or not name:
            raise MigConfigError(f"{source}: config names must be non-empty strings, not {name!r}")
        parsed[name] = parse_entries(entries, f"{source}, config {name!r}")
    return MigConfigFile(version=version, configs=parsed)


def load_yaml(text: Union[str, bytes], source: str) -> Any:
    """Load YAML, refusing duplicate keys (which would silently drop a layout). Falls back to JSON without PyYAML."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not HAS_YAML:
        try:
            return json.loads(text)
        except ValueError:
            raise MigConfigError(
                f"{source}: PyYAML is not installed on this host ({YAML_IMPORT_ERROR}); install python3-yaml"
            ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise MigConfigError(f"{source}: not valid YAML: {exc}") from None


if HAS_YAML:

    # libyaml's parser when PyYAML has it (much faster on mig-parted's 600-line default file), the
    # pure-Python one otherwise; the safe constructor and the duplicate-key check are the same in both.
    _BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class _StrictLoader(_BaseLoader):  # type: ignore[misc]
        pass

    def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen[key] = True
        mapping: Dict[Any, Any] = loader.construct_mapping(node, deep=deep)
        return mapping

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
