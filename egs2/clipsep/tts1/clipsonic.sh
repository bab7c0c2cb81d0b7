#!/usr/bin/env bash
# CLIPSonic / CLIPSynth synthesis recipe stages, shared by every corpus (run.sh only sets the corpus options).
# --systems picks the rows of the table (CLIPSonic's Table 1, CLIPSynth's Table 2): iq zs pd (the default),
# pdp (PD with the pretrained DALL-E 2 prior of --pretrained_prior), text hybrid (CLIPSynth-Text / -Hybrid,
# trained on the labels' text: upper bounds), retrieval (the nearest training clip), or all; the vocoder's
# ground-truth resynthesis is always there.
#
#  1. data + CLIP    the separation recipe's stages 1-3 (../enh1/run.sh --stop_stage 3): clips, frames, the
#                    (mini: fitted) CLIP and its cached embeddings; a re-run is a no-op
#  2. TTS data       wav.scp + dummy text + CLIP image embeddings as spembs, token list; mel statistics
#                    (ESPnet's --collect_stats: feats_stats.npz for global_mvn, shape files); with text or
#                    hybrid: the training labels' CLIP text embeddings (if the separation recipe has none)
#                    and the (text, frames) stacks they train on
#  3. generator      CLIPSonic mel diffusion through ESPnet's trainer (TTSDiffTask), image embeddings only;
#                    with text / hybrid also CLIPSynth-Text / -Hybrid (--text_config, --hybrid_config)
#  4. prior          diffusion prior CLIP text -> CLIP image embedding, on (image, caption) pairs, no audio
#  5. vocoder        HiFi-GAN on the generator's normalised mel (ESPnet's GAN-TTS trainer, mel_hifigan)
#  6. probe          the offline evaluation classifier (the only place labels are used)
#  7. generation     vocoder embedded into each generator; the systems' clips for the test queries (retrieval:
#                    the nearest training clip's audio) and the ground-truth resynthesis through the vocoder;
#                    beside them the sampler benchmark's shards
#                    (DDPM-1000 vs DDIM / DPM-Solver++ at 10/25/50 steps, guidance sweep; --benchmark false
#                    skips it), merged into its tables at the end
#  8. evaluation     probe relevance (accuracy of the query class) and probe-FD vs the real test clips, on
#                    the audio and on the mel before the vocoder (which tells generator from vocoder);
#                    with --vggish weights also FAD, with a --clap model also the CLAP score
#  9. report         RESULTS.md (a row per system, GT resynthesis, chance; PD - ZS, ZS - IQ, Text - Hybrid,
#                    Hybrid - ZS, ZS - retrieval paired per clip with 90 % intervals; the steps table; stage
#                    wall times; the speed gauge) and the listening
#                    page exp/<dataset>/listen_test/index.html (a row per query, a player per system)
# 10. pack           espnet2.bin.pack tts zip (+ stats, prior, CLIP), reloaded offline and verified
# Stages 3-6 are independent: with --train_jobs N up to N of them run at once (each with nproc/N threads),
# and stage 2 then runs beside the probe (6) and the prior (4), which do not need its output.
set -euo pipefail

. utils/recipe_lib.sh   # log, run_stages, stage_start / stage_end / record_time (-> ${timings}), pool

