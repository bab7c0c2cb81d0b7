# Where the corpora live on this machine: the separation recipe's db.sh (MUSIC, VGGSOUND, CLIP_PRETRAINED, ...),
# which also prepares the data for this recipe (its stages 1-3), plus what only synthesis needs.
# shellcheck disable=SC1091
. ../enh1/db.sh
# (image, caption) pairs for the CLIPSonic-PD diffusion prior on MUSIC / VGGSound: a TSV '<image path>\t<caption>'
# (e.g. a local subset of an image-text corpus), or IMAGE_SCP,TEXT_SCP of cached CLIP embeddings of such pairs.
# The mini corpus brings its own (downloads/mini/clip_pretrain/pairs.tsv of ../enh1).
PRIOR_PAIRS=${PRIOR_PAIRS:-}
# VGGish weights for FAD (stage 8; empty: probe relevance and probe-FD only), e.g. the PyTorch port's
# https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth saved locally.
VGGISH_WEIGHTS=${VGGISH_WEIGHTS:-}
# A local CLAP directory for the CLAP score (stage 8; empty: without it), e.g. laion/clap-htsat-unfused saved with
# `hf download laion/clap-htsat-unfused --include '*.json' '*.txt' model.safetensors --local-dir DIR` (~600 MB);
# stage 8 then needs transformers on PYTHONPATH (e.g. the install that tools/install.sh keeps for the tests).
CLAP_MODEL=${CLAP_MODEL:-}
