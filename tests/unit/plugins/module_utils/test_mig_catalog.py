# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for plugins/module_utils/_mig_catalog.py."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _mig_catalog
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_catalog import (
    MODELS,
    CatalogProfile,
    GpuModel,
    model_by_device_id,
    model_by_name,
    normalize_device_id,
    supported_profiles,
)

SHARED = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared"
SMI = SHARED / "fixtures" / "nvidia-smi"
DOC = SMI / "documented"
CONFORMANCE = SHARED / "conformance" / "mig-parted"

needs_fixtures = pytest.mark.skipif(
    not SMI.is_dir(), reason=f"shared nvidia-smi fixtures not found at {SMI} (checkout without shared/)"
)
needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"shared mig-parted conformance configs not found at {CONFORMANCE}"
)

MIG_MODELS = [m for m in MODELS if m.mig_capable]
ALL_PROFILES = [(m, p) for m in MIG_MODELS for p in m.profiles]


def _by_key(key: str) -> GpuModel:
    found = [m for m in MODELS if m.key == key]
    assert len(found) == 1, key
    return found[0]


# ---------------------------------------------------------------------------------------------------------
# A deliberately small reader for the two nvidia-smi tables, so these tests depend on nothing else here.


@dataclass(frozen=True)
class SmiRow:
    name: str
    id: int
    total: int
    gib: float
    sm: int


_LGIP_ROW = re.compile(
    r"^\|\s+\d+\s+MIG\s+(?P<name>\S+)\s+(?P<id>\d+)\s+\d+/(?P<total>\d+)\s+(?P<gib>\d+\.\d+)\s+\w+\s+(?P<sm>\d+)\s"
)
_LGIPP_LINE = re.compile(r"Profile ID\s+(?P<id>\d+)\s+Placements?\s*:\s*\{(?P<starts>[\d,]+)\}:(?P<size>\d+)")


def read_lgip(path: Path) -> dict[int, SmiRow]:
    rows: dict[int, SmiRow] = {}
    for line in path.read_text().splitlines():
        m = _LGIP_ROW.match(line)
        if m:
            row = SmiRow(m["name"], int(m["id"]), int(m["total"]), float(m["gib"]), int(m["sm"]))
            rows.setdefault(row.id, row)  # multi-GPU excerpts repeat rows per GPU
    assert rows, f"no -lgip rows read from {path}"
    return rows


def read_lgipp(path: Path) -> dict[int, tuple[tuple[int, ...], int]]:
    result: dict[int, tuple[tuple[int, ...], int]] = {}
    for line in path.read_text().splitlines():
        m = _LGIPP_LINE.search(line)
        if m:
            result[int(m["id"])] = (tuple(int(s) for s in m["starts"].split(",")), int(m["size"]))
    assert result, f"no -lgipp lines read from {path}"
    return result


def assert_agrees(
    model: GpuModel,
    lgip: dict[int, SmiRow],
    lgipp: dict[int, tuple[tuple[int, ...], int]] | None,
    *,
    whole: bool,
    memory_tolerance_mib: int | None,
) -> None:
    """The catalog table equals the capture (whole=True) or contains every profile of it (whole=False)."""
    catalog = {p.id: p for p in model.profiles}
    if whole:
        assert set(catalog) == set(lgip)
    else:
        assert set(lgip) <= set(catalog)
    for pid, row in lgip.items():
        prof = catalog[pid]
        assert (prof.name, prof.max_instances, prof.multiprocessors) == (row.name, row.total, row.sm), pid
        if memory_tolerance_mib is not None:
            assert abs(prof.memory_mib - round(row.gib * 1024)) <= memory_tolerance_mib, (pid, prof.memory_mib)
    if lgipp is not None:
        assert set(lgipp) == set(lgip)
        for pid, (starts, size) in lgipp.items():
            assert (catalog[pid].placements, catalog[pid].memory_slices) == (starts, size), pid


# ---------------------------------------------------------------------------------------------------------
# Internal consistency


def test_models_cover_the_expected_keys() -> None:
    assert [m.key for m in MODELS] == [
        "A100-SXM4-40GB",
        "A100-SXM4-80GB",
        "A30",
        "H100-SXM5-80GB",
        "H100-PCIE-80GB",
        "H100-NVL",
        "H200",
        "RTX-PRO-6000-BLACKWELL",
        "DGX-DISPLAY",
    ]


