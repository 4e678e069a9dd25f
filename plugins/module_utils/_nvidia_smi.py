# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: strict parsers of ``nvidia-smi`` MIG output (not a public API; may change without notice).

``collect()`` builds, per GPU, the inventory of the ``mig_info`` module's ``nvidia_smi`` backend (the same
shape as ``_nvml.collect()``) from ``nvidia-smi --query-gpu`` and ``nvidia-smi mig -lgip/-lgipp/-lgi/-lci``.

The box tables are parsed by structure, never by column offsets: a top border ``+---+``, a title line,
column-header lines recognised by their words, a ``|===|`` rule, then groups of rows each closed by a
border. Column widths differ between drivers (``-lgip`` is 76 columns wide on R450, 79 on 470-560 and 81
on 570/580; ``-lgi`` 54, 57 or 59; ``-lci`` 57, or 70 with a Placement column), so only the order of the
fields matters. Every line must be a border, the title, a known header, the rule, a row or a continuation
line; anything else raises ``NvidiaSmiError`` quoting the line and its number.

Nothing here runs a process: ``collect()`` gets a callable that runs ``nvidia-smi`` with the given
arguments (the caller prepends the binary and forces ``LC_ALL=C``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_info import ComputeInstance, GpuInfo, GpuInstance, MigMode, Placement, ProfileInfo

__all__ = [
    "COMMANDS",
    "QUERY_FIELDS",
    "ComputeInstance",
    "GpuInfo",
    "GpuInstance",
    "MigMode",
    "NvidiaSmiError",
    "Placement",
    "ProfileInfo",
    "Runner",
    "collect",
    "parse_lci",
    "parse_lgi",
    "parse_lgip",
    "parse_lgipp",
    "parse_query_gpu",
]

Runner = Callable[[list[str]], tuple[int, str, str]]
"""``run(argv) -> (rc, stdout, stderr)``; argv excludes the ``nvidia-smi`` binary."""

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "pci.device_id",
    "pci.sub_device_id",
    "mig.mode.current",
    "mig.mode.pending",
)

