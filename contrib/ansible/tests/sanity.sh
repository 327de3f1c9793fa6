#!/usr/bin/env bash
# ansible-test sanity on the collection, with the real ansible-core from
# PyPI (installed once into a cached venv by install.sh). ansible-test
# wants the collection at ansible_collections/<namespace>/<name>/: it is
# copied there, in a temp dir. No docker here: the venv's own Python runs
# the tests (its requirements installed into that venv, cached too).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$("$here/tests/install.sh")
py=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/sandbox/sandbox
mkdir -p "$dest"
cp -a "$here/." "$dest/"
cd "$dest"
# ansible-test looks at version control to find the files to test.
git init -q . && git add -A >/dev/null
# ansible-test gives each sanity test a venv, bootstrapped by a get-pip
# script it downloads from ci-files.testing.ansible.com, which the CI
# network does not reach. A stand-in (ensurepip, then pip from PyPI) sits
# where it looks, in a HOME of its own (cached beside the venv).
export HOME=$venv/ansible-test-home
pip_version=$("$venv/bin/python" - <<'PY'
import pathlib, re, ansible_test
p = pathlib.Path(ansible_test.__file__).parent / '_data/requirements/ansible-test.txt'
for line in p.read_text().splitlines():
    m = re.match(r'pip ?== ?([0-9.]+)', line)
    if m:
        print(m.group(1))
PY
)
pip_version=${pip_version:-24.2}
get_pip=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$get_pip")"
cat >"$get_pip" <<'PY'
# Stand-in for get-pip.py (see tests/sanity.sh): ensurepip, then pip install.
import subprocess, sys
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
PY
start=$SECONDS
PATH=$venv/bin:$PATH "$venv/bin/ansible-test" sanity --python "$py" --color no "$@"
echo "sanity.sh: ansible-test sanity passed in $((SECONDS - start)) s" >&2