def test_keys_names_and_device_ids_are_unique_across_models() -> None:
    keys = Counter(m.key for m in MODELS)
    names = Counter(n.casefold() for m in MODELS for n in m.names)
    ids = Counter(d for m in MODELS for d in m.device_ids)
    assert [k for k, c in keys.items() if c > 1] == []
    assert [n for n, c in names.items() if c > 1] == []
    assert [d for d, c in ids.items() if c > 1] == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_device_ids_are_in_canonical_form(model: GpuModel) -> None:
    assert model.device_ids
    for device_id in model.device_ids:
        assert re.fullmatch(r"0x[0-9A-F]{8}", device_id)
        assert device_id.endswith("10DE")
        assert normalize_device_id(device_id) == device_id


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.key)
def test_model_table_is_consistent(model: GpuModel) -> None:
    assert model.names
    assert model.profiles
    assert model.source.strip()
    assert model.memory_slices in (4, 8, 12)
    assert model.compute_slices in (4, 7)
    assert len({p.id for p in model.profiles}) == len(model.profiles)
    assert len({p.name for p in model.profiles}) == len(model.profiles)
    # Profiles occupying the same number of memory slices get the same memory in every real table.
    memory_by_size: dict[int, set[int]] = {}
    for p in model.profiles:
        memory_by_size.setdefault(p.memory_slices, set()).add(p.memory_mib)
    assert all(len(v) == 1 for v in memory_by_size.values()), memory_by_size


@pytest.mark.parametrize(("model", "profile"), ALL_PROFILES, ids=lambda x: getattr(x, "key", getattr(x, "name", "")))
def test_profile_is_consistent(model: GpuModel, profile: CatalogProfile) -> None:
    m = re.fullmatch(r"(\d+)g\.(\d+)gb(?:\+me|\+gfx|\+me\.all|-me)?", profile.name)
    assert m, profile.name
    assert profile.compute_slices == int(m.group(1))
    assert 1 <= profile.compute_slices <= model.compute_slices
    assert 1 <= profile.memory_slices <= model.memory_slices
    assert profile.placements == tuple(sorted(set(profile.placements)))
    assert 1 <= profile.max_instances <= len(profile.placements)
    assert profile.max_instances * profile.memory_slices <= model.memory_slices
    for start in profile.placements:
        assert 0 <= start < model.memory_slices
        assert start + profile.memory_slices <= model.memory_slices
        assert start % profile.memory_slices == 0
    assert profile.memory_mib > 0
    assert profile.multiprocessors is not None
    assert profile.multiprocessors > 0
    assert profile.id >= 0


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.key)
def test_full_gpu_profile_covers_all_memory_slices(model: GpuModel) -> None:
    full = [p for p in model.profiles if p.compute_slices == model.compute_slices]
    assert full, model.key
    for p in full:
        assert (p.memory_slices, p.placements, p.max_instances) == (model.memory_slices, (0,), 1)
    plain = [p for p in full if re.fullmatch(r"\d+g\.\d+gb", p.name)]
    assert len(plain) == 1
    assert plain[0].id == 0
    assert plain[0].memory_mib == max(p.memory_mib for p in model.profiles)
    assert plain[0].multiprocessors == max(p.multiprocessors or 0 for p in model.profiles)


def test_memory_grows_with_memory_slices() -> None:
    for model in MIG_MODELS:
        by_size = {p.memory_slices: p.memory_mib for p in model.profiles}
        ordered = [by_size[s] for s in sorted(by_size)]
        assert ordered == sorted(ordered), model.key
        assert len(set(ordered)) == len(ordered), model.key


def test_non_mig_display_gpu() -> None:
    display = model_by_device_id("0x1FB010DE")
    assert display is not None
    assert display.key == "DGX-DISPLAY"
    assert display.mig_capable is False
    assert display.profiles == ()
    assert supported_profiles(display) == []
    assert model_by_name("NVIDIA DGX Display") is display


def test_models_and_profiles_are_immutable() -> None:
    model = MODELS[0]
    with pytest.raises(AttributeError):
        model.key = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        model.profiles[0].max_instances = 99  # type: ignore[misc]
    assert isinstance(model.profiles, tuple)
    assert isinstance(model.profiles[0].placements, tuple)