# General
stage=1                 # first stage to run
stop_stage=100          # last stage to run
ngpu=1                  # GPUs for training and generation (0: CPU)
nj=4                    # parallel jobs of the separation recipe's data prep and embeddings
train_jobs=1            # stages 3-6 run at once (on CPU each gets nproc/train_jobs threads)
gen_jobs=1              # generation / evaluation jobs at once (and the sampler benchmark's shards)
python=python3          # python interpreter
cmd_backend=${CLIPSEP_CMD_BACKEND:-local}   # job launcher: local or slurm (cmd.sh)
# Data: the separation recipe prepares it (stage 1)
dataset=mini            # corpus, passed to the separation recipe's run.sh: mini, music or vggsound
enh1_dir=../enh1        # the separation recipe
enh1_opts=              # extra options of its run.sh for stages 1-3, shell-quoted (e.g. --fit_clip_opts '"--steps 30"')
datadir=../enh1/data/mini        # its Kaldi-style data dirs (wav.scp, frames.scp, utt2label)
clip_dumpdir=../enh1/dump/mini   # its cached CLIP embeddings (clip/<set>/*.scp)
clip_expdir=../enh1/exp/mini     # its experiment dir (the fitted CLIP: clip/<clip_model>.pt)
mini_corpus_dir=../enh1/downloads/mini   # the mini corpus (clip_pretrain/pairs.tsv trains the prior)
train_set=train         # training clips
valid_set=valid         # validation clips
test_set=test           # test clips: their image embeddings (IQ) and label text embeddings (ZS, PD)
dumpdir=dump/mini       # TTS data dirs
expdir=exp/mini         # experiments
# CLIP
clip_model=ViT-B-32     # open_clip model name (mini: clipsep-tiny)
clip_pretrained=openai  # open_clip tag or local weights file
fit_clip=false          # the separation recipe fits clip_model (mini); its weights are packed too
# Training
tts_config=conf/tuning/train_clipsonic.yaml   # generator config
text_config=conf/tuning/train_clipsynth_text.yaml      # CLIPSynth-Text generator config (systems: text)
hybrid_config=conf/tuning/train_clipsynth_hybrid.yaml  # CLIPSynth-Hybrid generator config (systems: hybrid)
tts_args=               # extra generator training options (override the config; every generator)
max_epoch=              # epochs of every generator (empty: the configs'; run.sh --dataset vggsound: 250 = 500k steps)
prior_data=             # pairs TSV ('<image path>\t<caption>'), or IMAGE_SCP,TEXT_SCP of cached embeddings
prior_opts=             # extra options of espnet2.tts_diff.bin.train_prior (e.g. --steps 3000)
vocoder_config=conf/tuning/train_vocoder.yaml # vocoder config
vocoder_args=           # extra vocoder training options
probe_opts=             # extra options of espnet2.tts_diff.bin.probe train (e.g. --epochs 30)
vggish=                 # VGGish weights (vggish-10086976.pth): stage 8 adds FAD (empty: without it)
clap=                   # local CLAP directory (laion/clap-htsat-unfused): stage 8 adds the CLAP score (needs transformers)
clap_pythonpath=$(cat ../../../.venv/clap-pythonpath 2>/dev/null || true)  # transformers for stage 8's CLAP only (tools/install.sh)
resume=true             # resume interrupted trainings from their checkpoints
inference_model=latest.pth   # generator checkpoint to generate with and pack: the last (EMA); random-t valid loss is noise
vocoder_model=valid.generator_mel_loss.best.pth   # vocoder checkpoint embedded into the generator
# Generation, evaluation, report
systems="iq zs pd"      # rows: iq zs pd (CLIPSonic), pdp (PD, --pretrained_prior), text hybrid (CLIPSynth), retrieval; all
pretrained_prior=       # LAION's DALL-E 2 prior (latest.pth, prior_config.json beside it) for pdp (empty: "not run")
pretrained_prior_opts=  # extra options of generate_set for pdp (e.g. --prior_clip_pretrained FILE --prior_steps 64)
retrieval_opts=         # extra options of espnet2.tts_diff.bin.retrieve (e.g. --image_frames 1)
max_per_class=0         # test queries per class (0: every test clip)
gen_args=               # extra options of espnet2.tts_diff.bin.generate_set (e.g. --steps 50 --guidance 3)
benchmark=true          # stage 7 also runs local/benchmark_samplers.py on IQ queries (steps table, guidance sweep)
benchmark_opts=         # its extra options (e.g. --max_per_class 1 --grid ddpm:1000 dpmpp:10,25)
results=RESULTS.md      # the results table
skip_pack=false         # skip stage 10
help_message="Usage: $0 [options]   (stages: see the head of this file)"

. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
[ $# -eq 0 ] || { echo "$0: error: unexpected arguments: $*" >&2; exit 1; }

timings=${expdir}/timings.tsv   # stage wall times (stage_end, record_time), read by the report
mkdir -p "${expdir}"
threads=$(( $(nproc) / train_jobs )); [ "${threads}" -ge 1 ] || threads=1
gen_threads=$(( $(nproc) / gen_jobs )); [ "${gen_threads}" -ge 1 ] || gen_threads=1
device=cpu; [ "${ngpu}" -gt 0 ] && device=cuda
abs() { realpath -m "$1"; }

clip_weights=${clip_pretrained}
${fit_clip} && clip_weights=${clip_expdir}/clip/${clip_model}.pt
raw=${dumpdir}/raw
stats=${expdir}/stats
all_systems="iq zs pd pdp text hybrid retrieval"
[ "${systems}" = all ] && systems=${all_systems}
for s in ${systems}; do
    case " ${all_systems} " in *" ${s} "*) ;; *) log "error: unknown system '${s}' (${all_systems}, or all)"; exit 1;; esac
done
has_system() { case " ${systems} " in *" $1 "*) return 0;; *) return 1;; esac; }
generators=clipsonic    # the generators to train: CLIPSonic (iq zs pd pdp), CLIPSynth-Text, CLIPSynth-Hybrid
for g in text hybrid; do has_system "${g}" && generators+=" ${g}"; done
gen_config() { case "$1" in clipsonic) echo "${tts_config}";; text) echo "${text_config}";; hybrid) echo "${hybrid_config}";; esac; }
gen_exp() { local n; n=tts_$(basename "$(gen_config "$1")" .yaml); echo "${expdir}/${n/tts_train_/tts_}"; }
tts_exp=$(gen_exp clipsonic)
tts_name=$(basename "${tts_exp}")
voc_exp=${expdir}/vocoder
final_exp=${expdir}/${tts_name}_vocoder      # the generator with its vocoder embedded: generated and packed
prior=${expdir}/prior/prior.pt
probe=${expdir}/probe/probe.pt
[ -n "${prior_data}" ] || prior_data=${mini_corpus_dir}/clip_pretrain/pairs.tsv
use_tensorboard=$(${python} -c 'import tensorboard' >/dev/null 2>&1 && echo true || echo false)
for config in $(for g in ${generators}; do gen_config "${g}"; done) ${vocoder_config}; do
    [ -f "${config}" ] || { log "error: config ${config} not found"; exit 1; }
