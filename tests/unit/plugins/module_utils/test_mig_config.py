# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import (
    MAX_ENTRIES,
    MAX_PROFILE_COUNT,
    DeviceFilter,
    MigConfigError,
    MigProfile,
    normalize_device_id,
    parse_config,
    parse_device_filter,
    parse_entries,
    parse_profile,
    read_config,
)


@pytest.mark.parametrize(
    ("text", "g", "gb", "attr", "c", "canonical", "gi"),
    [
        ("1g.5gb", 1, 5, "", 0, "1g.5gb", "1g.5gb"),
        ("MIG 7g.141gb", 7, 141, "", 0, "7g.141gb", "7g.141gb"),
        ("1g.10gb+me", 1, 10, "+me", 0, "1g.10gb+me", "1g.10gb+me"),
        ("1g.24gb+me.all", 1, 24, "+me.all", 0, "1g.24gb+me.all", "1g.24gb+me.all"),
        ("1g.24gb-me", 1, 24, "-me", 0, "1g.24gb-me", "1g.24gb-me"),
        ("2g.48gb+gfx", 2, 48, "+gfx", 0, "2g.48gb+gfx", "2g.48gb+gfx"),
        ("1c.3g.20gb", 3, 20, "", 1, "1c.3g.20gb", "3g.20gb"),
        ("3c.3g.20gb", 3, 20, "", 0, "3g.20gb", "3g.20gb"),  # C == G is the whole instance
    ],
)
def test_parse_profile(text: str, g: int, gb: int, attr: str, c: int, canonical: str, gi: str) -> None:
    p = parse_profile(text)
    assert (p.gpu_slices, p.memory_gb, p.attribute, p.compute_slices) == (g, gb, attr, c)
    assert str(p) == canonical
    assert p.gpu_instance_name == gi


def test_media_extensions_flag() -> None:
    assert parse_profile("1g.10gb+me").media_extensions
    assert parse_profile("1g.24gb+me.all").media_extensions
    assert not parse_profile("1g.24gb-me").media_extensions
    assert not parse_profile("1g.24gb+gfx").media_extensions


@pytest.mark.parametrize("text", ["", "1g", "1g.5", "0g.5gb", "1g.5gb+", "1g.5gb+me,gfx", "1g.5GB", " 1g.5gb x", "g.5gb"])
def test_parse_profile_rejects(text: str) -> None:
    with pytest.raises(MigConfigError, match="malformed MIG profile"):
        parse_profile(text)


def test_parse_profile_rejects_non_string() -> None:
    with pytest.raises(MigConfigError, match="must be a string"):
        parse_profile(7)


def test_device_ids() -> None:
    assert normalize_device_id("0x20b010de") == "0x20B010DE"
    assert normalize_device_id("20B010DE") == "0x20B010DE"
    with pytest.raises(MigConfigError, match="malformed PCI device id"):
        normalize_device_id("0x20B0")
    f = parse_device_filter("0x20B010DE:0x134F10de")
    assert f == DeviceFilter("0x20B010DE", "0x134F10DE")
    assert f.matches("0x20b010de", "0x134F10DE")
    assert not f.matches("0x20B010DE", "0x145F10DE")
    assert not f.matches("0x20B010DE", None)  # a subsystem filter needs the subsystem
    assert parse_device_filter("0x20B010DE").matches("0x20B010DE", "0x145F10DE")
    assert not parse_device_filter("0x20B010DE").matches("0x20B210DE")


def test_parse_config_from_yaml_text_keeps_entries_in_order() -> None:
    cfg = parse_config(
        """
version: v1
mig-configs:
  custom:
    - devices: [0, 1]
      mig-enabled: false
    - device-filter: ["0x20B010DE", "0x20F110DE"]
      devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
"""
    )
    entries = cfg.select("custom")
    assert [e.devices for e in entries] == [(0, 1), "all"]
    assert entries[0].mig_enabled is False
    assert entries[1].profile_counts() == {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
    assert [str(f) for f in entries[1].device_filter] == ["0x20B010DE", "0x20F110DE"]
    assert entries[1].mig_devices[0][0] == MigProfile(1, 5)


def test_disabled_entry_may_carry_empty_mig_devices() -> None:
    # as the DGX Station config shipped with mig-parted does
    (entry,) = parse_entries([{"devices": "all", "mig-enabled": False, "mig-devices": {}}], "x")
    assert entry.mig_enabled is False
    assert entry.profile_counts() == {}


def test_zero_count_alongside_others_is_dropped_from_counts() -> None:
    (entry,) = parse_entries([{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 0, "3g.20gb": 2}}], "x")
    assert entry.profile_counts() == {"3g.20gb": 2}


def test_duplicate_yaml_key_is_rejected() -> None:
    text = "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n  a:\n    - devices: all\n      mig-enabled: false\n"
    with pytest.raises(MigConfigError, match="duplicate key 'a'"):
        parse_config(text, source="cfg.yaml")


def test_same_profile_spelled_twice_is_rejected() -> None:
    with pytest.raises(MigConfigError, match=r"'3c\.3g\.20gb' and '3g\.20gb' name the same profile"):
        parse_entries([{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 1, "3c.3g.20gb": 1}}], "x")


