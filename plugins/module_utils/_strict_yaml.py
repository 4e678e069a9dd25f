# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the one strict YAML loader for the files users give the collection.

Not a public API; may change without notice.

Used on the controller (the ``gpu_ops.mig_serving.mig_config`` lookup) and on the node (``mig_verify``) for
nvidia-mig-parted configs, and by ``serving_verify`` for kubeconfigs. Compared with ``yaml.safe_load`` it:

* refuses a file that is binary (a NUL byte), not UTF-8, or larger than ``max_bytes``, naming the line;
* refuses a key defined twice in one mapping (safe_load keeps the last silently, which would drop a layout),
  naming both lines, and a key that is a list or a mapping (YAML's ``? [a, b] : x``);
* refuses recursive aliases (``&a [*a]``), which nothing in these formats needs;
* keeps hexadecimal integers as written: ``0x20B010DE`` loads as a ``HexInt`` that is the number and also
  remembers its text, so a PCI id written without quotes is read as the id, not as ``548409566``;
* remembers the line of every mapping (``line_of``) so later checks can name it.

Every refusal is a ``StrictYamlError`` whose message starts with the source (the file's path) and the line.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Union

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR: Optional[str] = None
except ImportError as _exc:  # pragma: no cover - exercised on nodes without PyYAML
    HAS_YAML = False
    YAML_IMPORT_ERROR = str(_exc)

# mig-parted's largest shipped config is about 20 KB and a kubeconfig rarely more than a few; anything
# beyond this is the wrong file, and is refused before it is parsed.
MAX_BYTES = 4 * 1024 * 1024

_HEX = re.compile(r"^[-+]?0x[0-9a-fA-F_]+$")


class StrictYamlError(ValueError):
    """A file is not YAML the collection accepts. ``line`` is 1-based, or None when it does not apply."""

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        super().__init__(message)
        self.line = line


class HexInt(int):
    """An integer written in hexadecimal (``0x20B010DE``); ``text`` is how it was written."""

    text: str

    def __new__(cls, value: int, text: str) -> HexInt:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __reduce__(self) -> Any:
        return (HexInt, (int(self), self.text))


class LineDict(Dict[Any, Any]):
    """A mapping as loaded, with the 1-based line it starts on and the line of each key."""

    line: int = 0
    key_lines: Dict[Any, int]


def line_of(obj: Any, key: Any = None) -> Optional[int]:
    """The line a loaded mapping starts on, or (with ``key``) the line of that key; None for other data."""
    if not isinstance(obj, LineDict):
        return None
    if key is None:
        return obj.line or None
    try:
        return obj.key_lines.get(key)
    except TypeError:  # an unhashable key cannot be in the mapping
        return None


def brief(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for a value quoted in a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decode(data: Union[str, bytes], source: str, max_bytes: int = MAX_BYTES) -> str:
    """The text of a file's content: refuses oversized, binary and non-UTF-8 data, naming the line.
    A UTF-8 byte order mark is dropped."""
    size = len(data)  # characters of a str: a lower bound of its bytes
    if size > max_bytes:
        raise StrictYamlError(
            f"{source}: {size} {'characters' if isinstance(data, str) else 'bytes'}, larger than the {max_bytes} bytes "
            "accepted for this file; is it the right file?"
        )
    if isinstance(data, str):
        text = data
    else:
        nul = data.find(b"\x00")
        if nul >= 0:
            line = data.count(b"\n", 0, nul) + 1
            raise StrictYamlError(
                f"{source}, line {line}: a binary file (a NUL byte), not YAML text; give the path of the YAML file itself",
                line,
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise StrictYamlError(
                f"{source}, line {line}, column {column}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                "save the file as UTF-8",
                line,
            ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise StrictYamlError(f"{source}, line {line}: a binary file (a NUL byte), not YAML text", line)
    return text[1:] if text.startswith("\ufeff") else text


def load(data: Union[str, bytes], source: str, max_bytes: int = MAX_BYTES) -> Any:
    """Load one YAML document strictly (see the module's description). Raises StrictYamlError only."""
    text = decode(data, source, max_bytes)
    if not HAS_YAML:  # pragma: no cover - exercised on nodes without PyYAML
        raise StrictYamlError(f"{source}: PyYAML is not installed on this host ({YAML_IMPORT_ERROR}); install python3-yaml")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _Refused as exc:
        raise StrictYamlError(f"{source}, line {exc.line}: {exc.message}", exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise StrictYamlError(f"{source}: not valid YAML{where}: {what}", mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise StrictYamlError(
            f"{source}, line {line}: not valid YAML: the character #x{exc.character:04x} is not allowed in YAML text", line
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every parser error above carries a mark or a position
        raise StrictYamlError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise StrictYamlError(f"{source}: nested too deeply to be a configuration file") from None


class _Refused(Exception):
    """Raised inside the constructor; turned into a StrictYamlError with the source by ``load``."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


if HAS_YAML:
    # libyaml's parser when PyYAML has it (much faster on mig-parted's 600-line default file), the pure-Python
    # one otherwise; the safe constructors and the checks below are the same in both.
    _BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class _StrictLoader(_BaseLoader):  # type: ignore[misc]
        pass

    _MERGE_TAG = "tag:yaml.org,2002:merge"

    def _construct_mapping(loader: Any, node: Any) -> LineDict:
        if not isinstance(node, yaml.MappingNode):  # pragma: no cover - the resolver only sends mapping nodes here
            raise _Refused("expected a mapping", node.start_mark.line + 1)
        first: Dict[Any, int] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (list, dict)):
                kind = "list" if isinstance(key, list) else "mapping"
                raise _Refused(
                    f"a mapping key is a {kind} ({brief(key)}); keys must be plain strings or numbers - "
                    "remove the '?' complex-key syntax or quote the key",
                    line,
                )
            if key in first:
                raise _Refused(
                    f"duplicate key {key!r} (first defined on line {first[key]}); YAML keeps only the last definition, "
                    "so one of them would be lost silently: rename or remove one",
                    line,
                )
            first[key] = line
        loader.flatten_mapping(node)  # '<<: *anchor' merge keys; keys written here override merged ones
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise _Refused(f"a mapping key is a list or mapping ({brief(key)}); keys must be plain strings", key_node.start_mark.line + 1)
            mapping[key] = loader.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def _construct_sequence(loader: Any, node: Any) -> Any:
        return [loader.construct_object(child, deep=True) for child in node.value]

    def _construct_int(loader: Any, node: Any) -> Any:
        value = loader.construct_yaml_int(node)
        text = str(node.value)
        return HexInt(value, text.replace("_", "")) if _HEX.match(text) else value

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    _StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def to_plain(data: Any) -> Any:
    """A copy made of plain dicts, lists, str, int, float, bool and None (HexInt becomes its int): what
    Ansible and JSON take. Shared (aliased) parts are copied once and shared again."""
    seen: Dict[int, Any] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, bool) or obj is None or isinstance(obj, (str, float)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if id(obj) in seen:
            return seen[id(obj)]
        out: Any
        if isinstance(obj, dict):
            out = {}
            seen[id(obj)] = out
            for k, v in obj.items():
                out[walk(k)] = walk(v)
        elif isinstance(obj, list):
            out = []
            seen[id(obj)] = out
            out.extend(walk(v) for v in obj)
        else:  # dates, bytes: as text
            out = str(obj)
        return out

    return walk(data)