done
if [ -n "${vggish}" ] && [ ! -f "${vggish}" ]; then  # checked now, not after the trainings
    log "error: --vggish ${vggish}: file not found (download https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth there)"
    exit 1
fi
if has_system pdp && [ -n "${pretrained_prior}" ] && [ ! -f "${pretrained_prior}" ]; then  # likewise
    log "error: --pretrained_prior ${pretrained_prior}: file not found"
    exit 1
fi
if has_system pdp && [ -n "${pretrained_prior}" ] && [ "${clip_model}" != ViT-L-14 ]; then  # its embedding space
    log "error: --pretrained_prior (LAION's DALL-E 2 prior) gives CLIP ViT-L-14 (openai) image embeddings: run with" \
        "--clip_model ViT-L-14 --clip_pretrained openai and spk_embed_dim: 768 in --tts_config (now: ${clip_model})"
    exit 1
fi
if [ -n "${clap}" ] && [ ! -f "${clap}/config.json" ]; then  # likewise
    log "error: --clap ${clap}: no CLAP model there (download it: hf download laion/clap-htsat-unfused --include '*.json' '*.txt' model.safetensors --local-dir ${clap}, about 600 MB)"
    exit 1
fi
clap_env=()  # transformers only for the CLAP evaluation: ESPnet imports it at every start when it can (~7 s)
[ -n "${clap_pythonpath}" ] && clap_env=(env PYTHONPATH="${clap_pythonpath}${PYTHONPATH:+:${PYTHONPATH}}")
if [ -n "${clap}" ] && ! "${clap_env[@]}" ${python} -c 'import transformers' >/dev/null 2>&1; then
    log "error: --clap needs transformers in stage 8: pass --clap_pythonpath DIR (an install of it, e.g. the one tools/install.sh keeps: its path is in .venv/clap-pythonpath), or install it (every ESPnet process then starts ~7 s later)"
    exit 1
fi

# ------------------------------------------------------------------------------------------------------------
stage_1() {
    stage_start 1 "data, CLIP and CLIP embeddings: ${enh1_dir}/run.sh --dataset ${dataset} --stop_stage 3"
    opts=(--dataset "${dataset}" --stage 1 --stop_stage 3 --nj "${nj}" --datadir "$(abs "${datadir}")"
          --dumpdir "$(abs "${clip_dumpdir}")" --expdir "$(abs "${clip_expdir}")"
          --mini_corpus_dir "$(abs "${mini_corpus_dir}")")
    [ "${dataset}" = mini ] && opts+=(--corpus_root "$(abs "${mini_corpus_dir}")/videos")
    eval "opts+=(${enh1_opts})"  # shell words: quoted values keep their spaces
    "${enh1_dir}/run.sh" "${opts[@]}" 2>&1 | sed 's/^/    [enh1] /'
    stage_end 1 "data, CLIP, embeddings (separation recipe stages 1-3)"
}

# ------------------------------------------------------------------------------------------------------------
train_text_embeddings() {  # the training labels' CLIP text embeddings (CLIPSynth-Text / -Hybrid): their scp
    # The separation recipe embeds the labels' text for valid/test only: compute the training set's here.
    local scp=${clip_dumpdir}/clip/${train_set}/text.scp out
    if [ ! -f "${scp}" ]; then
        out=$(abs "${dumpdir}/clip/${train_set}")
        scp=${out}/text.scp
        log "Stage 2: the ${train_set} labels' CLIP text embeddings (CLIPSynth-Text/-Hybrid) -> ${scp}" >&2
        ${python} -m espnet2.enh.clipsep.bin.embed --text "${datadir}/${train_set}/utt2label" --output_dir "${out}" \
            --name text --clip_model "${clip_model}" --clip_pretrained "${clip_weights}" --device "${device}" \
            --log_level WARNING >&2 || return 1
    fi
    echo "${scp}"
}

