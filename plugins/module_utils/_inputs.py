# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the formats and ranges of the collection's inputs that argument specs cannot express.

Not a public API; may change without notice. Used by the ``input_problems`` filter, which the roles' preflights
and ``playbooks/validate.yml`` call before anything is rendered, applied or a node contacted.

A rule is a string ``kind`` or ``kind:argument``. Each kind encodes the rule of the system that would otherwise
refuse the value later, half-way through a run:

- ``namespace``, ``label[:N]``: an RFC 1123 DNS label (Kubernetes ``IsDNS1123Label``: lower-case alphanumerics
  and '-', starting and ending alphanumeric, at most 63 characters, or N where a suffix is appended later).
- ``service[:N]``: an RFC 1035 label (Kubernetes ``IsDNS1035Label``, Service names: starts with a letter).
- ``subdomain``: an RFC 1123 subdomain (``IsDNS1123Subdomain``: dot-separated labels, at most 253 characters).
- ``int:MIN..MAX`` (either bound may be left out): an integer, given as a number or as decimal digits (``-e``
  passes strings); booleans are refused.
- ``port``: an integer 1..65535.
- ``nginx_time``: nginx's time syntax (``ngx_parse_time``: digits followed by ms, s, m, h, d, w, M or y, several
  concatenated; no spaces, no words).
- ``nginx_size[:MIN]``: nginx's size syntax (``ngx_parse_size``: digits with an optional k, K, m, M, g or G); with
  MIN (itself an nginx size), at least that many bytes.
- ``prom_duration``: a Prometheus duration (``model.ParseDuration``: 1h30m, 500ms, 15s).
- ``allow_list``: a non-empty list of IPv4/IPv6 addresses or CIDR blocks for nginx ``allow``, none of which
  admits every address (``all``, ``0.0.0.0/0``, ``::/0`` or any /0).
- ``chart_repo``: a Helm chart repository, https:// or oci:// only (the roles refuse plain-text http://).
- ``chart_version``: an exact chart version, SemVer 2 as Helm's chart versions are (``0.18.0``, ``v1.2.3-rc.1+build``;
  Helm accepts a leading ``v``); ranges (``>=0.17.0``, ``~0.18``), ``latest`` and partial versions (``0.18``) are
  refused, so every run installs the same chart.
- ``url``: an http:// or https:// URL with a host.
- ``abs_path``: an absolute path (a string starting with ``/``).
- ``name_token``: a name of letters, digits, ``.``, ``_`` and ``-`` starting with a letter or digit (a mig-parted
  config name: it goes into a systemd ``Environment=`` line and a command line unquoted).
- ``package_version``: an exact package version, ``0.13.0`` or ``0.13.0-1`` (a Debian revision), no ranges or words.
- ``systemd_unit[:TYPE]``: a systemd unit name (systemd.unit(5), ``unit_name_is_valid``: letters, digits and
  ``:-_.\\@``, at most 255 characters, then a unit type suffix; no globs, which ``Before=``/``After=`` do not take);
  with TYPE only that type (``systemd_unit:service``). ``systemd_units[:TYPE]``: a list of those, empty allowed.
- ``metric_name``: a custom metric name as prometheus-adapter publishes it and the HPA asks for it: lower-case letters,
  digits and ``_``, starting with a letter.
- ``prom_series``: a Prometheus metric or recording-rule name (Prometheus data model: ``[a-zA-Z_:][a-zA-Z0-9_:]*``).
- ``secret_key``: a Secret or ConfigMap data key (Kubernetes ``IsConfigMapKey``: letters, digits, ``-``, ``_`` and
  ``.``, at most 253 characters, not ``.``, ``..`` or starting with ``..``).
- ``scrape_interval``: a duration of whole seconds or milliseconds (``1s``, ``500ms``): Triton takes
  ``--metrics-interval-ms`` in milliseconds.
