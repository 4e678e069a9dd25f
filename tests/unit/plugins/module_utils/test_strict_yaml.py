# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The strict YAML loader shared by the mig_config lookup, mig_verify and serving_verify."""
from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._strict_yaml import (
    HexInt,
    StrictYamlError,
    line_of,
    load,
    to_plain,
)


def test_hex_integers_keep_their_text() -> None:
    data = load("a: 0x20B010DE\nb: [0x1, 7, 0o17, 1_000]\n", "f.yaml")
    assert data["a"] == 0x20B010DE
    assert isinstance(data["a"], HexInt)
    assert data["a"].text == "0x20B010DE"
    assert [type(v).__name__ for v in data["b"]] == ["HexInt", "int", "str", "int"]  # YAML 1.1: 0o17 is a string


def test_hex_int_survives_copy_and_pickle() -> None:
    value = HexInt(0x20B010DE, "0x20b010de")
    for other in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert other == value
        assert isinstance(other, HexInt)
        assert other.text == "0x20b010de"


def test_lines_of_mappings_and_keys() -> None:
    data = load("top:\n  inner:\n    x: 1\n    y: 2\n", "f.yaml")
    assert line_of(data) == 1
    assert line_of(data["top"]) == 2
    assert line_of(data["top"]["inner"], "y") == 4
    assert line_of(data["top"]["inner"], "nope") is None
    assert line_of({"plain": "dict"}) is None
    assert line_of(data, ["unhashable"]) is None


def test_merge_keys_may_be_overridden() -> None:
    data = load("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert data["c"] == {"x": 1, "y": 3}


def test_a_byte_order_mark_is_dropped() -> None:
    assert load("\ufeffa: 1\n".encode(), "f.yaml") == {"a": 1}


def test_plain_copy_has_only_json_types_and_keeps_sharing() -> None:
    data = load("a: &s [0x10, {k: 1}]\nb: *s\nwhen: 2024-01-02\n", "f.yaml")
    plain = to_plain(data)
    assert json.loads(json.dumps(plain)) == {"a": [16, {"k": 1}], "b": [16, {"k": 1}], "when": "2024-01-02"}
    assert plain["a"][0].__class__ is int
    assert plain["a"][1].__class__ is dict
    assert plain["a"] is plain["b"]


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml, line 3: duplicate key 'a' (first defined on line 1)", 3),
        ("? [a, b]\n: x\n", "f.yaml, line 1: a mapping key is a list (['a', 'b'])", 1),
        ("x:\n  ? {a: 1}\n  : 2\n", "f.yaml, line 2: a mapping key is a mapping ({'a': 1})", 2),
        (b"a: 1\nb: caf\xe9\n", "f.yaml, line 2, column 7: not UTF-8 text (byte 0xe9); save the file as UTF-8", 2),
        (b"a: 1\n\x00\x01", "f.yaml, line 2: a binary file (a NUL byte)", 2),
        ("a: 1\n\x00", "f.yaml, line 2: a binary file (a NUL byte)", 2),
        ("a: [1\n", "f.yaml: not valid YAML (line 2, column 1)", 2),
        ("a: \x07\n", "f.yaml, line 1: not valid YAML: the character #x0007 is not allowed", 1),
        ("a: &x [*x]\n", "found unconstructable recursive node", 1),
        ("a: *nope\n", "found undefined alias", 1),
    ],
)
def test_refusals_name_the_file_and_the_line(data: Any, message: str, line: int) -> None:
    with pytest.raises(StrictYamlError) as exc:
        load(data, "f.yaml")
    assert message in str(exc.value)
    assert exc.value.line == line


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(StrictYamlError, match=r"f\.yaml: 11 bytes, larger than the 10 bytes"):
        load(b"a: 12345678", "f.yaml", max_bytes=10)


def test_deep_nesting_is_refused() -> None:
    text = "- " * 5000 + "v\n"
    with pytest.raises(StrictYamlError, match=r"nested too deeply|not valid YAML"):
        load(text, "f.yaml")
