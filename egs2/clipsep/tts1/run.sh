#!/usr/bin/env bash
# CLIPSonic / CLIPSynth text-to-audio recipe (generator, diffusion prior, vocoder; IQ / ZS / PD queries).
#   ./run.sh                       the offline mini corpus on CPU (prepared by ../enh1, stages 1-3)
#   ./run.sh --systems all         every row of the papers' tables: + PD with a pretrained prior, CLIPSynth-Text
#                                  and -Hybrid, the retrieval baseline
#   ./run.sh --dataset music       MUSIC from $MUSIC (../enh1/db.sh), paper size, on GPUs
#   ./run.sh --dataset vggsound    VGGSound from $VGGSOUND with CLIPSep's splits, paper size, on GPUs
# Any option of clipsonic.sh can follow (./clipsonic.sh --help lists them), e.g. --stage 7 --ngpu 1.
set -euo pipefail
cd "$(dirname "$0")"

dataset=mini
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) dataset=$2; shift 2;;
        --dataset=*) dataset=${1#*=}; shift;;
        --help|-h) sed -n '2,8p' "$0"; exec ./clipsonic.sh --help;;
        *) args+=("$1"); shift;;
    esac
done
. ./db.sh

enh1=../enh1
dirs=(--dataset "${dataset}" --datadir "${enh1}/data/${dataset}" --clip_dumpdir "${enh1}/dump/${dataset}"
      --clip_expdir "${enh1}/exp/${dataset}" --dumpdir "dump/${dataset}" --expdir "exp/${dataset}")
case "${dataset}" in
    mini)
        opts=(--mini_corpus_dir "${enh1}/downloads/mini" --clip_model clipsep-tiny --fit_clip true
              --ngpu 0 --nj 2 --train_jobs 2 --gen_jobs 2 --max_per_class 0   # every test clip (72)
              --prior_opts "--steps 1000 --d_model 128 --num_layers 2"
              --tts_config conf/tiny/train_clipsonic.yaml --vocoder_config conf/tiny/train_vocoder.yaml
              --text_config conf/tiny/train_clipsynth_text.yaml --hybrid_config conf/tiny/train_clipsynth_hybrid.yaml
              --gen_args "--guidance 3 --steps 10"   # w = 3: valid 0.50 vs 0.42 at 1.5; 10 steps = 25 in probe-FD
              --benchmark_opts "--max_per_class 1 --num_frames 64");;   # DDPM-1000 on 12 2-s clips, CPU
    music|vggsound)
        [ -n "${PRIOR_PAIRS}" ] || { echo "$0: error: set PRIOR_PAIRS in db.sh ((image, caption) pairs for the prior)" >&2; exit 1; }
        opts=(--clip_model ViT-B-32 --clip_pretrained "${CLIP_PRETRAINED}" --prior_data "${PRIOR_PAIRS}"
              --ngpu 1 --nj 16 --gen_jobs 1 --tts_config conf/tuning/train_clipsonic.yaml
              --vocoder_config conf/tuning/train_vocoder.yaml)
        # 2,000 steps per epoch: MUSIC 200k steps (the configs' 100 epochs), VGGSound 500k. Seed 002 (CLIPSonic,
        # "Implementation Details"): "Training iterations - MUSIC: 200K ... - VGGSound: 500K".
        [ "${dataset}" = vggsound ] && opts+=(--max_epoch 250);;
    *) echo "$0: error: unknown --dataset '${dataset}' (mini, music or vggsound)" >&2; exit 1;;
esac

if [ -n "${VGGISH_WEIGHTS}" ]; then opts+=(--vggish "${VGGISH_WEIGHTS}"); fi   # FAD in stage 8 (db.sh)
if [ -n "${CLAP_MODEL}" ]; then opts+=(--clap "${CLAP_MODEL}"); fi   # CLAP score in stage 8 (db.sh)
if [ -n "${PRETRAINED_PRIOR}" ]; then opts+=(--pretrained_prior "${PRETRAINED_PRIOR}"); fi   # the pdp row (db.sh)
results=RESULTS_${dataset}.md
[ "${dataset}" = mini ] && results=RESULTS.md
./clipsonic.sh "${dirs[@]}" "${opts[@]}" --results "${results}" "${args[@]}"
