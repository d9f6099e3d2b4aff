#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv with nni-bio, its pinned dependencies
# (constraints.txt), the test and documentation tools and the example plugin. Safe to run again: it skips the
# install when nothing it depends on changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi

stamp=.venv/.nni-bio-setup
shopt -s nullglob
plugins=(examples/plugins/*/pyproject.toml)
want=$(cat constraints.txt pyproject.toml scripts/setup.sh "${plugins[@]}" | sha256sum | cut -d' ' -f1)
# Patch NNI's installed manager (nni_bio/nas/_compat.py): NNI 3.0's remote training service gives a trial
# whichever queued parameters come first (patch_v3_parameter_binding binds them to their trial), and
# its REST server listens on every interface without authentication (patch_manager_listen_address:
# 127.0.0.1, plus nniManagerIp for remote workers). Every run: idempotent, and a reinstalled nni
# brings the unpatched files back.
patch_nni() { .venv/bin/python -m nni_bio.nas._compat patch-nni-manager >/dev/null; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    patch_nni
    exit 0
fi

echo "setup: installing nni-bio and its pinned dependencies into .venv (first time: a few minutes)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install --quiet -c constraints.txt -e ".[test,docs]"
for plugin in "${plugins[@]}"; do
    .venv/bin/pip install --quiet -c constraints.txt --no-deps -e "$(dirname "$plugin")"
done
# torchattacks (nni-bio attack) pins requests~=2.25.1 in its metadata, which conflicts with NNI's
# requests; it never imports requests, so it goes in without dependencies and `pip check` ignores
# that one known complaint (it is there on a re-run) while failing on any other.
.venv/bin/pip install --no-deps torchattacks==3.5.1
if ! check=$(.venv/bin/pip check); then
    problems=$(printf '%s\n' "$check" | grep -v '^torchattacks 3\.5\.1 has requirement requests~=2\.25\.1' || true)
    if [ -n "$problems" ]; then
        printf '%s\n' "$problems" >&2
        exit 1
    fi
fi
patch_nni
echo "$want" > "$stamp"
