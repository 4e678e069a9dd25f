# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A strict parser for the subset of YAML that mig-parted configs and hooks files use (the stdlib has none).

Accepted: block mappings and sequences (indented with spaces; a sequence may sit at its key's indentation;
``- key: value`` starts a mapping inside a sequence), single-line flow sequences and mappings (``[0, 1]``,
``{}``, ``{a: 1}``), plain, 'single-' and "double-quoted" scalars, comments, one leading ``---``.
Plain scalars resolve as PyYAML does for this subset: ``true``/``false`` (any case spelling PyYAML accepts),
``null``/``~``/empty to None, decimal integers, everything else a string. Anything outside the subset
(tabs, anchors, aliases, tags, block scalars ``|``/``>``, multi-line scalars, ``yes``/``no``/``on``/``off``,
floats, hex or octal numbers, duplicate keys, several documents) raises ``YamlError`` naming the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["YamlError", "loads"]


class YamlError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class _Line:
    number: int
    indent: int
    text: str  # without indentation and comment


_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = ("", "~", "null", "Null", "NULL")
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
# Plain scalars PyYAML would read as something this subset does not resolve: YAML 1.1 booleans, floats, base 2/8/16
# and sexagesimal numbers, .inf/.nan. Quote them.
_AMBIGUOUS = re.compile(
    r"(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)"
    r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9][0-9_]*"
)
_INDICATORS = "&*!|>%@`"
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r", "e": "\x1b",
    " ": " ", '"': '"', "/": "/", "\\": "\\",
}  # fmt: skip


def _strip_comment(number: int, text: str) -> str:
    """Drop a '#' comment (at the start or after a space) that is outside quotes; keep the rest."""
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                quote = ""
        elif quote == "'":
            if c == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 1
                else:
                    quote = ""
        elif c in "\"'" and (i == 0 or text[i - 1] in " [{,:"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] == " "):
            return text[:i].rstrip()
        i += 1
    if quote:
        raise YamlError(number, "unterminated quoted scalar (multi-line scalars are not supported)")
    return text.rstrip()


def _lines(source: str) -> list[_Line]:
    result = []
    seen_content = False
    for number, line in enumerate(source.split("\n"), start=1):
        raw = line.removesuffix("\r")
        stripped = raw.lstrip(" ")
        if "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))]:
            raise YamlError(number, "tab in indentation")
        text = _strip_comment(number, stripped)
        if not text:
            continue
        if text == "---" and len(stripped) == len(raw):
            if seen_content:
                raise YamlError(number, "more than one document")
            continue
        if text == "..." or text.startswith("--- ") or text.startswith("%"):
            raise YamlError(number, f"unsupported directive or document marker {text!r}")
        seen_content = True
        result.append(_Line(number, len(raw) - len(stripped), text))
    return result


def _double_quoted(number: int, body: str) -> str:
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                raise YamlError(number, "backslash at the end of a double-quoted scalar")
            e = body[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
                continue
            sizes = {"x": 2, "u": 4, "U": 8}
            if e in sizes:
                digits = body[i + 2 : i + 2 + sizes[e]]
                if len(digits) != sizes[e] or re.fullmatch(r"[0-9a-fA-F]+", digits) is None:
                    raise YamlError(number, f"bad escape \\{e}{digits}")
                out.append(chr(int(digits, 16)))
                i += 2 + sizes[e]
                continue
            raise YamlError(number, f"unknown escape \\{e}")
        out.append(c)
        i += 1
    return "".join(out)


def _plain(number: int, text: str) -> Any:
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return int(text)
    if _AMBIGUOUS.fullmatch(text):
        raise YamlError(number, f"plain scalar {text!r} is ambiguous in YAML 1.1 (boolean, float or non-decimal number); quote it")
    if text[0] in _INDICATORS or text[0] in "[]{},#" or text.startswith(("- ", "? ", ": ")) or text in ("-", "?"):
        raise YamlError(number, f"unsupported YAML syntax {text!r} (anchors, aliases, tags, block scalars are not in the subset)")
    if ": " in text or text.endswith(":") or " #" in text:
        raise YamlError(number, f"unexpected ':' or '#' in plain scalar {text!r}")
    return text


def _scalar(number: int, text: str) -> Any:
    """A whole scalar: quoted (must end with its quote) or plain."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"') or _quoted_end(number, text, 0) != len(text):
            raise YamlError(number, f"text after a double-quoted scalar: {text!r}")
        return _double_quoted(number, text[1:-1])
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'") or _quoted_end(number, text, 0) != len(text):
            raise YamlError(number, f"text after a single-quoted scalar: {text!r}")
        return text[1:-1].replace("''", "'")
    return _plain(number, text)


def _quoted_end(number: int, text: str, start: int) -> int:
    """Index just past the quoted scalar that starts at ``start``."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        c = text[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise YamlError(number, "unterminated quoted scalar")


class _Flow:
    """A single-line flow collection: [a, "b", 1], {}, {k: v}; nesting allowed."""

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.i = 0

    def error(self, message: str) -> YamlError:
        return YamlError(self.number, f"{message} in flow collection {self.text!r}")

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] == " ":
            self.i += 1

    def parse(self) -> Any:
        value = self.value()
        self.skip()
        if self.i != len(self.text):
            raise self.error("text after the closing bracket")
        return value

    def value(self) -> Any:
        self.skip()
        if self.i >= len(self.text):
            raise self.error("missing value")
        c = self.text[self.i]
        if c == "[":
            return self.sequence()
        if c == "{":
            return self.mapping()
        if c in "\"'":
            end = _quoted_end(self.number, self.text, self.i)
            value = _scalar(self.number, self.text[self.i : end])
            self.i = end
            return value
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in ",]}" and not (self.text[self.i] == ":" and self.text[self.i + 1 : self.i + 2] in (" ", "")):
            self.i += 1
        return _plain(self.number, self.text[start : self.i].strip())

    def sequence(self) -> list[Any]:
        self.i += 1
        items: list[Any] = []
        self.skip()
        if self.text[self.i : self.i + 1] == "]":
            self.i += 1
            return items
        while True:
            items.append(self.value())
            self.skip()
            c = self.text[self.i : self.i + 1]
            self.i += 1
            if c == "]":
                return items
            if c != ",":
                raise self.error("expected ',' or ']'")

    def mapping(self) -> dict[str, Any]:
        self.i += 1
        items: dict[str, Any] = {}
        self.skip()
        if self.text[self.i : self.i + 1] == "}":
            self.i += 1
            return items
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self.error(f"non-string key {key!r}")
            self.skip()
            if self.text[self.i : self.i + 1] != ":":
                raise self.error("expected ':'")
            self.i += 1
            if key in items:
                raise self.error(f"duplicate key {key!r}")
            items[key] = self.value()
            self.skip()
            c = self.text[self.i : self.i + 1]
            self.i += 1
            if c == "}":
                return items
            if c != ",":
                raise self.error("expected ',' or '}'")