stage_2() {
    stage_start 2 "TTS data dirs (${raw}) and mel statistics (${stats})"
    local text_opts=() train_text
    if has_system text || has_system hybrid; then
        train_text=$(train_text_embeddings) || { log "error: embedding the ${train_set} labels failed"; return 1; }
        text_opts=(--train_text_scp "${train_text}")
    fi
    ${python} local/prepare_tts_data.py --data_dir "${datadir}" --clip_dir "${clip_dumpdir}/clip" \
        --base_dir "${enh1_dir}" --output_dir "${raw}" --train_set "${train_set}" --valid_set "${valid_set}" \
        --test_sets "${test_set}" "${text_opts[@]}" || return 1
    if ${fit_clip}; then  # a copy beside the experiments, packed with the model (text queries need it)
        mkdir -p "${expdir}/clip"
        cp "${clip_weights}" "${clip_weights}.json" "${expdir}/clip/" || return 1
    fi
    log "Stage 2: collect_stats (log: ${stats}/collect_stats.log)"
    mkdir -p "${stats}"
    ${train_cmd} "${stats}/collect_stats.log" ${python} -m espnet2.tts_diff.bin.train --collect_stats true \
        --config "${tts_config}" --normalize none --token_type word --token_list "${raw}/tokens.txt" \
        --use_preprocessor true --ngpu 0 --num_workers 0 --output_dir "${stats}" \
        --train_data_path_and_name_and_type "${raw}/${train_set}/text,text,text" \
        --train_data_path_and_name_and_type "${raw}/${train_set}/wav.scp,speech,sound" \
        --train_data_path_and_name_and_type "${raw}/${train_set}/spembs.scp,spembs,npy" \
        --valid_data_path_and_name_and_type "${raw}/${valid_set}/text,text,text" \
        --valid_data_path_and_name_and_type "${raw}/${valid_set}/wav.scp,speech,sound" \
        --valid_data_path_and_name_and_type "${raw}/${valid_set}/spembs.scp,spembs,npy" \
        --train_shape_file "${raw}/${train_set}/wav.scp" --valid_shape_file "${raw}/${valid_set}/wav.scp" \
        || { log "error: collect_stats failed; see ${stats}/collect_stats.log"; return 1; }
    stage_end 2 "TTS data dirs, mel statistics$(concurrent)"
}

# ------------------------------------------------------------------------------------------------------------
# Stages 2-6 run side by side in a pool (stages_2_6 below).
data_opts() {  # data_opts TRAIN_SPEMBS VALID_SPEMBS: the scp names of the spembs ("-": none, the vocoder)
    local set kind emb
    for set in train valid; do
        [ "${set}" = train ] && { d=${raw}/${train_set}; emb=$1; } || { d=${raw}/${valid_set}; emb=$2; }
        echo "--${set}_data_path_and_name_and_type ${d}/text,text,text --${set}_data_path_and_name_and_type ${d}/wav.scp,speech,sound"
        [ "${emb}" = - ] || echo "--${set}_data_path_and_name_and_type ${d}/${emb},spembs,npy"
        echo "--${set}_shape_file ${stats}/${set}/speech_shape"
    done
}
concurrent() { [ "${train_jobs}" -gt 1 ] && [ "${#pool_stages[@]}" -gt 1 ] && echo " (concurrent)" || true; }
speed() {  # speed LOG: "N steps, S s/step" from an ESPnet train.log (the mean train_time over its epochs)
    grep "epoch results" "$1" | awk '{
        if (match($0, /[ ,]train_time=[0-9.e+-]+/)) { s = substr($0, RSTART + 12, RLENGTH - 12); t += s; n++ }
        if (match($0, /total_count=[0-9]+/)) steps = substr($0, RSTART + 12, RLENGTH - 12)
    } END { if (n) printf "%d steps, %.3f s/step", steps, t / n }'
}

stage_3() {  # stage_3 [clipsonic|text|hybrid]: one generator (CLIPSynth-Text / -Hybrid: stage "3 text" / "3 hybrid")
    local g=${1:-clipsonic} exp config label=3 what=generator emb=spembs.scp valid_emb=spembs.scp epochs=()
    exp=$(gen_exp "${g}"); config=$(gen_config "${g}")
    if [ "${g}" != clipsonic ]; then  # the label text's embedding in row 0, then the frames; valid: its text
        label="3 ${g}"; what="generator CLIPSynth-${g^}"; emb=hybrid_spembs.scp; valid_emb=text_spembs.scp
    fi
    [ -n "${max_epoch}" ] && epochs=(--max_epoch "${max_epoch}")
    stage_start "${label}" "train the ${what} ${exp} (log: ${exp}/train.log)"
    mkdir -p "${exp}"
    # shellcheck disable=SC2046,SC2086
    ${cuda_cmd} --gpu "${ngpu}" "${exp}/train.log" env OMP_NUM_THREADS="${threads}" \
        ${python} -m espnet2.tts_diff.bin.train --config "${config}" --output_dir "${exp}" \
        --ngpu "${ngpu}" --resume "${resume}" --use_tensorboard "${use_tensorboard}" --use_matplotlib false \
        --token_type word --token_list "${raw}/tokens.txt" --normalize_conf "stats_file=${stats}/train/feats_stats.npz" \
        $(data_opts "${emb}" "${valid_emb}") "${epochs[@]}" ${tts_args} \
        || { log "error: ${what} training failed; see ${exp}/train.log"; tail -n 20 "${exp}/train.log" >&2; return 1; }
    log "Stage ${label}: $(grep "epoch results" "${exp}/train.log" | tail -n 1 | grep -o '\[valid\].*')"
    stage_end "${label}" "train ${what}$(concurrent): $(speed "${exp}/train.log")"
}