def test_yaml_syntax_error_names_source() -> None:
    with pytest.raises(MigConfigError, match=r"^cfg\.yaml: not valid YAML"):
        parse_config("version: v1\nmig-configs: [\n", source="cfg.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a mapping"),
        ({"version": "v1"}, "'mig-configs' must be a non-empty mapping"),
        ({"version": "v1", "mig-configs": {"a": []}}, "config 'a': must be a non-empty list"),
        ({"version": "v1", "mig-configs": {"a": ["x"]}}, "config 'a', entry 1: must be a mapping"),
        ({"version": "v1", "mig-configs": {"a": [{"mig-enabled": False}]}}, "'devices' is required"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": "all"}]}}, "'mig-enabled' is required"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": [], "mig-enabled": False}]}}, "'devices' is an empty list"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": [True], "mig-enabled": False}]}}, "non-negative integer GPU"),
        ({"version": "v1", "mig-configs": {"a": [{"devices": "some", "mig-enabled": False}]}}, "'devices' must be 'all'"),
        ({"version": "v2", "mig-configs": {"a": [{"devices": "all", "mig-enabled": False}]}}, "'version' must be 'v1'"),
        (
            {"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": True, "mig-devices": []}]}},
            "'mig-devices' must be a mapping",
        ),
        (
            {"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": True}}]}},
            "count for '1g.5gb' must be a non-negative integer, not True",
        ),
        (
            {"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": False, "device-filter": []}]}},
            "'device-filter' must be a device id string or a non-empty list",
        ),
    ],
)
def test_parse_config_rejects(data: object, message: str) -> None:
    with pytest.raises(MigConfigError, match=message):
        parse_config(data)


def test_unquoted_hex_device_filter_is_read_as_written() -> None:
    text = "version: v1\nmig-configs:\n  a:\n    - device-filter: 0x20B010DE\n      devices: all\n      mig-enabled: false\n"
    (entry,) = parse_config(text, source="cfg.yaml").select("a")
    assert [str(f) for f in entry.device_filter] == ["0x20B010DE"]
    _parsed, plain = read_config(text.encode(), "cfg.yaml")
    assert plain["mig-configs"]["a"][0]["device-filter"] == "0x20B010DE"


@pytest.mark.parametrize("value", [548409566, [548409566]])
def test_a_number_as_device_filter_is_refused_with_its_hex_form(value: object) -> None:
    with pytest.raises(MigConfigError, match=r"malformed device-filter 548409566: .*it is a number \(0x20B010DE in hexadecimal\)"):
        parse_entries([{"device-filter": value, "devices": "all", "mig-enabled": False}], "x")


def test_a_number_as_pci_device_id_names_its_hex_form() -> None:
    with pytest.raises(MigConfigError, match=r"0x20B010DE in hexadecimal"):
        normalize_device_id(548409566)
    with pytest.raises(MigConfigError, match=r"malformed PCI device id -1: .*it is a number, not a PCI id"):
        normalize_device_id(-1)


@pytest.mark.parametrize("count", [MAX_PROFILE_COUNT + 1, 10**12])
def test_counts_beyond_any_gpu_are_refused_before_planning(count: int) -> None:
    with pytest.raises(MigConfigError, match=f"count {count} for '1g.5gb' is more MIG devices than any GPU holds"):
        parse_entries([{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": count}}], "x")


def test_messages_name_the_line_of_the_entry_and_the_profile() -> None:
    text = (
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n"
        "    - devices: [1]\n      mig-enabled: true\n      mig-devices:\n        \"1g.5gb\": 1\n        \"1g5gb\": 2\n"
    )
    with pytest.raises(MigConfigError) as exc:
        parse_config(text, source="cfg.yaml")
    assert str(exc.value).startswith("cfg.yaml, config 'a', entry 2 (line 6), mig-devices (line 10): malformed MIG profile '1g5gb'")


def test_many_devices_are_checked_in_linear_time() -> None:
    devices = list(range(50000))
    (entry,) = parse_entries([{"devices": devices, "mig-enabled": False}], "x")
    assert len(entry.devices) == 50000
    with pytest.raises(MigConfigError, match=r"lists GPU index\(es\) \[7\] more than once"):
        parse_entries([{"devices": [*devices, 7], "mig-enabled": False}], "x")


def test_entries_are_bounded() -> None:
    entries = [{"devices": "all", "mig-enabled": False}] * (MAX_ENTRIES + 1)
    with pytest.raises(MigConfigError, match=f"x: {MAX_ENTRIES + 1} entries, more than the {MAX_ENTRIES} a config may have"):
        parse_entries(entries, "x")
    # the same list under many names (YAML aliases make that cheap to write) counts once per name
    half = entries[: MAX_ENTRIES // 2 + 1]
    with pytest.raises(MigConfigError, match=f"cfg: more than {MAX_ENTRIES} entries over all configs"):
        parse_config({"version": "v1", "mig-configs": {"a": half, "b": half}}, source="cfg")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "cfg.yaml: empty"),
        (b"\xff\xfe", "cfg.yaml, line 1, column 1: not UTF-8 text (byte 0xff)"),
        (b"version: v1\nmig-configs:\n  ? [a]\n  : []\n", "cfg.yaml, line 3: a mapping key is a list"),
        (b"- a\n- b\n", "cfg.yaml: must be a mapping with 'version: v1' and 'mig-configs', not list (['a', 'b'])"),
        (b"version: v2\nmig-configs: {}\n", "cfg.yaml (line 1): 'version' must be 'v1'"),
    ],
)
def test_file_content_refusals(data: bytes, message: str) -> None:
    with pytest.raises(MigConfigError) as exc:
        parse_config(data, source="cfg.yaml")
    assert message in str(exc.value)
