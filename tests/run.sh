#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: install, build the
# fixtures, run pytest.  .ci/run calls exactly this.  pytest's exit 5 (no
# tests collected) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
set +e
python3 -m pytest -q -p no:cacheprovider tests "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "run.sh: pytest collected no tests" >&2
    exit 1
fi
exit $rc