stage_4() {
    stage_start 4 "train the diffusion prior ${prior} on ${prior_data} (log: ${expdir}/prior/train_prior.log)"
    if [ -f "${prior}" ]; then
        log "Stage 4: ${prior} exists (delete it to train again)"
    else
        local src=(--pairs "${prior_data}" --clip_model "${clip_model}" --clip_pretrained "${clip_weights}")
        [[ "${prior_data}" == *,* ]] && src=(--image_scp "${prior_data%%,*}" --text_scp "${prior_data#*,}")
        # shellcheck disable=SC2086
        ${cuda_cmd} --gpu "${ngpu}" "${expdir}/prior/train_prior.log" ${python} -m espnet2.tts_diff.bin.train_prior \
            "${src[@]}" --output "${prior}" --device "${device}" --num_threads "${threads}" ${prior_opts} \
            || { log "error: prior training failed; see ${expdir}/prior/train_prior.log"; tail -n 5 "${expdir}/prior/train_prior.log" >&2; return 1; }
    fi
    stage_end 4 "train prior$(concurrent)"
}

stage_5() {
    stage_start 5 "train the vocoder ${voc_exp} (log: ${voc_exp}/train.log)"
    mkdir -p "${voc_exp}"
    # shellcheck disable=SC2046,SC2086
    ${cuda_cmd} --gpu "${ngpu}" "${voc_exp}/train.log" env OMP_NUM_THREADS="${threads}" \
        ${python} -m espnet2.bin.gan_tts_train --config "${vocoder_config}" --output_dir "${voc_exp}" \
        --ngpu "${ngpu}" --resume "${resume}" --use_tensorboard "${use_tensorboard}" --use_matplotlib false \
        --token_type word --token_list "${raw}/tokens.txt" --normalize_conf "stats_file=${stats}/train/feats_stats.npz" \
        $(data_opts - -) ${vocoder_args} \
        || { log "error: vocoder training failed; see ${voc_exp}/train.log"; tail -n 20 "${voc_exp}/train.log" >&2; return 1; }
    log "Stage 5: $(grep "epoch results" "${voc_exp}/train.log" | tail -n 1 | grep -o 'generator_mel_loss=[0-9.]*' | tail -n 1)"
    stage_end 5 "train vocoder$(concurrent): $(speed "${voc_exp}/train.log")"
}

stage_6() {
    stage_start 6 "train the probe classifier ${probe} (evaluation only; log: ${expdir}/probe/train.log)"
    if [ -f "${probe}" ]; then
        log "Stage 6: ${probe} exists (delete it to train again)"
    else
        # shellcheck disable=SC2086
        ${train_cmd} "${expdir}/probe/train.log" ${python} -m espnet2.tts_diff.bin.probe train \
            --data_dir "${datadir}/${train_set}" --valid_dir "${datadir}/${valid_set}" --output "${probe}" \
            --num_threads "${threads}" ${probe_opts} \
            || { log "error: probe training failed; see ${expdir}/probe/train.log"; tail -n 5 "${expdir}/probe/train.log" >&2; return 1; }
    fi
    log "Stage 6: $(grep -o 'valid accuracy.*' "${expdir}/probe/train.log" | tail -n 1)"
    stage_end 6 "train probe$(concurrent)"
}

stages_2_6() {  # the selected stages of 2-6 in one pool of train_jobs
    # At most train_jobs at once, in this order as far as the dependencies allow: stage 2 beside the probe and
    # the prior (which do not read its output), the generator as soon as stage 2 is done, the vocoder after it too.
    pool_stages=()
    after_2=; run_stage 2 && after_2=:stage_2
    for n in 2 6 3 4 5; do
        run_stage "${n}" || continue
        case "${n}" in 3|5) pool_stages+=("stage_${n}${after_2}");; *) pool_stages+=("stage_${n}");; esac
    done
    if run_stage 3; then  # CLIPSynth-Text / -Hybrid after the others: the vocoder is needed by every system
        for g in ${generators}; do [ "${g}" = clipsonic ] || pool_stages+=("stage_3${after_2} ${g}"); done
    fi
    [ "${#pool_stages[@]}" -gt 0 ] || return 0
    lo=$(( stage > 2 ? stage : 2 )); hi=$(( stop_stage < 6 ? stop_stage : 6 ))
    range=${lo}; [ "${lo}" -eq "${hi}" ] || range=${lo}-${hi}
    log "Stages ${range}: ${pool_stages[*]} (${train_jobs} at once, ${threads} threads each)"
    # The machine-speed gauge, measured while nothing else runs: RESULTS.md prints it beside the wall times.
    ${python} -m espnet2.enh.clipsep.bin.gauge --output "${expdir}/gauge.json" >/dev/null
    t0=$(date +%s)
    pool "${train_jobs}" "${pool_stages[@]}" || { log "error: a stage of ${range} failed"; exit 1; }
    if [ "${train_jobs}" -gt 1 ] && [ "${#pool_stages[@]}" -gt 1 ]; then  # the report's total counts this row
        record_time "${range}" "the concurrent stages, side by side" $(( $(date +%s) - t0 ))
    fi
}

