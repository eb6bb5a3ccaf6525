#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: install (tests/setup.sh:
# apt packages, a fresh venv with kql installed from this checkout, kernels,
# fixtures), then pytest in that venv.  .ci/run calls exactly this.  pytest's
# exit 5 (no tests collected) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
VENV=${KQL_VENV:-$PWD/.venv}
# The installed kql, never the checkout's folders: no cwd on sys.path (here
# or in the kql processes the tests start).
export PYTHONSAFEPATH=1
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "run.sh: pytest collected no tests" >&2
    exit 1
fi
exit $rc
