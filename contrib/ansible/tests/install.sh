#!/usr/bin/env bash
# Installs the real ansible-core from PyPI into a venv cached outside the
# clone, and prints the venv's directory. Keyed by the version; reused when
# complete (the stamp is written last, the directory moved into place only
# then, so an interrupted install is never mistaken for one).
#
#   contrib/ansible/tests/install.sh   -> /var/cache/sandbox-tests/ansible-venv-2.19.14
set -euo pipefail

ANSIBLE_CORE_VERSION=2.19.14
CACHE=${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}
DEST=$CACHE/ansible-venv-$ANSIBLE_CORE_VERSION
STAMP=$DEST/.complete
PYTHON=${PYTHON:-python3}

if [[ -f $STAMP ]]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.ansible-venv-$ANSIBLE_CORE_VERSION.lock"
flock 9
if [[ -f $STAMP ]]; then
  echo "$DEST"
  exit 0
fi
# A venv records its own path: build it where it will live, under a
# name that is not the stamp's, and mark it complete last.
rm -rf "$DEST"
echo "install.sh: installing ansible-core==$ANSIBLE_CORE_VERSION into $DEST (once)" >&2
start=$SECONDS
"$PYTHON" -m venv "$DEST"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION" >&2
"$DEST/bin/ansible-playbook" --version >/dev/null
touch "$STAMP"
echo "install.sh: done in $((SECONDS - start)) s" >&2
echo "$DEST"