# ------------------------------------------------------------------------------------------------------------
table_order="iq zs pd pdp text hybrid retrieval"  # the table's rows (CLIPSonic Table 1, CLIPSynth Table 2)
runs() { has_system "$1" && { [ "$1" != pdp ] || [ -n "${pretrained_prior}" ]; }; }  # whether SYSTEM makes clips
made=$(for s in ${table_order}; do if runs "${s}"; then echo "${s}"; fi; done | xargs)  # those, in table order
gen_dir() {  # gen_dir SYSTEM: its clips (wav.scp, wav/, generate.json) and their evaluation
    case "$1" in
        text|hybrid) echo "$(gen_exp "$1")_vocoder/gen_${test_set}_$1";;
        retrieval) echo "${expdir}/retrieval/gen_${test_set}_retrieval";;
        *) echo "${final_exp}/gen_${test_set}_$1";;
    esac
}
generate_one() {  # generate_one SYSTEM (not retrieval)
    local mode=$1 dir src model=${final_exp}
    dir=$(gen_dir "${mode}")
    case "${mode}" in
        iq) src=(--spembs_scp "${raw}/${test_set}/spembs.scp");;
        zs) src=(--spembs_scp "${raw}/${test_set}/text_spembs.scp");;
        pd) src=(--text_scp "${raw}/${test_set}/text_spembs.scp" --prior "${prior}");;
        # LAION's DALL-E 2 prior reads the label texts with its own CLIP, in the template CLIPSynth used (seed 004,
        # the authors' reply: "we feed the texts to the CLIP text encoder in the form of 'a photo of {query}'")
        # shellcheck disable=SC2206  # the options are words
        pdp) src=(--query_text "${raw}/${test_set}/utt2label" --query_template "a photo of {}"
                  --prior "${pretrained_prior}" ${pretrained_prior_opts});;
        text|hybrid) src=(--spembs_scp "${raw}/${test_set}/text_spembs.scp"); model=$(gen_exp "${mode}")_vocoder;;
        gt) src=(--wav_scp "${raw}/${test_set}/wav.scp");;
        *) log "error: unknown generation mode '${mode}' (${table_order}, gt)"; return 1;;
    esac
    rm -rf "${dir}"; mkdir -p "${dir}"
    # shellcheck disable=SC2086
    ${decode_cmd} "${dir}/generate.log" ${python} -m espnet2.tts_diff.bin.generate_set \
        --train_config "${model}/config.yaml" --model_file "${model}/model.pth" "${src[@]}" \
        --utt2label "${raw}/${test_set}/utt2label" --max_per_class "${max_per_class}" --output_dir "${dir}" \
        --device "${device}" --num_threads "${gen_threads}" ${gen_args} \
        || { log "error: generation (${mode}) failed; see ${dir}/generate.log"; tail -n 5 "${dir}/generate.log" >&2; return 1; }
    log "Stage 7: ${mode}: $(grep -o '[0-9]* clips (.*' "${dir}/generate.log" | tail -n 1)"
}
for mode in iq zs pd pdp text hybrid gt; do eval "generate_${mode}() { generate_one ${mode}; }"; done
generate_retrieval() {  # per text query, the audio of the training clip of nearest CLIP image embedding
    local dir frames=()
    dir=$(gen_dir retrieval)
    # as long as the generated clips: the generator's inference_frames, or gen_args' --num_frames
    # shellcheck disable=SC2207
    frames=($(echo " ${gen_args} " | grep -o -- ' --num_frames[ =][0-9]*' | tr '=' ' ' | tail -n 1))
    [ "${#frames[@]}" -eq 2 ] && frames=(--gen_frames "${frames[1]}")
    rm -rf "${dir}"; mkdir -p "${dir}"
    # shellcheck disable=SC2086
    ${decode_cmd} "${dir}/generate.log" ${python} -m espnet2.tts_diff.bin.retrieve \
        --text_scp "${raw}/${test_set}/text_spembs.scp" --bank_scp "${raw}/${train_set}/spembs.scp" \
        --bank_wav_scp "${raw}/${train_set}/wav.scp" --train_config "${final_exp}/config.yaml" "${frames[@]}" \
        --utt2label "${raw}/${test_set}/utt2label" --max_per_class "${max_per_class}" --output_dir "${dir}" \
        ${retrieval_opts} \
        || { log "error: retrieval failed; see ${dir}/generate.log"; tail -n 5 "${dir}/generate.log" >&2; return 1; }
    log "Stage 7: retrieval: $(grep -o '[0-9]* clips (.*' "${dir}/generate.log" | tail -n 1)"
}
bench_dir=${final_exp}/benchmark_samplers_${test_set}
bench_shards=$(( gen_jobs > 1 ? gen_jobs : 1 ))
benchmark_run() {  # benchmark_run LOG OPTION...: local/benchmark_samplers.py on the IQ queries of the test set
    local log_file=$1; shift
    # shellcheck disable=SC2086
    ${decode_cmd} "${log_file}" ${python} local/benchmark_samplers.py --model "${final_exp}" \
        --probe "${probe}" --queries "${raw}/${test_set}/spembs.scp" --mode iq --utt2label "${raw}/${test_set}/utt2label" \
        --references "${datadir}/${test_set}/wav.scp" --device "${device}" --threads "${gen_threads}" \
        --out_dir "${bench_dir}" "$@" ${benchmark_opts} \
        || { log "error: the sampler benchmark failed; see ${log_file}"; tail -n 5 "${log_file}" >&2; return 1; }
}
# Shard i samples the queries i mod bench_shards, as one more job of the generation pool; the merge makes the tables.
for ((i = 0; i < bench_shards; i++)); do
    eval "benchmark_shard_${i}() { benchmark_run \"\${bench_dir}/shard${i}.log\" --shard ${i}/${bench_shards}:\${bench_dir}/shard${i}.npz; }"
