#!/usr/bin/env bash
# The project's test command: installs what is missing (tools/install.sh), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh test/espnet2/enh/clipsep -k unet`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
# browser screenshots of the report pages (test artifacts), outside the checkout
export CLIPSEP_TEST_ARTIFACTS=${CLIPSEP_TEST_ARTIFACTS:-${TMPDIR:-/tmp}/clipsep-test-artifacts}
echo "test artifacts (report screenshots): ${CLIPSEP_TEST_ARTIFACTS}"
exec .venv/bin/python -m pytest "${@:-test}"
