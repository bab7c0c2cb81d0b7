#!/usr/bin/env bash
# CLIPSep / CLIPSep-NIT / PIT separation recipe.
#   ./run.sh                       the offline mini corpus on CPU (generated here; ~14 min on 2 cores)
#   ./run.sh --dataset music       MUSIC from $MUSIC (db.sh), paper size, on GPUs
#   ./run.sh --dataset vggsound    VGGSound from $VGGSOUND with CLIPSep's splits, paper size, on GPUs
# Any option of clipsep.sh can follow (./clipsep.sh --help lists them), e.g. --stage 5 --ngpu 4.
set -euo pipefail
cd "$(dirname "$0")"

dataset=mini
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) dataset=$2; shift 2;;
        --dataset=*) dataset=${1#*=}; shift;;
        --help|-h) sed -n '2,6p' "$0"; exec ./clipsep.sh --help;;
        *) args+=("$1"); shift;;
    esac
done
. ./db.sh

paper_configs="conf/tuning/train_enh_clipsep_nit.yaml conf/tuning/train_enh_clipsep.yaml conf/tuning/train_enh_pit.yaml"
case "${dataset}" in
    mini)
        opts=(--corpus folder --corpus_root downloads/mini/videos --make_mini_corpus true
              --mini_corpus_dir downloads/mini --mini_corpus_opts "--num_pretrain_images 120 --offscreen_db -10 0"
              --fit_clip true --clip_model clipsep-tiny --fit_clip_opts "--num_threads 2"
              --ngpu 0 --nj 2 --inference_nj 1 --infer_jobs 2 --train_jobs 2 --mix_segment 65535
              # The two systems the mini run compares, one core each (issue 21); the PIT baseline is
              # conf/tiny/train_enh_pit.yaml: add it to --enh_configs for a third training.
              --enh_configs "conf/tiny/train_enh_clipsep_nit.yaml conf/tiny/train_enh_clipsep.yaml");;
    music)
        opts=(--corpus music --corpus_root "${MUSIC}" --clip_model ViT-B-32 --clip_pretrained "${CLIP_PRETRAINED}"
              --ngpu 1 --nj 16 --inference_nj 8 --enh_configs "${paper_configs} conf/tuning/train_enh_labelsep.yaml")
        [ -n "${MUSIC_SPLITS}" ] && opts+=(--prep_opts "--splits_dir ${MUSIC_SPLITS}");;
    vggsound)
        prep="--splits_dir ${VGGSOUND_SPLITS}"
        [ -n "${VGGSOUND_LABELS}" ] && prep+=" --labels_csv ${VGGSOUND_LABELS}"
        opts=(--corpus vggsound --corpus_root "${VGGSOUND}" --prep_opts "${prep}"
              --clip_model ViT-B-32 --clip_pretrained "${CLIP_PRETRAINED}" --test_sets "test test_good"
              --ngpu 1 --nj 16 --inference_nj 8 --enh_configs "${paper_configs}");;
    *) echo "$0: error: unknown --dataset '${dataset}' (mini, music or vggsound)" >&2; exit 1;;
esac

results=RESULTS_${dataset}.md
[ "${dataset}" = mini ] && results=RESULTS.md
./clipsep.sh "${opts[@]}" --datadir "data/${dataset}" --dumpdir "dump/${dataset}" --expdir "exp/${dataset}" \
    --results "${results}" "${args[@]}"