done
benchmark_merge() {
    benchmark_run "${bench_dir}/benchmark.log" --merge $(for ((i = 0; i < bench_shards; i++)); do echo "${bench_dir}/shard${i}.npz"; done) || return 1
    log "Stage 7: sampler benchmark: $(grep -o 'goal.*' "${bench_dir}/results.md" | head -n 1)"
}

stage_7() {
    stage_start 7 "generation: embed the vocoder, ${made} for the ${test_set} queries, GT resynthesis$(${benchmark} && echo ", sampler benchmark")"
    local g exp
    for g in ${generators}; do  # each generator with the vocoder embedded: <exp>_vocoder
        exp=$(gen_exp "${g}")
        ${python} -m espnet2.tts_diff.bin.embed_vocoder --generator_config "${exp}/config.yaml" \
            --generator_model "${exp}/${inference_model}" --vocoder_config "${voc_exp}/config.yaml" \
            --vocoder_model "${voc_exp}/${vocoder_model}" --output_dir "${exp}_vocoder"
    done
    # One pool, the longest first: the benchmark's shards (DDPM-1000), pd / pdp (the prior, then the generator),
    # the other systems, the resynthesis (no sampling) last; a free slot never waits for the benchmark to start.
    gen_items=()
    if ${benchmark}; then
        log "Stage 7: sampler benchmark in ${bench_shards} shard(s) (logs: ${bench_dir}/shard*.log, benchmark.log)"
        rm -rf "${bench_dir}"; mkdir -p "${bench_dir}"
        for ((i = 0; i < bench_shards; i++)); do gen_items+=("benchmark_shard_${i}"); done
    fi
    for m in ${made}; do case "${m}" in pd|pdp) gen_items+=("generate_${m}");; esac; done
    for m in ${made}; do case "${m}" in pd|pdp) ;; *) gen_items+=("generate_${m}");; esac; done
    if has_system pdp && ! runs pdp; then log "Stage 7: pdp: not run (no pretrained prior: --pretrained_prior FILE)"; fi
    pool "${gen_jobs}" "${gen_items[@]}" generate_gt || exit 1
    if ${benchmark}; then benchmark_merge || exit 1; fi
    stage_end 7 "generation$(${benchmark} && echo " + sampler benchmark")"
}

# ------------------------------------------------------------------------------------------------------------
evaluate_one() {  # evaluate_one NAME GEN_SCP LABELS OUTPUT (a mel.scp beside GEN_SCP: also before the vocoder; FAD with --vggish)
    local extra=(); [ -f "$(dirname "$2")/mel.scp" ] && extra=(--gen_mel_scp "$(dirname "$2")/mel.scp")
    if [ -n "${vggish}" ]; then extra+=(--vggish "${vggish}"); fi
    local run=()
    if [ -n "${clap}" ]; then extra+=(--clap "${clap}"); run=("${clap_env[@]}"); fi
    "${run[@]}" ${python} -m espnet2.tts_diff.bin.probe evaluate --probe "${probe}" --gen_scp "$2" --gen_labels "$3" "${extra[@]}" \
        --ref_dir "${datadir}/${test_set}" --ref_cache "${expdir}/probe/ref_cache" --output "$4" \
        --num_threads "${gen_threads}" > "${4%.json}.log" 2>&1 \
        || { log "error: evaluation of $1 failed; see ${4%.json}.log"; tail -n 3 "${4%.json}.log" >&2; return 1; }
    log "Stage 8: $1: $(grep -o 'relevance .*;' "${4%.json}.log" | tail -n 1) $(grep -o 'before the vocoder.*' "${4%.json}.log" | tail -n 1) $(grep -o 'FAD (VGGish).*' "${4%.json}.log" | tail -n 1) $(grep -o 'CLAP score.*' "${4%.json}.log" | tail -n 1)"
}
for mode in ${table_order} gt; do
    eval "evaluate_${mode}() { d=\$(gen_dir ${mode}); evaluate_one ${mode} \"\${d}/wav.scp\" \"\${d}/utt2label\" \"\${d}/probe_eval.json\"; }"
done
evaluate_real() { evaluate_one real "${datadir}/${test_set}/wav.scp" "${datadir}/${test_set}/utt2label" "${expdir}/probe/eval_${test_set}_real.json"; }

stage_8() {
    stage_start 8 "evaluation with the probe: relevance and probe-FD vs ${datadir}/${test_set}"
    pool "${gen_jobs}" $(for m in ${made} gt; do echo "evaluate_${m}"; done) evaluate_real || exit 1
    stage_end 8 "evaluation"
}