# ---------------------------------------------------------------------------------------------------------
# Concrete values that other modules rely on


def test_h200_table_values() -> None:
    h200 = _by_key("H200")
    assert [(p.name, p.id, p.max_instances, p.memory_mib) for p in h200.profiles] == [
        ("1g.18gb", 19, 7, 16384),
        ("1g.18gb+me", 20, 1, 16384),
        ("1g.35gb", 15, 4, 33280),
        ("2g.35gb", 14, 3, 33280),
        ("3g.71gb", 9, 2, 71424),
        ("4g.71gb", 5, 1, 71424),
        ("7g.141gb", 0, 1, 143360),
    ]
    assert (h200.memory_slices, h200.compute_slices) == (8, 7)


def test_a30_and_rtx_pro_geometry() -> None:
    a30 = _by_key("A30")
    assert (a30.memory_slices, a30.compute_slices) == (4, 4)
    assert {p.name: p.id for p in a30.profiles} == {
        "1g.6gb": 14,
        "1g.6gb+me": 21,
        "2g.12gb": 5,
        "2g.12gb+me": 6,
        "4g.24gb": 0,
    }
    rtx = _by_key("RTX-PRO-6000-BLACKWELL")
    assert (rtx.memory_slices, rtx.compute_slices) == (12, 4)
    assert {p.name: (p.id, p.placements) for p in rtx.profiles if p.name.startswith("1g.")} == {
        "1g.24gb": (14, (0, 3, 6, 9)),
        "1g.24gb+me": (21, (0, 3, 6, 9)),
        "1g.24gb+gfx": (47, (0, 3, 6, 9)),
        "1g.24gb+me.all": (65, (0, 3, 6, 9)),
        "1g.24gb-me": (67, (0, 3, 6, 9)),
    }


def test_supported_profiles_shape() -> None:
    result = supported_profiles(_by_key("H200"))
    assert len(result) == 7
    assert result[2] == {
        "name": "1g.35gb",
        "id": 15,
        "max_instances": 4,
        "memory_mib": 33280,
        "compute_slices": 1,
        "placements": [{"start": s, "size": 2} for s in (0, 2, 4, 6)],
        "multiprocessors": 26,
    }
    assert result[-1]["placements"] == [{"start": 0, "size": 8}]


def test_supported_profiles_omits_unknown_multiprocessors() -> None:
    model = GpuModel(
        key="T",
        names=("T",),
        device_ids=("0x00000000",),
        memory_slices=1,
        compute_slices=1,
        profiles=(CatalogProfile("1g.1gb", 0, 1, 1, 1024, 1, (0,)),),
        source="test",
    )
    assert supported_profiles(model) == [
        {
            "name": "1g.1gb",
            "id": 0,
            "max_instances": 1,
            "memory_mib": 1024,
            "compute_slices": 1,
            "placements": [{"start": 0, "size": 1}],
        }
    ]


# ---------------------------------------------------------------------------------------------------------
# Lookups


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x20B010DE", "0x20B010DE"),
        ("0x20b010de", "0x20B010DE"),
        ("20B010DE", "0x20B010DE"),
        ("20b010de", "0x20B010DE"),
        ("0X20B010DE", "0x20B010DE"),
        (" 0x233510DE\n", "0x233510DE"),
    ],
)
def test_normalize_device_id(value: str, expected: str) -> None:
    assert normalize_device_id(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "0x", "20B0", "0x20B0", "0x20B010D", "0x20B010DE0", "0x20B010DE145F10DE", "0x20B010DE:145F10DE", "0xZZB010DE",
     "x20B010DE", "0x 20B010DE", "GPU-20B010DE"],
)
def test_normalize_device_id_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="PCI device id"):
        normalize_device_id(value)