- ``serial``: Ansible's ``serial`` for the MIG rollout: a positive integer or a percentage 1%..100%
  (or a list of those, Ansible's batch list).
- ``k8s_mode``: ``apply`` or ``render``.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NGINX_TIME = re.compile(r"^([0-9]+(ms|s|m|h|d|w|M|y)?)$|^([0-9]+(ms|s|m|h|d|w|M|y))+$")
_NGINX_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
_PROM_DURATION = re.compile(r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$")
_PERCENT = re.compile(r"^([0-9]+(\.[0-9]+)?)%$")
_INT = re.compile(r"^[-+]?[0-9]+$")
# systemd's unit types (systemd.unit(5)) and the characters unit_name_is_valid() accepts in a name (src/basic/unit-name.c)
_UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(?P<type>[a-z]+)$")

# The formats that are one pattern each: kind -> (pattern, what a value breaking it is not).
_PATTERNS: Dict[str, Tuple[re.Pattern[str], str]] = {
    "abs_path": (re.compile(r"^/[^\n]*$"), "an absolute path (it must start with /)"),
    "name_token": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"), "a name of letters, digits, '.', '_' and '-' starting with a letter or digit"),
    "package_version": (re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.~+]+)?$"),
                        "an exact package version such as 0.13.0 (the installed version is compared with it)"),
    "chart_version": (re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"),
                      "an exact chart version such as 1.2.3 (ranges, 'latest' and partial versions are refused so every run installs the "
                      "same chart)"),
    "metric_name": (re.compile(r"^[a-z][a-z0-9_]*$"), "a custom metric name (lower-case letters, digits and '_', starting with a letter)"),
    "prom_series": (re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"), "a Prometheus metric name (letters, digits, '_' and ':', not starting with a digit)"),
    # IsConfigMapKey: at most 253 of [-._a-zA-Z0-9], and neither '.' nor starting with '..'
    "secret_key": (re.compile(r"^(?!\.\.)(?!\.$)[-._a-zA-Z0-9]{1,253}$"),
                   "a Secret key (letters, digits, '-', '_' and '.', at most 253 characters, not starting with '..')"),
    "scrape_interval": (re.compile(r"^[1-9][0-9]*(ms|s)$"), "a duration in s or ms such as 1s or 500ms"),
}

# Ansible's serial is an int, a percentage string or a list of those
SERIAL_HINT = "a positive number of nodes per batch (1 = one node at a time) or a percentage from 1% to 100%"


class InputRuleError(ValueError):
    """A rule itself is malformed (a bug in the caller, not in the user's input)."""


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def as_int(value: Any) -> Optional[int]:
    """The integer a value stands for (an int, or a string of decimal digits as ``-e`` gives), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip())
    return None


def _dns_label(value: Any, limit: int, rfc1035: bool) -> Optional[str]:
    kind = "an RFC 1035 DNS label (a lower-case letter first, then letters, digits and '-')" if rfc1035 else (
        "an RFC 1123 DNS label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
    )
    if not isinstance(value, str) or not value:
        return f"{_show(value)} must be {kind}"
    if not (_DNS1035 if rfc1035 else _LABEL).match(value):
        return f"{_show(value)} is not {kind}"
    if len(value) > limit:
        return f"'{value}' has {len(value)} characters; at most {limit} are allowed"
    return None


def _subdomain(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return f"{_show(value)} must be an RFC 1123 DNS subdomain such as models.example"
    if len(value) > 253:
        return f"'{value[:40]}...' has {len(value)} characters; a DNS subdomain has at most 253"
    bad = [part for part in value.split(".") if not _LABEL.match(part) or len(part) > 63]
    if bad:
        return f"{_show(value)} is not an RFC 1123 DNS subdomain (bad part {_show(bad[0])})"
    return None


def _int_range(value: Any, arg: str) -> Optional[str]:
    low_s, sep, high_s = arg.partition("..")
    if not sep:
        raise InputRuleError(f"int rule needs MIN..MAX, got {arg!r}")
    low = int(low_s) if low_s else None
    high = int(high_s) if high_s else None
    number = as_int(value)
    if number is None:
        return f"{_show(value)} is not an integer"
    if low is not None and number < low:
        return f"{number} is below the minimum {low}" + (f" (allowed: {low}..{high})" if high is not None else "")
    if high is not None and number > high:
        return f"{number} is above the maximum {high}" + (f" (allowed: {low}..{high})" if low is not None else "")
    return None


def _nginx_time(value: Any) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _NGINX_TIME.match(str(value)):
        return f"{_show(value)} is not an nginx time (digits with ms, s, m, h, d, w, M or y and no spaces, e.g. 300s or 1m30s)"
    return None


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def nginx_size_bytes(value: Any) -> int:
    """The bytes of an nginx size (``ngx_parse_size``): ``256k`` -> 262144. ValueError when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _NGINX_SIZE.match(str(value)):
        raise ValueError(f"{value!r} is not an nginx size")
    text = str(value)
    unit = text[-1].lower() if text[-1].isalpha() else ""
    return int(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit]


def _nginx_size(value: Any, minimum: str = "") -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _NGINX_SIZE.match(str(value)):
        return f"{_show(value)} is not an nginx size (digits with an optional k, m or g, e.g. 64m)"
    if minimum:
        try:
            least = nginx_size_bytes(minimum)
        except ValueError:
            raise InputRuleError(f"nginx_size:{minimum}: the minimum is not an nginx size") from None
        if nginx_size_bytes(value) < least:
            return f"{_show(value)} is less than {minimum}, the least nginx takes here"
    return None


def _prom_duration(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value or value == "0" or not _PROM_DURATION.match(value):
        return f"{_show(value)} is not a Prometheus duration (e.g. 15s, 500ms, 1h30m)"
    return None


def _allow_list(value: Any) -> Optional[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        return f"{_show(value)} must be a non-empty list of addresses or CIDR blocks such as ['10.0.0.0/8']"
    for entry in value:
        if not isinstance(entry, str):
            return f"entry {_show(entry)} is not an address or CIDR block"
        if entry.strip().lower() == "all":
            return "'all' admits every address; list the cluster's own networks instead"
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            return f"entry {_show(entry)} is not an IPv4/IPv6 address or CIDR block"
        if network.prefixlen == 0:
            return f"entry '{entry}' admits every IPv{network.version} address; list the cluster's own networks instead"
    return None


def _chart_repo(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not re.match(r"^(https|oci)://[^/\s]+", value):
        return f"{_show(value)} is not an https:// or oci:// chart repository (plain http:// is refused: charts are code)"
    return None


def _url(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        return f"{_show(value)} is not an http(s):// URL"
    return None


def _systemd_unit(value: Any, unit_type: str) -> Optional[str]:
    match = _UNIT_NAME.match(value) if isinstance(value, str) and len(value) <= 255 else None
    if not match or match.group("type") not in _UNIT_TYPES:
        return (
            f"{_show(value)} is not a systemd unit name (letters, digits and :_.@- then a type suffix such as "
            f".{unit_type or 'service'}; no globs)"
        )
    if unit_type and match.group("type") != unit_type:
        return f"{_show(value)} is not a .{unit_type} unit"
    return None


def _systemd_units(value: Any, unit_type: str) -> Optional[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return f"{_show(value)} must be a list of systemd unit names such as ['nvsm.service']"
    for entry in value:
        reason = _systemd_unit(entry, unit_type)
        if reason:
            return f"entry {reason}"
    return None


def _pattern(kind: str, value: Any, _arg: str = "") -> Optional[str]:
    pattern, what = _PATTERNS[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        return f"{_show(value)} is not {what}"
    return None


def serial_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot be the MIG rollout's ``serial``, or None."""
    values = value if isinstance(value, list) and value else [value]
    for item in values:
        number = as_int(item)
        if number is not None:
            if number < 1:
                return f"{_show(item)} is not {SERIAL_HINT} (0 or less would roll every GPU node at once)"
            continue
        match = _PERCENT.match(item.strip()) if isinstance(item, str) else None
        if match and 0 < float(match.group(1)) <= 100 and float(match.group(1)) >= 1:
            continue
        return f"{_show(item)} is not {SERIAL_HINT}"
    return None


def _k8s_mode(value: Any) -> Optional[str]:
    if value not in ("apply", "render"):
        return f"{_show(value)} is not a mode: apply (change the cluster) or render (write the objects to gpu_ops_render_dir)"
    return None


_CHECKS: Dict[str, Callable[[Any, str], Optional[str]]] = {
    "namespace": lambda v, a: _dns_label(v, 63, False),
    "label": lambda v, a: _dns_label(v, int(a or 63), False),
    "service": lambda v, a: _dns_label(v, int(a or 63), True),
    "subdomain": lambda v, a: _subdomain(v),
    "int": _int_range,
    "port": lambda v, a: _int_range(v, "1..65535"),
    "nginx_time": lambda v, a: _nginx_time(v),
    "nginx_size": _nginx_size,
    "prom_duration": lambda v, a: _prom_duration(v),
    "allow_list": lambda v, a: _allow_list(v),
    "chart_repo": lambda v, a: _chart_repo(v),
    "url": lambda v, a: _url(v),
    "serial": lambda v, a: serial_problem(v),
    "k8s_mode": lambda v, a: _k8s_mode(v),
    **{kind: functools.partial(_pattern, kind) for kind in _PATTERNS},
    "systemd_unit": _systemd_unit,
    "systemd_units": _systemd_units,
}

KINDS = tuple(sorted(_CHECKS))


def _split_rule(rule: Any) -> Tuple[str, str, bool]:
    if not isinstance(rule, str) or not rule:
        raise InputRuleError(f"a rule must be a non-empty string, got {rule!r}")
    optional = rule.endswith("?")
    kind, _sep, arg = rule.rstrip("?").partition(":")
    if kind not in _CHECKS:
        raise InputRuleError(f"unknown rule kind {kind!r}; known: {', '.join(KINDS)}")
    return kind, arg, optional


def check(rule: str, value: Any) -> Optional[str]:
    """Why ``value`` breaks ``rule``, or None. A rule ending in '?' also accepts an empty string or None."""
    kind, arg, optional = _split_rule(rule)
    if optional and (value is None or value == ""):
        return None
    return _CHECKS[kind](value, arg)


def problems(rules: Mapping[str, str], values: Any) -> List[str]:
    """Every problem of ``values`` (a mapping of name -> value, or a list in the order of ``rules``) against ``rules``
    (name -> rule), each as ``'name: reason'``. Names missing from a mapping are not checked (their role's default
    applies)."""
    if not isinstance(rules, Mapping):
        raise InputRuleError(f"rules must be a mapping of variable name to rule, got {type(rules).__name__}")
    if isinstance(values, Mapping):
        pairs = [(name, values[name]) for name in rules if name in values]
    elif isinstance(values, (list, tuple)):
        if len(values) != len(rules):
            raise InputRuleError(f"{len(values)} values for {len(rules)} rules")
        pairs = list(zip(rules, values))
    else:
        raise InputRuleError(f"values must be a mapping or a list, got {type(values).__name__}")
    found = []
    for name, value in pairs:
        reason = check(rules[name], value)
        if reason:
            found.append(f"{name}: {reason}")
    return found