def _inline(number: int, text: str) -> Any:
    if text.startswith(("[", "{")):
        return _Flow(number, text).parse()
    return _scalar(number, text)


def _split_key(line: _Line) -> tuple[str, str] | None:
    """``key: value`` or ``key:`` -> (key text, value text); None when the line is not a mapping entry."""
    text = line.text
    if text.startswith(("\"", "'")):
        end = _quoted_end(line.number, text, 0)
        rest = text[end:]
        if rest == ":" or rest.startswith(": "):
            return text[:end], rest[1:].strip()
        return None
    match = re.match(r"([^\s\[\]{},#'\"][^:]*?):(?: +(.*))?$", text)
    if match is None:
        return None
    return match.group(1).rstrip(), (match.group(2) or "").strip()


class _Parser:
    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.i = 0

    def block(self) -> Any:
        line = self.lines[self.i]
        if line.text == "-" or line.text.startswith("- "):
            return self.sequence(line.indent)
        return self.mapping(line.indent)

    def _nested(self, parent: _Line, allow_sequence_at_same_indent: bool) -> Any:
        """The value of ``key:`` / ``-`` with nothing after it: an indented block, or null."""
        if self.i < len(self.lines):
            nxt = self.lines[self.i]
            if nxt.indent > parent.indent:
                return self.block()
            if allow_sequence_at_same_indent and nxt.indent == parent.indent and (nxt.text == "-" or nxt.text.startswith("- ")):
                return self.sequence(nxt.indent)
        return None

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise YamlError(line.number, "unexpected indentation")
            if not (line.text == "-" or line.text.startswith("- ")):
                break
            rest = line.text[1:].lstrip(" ")
            if not rest:
                self.i += 1
                items.append(self._nested(line, allow_sequence_at_same_indent=False))
                continue
            if rest == "-" or rest.startswith("- "):
                raise YamlError(line.number, "a sequence directly inside a sequence item is not in the subset")
            inner = _Line(line.number, line.indent + (len(line.text) - len(rest)), rest)
            if not rest.startswith(("[", "{")) and _split_key(inner) is not None:
                self.lines[self.i] = inner  # "- key: value" opens a mapping at the column of "key"
                items.append(self.mapping(inner.indent))
            else:
                self.i += 1
                items.append(_inline(line.number, rest))
        return items

    def mapping(self, indent: int) -> dict[str, Any]:
        items: dict[str, Any] = {}
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise YamlError(line.number, "unexpected indentation")
            split = _split_key(line)
            if split is None:
                if line.text == "-" or line.text.startswith("- "):
                    break  # a sequence at the parent key's indentation ends this mapping
                raise YamlError(line.number, f"expected 'key: value', got {line.text!r}")
            key_text, value_text = split
            key = _scalar(line.number, key_text)
            if not isinstance(key, str):
                raise YamlError(line.number, f"non-string key {key!r}")
            if key in items:
                raise YamlError(line.number, f"duplicate key {key!r}")
            self.i += 1
            items[key] = _inline(line.number, value_text) if value_text else self._nested(line, allow_sequence_at_same_indent=True)
        return items


def loads(source: str) -> Any:
    """Parse one YAML document of the subset; an empty document is None."""
    lines = _lines(source)
    if not lines:
        return None
    parser = _Parser(lines)
    first = lines[0]
    if first.indent != 0:
        raise YamlError(first.number, "the document must start at column 0")
    if first.text.startswith(("[", "{")) or (_split_key(first) is None and not (first.text == "-" or first.text.startswith("- "))):
        value = _inline(first.number, first.text)
        parser.i = 1
    else:
        value = parser.block()
    if parser.i != len(lines):
        line = lines[parser.i]
        raise YamlError(line.number, f"unexpected content {line.text!r}")
    return value