def test_normalize_device_id_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        normalize_device_id(0x20B010DE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("device_id", "key"),
    [
        ("0x20B010DE", "A100-SXM4-40GB"),
        ("0x20b110de", "A100-SXM4-40GB"),
        ("20F110DE", "A100-SXM4-40GB"),
        ("0x20B210DE", "A100-SXM4-80GB"),
        ("0x20B510DE", "A100-SXM4-80GB"),
        ("0x20B710DE", "A30"),
        ("0x233010DE", "H100-SXM5-80GB"),
        ("0x233110DE", "H100-PCIE-80GB"),
        ("0x232110DE", "H100-NVL"),
        ("0x233510DE", "H200"),
        ("0x233b10de", "H200"),
        ("0x2BB510DE", "RTX-PRO-6000-BLACKWELL"),
        ("0x2BB110DE", "RTX-PRO-6000-BLACKWELL"),
        ("0x1fb010de", "DGX-DISPLAY"),
    ],
)
def test_model_by_device_id(device_id: str, key: str) -> None:
    model = model_by_device_id(device_id)
    assert model is not None
    assert model.key == key


@pytest.mark.parametrize("device_id", ["0x290110DE", "0x294110DE", "0x20F310DE", "0x232410DE", "0x00000000"])
def test_model_by_device_id_unknown(device_id: str) -> None:
    assert model_by_device_id(device_id) is None


def test_model_by_device_id_bad_value() -> None:
    with pytest.raises(ValueError, match="invalid PCI device id"):
        model_by_device_id("NVIDIA H200")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-SXM4-40GB"),
        ("A100-SXM4-40GB", "A100-SXM4-40GB"),  # R450 drivers print no "NVIDIA " prefix
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-SXM4-80GB"),
        ("NVIDIA A30", "A30"),
        ("NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"),
        ("NVIDIA H100 PCIe", "H100-PCIE-80GB"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200"),
        ("nvidia   h200", "H200"),
        ("  NVIDIA\tH100  80GB HBM3 ", "H100-SXM5-80GB"),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "RTX-PRO-6000-BLACKWELL"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000-BLACKWELL"),
    ],
)
def test_model_by_name(name: str, key: str) -> None:
    model = model_by_name(name)
    assert model is not None
    assert model.key == key


@pytest.mark.parametrize("name", ["", "NVIDIA B200", "NVIDIA H100", "H200", "NVIDIA H200 141GB", "NVIDIA L40S"])
def test_model_by_name_unknown(name: str) -> None:
    assert model_by_name(name) is None


# ---------------------------------------------------------------------------------------------------------
# Agreement with real captures


@needs_fixtures
def test_h200_equals_our_capture_exactly() -> None:
    base = SMI / "h200-mig-disabled"
    h200 = _by_key("H200")
    assert_agrees(h200, read_lgip(base / "nvidia-smi_mig_-lgip.txt"), read_lgipp(base / "nvidia-smi_mig_-lgipp.txt"),
                  whole=True, memory_tolerance_mib=8)
    nvml = json.loads((base / "nvml_profiles.json").read_text())
    assert nvml["gpu"] in h200.names
    catalog = {p.id: p for p in h200.profiles}
    assert set(catalog) == {p["id"] for p in nvml["profiles"]}
    for entry in nvml["profiles"]:
        prof = catalog[entry["id"]]
        assert "MIG " + prof.name == entry["name"]
        assert prof.memory_mib == entry["memorySizeMB"]
        assert prof.max_instances == entry["instanceCount"]
        assert prof.compute_slices == entry["sliceCount"]
        assert prof.multiprocessors == entry["multiprocessorCount"]
    query = (base / "nvidia-smi_-q.txt").read_text()
    device_id = re.search(r"Device Id\s+:\s+(0x[0-9A-Fa-f]{8})", query)
    assert device_id
    assert model_by_device_id(device_id.group(1)) is h200
    product = re.search(r"Product Name\s+:\s+(.+)", query)
    assert product
    assert model_by_name(product.group(1)) is h200


@dataclass(frozen=True)
class Capture:
    key: str  # catalog model
    directory: str  # below shared/fixtures/nvidia-smi/documented
    lgip: str
    lgipp: str | None
    whole: bool  # the capture lists every profile of its driver
    tolerance: int | None  # MiB; None where the capture's driver printed other memory values


