# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake ``helm`` (v3) command line: test equipment, never shipped (see README.md here).

It answers the commands kubernetes.core.helm (6.x) runs, in helm 3's output formats, from a state directory
($FAKE_HELM_DIR): ``charts.yaml`` (the charts the "repositories" hold), ``releases.json`` (installed releases) and
``calls.jsonl`` (every invocation, appended). Anything it does not reproduce fails loudly (exit 97, the argv on
stderr) and is recorded with ``"reproduced": false``.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

HELM_VERSION = "v3.16.4"
BUILD_INFO = f'version.BuildInfo{{Version:"{HELM_VERSION}", GitCommit:"7877b45b63f95635153b29a42c0c2f4273ec45ca", GitTreeState:"clean", GoVersion:"go1.22.7"}}'
NOT_REPRODUCED = 97

# flags that take a value (given as --flag=value or --flag value); the others are booleans
_VALUE_FLAGS = {"--output", "-o", "--filter", "-f", "--values", "--version", "--repo", "--timeout", "--namespace", "-n",
                "--kubeconfig", "--kube-context", "--history-max", "--post-renderer", "--set", "--dry-run"}
_BOOL_FLAGS = {"--deployed", "--all", "-a", "--all-values", "-i", "--install", "--wait", "--wait-for-jobs", "--atomic",
               "--cleanup-on-fail", "--create-namespace", "--reset-values", "--reuse-values", "--skip-crds", "--force", "--short"}


class NotReproduced(Exception):
    """An invocation this fake does not answer."""


def _state_dir() -> Path:
    value = os.environ.get("FAKE_HELM_DIR", "")
    if not value:
        raise NotReproduced("FAKE_HELM_DIR is not set")
    return Path(value)