COMMANDS: dict[str, list[str]] = {
    "query": [f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader"],
    "lgip": ["mig", "-lgip"],
    "lgipp": ["mig", "-lgipp"],
    "lgi": ["mig", "-lgi"],
    "lci": ["mig", "-lci"],
}
"""The argument vectors ``collect()`` runs, in this order (``lgi``/``lci`` only while a GPU has MIG enabled)."""

_LGIP = "nvidia-smi mig -lgip"
_LGIPP = "nvidia-smi mig -lgipp"
_LGI = "nvidia-smi mig -lgi"
_LCI = "nvidia-smi mig -lci"

# Whole-output messages meaning "nothing to list". Driver 580's binary contains all of them; observed:
# "No MIG-enabled devices found." (-lgi/-lci on an H200 with MIG disabled, rc 0, driver 580.159.04) and
# "No GPU instances found: Not Found" (-lgi, A30, 535.183.01). "No MIG-supported devices found." is what
# the driver prints when no GPU can do MIG.
_NO_MIG_SUPPORTED = "No MIG-supported devices found."
_NO_MIG_ENABLED = "No MIG-enabled devices found."
_NO_GI = ("No GPU instances found: Not Found", "No GPU instances found.")
_NO_CI = ("No compute instances found: Not Found",)
_EMPTY_STATES: dict[str, tuple[str, ...]] = {
    _LGIP: (_NO_MIG_SUPPORTED, _NO_MIG_ENABLED),
    _LGIPP: (_NO_MIG_SUPPORTED, _NO_MIG_ENABLED),
    _LGI: (_NO_MIG_SUPPORTED, _NO_MIG_ENABLED, *_NO_GI),
    # Without GPU instances there are no compute instances either, whichever of the two messages comes.
    _LCI: (_NO_MIG_SUPPORTED, _NO_MIG_ENABLED, *_NO_GI, *_NO_CI),
}
# Return codes that may come with an empty-state message: 0, or NVML_ERROR_NOT_FOUND (6).
_EMPTY_STATE_RCS = (0, 6)


class NvidiaSmiError(ValueError):
    """nvidia-smi failed or printed something this module does not recognise.

    The message names the command and, for unrecognised output, quotes the line and its number.
    """

    def __init__(self, command: str, detail: str, line_number: int | None = None, line: str | None = None) -> None:
        self.command = command
        self.detail = detail
        self.line_number = line_number
        self.line = line
        where = "" if line_number is None else f" line {line_number}:"
        quoted = "" if line is None else f": {line!r}"
        super().__init__(f"{command}:{where} {detail}{quoted}")


# -- generic helpers ----------------------------------------------------------------------------------------


def _split_lines(text: str) -> list[tuple[int, str]]:
    """Numbered lines (from 1) without trailing whitespace; trailing blank lines dropped."""
    lines = [(number, line.rstrip()) for number, line in enumerate(text.split("\n"), start=1)]
    while lines and not lines[-1][1]:
        lines.pop()
    return lines


def _empty_state(command: str, text: str) -> bool:
    """Whether the whole output is one of the command's documented "nothing to list" messages."""
    return text.strip() in _EMPTY_STATES.get(command, ())


_NAME_SUFFIX = r"(?:[+-][a-z]+(?:\.[a-z]+)*)*"
_GI_PROFILE_RE = re.compile(rf"(\d+)g\.\d+gb{_NAME_SUFFIX}")
_CI_PROFILE_RE = re.compile(rf"(?:\d+c\.)?\d+g\.\d+gb{_NAME_SUFFIX}")


# -- box tables -----------------------------------------------------------------------------------------------

_BORDER_RE = re.compile(r"\+-+\+")
_RULE_RE = re.compile(r"\|=+\|")


@dataclass(frozen=True)
class _Row:
    number: int
    line: str

    @property
    def inner(self) -> str:
        return self.line[1:-1]

    def match(self, command: str, pattern: re.Pattern[str], what: str, columns: str) -> re.Match[str]:
        """The row's cells matched by ``pattern``; NvidiaSmiError naming the row and the columns expected otherwise."""
        found = pattern.fullmatch(self.inner)
        if found is None:
            raise NvidiaSmiError(command, f"unrecognised {what} row (expected {columns})", self.number, self.line)
        return found


@dataclass(frozen=True)
class _Group:
    """The rows between two borders, and the closing border."""

    rows: list[_Row]
    end: _Row


@dataclass(frozen=True)
class _Table:
    layout: int
    groups: list[_Group]


def _read_table(command: str, text: str, title: str, layouts: Sequence[Sequence[Sequence[str]]]) -> _Table:
    """Check the frame of a box table and return its row groups.

    ``layouts`` lists the accepted column headers: per layout, the words of each header line. The first
    header line decides the layout; ``_Table.layout`` is its index.
    """
    lines = _split_lines(text)
    if not lines:
        raise NvidiaSmiError(command, "printed nothing")
    number, top = lines[0]
    if not _BORDER_RE.fullmatch(top):
        raise NvidiaSmiError(command, "expected the top border '+---...---+' of a table", number, top)
    width = len(top)

    def content(position: int, what: str) -> _Row:
        if position >= len(lines):
            raise NvidiaSmiError(command, f"output ends early; expected {what} after", *lines[-1])
        number, line = lines[position]
        if not (line.startswith("|") and line.endswith("|")):
            raise NvidiaSmiError(command, f"expected {what}, got a line that is not a table row", number, line)
        if len(line) != width:
            raise NvidiaSmiError(command, f"line is {len(line)} characters wide, the table {width}; expected {what}", number, line)
        return _Row(number, line)

    row = content(1, f"the title {title!r}")
    if row.inner.strip() != title:
        raise NvidiaSmiError(command, f"expected the table title {title!r}", row.number, row.line)
    row = content(2, "a column header")
    matches = [i for i, headers in enumerate(layouts) if list(headers[0]) == row.inner.split()]
    if not matches:
        raise NvidiaSmiError(command, "unrecognised column header", row.number, row.line)
    layout = matches[0]
    position = 3
    for header in layouts[layout][1:]:
        row = content(position, "a column header")
        if row.inner.split() != list(header):
            raise NvidiaSmiError(command, "unrecognised column header", row.number, row.line)
        position += 1
    if position >= len(lines):
        raise NvidiaSmiError(command, "output ends early; expected the '|===|' rule after", *lines[-1])
    number, line = lines[position]
    if not _RULE_RE.fullmatch(line) or len(line) != width:
        raise NvidiaSmiError(command, "expected the '|===...===|' rule under the column headers", number, line)
    position += 1

    groups: list[_Group] = []
    rows: list[_Row] = []
    for current in range(position, len(lines)):
        number, line = lines[current]
        if _BORDER_RE.fullmatch(line) and len(line) == width:
            if not rows:
                raise NvidiaSmiError(command, "border without a table row before it", number, line)
            groups.append(_Group(rows, _Row(number, line)))
            rows = []
        else:
            rows.append(content(current, "a table row or a '+---+' border"))
    if rows:
        raise NvidiaSmiError(command, "table is not closed: expected a '+---+' border after the last row", rows[-1].number, rows[-1].line)
    if not groups:
        raise NvidiaSmiError(command, "table has no rows", *lines[-1])
    return _Table(layout, groups)


# -- nvidia-smi mig -lgip -------------------------------------------------------------------------------------

_LGIP_LAYOUTS = (
    (
        ("GPU", "Name", "ID", "Instances", "Memory", "P2P", "SM", "DEC", "ENC"),
        ("Free/Total", "GiB", "CE", "JPEG", "OFA"),
    ),
)
_LGIP_ROW_RE = re.compile(
    r"\s*(?P<gpu>\d+)\s+MIG (?P<name>\S+)\s+(?P<id>\d+)\s+(?P<free>\d+)/(?P<total>\d+)"
    r"\s+(?P<mem>\d+\.\d+)\s+(?P<p2p>Yes|No)\s+(?P<sm>\d+)\s+(?P<dec>\d+)\s+(?P<enc>\d+)\s*"
)
_LGIP_CONT_RE = re.compile(r"\s*(?P<ce>\d+)\s+(?P<jpeg>\d+)\s+(?P<ofa>\d+)\s*")


def parse_lgip(text: str) -> dict[int, list[ProfileInfo]]:
    """Parse ``nvidia-smi mig -lgip``: GPU index -> GPU instance profiles in printed order.

    Each profile is a row (GPU, name, ID, Free/Total, memory GiB, P2P, SM, DEC, ENC) and a continuation
    line (CE, JPEG, OFA). ``placements`` are left empty (they come from ``-lgipp``). The documented
    empty states ("No MIG-enabled devices found." and the like) give ``{}``.
    """
    if _empty_state(_LGIP, text):
        return {}
    table = _read_table(_LGIP, text, "GPU instance profiles:", _LGIP_LAYOUTS)
    result: dict[int, list[ProfileInfo]] = {}
    for group in table.groups:
        row = group.rows[0]
        match = row.match(_LGIP, _LGIP_ROW_RE, "profile", "GPU, MIG name, ID, Free/Total, GiB, P2P, SM, DEC, ENC")
        if len(group.rows) < 2:
            raise NvidiaSmiError(
                _LGIP,
                f"missing the continuation line (CE JPEG OFA) of the profile row on line {row.number}",
                group.end.number,
                group.end.line,
            )
        cont = group.rows[1]
        cont_match = _LGIP_CONT_RE.fullmatch(cont.inner)
        if cont_match is None:
            raise NvidiaSmiError(
                _LGIP,
                f"unrecognised continuation line (CE JPEG OFA) of the profile row on line {row.number}",
                cont.number,
                cont.line,
            )
        if len(group.rows) > 2:
            extra = group.rows[2]
            raise NvidiaSmiError(_LGIP, "unexpected third line in a profile entry", extra.number, extra.line)
        name = match["name"]
        name_match = _GI_PROFILE_RE.fullmatch(name)
        if name_match is None:
            raise NvidiaSmiError(_LGIP, f"unrecognised profile name {name!r}", row.number, row.line)
        free, total = int(match["free"]), int(match["total"])
        if free > total:
            raise NvidiaSmiError(_LGIP, f"free instances {free} exceed the total {total}", row.number, row.line)
        gpu = int(match["gpu"])
        profiles = result.setdefault(gpu, [])
        profile_id = int(match["id"])
        if any(p["id"] == profile_id for p in profiles):
            raise NvidiaSmiError(_LGIP, f"profile ID {profile_id} listed twice for GPU {gpu}", row.number, row.line)
        profiles.append(
            {
                "name": name,
                "id": profile_id,
                "max_instances": total,
                "free_instances": free,
                "memory_mib": round(float(match["mem"]) * 1024),
                "compute_slices": int(name_match[1]),
                "multiprocessors": int(match["sm"]),
                "copy_engines": int(cont_match["ce"]),
                "decoders": int(match["dec"]),
                "encoders": int(match["enc"]),
                "jpeg_decoders": int(cont_match["jpeg"]),
                "ofa": int(cont_match["ofa"]),
                "p2p": match["p2p"] == "Yes",
                "placements": [],
            }
        )
    return result


# -- nvidia-smi mig -lgipp ------------------------------------------------------------------------------------

_LGIPP_RE = re.compile(
    r"GPU +(?P<gpu>\d+) Profile ID +(?P<id>\d+) (?P<label>Placements|Placement ): "
    r"\{(?P<starts>\d+(?:,\d+)*)\}:(?P<size>\d+)"
)


def parse_lgipp(text: str) -> dict[int, dict[int, list[Placement]]]:
    """Parse ``nvidia-smi mig -lgipp``: GPU index -> profile ID -> possible placements.

    Lines look like ``GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1``; with exactly one placement
    nvidia-smi writes ``Placement :`` (singular, padded), which is checked.
    """
    if _empty_state(_LGIPP, text):
        return {}
    lines = _split_lines(text)
    if not lines:
        raise NvidiaSmiError(_LGIPP, "printed nothing")
    result: dict[int, dict[int, list[Placement]]] = {}
    for number, line in lines:
        match = _LGIPP_RE.fullmatch(line)
        if match is None:
            raise NvidiaSmiError(
                _LGIPP,
                "unrecognised line (expected 'GPU <n> Profile ID <id> Placements: {<start>,...}:<size>')",
                number,
                line,
            )
        starts = [int(s) for s in match["starts"].split(",")]
        if (len(starts) == 1) != (match["label"] == "Placement "):
            raise NvidiaSmiError(_LGIPP, f"label {match['label'].strip()!r} does not fit {len(starts)} placement(s)", number, line)
        if len(set(starts)) != len(starts):
            raise NvidiaSmiError(_LGIPP, "placement start listed twice", number, line)
        gpu, profile_id, size = int(match["gpu"]), int(match["id"]), int(match["size"])
        if size < 1:
            raise NvidiaSmiError(_LGIPP, "placement size must be at least 1", number, line)
        per_gpu = result.setdefault(gpu, {})
        if profile_id in per_gpu:
            raise NvidiaSmiError(_LGIPP, f"profile ID {profile_id} listed twice for GPU {gpu}", number, line)
        per_gpu[profile_id] = [{"start": start, "size": size} for start in starts]
    return result


# -- nvidia-smi mig -lgi --------------------------------------------------------------------------------------

_LGI_LAYOUTS = (
    (
        ("GPU", "Name", "Profile", "Instance", "Placement"),
        ("ID", "ID", "Start:Size"),
    ),
)
_LGI_ROW_RE = re.compile(r"\s*(?P<gpu>\d+)\s+MIG (?P<name>\S+)\s+(?P<pid>\d+)\s+(?P<id>\d+)\s+(?P<start>\d+):(?P<size>\d+)\s*")


def parse_lgi(text: str) -> dict[int, list[GpuInstance]]:
    """Parse ``nvidia-smi mig -lgi``: GPU index -> GPU instances in printed order.

    Rows are GPU, MIG profile name, profile ID, instance ID, placement ``start:size``; the layout is 54
    (R450-R470), 57 (R525-R570) or 59 (R580) characters wide. Empty states give ``{}``.
    """
    if _empty_state(_LGI, text):
        return {}
    table = _read_table(_LGI, text, "GPU instances:", _LGI_LAYOUTS)
    result: dict[int, list[GpuInstance]] = {}
    for group in table.groups:
        for row in group.rows:
            match = row.match(_LGI, _LGI_ROW_RE, "GPU instance", "GPU, MIG name, profile ID, instance ID, start:size")
            name = match["name"]
            if _GI_PROFILE_RE.fullmatch(name) is None:
                raise NvidiaSmiError(_LGI, f"unrecognised profile name {name!r}", row.number, row.line)
            gpu, gi_id = int(match["gpu"]), int(match["id"])
            instances = result.setdefault(gpu, [])
            if any(gi["id"] == gi_id for gi in instances):
                raise NvidiaSmiError(_LGI, f"GPU instance ID {gi_id} listed twice for GPU {gpu}", row.number, row.line)
            instances.append(
                {
                    "id": gi_id,
                    "profile_id": int(match["pid"]),
                    "profile": name,
                    "placement": {"start": int(match["start"]), "size": int(match["size"])},
                }
            )
    return result


# -- nvidia-smi mig -lci --------------------------------------------------------------------------------------

_LCI_LAYOUTS = (
    # R450-R470 (57 columns).
    (
        ("GPU", "GPU", "Name", "Profile", "Instance"),
        ("Instance", "ID", "ID"),
        ("ID",),
    ),
    # Later drivers (70 columns, as in the 580.159.04 binary): a Placement column, relative to the GI.
    (
        ("GPU", "GPU", "Name", "Profile", "Instance", "Placement"),
        ("Instance", "ID", "ID", "Start:Size"),
        ("ID",),
    ),
)
_LCI_ROW_RE = (
    re.compile(r"\s*(?P<gpu>\d+)\s+(?P<gi>\d+)\s+MIG (?P<name>\S+)\s+(?P<pid>\d+)\s+(?P<id>\d+)\s*"),
    re.compile(r"\s*(?P<gpu>\d+)\s+(?P<gi>\d+)\s+MIG (?P<name>\S+)\s+(?P<pid>\d+)\s+(?P<id>\d+)\s+\d+:\d+\s*"),
)


def parse_lci(text: str) -> dict[int, list[ComputeInstance]]:
    """Parse ``nvidia-smi mig -lci``: GPU index -> compute instances in printed order.

    Rows are GPU, GPU instance ID, MIG profile name (``1c.3g.20gb`` or ``3g.20gb``), profile ID,
    instance ID and, in the newer layout, a placement ``start:size`` inside the GPU instance, which is
    checked but not returned. Empty states give ``{}``.
    """
    if _empty_state(_LCI, text):
        return {}
    table = _read_table(_LCI, text, "Compute instances:", _LCI_LAYOUTS)
    row_re = _LCI_ROW_RE[table.layout]
    result: dict[int, list[ComputeInstance]] = {}
    for group in table.groups:
        for row in group.rows:
            columns = "GPU, GI ID, MIG name, profile ID, instance ID" + (", start:size" if table.layout else "")
            match = row.match(_LCI, row_re, "compute instance", columns)
            name = match["name"]
            if _CI_PROFILE_RE.fullmatch(name) is None:
                raise NvidiaSmiError(_LCI, f"unrecognised profile name {name!r}", row.number, row.line)
            gpu, gi_id, ci_id = int(match["gpu"]), int(match["gi"]), int(match["id"])
            instances = result.setdefault(gpu, [])
            if any(ci["gpu_instance_id"] == gi_id and ci["id"] == ci_id for ci in instances):
                raise NvidiaSmiError(
                    _LCI,
                    f"compute instance {ci_id} of GPU instance {gi_id} listed twice for GPU {gpu}",
                    row.number,
                    row.line,
                )
            instances.append({"gpu_instance_id": gi_id, "id": ci_id, "profile_id": int(match["pid"]), "profile": name})
    return result


# -- nvidia-smi --query-gpu -----------------------------------------------------------------------------------

_UUID_RE = re.compile(r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_BUS_ID_RE = re.compile(r"([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])")
_DEVICE_ID_RE = re.compile(r"0[xX]([0-9A-Fa-f]{8})")
_FIELD_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
_HEADER_UNIT_RE = re.compile(r" \[[^\]]+\]$")
# What nvidia-smi prints for a value the GPU or driver does not report.
_NOT_AVAILABLE = ("[N/A]", "[Not Supported]")
_MIG_MODES: dict[str, MigMode] = {
    "Enabled": "enabled",
    "Disabled": "disabled",
    "[N/A]": "unsupported",
    "[Not Supported]": "unsupported",
}


def _query_command(fields: Sequence[str]) -> str:
    return f"nvidia-smi --query-gpu={','.join(fields)}"


def _normalise_field(command: str, field: str, value: str, number: int, line: str) -> str:
    def bad(what: str) -> NvidiaSmiError:
        return NvidiaSmiError(command, f"{field}: {what}, got {value!r}", number, line)

    if field == "index":
        if not value.isdigit():
            raise bad("expected a GPU index")
        return str(int(value))
    if field == "name":
        if not value:
            raise bad("expected a GPU name")
        return value
    if field == "uuid":
        if _UUID_RE.fullmatch(value) is None:
            raise bad("expected a UUID like 'GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'")
        return value
    if field == "pci.bus_id":
        match = _BUS_ID_RE.fullmatch(value)
        if match is None:
            raise bad("expected a PCI bus id like '00000000:00:06.0'")
        domain, bus, device, function = match.groups()
        return f"{int(domain, 16):08X}:{bus.upper()}:{device.upper()}.{function}"
    if field == "pci.device_id":
        match = _DEVICE_ID_RE.fullmatch(value)
        if match is None:
            raise bad("expected a PCI device id like '0x233510DE'")
        return f"0x{match[1].upper()}"
    if field == "pci.sub_device_id":
        if value in _NOT_AVAILABLE:
            return ""
        match = _DEVICE_ID_RE.fullmatch(value)
        if match is None:
            raise bad("expected a PCI subsystem id like '0x18BF10DE'")
        return f"0x{match[1].upper()}"
    if field in ("mig.mode.current", "mig.mode.pending"):
        if value not in _MIG_MODES:
            raise bad(f"expected one of {', '.join(_MIG_MODES)}")
        return _MIG_MODES[value]
    return value


def parse_query_gpu(text: str, fields: Sequence[str] = QUERY_FIELDS) -> list[dict[str, str]]:
    """Parse ``nvidia-smi --query-gpu=<fields> --format=csv[,noheader]``: one dict per GPU, keyed by field.

    A header line (``index, name, ...``, units like `` [MiB]`` ignored) is accepted when it names exactly
    ``fields``. Values are stripped and checked: ``index`` is an integer, ``uuid`` ``GPU-<uuid>``,
    ``pci.bus_id`` normalised to ``00000000:00:06.0`` (upper-case hex), ``pci.device_id`` to
    ``0x233510DE``, ``pci.sub_device_id`` (the PCI subsystem id, ``0xSSSSVVVV``) to ``0x18BF10DE``, or to
    ``""`` when nvidia-smi prints ``[N/A]`` or ``[Not Supported]`` for it, MIG modes to
    ``enabled``/``disabled``/``unsupported`` (``[N/A]``). Other fields are returned as printed.
    """
    fields = tuple(fields)
    command = _query_command(fields)
    if not fields or any(_FIELD_RE.fullmatch(f) is None for f in fields):
        raise NvidiaSmiError(command, f"invalid query field list {fields!r}")
    lines = _split_lines(text)
    if not lines:
        raise NvidiaSmiError(command, "printed nothing")
    first_number, first = lines[0]
    first_values = [v.strip() for v in first.split(",")]
    if _FIELD_RE.fullmatch(_HEADER_UNIT_RE.sub("", first_values[0])):  # a header: values never look like this
        names = [_HEADER_UNIT_RE.sub("", v) for v in first_values]
        if names != list(fields):
            raise NvidiaSmiError(command, f"header does not name the requested fields {', '.join(fields)}", first_number, first)
        lines = lines[1:]
        if not lines:
            raise NvidiaSmiError(command, "header but no GPU line", first_number, first)
    rows: list[dict[str, str]] = []
    for number, line in lines:
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            raise NvidiaSmiError(command, f"{len(values)} comma-separated fields, expected {len(fields)}", number, line)
        row = {field: _normalise_field(command, field, value, number, line) for field, value in zip(fields, values)}
        if "index" in row and any(r["index"] == row["index"] for r in rows):
            raise NvidiaSmiError(command, f"GPU index {row['index']} listed twice", number, line)
        rows.append(row)
    return rows


# -- collect ----------------------------------------------------------------------------------------------

_MIG_MODES_BY_VALUE: dict[str, MigMode] = {mode: mode for mode in _MIG_MODES.values()}


def _run(run: Runner, argv: list[str], command: str) -> str:
    """Run one nvidia-smi command and return its stdout.

    A non-zero return code is an error unless the output is exactly one of the command's empty-state
    messages (nvidia-smi may return NVML_ERROR_NOT_FOUND, 6, with them).
    """
    rc, out, err = run(list(argv))
    shown = "nvidia-smi " + " ".join(argv)
    message = out if out.strip() else err
    if _empty_state(command, message) and rc in _EMPTY_STATE_RCS:
        return message
    if rc != 0:
        first = next((line.strip() for line in (err + "\n" + out).splitlines() if line.strip()), "no output")
        raise NvidiaSmiError(shown, f"failed with rc {rc}: {first}")
    if not out.strip():
        detail = "printed nothing on stdout"
        first_err = next((line.strip() for line in err.splitlines() if line.strip()), "")
        raise NvidiaSmiError(shown, f"{detail}; stderr: {first_err}" if first_err else detail)
    return out


def collect(run: Runner) -> list[GpuInfo]:
    """Read every GPU's MIG inventory through ``run`` (see ``COMMANDS``), sorted by GPU index.

    At most five nvidia-smi processes: the query always; ``-lgip`` and ``-lgipp`` when a GPU supports
    MIG; ``-lgi`` and ``-lci`` only when a GPU has MIG enabled. Placements are merged into the profiles by
    profile ID; a profile without placements, placements for an unknown profile, instances on a GPU
    without MIG enabled or compute instances in an unknown GPU instance raise ``NvidiaSmiError``.
    """
    rows = parse_query_gpu(_run(run, COMMANDS["query"], _query_command(QUERY_FIELDS)), QUERY_FIELDS)
    gpus: dict[int, GpuInfo] = {}
    for row in rows:
        index = int(row["index"])
        gpus[index] = {
            "index": index,
            "name": row["name"],
            "uuid": row["uuid"],
            "pci_bus_id": row["pci.bus_id"],
            "pci_device_id": row["pci.device_id"],
            "pci_subsystem_id": row["pci.sub_device_id"],
            "mig_mode_current": _MIG_MODES_BY_VALUE[row["mig.mode.current"]],
            "mig_mode_pending": _MIG_MODES_BY_VALUE[row["mig.mode.pending"]],
            "gpu_instances": [],
            "compute_instances": [],
            "supported_profiles": [],
        }
    if not any(gpu["mig_mode_current"] != "unsupported" for gpu in gpus.values()):
        return [gpus[i] for i in sorted(gpus)]

    profiles = parse_lgip(_run(run, COMMANDS["lgip"], _LGIP))
    placements = parse_lgipp(_run(run, COMMANDS["lgipp"], _LGIPP))
    _merge_profiles(gpus, profiles, placements)

    if any(gpu["mig_mode_current"] == "enabled" for gpu in gpus.values()):
        gpu_instances = parse_lgi(_run(run, COMMANDS["lgi"], _LGI))
        compute_instances = parse_lci(_run(run, COMMANDS["lci"], _LCI))
        _merge_instances(gpus, gpu_instances, compute_instances)
    return [gpus[i] for i in sorted(gpus)]


def _merge_profiles(
    gpus: dict[int, GpuInfo],
    profiles: dict[int, list[ProfileInfo]],
    placements: dict[int, dict[int, list[Placement]]],
) -> None:
    for index, gpu_profiles in profiles.items():
        gpu = gpus.get(index)
        if gpu is None:
            raise NvidiaSmiError(_LGIP, f"lists GPU {index}, which --query-gpu did not report")
        if gpu["mig_mode_current"] == "unsupported":
            raise NvidiaSmiError(_LGIP, f"lists profiles for GPU {index}, whose MIG mode --query-gpu reports as [N/A]")
        gpu_placements = placements.get(index, {})
        for profile in gpu_profiles:
            if profile["id"] not in gpu_placements:
                raise NvidiaSmiError(_LGIPP, f"no placements for GPU {index} profile ID {profile['id']} ({profile['name']})")
            profile["placements"] = gpu_placements[profile["id"]]
        known = {p["id"] for p in gpu_profiles}
        unknown = sorted(set(gpu_placements) - known)
        if unknown:
            raise NvidiaSmiError(_LGIPP, f"placements for GPU {index} profile ID(s) {unknown} that -lgip does not list")
        gpu["supported_profiles"] = gpu_profiles
    extra_gpus = sorted(set(placements) - set(profiles))
    if extra_gpus:
        raise NvidiaSmiError(_LGIPP, f"placements for GPU(s) {extra_gpus} that -lgip does not list")
    for index, gpu in gpus.items():
        if gpu["mig_mode_current"] == "enabled" and not gpu["supported_profiles"]:
            raise NvidiaSmiError(_LGIP, f"lists no profiles for GPU {index}, which has MIG enabled")


def _merge_instances(
    gpus: dict[int, GpuInfo],
    gpu_instances: dict[int, list[GpuInstance]],
    compute_instances: dict[int, list[ComputeInstance]],
) -> None:
    for command, listed in ((_LGI, gpu_instances), (_LCI, compute_instances)):
        for index in listed:
            gpu = gpus.get(index)
            if gpu is None or gpu["mig_mode_current"] != "enabled":
                state = "was not reported by --query-gpu" if gpu is None else f"has MIG {gpu['mig_mode_current']}"
                raise NvidiaSmiError(command, f"lists instances on GPU {index}, which {state}")
    for index, instances in gpu_instances.items():
        profile_ids = {p["id"] for p in gpus[index]["supported_profiles"]}
        for gi in instances:
            if gi["profile_id"] not in profile_ids:
                raise NvidiaSmiError(_LGI, f"GPU {index} GPU instance {gi['id']} has profile ID {gi['profile_id']}, not listed by -lgip")
        gpus[index]["gpu_instances"] = sorted(instances, key=lambda gi: gi["id"])
    for index, cis in compute_instances.items():
        gi_ids = {gi["id"] for gi in gpu_instances.get(index, [])}
        for ci in cis:
            if ci["gpu_instance_id"] not in gi_ids:
                raise NvidiaSmiError(
                    _LCI,
                    f"GPU {index} compute instance {ci['id']} is in GPU instance {ci['gpu_instance_id']}, which -lgi does not list",
                )
        gpus[index]["compute_instances"] = sorted(cis, key=lambda ci: (ci["gpu_instance_id"], ci["id"]))