_CAPTURES = [
    Capture("A100-SXM4-40GB", "a100-sxm4-40gb/mig-user-guide", "nvidia-smi_mig_-lgip.txt",
            "nvidia-smi_mig_-lgipp.txt", True, 8),
    # R450: before 1g.5gb+me and 1g.10gb existed; the memory column of that driver was 0.12 GiB higher.
    Capture("A100-SXM4-40GB", "a100-pcie-40gb", "nvidia-smi_mig_-lgip_R450-era.txt",
            "nvidia-smi_mig_-lgipp_R450-era.txt", False, None),
    Capture("A30", "a30/user-session-535.183.01", "nvidia-smi_mig_-lgip.txt", "nvidia-smi_mig_-lgipp.txt", True, 8),
    # Pre-R525: no 2g.12gb+me yet.
    Capture("A30", "a30/user-notes-pre-R525", "nvidia-smi_mig_-lgip_4x1g.6gb-in-use.txt",
            "nvidia-smi_mig_-lgipp.txt", False, None),
    Capture("H100-PCIE-80GB", "h100-pcie-80gb/user-notes-570.169", "nvidia-smi_mig_-lgip.txt", None, True, 8),
    # 525.125.06 printed 0.12-0.25 GiB less memory than 570.169; ids, counts, SMs and placements agree.
    Capture("H100-PCIE-80GB", "h100-pcie-80gb/scaleway-525.125.06", "nvidia-smi_mig_-lgip.txt",
            "nvidia-smi_mig_-lgipp.txt", True, None),
    Capture("H100-NVL", "h100-nvl/azure-560.35.03", "nvidia-smi_mig_-lgip.txt", "nvidia-smi_mig_-lgipp.txt",
            True, 8),
    Capture("RTX-PRO-6000-BLACKWELL", "rtx-pro-6000-blackwell-max-q/user-notes-580.105.08",
            "nvidia-smi_mig_-lgip.txt", None, True, 8),
    # Excerpt (GPU 2 and 3 rows of an older driver); only profile facts are compared.
    Capture("H200", "h200/mig-parted-issue120", "nvidia-smi_mig_-lgip_multi-gpu_EXCERPT.txt", None, False, None),
]


@needs_fixtures
@pytest.mark.parametrize("capture", _CAPTURES, ids=[c.directory for c in _CAPTURES])
def test_catalog_agrees_with_documented_capture(capture: Capture) -> None:
    base = DOC / capture.directory
    assert_agrees(
        _by_key(capture.key),
        read_lgip(base / capture.lgip),
        read_lgipp(base / capture.lgipp) if capture.lgipp else None,
        whole=capture.whole,
        memory_tolerance_mib=capture.tolerance,
    )


@needs_fixtures
@pytest.mark.parametrize(
    ("relative", "key", "profile", "mib"),
    [
        # nvidia-smi's MIG-device memory total is the GPU instance's memory.
        ("a30/user-session-535.183.01/10_nvidia-smi.txt", "A30", "1g.6gb", 5952),
        ("a30/user-session-535.183.01/10_nvidia-smi.txt", "A30", "2g.12gb", 11968),
        ("h100-80gb-hbm3/cloud-native-docs-ocp-535.104.12/nvidia-smi_8gpu_all-balanced.txt", "H100-SXM5-80GB",
         "1g.10gb", 9984),
        ("h100-80gb-hbm3/cloud-native-docs-ocp-535.104.12/nvidia-smi_8gpu_all-balanced.txt", "H100-SXM5-80GB",
         "2g.20gb", 20096),
        ("h100-80gb-hbm3/cloud-native-docs-ocp-535.104.12/nvidia-smi_8gpu_all-3g.40gb.txt", "H100-SXM5-80GB",
         "3g.40gb", 40448),
        ("h100-pcie-80gb/user-notes-570.169/nvidia-smi_7x1g.10gb.txt", "H100-PCIE-80GB", "1g.10gb", 9984),
        ("h100-nvl/azure-560.35.03/nvidia-smi_3g-1g.24gb-1g.12gb.txt", "H100-NVL", "1g.12gb", 11008),
        ("h100-nvl/azure-560.35.03/nvidia-smi_3g-1g.24gb-1g.12gb.txt", "H100-NVL", "1g.24gb", 22144),
        ("h100-nvl/azure-560.35.03/nvidia-smi_3g-1g.24gb-1g.12gb.txt", "H100-NVL", "3g.47gb", 47488),
        ("h200/blog-570.86.15/nvidia-smi_in-container_2-mig-devices.txt", "H200", "2g.35gb", 33280),
        ("rtx-pro-6000-blackwell-max-q/user-notes-580.105.08/nvidia-smi_in-container_1g.24gb.txt",
         "RTX-PRO-6000-BLACKWELL", "1g.24gb", 24192),
    ],
)
def test_exact_memory_matches_mig_device_in_capture(relative: str, key: str, profile: str, mib: int) -> None:
    text = (DOC / relative).read_text()
    assert re.search(rf"MiB /\s*{mib}MiB", text), f"{mib} MiB not shown in {relative}"
    assert {p.name: p.memory_mib for p in _by_key(key).profiles}[profile] == mib


