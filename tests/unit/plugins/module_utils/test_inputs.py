# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The chart_version rule of _inputs (the one chart-version check of every role with a Helm chart)."""
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._inputs import InputRuleError, check, nginx_size_bytes, problems


# Helm chart versions are SemVer 2 (helm.sh/docs/topics/charts: "version: A SemVer 2 version"); Helm accepts a leading v.
@pytest.mark.parametrize("value", ["0.18.0", "67.8.0", "v1.2.3", "1.2.3-rc.1", "1.2.3+build.5", "v0.17.3-alpha.1+g1234"])
def test_exact_versions_pass(value: str) -> None:
    assert check("chart_version", value) is None


@pytest.mark.parametrize("value", ["0.18", "latest", ">=0.17.0", "~0.18.0", "^1.2.3", "0.18.x", "", " 0.18.0", "0.18.0 ", "0.18.0\n", 18, None, True])
def test_ranges_partial_and_non_strings_are_refused(value: Any) -> None:
    reason = check("chart_version", value)
    assert reason is not None
    assert "is not an exact chart version such as 1.2.3 (ranges, 'latest' and partial versions are refused" in reason


def test_message_names_the_variable_and_the_value() -> None:
    assert problems({"gpu_plugins_chart_version": "chart_version"}, {"gpu_plugins_chart_version": "0.18"}) == [
        "gpu_plugins_chart_version: '0.18' is not an exact chart version such as 1.2.3 (ranges, 'latest' and partial versions are "
        "refused so every run installs the same chart)"
    ]


# The rule kinds the roles' rules tables use for formats of the systems behind them; each: values that pass, values
# refused, and a part of the reason.
RULES = [
    ("abs_path", ["/srv/models", "/"], ["srv/models", "", 5, None], "is not an absolute path (it must start with /)"),
    ("name_token", ["all-1g.5gb", "A_1", "7g.40gb"], ["all 1g", "-x", "", "a/b", "a;b", 3], "is not a name of letters, digits"),
    ("package_version", ["0.13.0", "0.13.0-1", "1.2.3-1ubuntu2~22.04"], ["0.13", "latest", ">=0.13.0", "v0.13.0", 13],
     "is not an exact package version such as 0.13.0"),
    # systemd.unit(5); unit_name_is_valid(): at most 255 characters (UNIT_NAME_MAX 256 with the terminating NUL)
    ("systemd_unit", ["nvsm.service", "dcgm-exporter.service", "getty@tty1.service", "-.mount", "gpu.target"],
     ["nvsm*.service", "nvsm", "nvsm.services", "a b.service", "x" * 250 + ".service", ""], "is not a systemd unit name"),
    ("systemd_unit:service", ["nvidia-mig-manager.service"], ["nvidia-mig-manager.timer"], "is not a .service unit"),
    ("systemd_units", [[], ["nvsm.service", "dcgm.service"]], ["nvsm.service", [None], ["ok.service", "bad*.service"]], ""),
    ("metric_name", ["avg_time_queue_us", "a1"], ["Avg", "1a", "avg-time", "avg:time", ""], "is not a custom metric name"),
    # Prometheus data model: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*
    ("prom_series", ["namespace_pod:nv_inference_queue_duration_us:per_request", "_x", "a:b"], ["1x", "a-b", "a b", ""],
     "is not a Prometheus metric name"),
    # Kubernetes IsConfigMapKey (apimachinery pkg/util/validation): [-._a-zA-Z0-9]+, at most 253, not '.', '..', '..x'
    ("secret_key", ["api-key", "tls.crt", "admin_user", "a" * 253], ["a/b", ".", "..", "..data", "a" * 254, "", 1],
     "is not a Secret key"),
    ("scrape_interval", ["1s", "500ms", "15s"], ["1m", "0s", "1.5s", "s", "1"], "is not a duration in s or ms such as 1s or 500ms"),
    ("nginx_size", ["64m", "1K", "4096", 4096], ["64MB", "1.5m", "", "-1k", True], "is not an nginx size"),
    # ngx_http_upstream_zone: a zone smaller than 8 pages is refused ("zone ... is too small"); 32k with 4 KiB pages
    ("nginx_size:32k", ["32k", "32768", "1m", "1G"], ["31k", "32767", "0"], "is less than 32k, the least nginx takes here"),
]


@pytest.mark.parametrize(("rule", "good", "bad", "reason"), RULES, ids=[r[0] for r in RULES])
def test_rule_kinds(rule: str, good: Any, bad: Any, reason: str) -> None:
    for value in good:
        assert check(rule, value) is None, (rule, value)
    for value in bad:
        found = check(rule, value)
        assert found is not None, (rule, value)
        assert reason in found, found


def test_unit_list_names_the_bad_entry() -> None:
    assert check("systemd_units", ["nvsm.service", "nvsm-*.service"]) == (
        "entry 'nvsm-*.service' is not a systemd unit name (letters, digits and :_.@- then a type suffix such as .service; no globs)"
    )


def test_nginx_size_bytes_as_ngx_parse_size() -> None:
    assert [nginx_size_bytes(v) for v in ("256k", "256K", "1m", "2G", "512", 7)] == [262144, 262144, 1 << 20, 2 << 30, 512, 7]
    with pytest.raises(ValueError, match="is not an nginx size"):
        nginx_size_bytes("1MB")
    with pytest.raises(InputRuleError, match="the minimum is not an nginx size"):
        check("nginx_size:lots", "1m")


def test_optional_rules_accept_empty() -> None:
    assert check("abs_path?", "") is None
    assert check("abs_path?", None) is None
    assert check("abs_path", "") is not None
