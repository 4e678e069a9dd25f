# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate the collection's reference pages from their one source.

    .venv/bin/python scripts/gen-docs.py                rewrite the generated pages under docs/
    .venv/bin/python scripts/gen-docs.py --dest DIR     write them under DIR instead (the test compares DIR with docs/)

Sources: the modules' and the lookup's DOCUMENTATION/EXAMPLES/RETURN, the filters' plugins/filter/*.yml and the
roles' meta/argument_specs.yml, rendered by antsibull-docs (pinned in requirements/test.txt) in its
``simplified-rst`` format, the one meant to be read on a Git forge without Sphinx; and meta/shared_variables.yml,
rendered here as a Markdown table. antsibull-docs writes one flat directory of ``<name>_<type>.rst`` pages whose
links assume the docs.ansible.com tree; this script files each page under docs/<type>s/<name>.rst, points the
links between our pages at those files and the links to other collections at docs.ansible.com, and fails on a
link it cannot resolve.

Everything under GENERATED_DIRS and the GENERATED_FILES belongs to this script: a file there that it did not
write is deleted. The collection is read from the checkout through collections/ (ansible.cfg's link), offline.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE, NAME = "gpu_ops", "mig_serving"
COLLECTION = f"{NAMESPACE}.{NAME}"
DOCS = ROOT / "docs"
SHARED_VARIABLES = ROOT / "meta" / "shared_variables.yml"

# Plugin and role types this collection has (and might get); each gets docs/<type>s/.
TYPES = ("module", "filter", "lookup", "test", "role", "inventory", "callback", "connection", "become", "cache", "vars")
GENERATED_DIRS = tuple(f"{t}s" for t in TYPES)
INDEX = "reference.rst"
SHARED_PAGE = "shared_variables.md"
GENERATED_FILES = (INDEX, SHARED_PAGE)
# Where pages of other collections live (antsibull-docs' docsite layout).
OTHER_COLLECTIONS_URL = "https://docs.ansible.com/ansible/latest/collections/{ns}/{coll}/{name}_{type}.html"

_TYPE_RE = "|".join(TYPES)
# `text <name_type.rst#anchor>`__ (simplified-rst plugin references, index entries and see-also lists)
_RST_LINK = re.compile(r"`(?P<text>(?:[^`\\]|\\.)*?) <(?P<name>[A-Za-z0-9_]+)_(?P<type>" + _TYPE_RE + r")\.rst(?P<anchor>#[^>]*)?>`(?P<tail>__?)")
# href='../../ns/coll/name_type.html#anchor' (references inside the HTML option tables)
_HTML_LINK = re.compile(
    r"href=(?P<q>['\"])\.\./\.\./(?P<ns>[a-z0-9_]+)/(?P<coll>[a-z0-9_]+)/(?P<name>[A-Za-z0-9_]+)_(?P<type>" + _TYPE_RE + r")\.html"
    r"(?P<anchor>#[^'\"]*)?(?P=q)"
)
_FQCN = re.compile(r"(?P<ns>[a-z0-9_]+)\.(?P<coll>[a-z0-9_]+)\.(?P<name>[A-Za-z0-9_]+)")


def fail(msg: str) -> None:
    raise SystemExit(f"gen-docs: {msg}")


def source_of(kind: str, name: str) -> str:
    """The file a generated page is made from, for the banner that says where to edit."""
    candidates = {
        "module": [f"plugins/modules/{name}.py"],
        "filter": [f"plugins/filter/{name}.yml", f"plugins/filter/{name}.py"],
        "test": [f"plugins/test/{name}.yml", f"plugins/test/{name}.py"],
        "role": [f"roles/{name}/meta/argument_specs.yml"],
    }.get(kind, [f"plugins/{kind}/{name}.py"])
    for rel in candidates:
        if (ROOT / rel).is_file():
            return rel
    return f"the DOCUMENTATION of the {kind} {name} under plugins/"


def antsibull_config(path: Path) -> None:
    """Where the pages say the collection comes from: the repository of galaxy.yml, not Galaxy."""
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    repo = str(galaxy["repository"]).rstrip("/")
    path.write_text(
        "collection_url = {\n"
        f"    '{COLLECTION}' = '{repo}'\n"
        "    '*' = 'https://galaxy.ansible.com/ui/repo/published/{namespace}/{name}/'\n"
        "}\n"
        "collection_install = {\n"
        f"    '{COLLECTION}' = 'ansible-galaxy collection install git+{repo}.git'\n"
        "    '*' = 'ansible-galaxy collection install {namespace}.{name}'\n"
        "}\n",
        encoding="utf-8",
    )


def run_antsibull(out: Path, strict: bool = True) -> None:
    bindir = Path(sys.executable).parent
    exe = bindir / "antsibull-docs"
    if not exe.is_file():
        fail(f"{exe} not found: install requirements/test.txt into the environment that runs this script")
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # antsibull-docs runs ansible / ansible-doc
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / "collections")  # the checkout, through its relative link
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "0"
    with tempfile.TemporaryDirectory(prefix="gen-docs-cfg-") as cfgdir:
        cfg = Path(cfgdir) / "antsibull-docs.cfg"
        antsibull_config(cfg)
        argv = [
            str(exe), "--config-file", str(cfg), "collection", "--use-current", "--squash-hierarchy",
            "--output-format", "simplified-rst", "--no-add-antsibull-docs-version", "--dest-dir", str(out), COLLECTION,
        ]
        if strict:
            argv.insert(argv.index("--use-current"), "--fail-on-error")
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        fail(f"antsibull-docs failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def target_path(filename: str) -> Tuple[str, str, str]:
    """antsibull-docs' flat file name -> (type, name, our relative path)."""
    if filename == "index.rst":
        return "index", COLLECTION, INDEX
    m = re.fullmatch(r"(?P<name>[A-Za-z0-9_]+)_(?P<type>" + _TYPE_RE + r")\.rst", filename)
    if not m:
        fail(f"antsibull-docs wrote {filename}, which this script does not know where to file")
        raise AssertionError  # unreachable, for the type checker
    return m["type"], m["name"], f"{m['type']}s/{m['name']}.rst"


def relative(from_page: str, to_page: str) -> str:
    return os.path.relpath(to_page, os.path.dirname(from_page) or ".").replace(os.sep, "/")


def rewrite_links(text: str, page: str, pages: Dict[Tuple[str, str], str]) -> str:
    def own(type_: str, name: str, anchor: str, link: str) -> str:
        target = pages.get((type_, name))
        if target is None:
            fail(f"{page}: link {link!r} names {COLLECTION}'s {type_} {name}, which has no page")
            raise AssertionError
        return relative(page, target) + anchor

    def rst(m: re.Match[str]) -> str:
        fqcn = _FQCN.fullmatch(m["text"].replace("\\", ""))
        anchor = m["anchor"] or ""
        if fqcn and f"{fqcn['ns']}.{fqcn['coll']}" != COLLECTION:
            url = OTHER_COLLECTIONS_URL.format(ns=fqcn["ns"], coll=fqcn["coll"], name=m["name"], type=m["type"])
        else:
            url = own(m["type"], m["name"], anchor, m[0])
        return f"`{m['text']} <{url}>`{m['tail']}"

    def html(m: re.Match[str]) -> str:
        if f"{m['ns']}.{m['coll']}" != COLLECTION:
            url = OTHER_COLLECTIONS_URL.format(ns=m["ns"], coll=m["coll"], name=m["name"], type=m["type"])
        else:
            url = own(m["type"], m["name"], m["anchor"] or "", m[0])
        return f"href={m['q']}{url}{m['q']}"

    return _HTML_LINK.sub(html, _RST_LINK.sub(rst, text))


_LOCAL_LINK = re.compile(r"<(?P<a>[^<>:`\s]+\.(?:rst|md|html))(?:#[^>]*)?>`|href=['\"](?P<b>[^'\":]+\.(?:rst|md|html))(?:#[^'\"]*)?['\"]")


def expected_pages() -> List[str]:
    """Pages that must exist: antsibull-docs leaves out a role whose argument spec it cannot read, without failing."""
    found = [f"roles/{p.parent.parent.name}.rst" for p in (ROOT / "roles").glob("*/meta/argument_specs.yml")]
    for kind, pattern in (("module", "modules/*.py"), ("lookup", "lookup/*.py"), ("filter", "filter/*.yml"), ("test", "test/*.yml")):
        found += [f"{kind}s/{p.stem}.rst" for p in (ROOT / "plugins").glob(pattern) if not p.name.startswith("_")]
    return sorted(found)


def check_links(pages: Dict[str, str]) -> None:
    """Every relative link of every page leads to a page of the set."""
    for page, text in sorted(pages.items()):
        for m in _LOCAL_LINK.finditer(text):
            link = m["a"] or m["b"]
            target = os.path.normpath(os.path.join(os.path.dirname(page), link)).replace(os.sep, "/")
            if target not in pages:
                fail(f"{page}: link {link} leads to no generated page")


def banner(kind: str, name: str) -> str:
    if kind == "index":
        return ".. Generated by scripts/gen-docs.py from the collection's plugins and roles; do not edit.\n"
    return f".. Generated by scripts/gen-docs.py from {source_of(kind, name)}; edit that file, then run the script.\n"


def plugin_pages(workdir: Path, strict: bool = True) -> Dict[str, str]:
    """Run antsibull-docs and return {relative path: text} of the pages filed under our layout."""
    run_antsibull(workdir, strict)
    files = sorted(p.name for p in workdir.iterdir() if p.is_file())
    placed = {f: target_path(f) for f in files}
    pages = {(kind, name): rel for kind, name, rel in placed.values()}
    out: Dict[str, str] = {}
    for filename, (kind, name, rel) in placed.items():
        text = (workdir / filename).read_text(encoding="utf-8")
        text = rewrite_links(text, rel, pages)
        if kind == "index":
            title = f"{COLLECTION} reference"
            text = re.sub(r"^Gpu_Ops\.Mig_Serving\n=+\n", f"{title}\n{'=' * len(title)}\n", text, count=1, flags=re.M)
            shared = f"\nThe variables several roles share: `{SHARED_PAGE} <{SHARED_PAGE}>`_.\n"
            text = text.replace("\nPlugin Index\n", shared + "\nPlugin Index\n", 1)
        first, newline, rest = text.partition("\n")
        out[rel] = f"{first}{newline}{banner(kind, name)}{rest}" if first.startswith("..") else banner(kind, name) + text
    return out


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ").strip()


def _inline(value: Any) -> str:
    return "`" + json.dumps(value, sort_keys=True) + "`"


def shared_variables_page() -> str | None:
    """meta/shared_variables.yml (name -> {default, type, choices?, description}) as a Markdown page."""
    if not SHARED_VARIABLES.is_file():
        return None
    rel = SHARED_VARIABLES.relative_to(ROOT)
    data = yaml.safe_load(SHARED_VARIABLES.read_text(encoding="utf-8"))
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        only = next(iter(data.values()))
        if all(isinstance(v, dict) for v in only.values()) and not str(next(iter(data))).startswith("gpu_ops_"):
            data = only  # one wrapping key (for example `shared_variables:`)
    if not isinstance(data, dict) or not data:
        fail(f"{rel}: must be a mapping of variable name to {{default, type, choices, description}}")
    rows: List[str] = []
    for var in sorted(data):
        spec = data[var]
        if not isinstance(spec, dict) or not spec.get("description"):
            fail(f"{rel}: {var}: needs a mapping with a description")
        desc = spec["description"]
        desc = " ".join(str(d) for d in desc) if isinstance(desc, list) else str(desc)
        type_ = str(spec.get("type", "raw"))
        if spec.get("elements"):
            type_ += f" of {spec['elements']}"
        default = _inline(spec["default"]) if "default" in spec else "(none)"
        choices = ", ".join(_inline(c) for c in spec.get("choices") or []) or ""
        rows.append(f"| `{var}` | {_cell(type_)} | {_cell(default)} | {_cell(choices)} | {_cell(desc)} |")
    return "\n".join(
        [
            f"<!-- Generated by scripts/gen-docs.py from {rel}; edit that file, then run the script. -->",
            "# Shared collection variables",
            "",
            f"The settings that several roles need, listed once in `{rel}`. Set them once (for example in",
            "`group_vars/all.yml`); each role's own variable defaults to the shared one, so a role's own variable",
            "still overrides it for that role alone. The roles' pages ([reference](reference.rst)) list their own variables.",
            "",
            "| variable | type | default | choices | meaning |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def generate(strict: bool = True) -> Dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="gen-docs-") as tmp:
        pages = plugin_pages(Path(tmp), strict)
    shared = shared_variables_page()
    if shared is not None:
        pages[SHARED_PAGE] = shared
    missing = [page for page in expected_pages() if page not in pages]
    if missing:
        msg = f"antsibull-docs wrote no page for {', '.join(missing)}: run `ansible-doc -t <type> {COLLECTION}.<name>` to see why"
        if strict:
            fail(msg)
        print(f"gen-docs: WARNING: {msg}", file=sys.stderr)
    check_links(pages)
    return pages


def write(pages: Dict[str, str], dest: Path) -> List[str]:
    """Write the pages under dest, delete what the script owns there but did not write; return the changed paths."""
    changed: List[str] = []
    owned = [dest / f for f in GENERATED_FILES] + [p for d in GENERATED_DIRS for p in sorted((dest / d).rglob("*")) if p.is_file()]
    for path in owned:
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in pages:
            path.unlink()
            changed.append(f"deleted {rel}")
    for d in GENERATED_DIRS:
        if (dest / d).is_dir() and not any((dest / d).iterdir()):
            shutil.rmtree(dest / d)
    for rel, text in sorted(pages.items()):
        path = dest / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(f"wrote {rel}")
    return changed


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DOCS, help="directory to write to (default: docs/)")
    parser.add_argument(
        "--allow-doc-errors", action="store_true",
        help="while a plugin's documentation is being written: write antsibull-docs' error page for it instead of failing",
    )
    args = parser.parse_args(argv)
    for line in write(generate(strict=not args.allow_doc_errors), args.dest.resolve()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