@needs_fixtures
@pytest.mark.parametrize(
    ("relative", "key"),
    [
        ("a100-sxm4-40gb/netdata-510.47.03/nvidia-smi_-q_-x.xml", "A100-SXM4-40GB"),
        ("a100-sxm4-80gb/telegraf-535.54.03/nvidia-smi_-q_-x.xml", "A100-SXM4-80GB"),
    ],
)
def test_xml_captures_resolve_by_device_id_and_name(relative: str, key: str) -> None:
    text = (DOC / relative).read_text()
    device_id = re.search(r"<pci_device_id>([0-9A-Fa-f]{8})</pci_device_id>", text)
    name = re.search(r"<product_name>([^<]+)</product_name>", text)
    assert device_id
    assert name
    by_id = model_by_device_id(device_id.group(1))
    assert by_id is not None
    assert by_id.key == key
    assert model_by_name(name.group(1)) is by_id


@needs_fixtures
def test_a100_80gb_mig_device_memory_in_xml_capture() -> None:
    text = (DOC / "a100-sxm4-80gb/telegraf-535.54.03/nvidia-smi_-q_-x.xml").read_text()
    # Four 1g.20gb MIG devices (14 SMs) at 535.54.03.
    assert text.count("<total>19968 MiB</total>") == 4
    profile = {p.name: p for p in _by_key("A100-SXM4-80GB").profiles}["1g.20gb"]
    assert (profile.memory_mib, profile.multiprocessors) == (19968, 14)


@needs_fixtures
@pytest.mark.parametrize(
    ("relative", "key"),
    [
        ("a100-sxm4-40gb/cloud-native-docs-450.80.02/nvidia-smi_-L_7x1g.5gb.txt", "A100-SXM4-40GB"),
        ("a100-pcie-40gb/nvidia-smi_-L_7x1g.5gb_R450-era.txt", "A100-SXM4-40GB"),
        ("a100-sxm4-80gb/datadog-pr33120-535.216.01/nvidia-smi_-L_7x1g.10gb.txt", "A100-SXM4-80GB"),
        ("a30/k8s-notes-535.274.02/nvidia-smi_-L_4x1g.6gb.txt", "A30"),
        ("h100-80gb-hbm3/cloud-native-docs-gpu-operator/nvidia-smi_-L_7x1g.10gb.txt", "H100-SXM5-80GB"),
        ("h100-pcie-80gb/scaleway-525.125.06/nvidia-smi_-L.txt", "H100-PCIE-80GB"),
        ("h200/blog-570.86.15/nvidia-smi_-L_8gpu_2g.35gb+5x1g.18gb.txt", "H200"),
        ("rtx-pro-6000-blackwell-max-q/user-notes-580.105.08/nvidia-smi_-L.txt", "RTX-PRO-6000-BLACKWELL"),
    ],
)
def test_dash_l_names_and_mig_profiles_resolve(relative: str, key: str) -> None:
    text = (DOC / relative).read_text()
    gpu_names = re.findall(r"^\s*GPU \d+: (.+?) \(UUID:", text, flags=re.MULTILINE)
    assert gpu_names
    model = model_by_name(gpu_names[0])
    assert model is not None
    assert model.key == key
    known = {p.name for p in model.profiles}
    mig_profiles = set(re.findall(r"^\s*MIG (\d+g\.\d+gb\S*)\s+Device", text, flags=re.MULTILINE))
    assert mig_profiles
    assert mig_profiles <= known


