#!/usr/bin/env bash
# Install everything this repo needs, or reuse what is already there (seconds when nothing changed):
#   1. Debian packages the recipes use (ffmpeg, fluidsynth + GM soundfont, sox, emoji font, recorded
#      sound effects, espeak-ng, chromium for the report pages' browser test) when absent;
#   2. the pinned Python dependencies (tools/requirements.txt) in a cached environment keyed by a hash of
#      that file and the interpreter, shared by every checkout on this machine;
#   3. ./.venv: a small virtual environment of this checkout that sees those dependencies and holds this
#      repo as an editable install (so the ESPnet start-up hook and our packages resolve to this tree);
#   4. transformers for the optional CLAP score (tools/requirements-clap.txt) in a directory of its own, cached
#      by hash, that .venv does NOT see (ESPnet would import it in every process, ~7 s): its path is written to
#      .venv/clap-pythonpath, for the tests and evaluations to put on PYTHONPATH.
#   5. dalle2-pytorch, the reference implementation of the pretrained DALL·E 2 prior, for its tests only
#      (tools/requirements-dalle2.txt), likewise in a directory of its own: its path goes to .venv/dalle2-pythonpath.
# Options (environment): PYTHON (python3.11), ESPNET_CLIPSEP_CACHE (~/.cache/espnet-clipsep),
#   ESPNET_CLIPSEP_SKIP_APT=1 to leave system packages alone.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') [install] $*" >&2; }

PYTHON=${PYTHON:-python3.11}
CACHE=${ESPNET_CLIPSEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/espnet-clipsep}
APT_PACKAGES=(ffmpeg fluidsynth fluid-soundfont-gm sox fonts-noto-color-emoji sound-icons espeak-ng chromium)

command -v "$PYTHON" >/dev/null || { log "error: $PYTHON not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { log "error: $PYTHON is not Python 3.11 (espnet 202511 + torch 2.9.1 are pinned for 3.11)"; exit 1; }

# 1. system packages
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${ESPNET_CLIPSEP_SKIP_APT:-0}" = 1 ]; then
        log "not installing missing system packages (ESPNET_CLIPSEP_SKIP_APT=1): ${missing[*]}"
    else
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        log "installing system packages: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# 2. pinned dependencies, cached by hash
hash=$( { cat tools/requirements.txt; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
deps="$CACHE/deps-$hash"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ ! -f "$deps/.complete" ]; then
    log "creating the dependency environment $deps (downloads ~4 GB, a few minutes)"
    rm -rf "$deps"
    "$PYTHON" -m venv "$deps"
    "$deps/bin/python" -m pip install -q --upgrade "pip<25" 2>&1 | grep -v '^WARNING: Location' || true
    "$deps/bin/python" -m pip install --progress-bar off -q -r tools/requirements.txt 2>&1 \
        | grep -v '^WARNING: Location' || true
    "$deps/bin/python" -c 'import espnet2.tasks.enh, open_clip, kaldiio, museval, fast_bss_eval' 2>/dev/null \
        || { log "error: the dependency environment does not import; see pip's output above"; exit 1; }
    touch "$deps/.complete"
fi
flock -u 9
deps_site=$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 3. this checkout's .venv: sees the cached dependencies, holds this repo editable
stamp=$( { echo "$deps"; cat setup.py pyproject.toml; } | sha256sum | cut -c1-16)
if [ "$(cat .venv/.clipsep-stamp 2>/dev/null)" != "$stamp" ]; then
    log "creating .venv (dependencies from $deps)"
    rm -rf .venv
    "$PYTHON" -m venv .venv
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # addsitedir (not a bare path line) so that the dependencies' own .pth files are processed too.
    echo "import site; site.addsitedir('$deps_site')" > "$site/00-espnet-clipsep-deps.pth"
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import espnet2.enh.clipsep, espnet2.tts_diff, espnet_clipsep_hook' \
        || { log "error: the editable install of this repo failed"; exit 1; }
    echo "$stamp" > .venv/.clipsep-stamp
fi
# 4. transformers for the CLAP score, beside (not in) the environment, cached by hash
clap_hash=$( { cat tools/requirements-clap.txt; echo "$deps"; } | sha256sum | cut -c1-16)
clap="$CACHE/clap-$clap_hash"
flock 9
if [ ! -f "$clap/.complete" ]; then
    log "installing transformers for the CLAP score into $clap (--no-deps: ~17 MB download, ~145 MB on disk)"
    rm -rf "$clap"
    "$deps/bin/python" -m pip install --progress-bar off -q --no-deps --target "$clap" -r tools/requirements-clap.txt \
        2>&1 | grep -v '^WARNING: Location' || true
    PYTHONPATH="$clap" .venv/bin/python -c 'from transformers import ClapModel, ClapProcessor, RobertaTokenizer' \
        || { log "error: $clap does not import transformers' CLAP; see pip's output above"; exit 1; }
    touch "$clap/.complete"
fi
flock -u 9
echo "$clap" > .venv/clap-pythonpath
# 5. dalle2-pytorch 1.1.0 (the version LAION's prior runs with) for the tests of espnet2/tts_diff/dalle2_prior.py,
#    beside the environment like transformers, cached by hash. The tests import its dalle2_pytorch.dalle2_pytorch
#    module only, without the package __init__ (which imports its trainer and needs accelerate), as checked here.
dalle2_hash=$( { cat tools/requirements-dalle2.txt; echo "$deps"; } | sha256sum | cut -c1-16)
dalle2="$CACHE/dalle2-$dalle2_hash"
flock 9
if [ ! -f "$dalle2/.complete" ]; then
    log "installing dalle2-pytorch (reference of the DALL-E 2 prior, tests only) into $dalle2 (--no-deps: ~14 MB on disk)"
    rm -rf "$dalle2"
    "$deps/bin/python" -m pip install --progress-bar off -q --no-deps --target "$dalle2" -r tools/requirements-dalle2.txt \
        2>&1 | grep -v '^WARNING: Location' || true
    PYTHONPATH="$dalle2" .venv/bin/python -W ignore -c 'import sys, types
package = types.ModuleType("dalle2_pytorch"); package.__path__ = [sys.argv[1] + "/dalle2_pytorch"]
sys.modules["dalle2_pytorch"] = package
from dalle2_pytorch.dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork, OpenAIClipAdapter' "$dalle2" \
        || { log "error: $dalle2 does not import dalle2_pytorch.dalle2_pytorch; see pip's output above"; exit 1; }
    touch "$dalle2/.complete"
fi
flock -u 9
echo "$dalle2" > .venv/dalle2-pythonpath
log "ready: $(pwd)/.venv (activate with: . .venv/bin/activate; CLAP score: PYTHONPATH=\$(cat .venv/clap-pythonpath))"