def parse(argv: List[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    """Positional words and flags (each flag's values in order); an unknown flag is not reproduced."""
    words: List[str] = []
    flags: Dict[str, List[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name in _VALUE_FLAGS:
                if not eq:
                    if name == "--dry-run":  # helm 3: a bare --dry-run means client
                        value = "client"
                    else:
                        i += 1
                        if i >= len(argv):
                            raise NotReproduced(f"flag needs an argument: {name}")
                        value = argv[i]
                flags.setdefault(name, []).append(value)
            elif name in _BOOL_FLAGS:
                flags.setdefault(name, []).append(value if eq else "true")
            else:
                raise NotReproduced(f"unknown flag: {arg}")
        else:
            words.append(arg)
        i += 1
    return words, flags


def _one(flags: Dict[str, List[str]], *names: str) -> Optional[str]:
    for name in names:
        if name in flags:
            return flags[name][-1]
    return None


def _namespace(flags: Dict[str, List[str]]) -> str:
    return _one(flags, "--namespace", "-n") or os.environ.get("HELM_NAMESPACE") or "default"


def _load_releases(state: Path) -> Dict[str, Dict[str, Any]]:
    path = state / "releases.json"
    loaded: Dict[str, Dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
    return loaded


def _save_releases(state: Path, releases: Dict[str, Dict[str, Any]]) -> None:
    tmp = state / "releases.json.tmp"
    tmp.write_text(json.dumps(releases, indent=2, sort_keys=True) + "\n")
    tmp.replace(state / "releases.json")


def _find_chart(state: Path, repo: Optional[str], name: str, version: Optional[str]) -> Dict[str, Any]:
    path = state / "charts.yaml"
    charts: List[Dict[str, Any]] = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    candidates = [c for c in charts if c["name"] == name and (repo is None or c["repository"] == repo)]
    if not candidates:
        raise HelmError(f'Error: chart "{name}" not found in {repo} repository' if repo else f'Error: repo {name.split("/", maxsplit=1)[0]} not found')
    for chart in candidates:
        if version is None or chart["version"] == version.lstrip("v") or chart["version"] == version:
            return chart
    raise HelmError(f'Error: chart "{name}" version "{version}" not found in {repo} repository')


class HelmError(Exception):
    """What helm itself prints as "Error: ..." with exit 1."""


def _chart_yaml(chart: Dict[str, Any]) -> str:
    # `helm show chart` prints Chart.yaml re-serialised by helm (keys in its struct order, omitempty)
    doc: Dict[str, Any] = {"apiVersion": "v2", "appVersion": chart.get("appVersion", ""), "description": chart.get("description", ""),
                           "name": chart["name"], "type": "application", "version": chart["version"]}
    return yaml.safe_dump({k: v for k, v in doc.items() if v != ""}, sort_keys=False)


def _list_entry(rel: Dict[str, Any]) -> Dict[str, Any]:
    return {"app_version": rel["app_version"], "chart": rel["chart"], "name": rel["name"], "namespace": rel["namespace"],
            "revision": str(rel["revision"]), "status": rel["status"], "updated": rel["updated"]}


def _values_from_files(flags: Dict[str, List[str]]) -> Dict[str, Any]:
    merged: Dict[str, Any] = {}
    for path in flags.get("-f", []) + flags.get("--values", []):
        doc = yaml.safe_load(Path(path).read_text()) or {}
        merged = _coalesce(merged, doc)
    return merged


def _coalesce(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _coalesce(out[key], value)
        else:
            out[key] = value
    return out


def run(argv: List[str], out: List[str]) -> int:
    """Answer one invocation (words already split as the module's run_command does); output lines into out."""
    state = _state_dir()
    words, flags = parse(argv)
    if words == ["version"] and not flags:
        out.append(BUILD_INFO)
        return 0
    if words == ["plugin", "list"] and not flags:
        out.append("NAME\tVERSION\tDESCRIPTION")  # no plugins (no helm-diff)
        return 0
    if len(words) == 1 and words[0] == "list":
        if _one(flags, "--output", "-o") != "yaml":
            raise NotReproduced("helm list without --output=yaml")
        pattern = re.compile(_one(flags, "--filter") or "")
        namespace = _namespace(flags)
        deployed_only = "--deployed" in flags or "--all" not in flags
        rels = [r for r in _load_releases(state).values() if r["namespace"] == namespace and pattern.search(r["name"])
                and (not deployed_only or r["status"] == "deployed")]
        out.append(yaml.safe_dump([_list_entry(r) for r in sorted(rels, key=lambda r: r["name"])], sort_keys=True).rstrip("\n"))
        return 0
    if len(words) == 3 and words[:2] == ["get", "values"]:
        if _one(flags, "--output", "-o") != "yaml" or set(flags) - {"--output", "-o", "--namespace", "-n"}:
            raise NotReproduced("helm get values other than --output=yaml")
        rel = _load_releases(state).get(f"{_namespace(flags)}/{words[2]}")
        if rel is None:
            raise HelmError("Error: release: not found")
        out.append(yaml.safe_dump(rel["values"], sort_keys=True).rstrip("\n") if rel["values"] else "null")
        return 0
    if len(words) == 3 and words[:2] == ["show", "chart"]:
        if set(flags) - {"--version", "--repo"}:
            raise NotReproduced("helm show chart with other flags")
        chart = _find_chart(state, _one(flags, "--repo"), words[2], _one(flags, "--version"))
        out.append(_chart_yaml(chart).rstrip("\n"))
        return 0
    if len(words) == 3 and words[0] == "upgrade" and ("-i" in flags or "--install" in flags):
        return _upgrade(state, words[1], words[2], flags, out)
    raise NotReproduced("command not reproduced")


def _upgrade(state: Path, name: str, chart_ref: str, flags: Dict[str, List[str]], out: List[str]) -> int:
    namespace = _namespace(flags)
    chart = _find_chart(state, _one(flags, "--repo"), chart_ref, _one(flags, "--version"))
    releases = _load_releases(state)
    key = f"{namespace}/{name}"
    previous = releases.get(key)
    revision = (previous["revision"] + 1) if previous else 1
    values = _values_from_files(flags)
    dry_run = _one(flags, "--dry-run")
    now = datetime.datetime.now(datetime.timezone.utc)
    updated = now.strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")
    if dry_run is None:
        releases[key] = {"name": name, "namespace": namespace, "revision": revision, "status": "deployed", "updated": updated,
                         "chart": f"{chart['name']}-{chart['version']}", "app_version": chart.get("appVersion", ""), "values": values}
        _save_releases(state, releases)
    elif dry_run not in ("client", "server", "true"):
        raise NotReproduced(f"--dry-run={dry_run}")
    if previous is None and dry_run is None:
        out.append(f'Release "{name}" does not exist. Installing it now.')
    elif dry_run is None:
        out.append(f'Release "{name}" has been upgraded. Happy Helming!')
    out.extend([f"NAME: {name}", f"LAST DEPLOYED: {now.strftime('%a %b %d %H:%M:%S %Y')}", f"NAMESPACE: {namespace}",
                f"STATUS: {'pending-upgrade' if dry_run and previous else 'pending-install' if dry_run else 'deployed'}",
                f"REVISION: {revision}", "TEST SUITE: None"])
    return 0


def main(argv: List[str]) -> int:
    out: List[str] = []
    record: Dict[str, Any] = {"argv": argv, "namespace": os.environ.get("HELM_NAMESPACE"), "kubeconfig": os.environ.get("KUBECONFIG"),
                              "reproduced": True, "rc": 0}
    try:
        rc = run(argv, out)
    except HelmError as err:
        sys.stderr.write(f"{err}\n")
        rc = 1
    except NotReproduced as err:
        record["reproduced"] = False
        sys.stderr.write(f"fake helm: NOT REPRODUCED ({err}): helm {' '.join(argv)}\n")
        rc = NOT_REPRODUCED
    record["rc"] = rc
    state = os.environ.get("FAKE_HELM_DIR")
    if state:
        with open(Path(state) / "calls.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