@needs_fixtures
def test_dgx_station_display_name_resolves() -> None:
    text = (DOC / "a100-sxm4-80gb/dgx-station-kr-notes/nvidia-smi_-L_7x1g.10gb_4gpu.txt").read_text()
    names = set(re.findall(r"^GPU \d+: (.+?) \(UUID:", text, flags=re.MULTILINE))
    assert names == {"NVIDIA A100-SXM4-80GB", "NVIDIA DGX Display"}
    display = model_by_name("NVIDIA DGX Display")
    assert display is not None
    assert display.mig_capable is False


# ---------------------------------------------------------------------------------------------------------
# Every device id in mig-parted's and the GPU Operator's shipped configs is in the catalog or left out here.

LEFT_OUT = {
    "0x290110DE": "B200: captures stop after 4 of 7 profiles; User Guide table has no ids, SMs, MiB, placements",
    "0x294110DE": "GB200: captures (gpu-operator PR #1303, mig-parted issue #227) stop after 4 profiles",
    "0x234810DE": "GH200 144G HBM3e: mig-parted PR #139 shows only the first profiles",
    "0x234210DE": "GH200 (H100 96GB): User Guide fraction table only, no capture with ids, SMs, MiB",
    "0x233D10DE": "H100 96GB: User Guide fraction table only, no capture with ids, SMs, MiB",
    "0x232910DE": "H20: no table found",
    "0x20B610DE": "PG506-96GB (GA100 board): no table found",
    "0x20F310DE": "A800-SXM4-80GB: not in the MIG User Guide's supported GPUs, no capture",
    "0x20F510DE": "A800 80GB PCIe: not in the MIG User Guide's supported GPUs, no capture",
    "0x20F610DE": "A800 40GB PCIe: not in the MIG User Guide's supported GPUs, no capture",
    "0x232210DE": "H800 PCIe: not in the MIG User Guide's supported GPUs, no capture",
    "0x232410DE": "H800 SXM5: not in the MIG User Guide's supported GPUs, no capture",
    "0x233A10DE": "H800 NVL: not in the MIG User Guide's supported GPUs, no capture",
    "0x318210DE": "B300: no capture, no User Guide table",
    "0x31C210DE": "GB300: no capture, no User Guide table",
}


def _device_filter_ids() -> set[str]:
    found: set[str] = set()
    for path in sorted(CONFORMANCE.glob("*.yaml")):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*-?\s*device-filter\s*:", line):
                found.update(normalize_device_id(d) for d in re.findall(r"0x[0-9A-Fa-f]{8}", line))
    return found


@needs_conformance
def test_every_device_filter_id_is_catalogued_or_left_out_on_purpose() -> None:
    ids = _device_filter_ids()
    assert len(ids) >= 25  # sanity: the reader found the filters
    catalogued = {d for m in MODELS for d in m.device_ids}
    assert sorted(ids - catalogued - set(LEFT_OUT)) == []
    assert sorted(set(LEFT_OUT) & catalogued) == []
    assert sorted(set(LEFT_OUT) - ids) == []  # no stale entries
    for device_id in LEFT_OUT:
        assert model_by_device_id(device_id) is None


@needs_conformance
def test_device_filter_groups_carry_catalogued_profiles() -> None:
    """Each device-filter block's profile names exist in the catalog model of its (catalogued) device ids."""
    checked = 0
    for path in sorted(CONFORMANCE.glob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not re.match(r"^\s*-?\s*device-filter\s*:", line):
                continue
            ids = [normalize_device_id(d) for d in re.findall(r"0x[0-9A-Fa-f]{8}", line)]
            names: list[str] = []
            for follow in lines[i + 1 :]:
                if re.match(r"^\s*-\s", follow) or re.match(r"^\s*#", follow) or not follow.strip():
                    break
                m = re.match(r'^\s*"?(\d+g\.\d+gb[^":]*)"?\s*:\s*\d+', follow)
                if m:
                    names.append(m.group(1))
            for device_id in ids:
                model = model_by_device_id(device_id)
                if model is None:
                    continue
                known = {p.name for p in model.profiles}
                assert set(names) <= known, (path.name, i + 1, device_id, names)
                checked += len(names)
    assert checked >= 50  # sanity: the reader found the profile lines


def test_left_out_ids_are_named_in_module_docstring() -> None:
    doc = _mig_catalog.__doc__ or ""
    for device_id in LEFT_OUT:
        assert device_id in doc, device_id
