#!/usr/bin/env bash
# The project's test command: installs what is missing (tools/install.sh), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh test/espnet2/enh/clipsep -k unet`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest "${@:-test}"