# ------------------------------------------------------------------------------------------------------------
system_row() {  # system_row SYSTEM: "NAME|INFERENCE QUERY" of its table row
    case "$1" in
        iq) echo "CLIPSonic-IQ|image of the test clip";;
        zs) echo "CLIPSonic-ZS|label text (zero-shot)";;
        pd) echo "CLIPSonic-PD (trained prior)|label text -> trained prior";;
        pdp) echo "CLIPSonic-PD (pretrained prior)|label text -> pretrained DALL-E 2 prior";;
        text) echo "CLIPSynth-Text|label text";;
        hybrid) echo "CLIPSynth-Hybrid|label text";;
        retrieval) echo "retrieval|label text -> nearest training clip (its image)";;
        gt) echo "GT resynthesis (vocoder, ceiling)|real test clip";;
    esac
}
system_modality() {  # system_modality SYSTEM: "NO TEXT-AUDIO PAIRS|TRAINING QUERY" (CLIPSonic Table 1's columns)
    case "$1" in
        iq) echo "-|image";;  # image-to-audio: the paper's "-"
        zs|pd|pdp) echo "yes|image";;
        text) echo "no (labels)|label text";;
        hybrid) echo "no (labels)|image or label text ($(awk '$1 == "text_cond_prob:" { print "p = " $2 }' "${hybrid_config}"))";;
        retrieval) echo "yes|- (nearest training clip)";;
        gt) echo "-|-";;
    esac
}
stage_9() {
    stage_start 9 "report -> ${results}"
    stage_end 9 "report"  # recorded first so that the report lists every stage up to here
    local report=() mode d name a b pair
    for mode in ${table_order} gt; do
        [ "${mode}" = gt ] || has_system "${mode}" || continue
        if [ "${mode}" = gt ] || runs "${mode}"; then
            d=$(gen_dir "${mode}")
            report+=(--result "$(system_row "${mode}")|${d}/probe_eval.json|${d}/generate.json")
        else
            report+=(--not_run "$(system_row "${mode}")|not run (no pretrained prior)")
        fi
        name=$(system_row "${mode}"); report+=(--modality "${name%%|*}|$(system_modality "${mode}")")
    done
    report+=(--result "real test clips (probe accuracy)|-|${expdir}/probe/eval_${test_set}_real.json"
             --no_fd "real test clips (probe accuracy)")
    # The comparisons the papers make, paired per clip: PD - ZS (does the prior close the modality gap?), ZS - IQ
    # (what text queries lose against image queries), Text - Hybrid - ZS (what training on the labels' text
    # buys: the upper bounds), ZS - retrieval (does the generator beat the nearest training clip?).
    for pair in "pd zs" "pdp zs" "zs iq" "text hybrid" "hybrid zs" "zs retrieval"; do
        read -r a b <<< "${pair}"
        if runs "${a}" && runs "${b}"; then
            a=$(system_row "${a}"); b=$(system_row "${b}"); report+=(--compare "${a%%|*}" "${b%%|*}")
        fi
    done
    [ -f "${expdir}/gauge.json" ] && report+=(--gauge "${expdir}/gauge.json")
    ${benchmark} && [ -f "${bench_dir}/results.md" ] && report+=(--section "Sampler benchmark (local/benchmark_samplers.py)|${bench_dir}/results.md")
    # the listening page: a row per query (its label text, its clip's middle frame), a player per system
    report+=(--html_dir "${expdir}/listen_${test_set}" --utt2label "${raw}/${test_set}/utt2label")
    [ -f "${datadir}/${test_set}/frames.scp" ] && report+=(--query_image "${datadir}/${test_set}/frames.scp")
    ${python} -m espnet2.tts_diff.bin.report "${report[@]}" --timings "${timings}" \
        --title "CLIPSonic synthesis: ${dataset} ${test_set} queries" \
        --note "Generator $(for g in ${generators}; do gen_config "${g}"; done | paste -sd, - | sed 's/,/, /g'), vocoder ${vocoder_config}, prior on ${prior_data}; $(nproc) CPUs, train_jobs ${train_jobs}, ngpu ${ngpu}." \
        --output "${results}"
    cat "${results}"
}

# ------------------------------------------------------------------------------------------------------------
stage_10() {
    stage_start 10 "pack ${final_exp}/packed.zip"
    extra=(--option "${stats}/train/feats_stats.npz" --option "${prior}" --option "${prior%.pt}.yaml")
    [ -f "${results}" ] && extra+=(--option "${results}")
    if ${fit_clip}; then extra+=(--option "${expdir}/clip/${clip_model}.pt" --option "${expdir}/clip/${clip_model}.pt.json"); fi
    ${python} -m espnet2.tts_diff.bin.pack --train_config "${final_exp}/config.yaml" \
        --model_file "${final_exp}/model.pth" --outpath "${final_exp}/packed.zip" "${extra[@]}"
    stage_end 10 "pack"
}

# ------------------------------------------------------------------------------------------------------------
# Every stage is a function stage_N above; the selected ones (--stage, --stop_stage) run in order, 2-6 in a pool.
run_stages 1
stages_2_6
run_stages 7 8 9
${skip_pack} || run_stages 10
log "Successfully finished."
