#!/usr/bin/env bash
# Run `ansible-test sanity` on a copy of the working tree placed where ansible-test
# wants a collection: .../ansible_collections/gpu_ops/mig_serving.
# Offline-safe: ansible-test bootstraps pip in its venvs with a get-pip script it
# downloads from a host that is not reachable everywhere; a shim that uses ensurepip
# is put in its cache instead (see docs/testing.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
py=$venv/bin/python
# Outside the repository: inside it, ansible-test would ask git and see an ignored directory.
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-ops-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/gpu_ops/mig_serving

# The pip version ansible-test bootstraps, read from ansible-test itself.
pip_version=$("$py" - <<'PY'
import pathlib, re, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
m = re.search(r"pip='([0-9.]+)'", src.read_text())
print(m.group(1) if m else "")
PY
)
if [ -n "$pip_version" ]; then
  cache="$HOME/.ansible/test/cache"
  mkdir -p "$cache"
  cat > "$cache/get_pip_${pip_version//./_}.py" <<'PY'
import subprocess, sys
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
PY
fi

mkdir -p "$dest"
cd "$root"
# Tracked and untracked-but-not-ignored files: exactly what a commit would hold.
git ls-files -z -co --exclude-standard | "$py" -c '
import os, shutil, sys
dest = sys.argv[1]
for rel in sys.stdin.buffer.read().decode().split("\0"):
    if rel and os.path.isfile(rel):
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(rel, os.path.join(dest, rel))
' "$dest"

# The collections our plugins import or document from (galaxy.yml dependencies: serving_verify takes kubernetes.core's
# auth options and doc fragment): ansible-test looks for them only beside this collection, under the same ansible_collections/.
for dep in kubernetes.core; do
  src=$("$py" -c 'import importlib.util, sys; print(list(importlib.util.find_spec("ansible_collections." + sys.argv[1]).submodule_search_locations)[0])' "$dep")
  mkdir -p "$work/ansible_collections/${dep%%.*}"
  cp -r "$src" "$work/ansible_collections/${dep%%.*}/${dep#*.}"
done

cd "$dest"
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PATH="$venv/bin:$PATH" ansible-test sanity --venv --python "$pyver" --color no "$@"
