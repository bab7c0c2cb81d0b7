#!/usr/bin/env bash
# CLIPSep / CLIPSep-NIT / PIT separation recipe.
#   ./run.sh                       the offline mini corpus on CPU (generated here; ~14 min on 2 cores)
#   ./run.sh --dataset music       MUSIC from $MUSIC (db.sh), paper size, on GPUs
#   ./run.sh --dataset vggsound    VGGSound from $VGGSOUND with CLIPSep's splits, paper size, on GPUs
#   ./run.sh --systems all         every row of the paper's Tables 2 and 3 (default: each dataset's usual few);
#                                  or a list of config names, e.g. --systems "clipsep_nit clipsep_text sop"
# Any option of clipsep.sh can follow (./clipsep.sh --help lists them), e.g. --stage 5 --ngpu 4.
set -euo pipefail
cd "$(dirname "$0")"

dataset=mini
systems=default
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) dataset=$2; shift 2;;
        --dataset=*) dataset=${1#*=}; shift;;
        --systems) systems=$2; shift 2;;
        --systems=*) systems=${1#*=}; shift;;
        --help|-h) sed -n '2,8p' "$0"; exec ./clipsep.sh --help;;
        *) args+=("$1"); shift;;
    esac
done
. ./db.sh

# Every row of the paper's separation tables, by config name (conf/<size>/train_enh_<name>.yaml).
all_systems="clipsep_nit clipsep clipsep_text clipsep_hybrid labelsep pit sop bertsep"
configs() {  # configs SIZE NAME...: the config files of these systems
    local size=$1 name; shift
    for name in "$@"; do
        [ -f "conf/${size}/train_enh_${name}.yaml" ] \
            || { echo "$0: error: --systems: no system '${name}' (conf/${size}/train_enh_${name}.yaml); known: ${all_systems}" >&2; exit 1; }
        echo "conf/${size}/train_enh_${name}.yaml"
    done
}
size=tuning; [ "${dataset}" = mini ] && size=tiny
case "${systems}" in
    default) case "${dataset}" in
                 # The two systems the mini run compares, one core each (issue 21).
                 mini) names="clipsep_nit clipsep";;
                 music) names="clipsep_nit clipsep pit labelsep";;
                 *) names="clipsep_nit clipsep pit";;
             esac;;
    all) names=${all_systems};;
    *) names=${systems};;
esac
# shellcheck disable=SC2086
enh_configs=$(configs "${size}" ${names} | tr '\n' ' ') || exit 1
system_opts=(--enh_configs "${enh_configs% }" --bert_dir "${BERT_DIR}")
[ "${systems}" = all ] && system_opts+=(--noise_head_rows true)   # CLIPSep-NIT with noise head 1 kept (Figure 6)
case "${dataset}" in
    mini)
        opts=(--corpus folder --corpus_root downloads/mini/videos --make_mini_corpus true
              --mini_corpus_dir downloads/mini --mini_corpus_opts "--num_pretrain_images 120 --offscreen_db -10 0"
              --fit_clip true --clip_model clipsep-tiny --fit_clip_opts "--num_threads 2"
              --ngpu 0 --nj 2 --inference_nj 1 --infer_jobs 2 --train_jobs 2 --mix_segment 65535
              --set_labels "test=Clean test_plus=+"
              --mix_opts "--distinct_labels true")   # the clean set as before: no two clips of one label
        # Clean: the held-out clips mixed with each other; +: the same targets with interferers from the noisy
        # pool (off-screen speech and effects), as MUSIC+ takes them from VGGSound. The default run keeps its
        # wall time with the clean set only; add --plus_sets "test_plus=test+noisy" to it for the "+" column.
        if [ "${systems}" = all ]; then opts+=(--plus_sets "test_plus=test+noisy"); fi;;
    music)
        opts=(--corpus music --corpus_root "${MUSIC}" --clip_model ViT-B-32 --clip_pretrained "${CLIP_PRETRAINED}"
              --ngpu 1 --nj 16 --inference_nj 8)
        prep=""; [ -n "${MUSIC_SPLITS}" ] && prep="--splits_dir ${MUSIC_SPLITS}"
        # MUSIC+: the MUSIC test clips with interferers from VGGSound's test-good-no-music.csv (CLIPSep §4.2)
        if [ -n "${VGGSOUND}" ] && [ -n "${VGGSOUND_SPLITS}" ]; then
            prep+=" --vggsound_root ${VGGSOUND} --vggsound_splits_dir ${VGGSOUND_SPLITS}"
            opts+=(--plus_sets "test_plus=test+vggsound_test_good_no_music" --set_labels "test=MUSIC-Clean test_plus=MUSIC+")
        else
            opts+=(--set_labels "test=MUSIC-Clean")
            echo "$0: MUSIC+ needs VGGSOUND and VGGSOUND_SPLITS in db.sh (its interferers): evaluating MUSIC-Clean only" >&2
        fi
        [ -n "${prep}" ] && opts+=(--prep_opts "${prep# }");;
    vggsound)
        prep="--splits_dir ${VGGSOUND_SPLITS}"
        [ -n "${VGGSOUND_LABELS}" ] && prep+=" --labels_csv ${VGGSOUND_LABELS}"
        opts=(--corpus vggsound --corpus_root "${VGGSOUND}" --prep_opts "${prep}"
              --clip_model ViT-B-32 --clip_pretrained "${CLIP_PRETRAINED}" --test_sets test
              # VGGSound-Clean+: test-good.csv targets, test-no-music.csv interferers (CLIPSep §4.2)
              --plus_sets "test_good_plus=test_good+test_no_music" --set_labels "test=VGGSound test_good_plus=VGGSound-Clean+"
              --ngpu 1 --nj 16 --inference_nj 8);;
    *) echo "$0: error: unknown --dataset '${dataset}' (mini, music or vggsound)" >&2; exit 1;;
esac

results=RESULTS_${dataset}.md
[ "${dataset}" = mini ] && results=RESULTS.md
./clipsep.sh "${opts[@]}" "${system_opts[@]}" --datadir "data/${dataset}" --dumpdir "dump/${dataset}" --expdir "exp/${dataset}" \
    --results "${results}" "${args[@]}"
