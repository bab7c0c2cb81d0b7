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
# LAION's pretrained DALL-E 2 diffusion prior (its latest.pth, prior_config.json beside it) for the row
# "CLIPSonic-PD (pretrained prior)" (--systems pdp or all; empty: that row reads "not run (no pretrained prior)").
# It maps texts to image embeddings of its own CLIP (ViT-L-14, 768-d), so the generator must be trained on those:
# --clip_model ViT-L-14 --clip_pretrained openai and spk_embed_dim 768 (espnet2.tts_diff.dalle2_prior documents it).
PRETRAINED_PRIOR=${PRETRAINED_PRIOR:-}
