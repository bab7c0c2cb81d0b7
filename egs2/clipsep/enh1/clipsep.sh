#!/usr/bin/env bash
# CLIPSep separation recipe stages, shared by every corpus (run.sh only sets the corpus options).
#
#  1. data prep      videos -> 16 kHz mono wav + 1 fps 224x224 frames, Kaldi-style dirs (mini: generate first)
#  2. CLIP           mini: fit a tiny open_clip on (image, caption) pairs; else check the pretrained weights
#  3. embeddings     CLIP image embeddings (per frame for training, 3-frame centre mean for valid/test) and
#                    template-ensembled text embeddings of the labels (valid/test; train too for CLIPSep-Text
#                    and -Hybrid), cached once; SOP: frames as npy; BERTSep: BERT embeddings of the labels
#  4. mixtures       fixed valid/test mixtures (item i draws its interferer with random.seed(i)) and the "+" sets
#                    (targets with interferers from a separate pool, as MUSIC+); shape files
#  5. training       speed gauge first; per config, ESPnet's trainer through our task (on-the-fly training
#                    mixtures; resumable)
#  6. inference      per config, evaluation set and query modality (text, image; LabelSep: label; SOP: image;
#                    BERTSep: text; PIT: both outputs; with noise_head_rows, NIT with noise head 1 kept)
#  7. scoring        SDR / SDRi / SI-SDRi (museval's window=inf values, fast backend; mean, SEM, median;
#                    near-silent items skipped);
#                    the mixtures' own scores are computed once per test set (<expdir>/score_mix_<set>.tsv)
#  8. report         RESULTS.md as the paper's Tables 2 and 3 (a row per system and test query, a column group
#                    per evaluation set, the NIT - CLIPSep paired difference, not-run rows with their reason),
#                    then per set its details (per-class table, paired differences) and a listening page
#                    (queries, players, spectrograms) in exp/<dataset>/report_<set>/; wall times, speed gauge
#  9. pack           espnet2.bin.pack zip per config, reloaded through espnet_model_zoo and verified
# 10. upload         with --hf_repo USER/NAME: the first config's pack and a model card to the Hugging Face hub
set -euo pipefail

. utils/recipe_lib.sh   # log, run_stages, stage_start / stage_end (-> ${timings}), pool
min() { local a=$1 b; for b in "$@"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }

# General
stage=1                 # first stage to run
stop_stage=100          # last stage to run
ngpu=1                  # GPUs per node for training (0: CPU)
num_nodes=1             # nodes for training (> 1 needs the slurm backend of cmd.sh)
nj=4                    # parallel jobs for data prep, embeddings and scoring
inference_nj=4          # parallel inference jobs per model, test set and query modality (key splits)
infer_jobs=1            # (model, test set, query modality) inferences run at once
gpu_inference=false     # run inference on a GPU
python=python3          # python interpreter
cmd_backend=${CLIPSEP_CMD_BACKEND:-local}   # job launcher: local or slurm (cmd.sh)
datadir=data            # Kaldi-style data dirs
dumpdir=dump            # cached CLIP embeddings
expdir=exp              # experiments
# Corpus
corpus=folder           # prepare_videos corpus: folder | music | vggsound
corpus_root=            # the local video folder
prep_opts=              # extra options of local/prepare_videos.py
make_mini_corpus=false  # stage 1 first generates the offline mini corpus into corpus_dir
mini_corpus_dir=downloads/mini   # where the mini corpus goes
mini_corpus_opts=       # extra options of local/make_mini_corpus.py
train_set=train         # training clips
valid_set=valid         # validation clips (fixed mixtures with image queries)
test_sets=test          # test clip sets (fixed mixtures; text and image queries)
plus_sets=              # "+" test sets, NAME=TARGETS+POOL: TARGETS' clips mixed with interferers drawn from
                        # the clip set POOL (MUSIC+, VGGSound-Clean+; mini: test_plus=test+noisy)
set_labels=             # table column label per evaluation set, NAME=LABEL (e.g. "test=Clean test_plus=+")
# CLIP
clip_model=ViT-B-32     # open_clip model name (mini: clipsep-tiny)
clip_pretrained=openai  # open_clip tag or local weights file
fit_clip=false          # stage 2 fits clip_model on mini_corpus_dir/clip_pretrain/pairs.tsv
fit_clip_opts=          # extra options of espnet2.enh.clipsep.bin.fit_clip
# Other query encoders
bert_dir=               # local bert-base-uncased directory (Hugging Face layout) for BERTSep; empty: BERTSep
                        # configs are listed as "not run (no BERT weights)"
bert_pythonpath=$(cat ../../../.venv/clap-pythonpath 2>/dev/null || true)  # transformers for BERTSep's embeddings (tools/install.sh)
frame_size=             # SOP: frames are cached at this size (default: the SOP config's image size)
# Mixtures
mix_segment=65535       # samples per fixed valid/test mixture (CLIPSep: 65535)
mix_opts=               # extra options of local/make_mixtures.py (mini: "--distinct_labels true", its label rule)
# Training
enh_configs=conf/tuning/train_enh_clipsep_nit.yaml   # space-separated training configs, one experiment each
enh_args=               # extra training options (override the configs)
resume=true             # resume an interrupted training from its checkpoint
train_jobs=1            # trainings run at once (on CPU each gets nproc/train_jobs threads)
# Inference, scoring, report
inference_model=valid.loss.best.pth   # checkpoint used for inference and packing
inference_args=         # extra options of espnet2.enh.clipsep.bin.inference (e.g. --mask_type binary)
test_queries="text image"   # query modalities to evaluate (query-conditioned models)
noise_head_rows=false   # also evaluate CLIPSep-NIT with noise head 1 kept (text queries; the paper's Figure 6)
examples_per_class=1    # report examples per class (besides each system's best, median and worst SDRi)
results=RESULTS.md      # the results table
skip_pack=false         # skip stage 9
hf_repo=                # stage 10: upload the first config's pack with a model card to this USER/NAME hub repo
help_message="Usage: $0 [options]   (stages: see the head of this file)"

. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
[ $# -eq 0 ] || { echo "$0: error: unexpected arguments: $*" >&2; exit 1; }

timings=${expdir}/timings.tsv   # stage wall times (stage_end), read by the report
mkdir -p "${expdir}"

exp_name() { local b; b=$(basename "$1" .yaml); echo "${b#train_}"; }
system_name() {
    case "$1" in
        enh_clipsep_nit) echo "CLIPSep-NIT";; enh_clipsep) echo "CLIPSep";; enh_clipsep_hybrid) echo "CLIPSep-Hybrid";;
        enh_pit) echo "PIT (U-Net)";; enh_labelsep) echo "LabelSep";; enh_tfgridnet_pit) echo "PIT (TF-GridNet)";;
        enh_clipsep_text) echo "CLIPSep-Text";; enh_sop) echo "SOP";; enh_bertsep) echo "BERTSep";;
        *) echo "$1";;
    esac
}
query_kind() {  # what a config trains on: clip (images) | text | hybrid | label | frames (SOP) | bert | none
    case "$(exp_name "$1")" in *bertsep*) echo bert; return;; esac
    ${python} -c 'import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c.get("separator_conf", {}) if c.get("separator") == "clipsep" else {"query_type": "none"}
kind, p = s.get("query_type", "clip"), float(s.get("text_query_prob", 0.0))
print({1.0: "text", 0.0: "clip"}.get(p, "hybrid") if kind == "clip" else kind)' "$1"
}
train_query_name() {  # the table's "training query" of a kind
    case "$1" in clip) echo image;; text) echo text;; hybrid) echo "image + text";; label) echo label;;
        frames) echo "image (SOP)";; bert) echo "text (BERT)";; *) echo "-";; esac
}
has_noise_heads() {  # true when a config has NIT noise heads
    ${python} -c 'import sys, yaml
c = yaml.safe_load(open(sys.argv[1])).get("separator_conf", {})
sys.exit(0 if int(c.get("num_noise_heads", 0) or 0) > 0 else 1)' "$1"
}
use_tensorboard=$(${python} -c 'import tensorboard' >/dev/null 2>&1 && echo true || echo false)
clip_weights=${clip_pretrained}
${fit_clip} && clip_weights=${expdir}/clip/${clip_model}.pt

not_run=()   # "SYSTEM|TRAINING QUERY|TEST QUERY|REASON" rows of the table
configs=()
for config in ${enh_configs}; do
    [ -f "${config}" ] || { log "error: training config ${config} not found"; exit 1; }
    if [ "$(query_kind "${config}")" = bert ] && [ -z "${bert_dir}" ]; then
        log "BERTSep (${config}) not run: no --bert_dir (a local bert-base-uncased; see db.sh BERT_DIR)"
        not_run+=("$(system_name "$(exp_name "${config}")")|text (BERT)|text (BERT)|no BERT weights")
        continue
    fi
    configs+=("${config}")
done
enh_configs=${configs[*]}
kinds=" $(for config in ${enh_configs}; do query_kind "${config}"; done | sort -u | tr '\n' ' ')"
eval_sets=${test_sets}   # every evaluation set: the clip test sets and the "+" sets
clip_sets=${test_sets}   # every clip set whose queries are embedded: the test sets and the "+" sets' targets
for spec in ${plus_sets}; do
    eval_sets+=" ${spec%%=*}"
    t=${spec#*=}; t=${t%%+*}
    [[ " ${clip_sets} " == *" ${t} "* ]] || clip_sets+=" ${t}"
done
set_label() { local s; for s in ${set_labels}; do [ "${s%%=*}" = "$1" ] && { echo "${s#*=}"; return; }; done; echo "$1"; }

# ------------------------------------------------------------------------------------------------------------
stage_1() {
    stage_start 1 "data preparation (${corpus}: ${corpus_root:-unset})"
    if ${make_mini_corpus}; then
        log "Stage 1: generating the mini corpus in ${mini_corpus_dir}"
        # shellcheck disable=SC2086
        ${python} local/make_mini_corpus.py --output_dir "${mini_corpus_dir}" --nj "${nj}" ${mini_corpus_opts}
    fi
    [ -n "${corpus_root}" ] || { log "error: --corpus_root is not set (see db.sh)"; exit 1; }
    # shellcheck disable=SC2086
    ${python} local/prepare_videos.py --corpus "${corpus}" --root "${corpus_root}" \
        --output_dir "${datadir}" --nj "${nj}" ${prep_opts}
    stage_end 1 "data preparation"
}

# ------------------------------------------------------------------------------------------------------------
stage_2() {
    if ${fit_clip}; then
        stage_start 2 "fit ${clip_model} on (image, caption) pairs (the offline stand-in for pretrained CLIP)"
        if [ -f "${clip_weights}" ]; then
            log "Stage 2: ${clip_weights} exists (delete it to fit again)"
        else
            # shellcheck disable=SC2086
            ${train_cmd} "${expdir}/clip/fit_clip.log" ${python} -m espnet2.enh.clipsep.bin.fit_clip \
                --pairs "${mini_corpus_dir}/clip_pretrain/pairs.tsv" --clip_model "${clip_model}" \
                --output "${clip_weights}" ${fit_clip_opts} \
                || { log "error: CLIP fitting failed; see ${expdir}/clip/fit_clip.log"; exit 1; }
        fi
        cat "${clip_weights}.json"
    else
        stage_start 2 "check the CLIP weights (${clip_model}, ${clip_pretrained})"
        ${python} -c 'import sys
from espnet2.enh.clipsep.clip.encoder import CLIPQueryEncoder
try:
    CLIPQueryEncoder(sys.argv[1], sys.argv[2], device="cpu").model
except (FileNotFoundError, RuntimeError, ValueError) as err:
    sys.exit(f"clip: error: {err}")' "${clip_model}" "${clip_pretrained}"
    fi
    stage_end 2 "CLIP"
}

# ------------------------------------------------------------------------------------------------------------
stage_3() {
    stage_start 3 "CLIP embeddings (${clip_model})"
    device=cpu; [ "${ngpu}" -gt 0 ] && device=auto
    embed=(${python} -m espnet2.enh.clipsep.bin.embed --clip_model "${clip_model}" --clip_pretrained "${clip_weights}" --device "${device}")
    # shellcheck disable=SC2317  # run by pool
    embed_one() {  # embed_one frames|image|text SET
        case "$1" in
            frames) "${embed[@]}" --frames_scp "${datadir}/$2/frames.scp" --per_frame --output_dir "${dumpdir}/clip/$2" --name image_frames;;
            image) "${embed[@]}" --frames_scp "${datadir}/$2/frames.scp" --output_dir "${dumpdir}/clip/$2" --name image;;
            text) "${embed[@]}" --text "${datadir}/$2/utt2label" --output_dir "${dumpdir}/clip/$2" --name text;;
        esac
    }
    log "Stage 3: ${train_set}: per-frame image embeddings"
    jobs=("embed_one frames ${train_set}")
    if [[ "${kinds}" == *" text "* || "${kinds}" == *" hybrid "* ]]; then
        log "Stage 3: ${train_set}: label text embeddings (CLIPSep-Text / -Hybrid train on them)"
        jobs+=("embed_one text ${train_set}")
    fi
    for dset in ${valid_set} ${clip_sets}; do
        log "Stage 3: ${dset}: image (3 frames around the centre) and text (label, 4 templates) embeddings"
        jobs+=("embed_one image ${dset}" "embed_one text ${dset}")
    done
    # One process per table, nj at once: each is mostly start-up (torch, open_clip, the model).
    pool "${nj}" "${jobs[@]}" || { log "error: CLIP embedding failed (see the messages above)"; exit 1; }
    if [[ "${kinds}" == *" frames "* ]]; then
        local size=${frame_size}
        for config in ${enh_configs}; do   # default: the first SOP config's image size
            if [ -z "${size}" ] && [ "$(query_kind "${config}")" = frames ]; then
                size=$(${python} -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["separator_conf"].get("image_net_conf", {}).get("image_size", 224))' "${config}")
            fi
        done
        for dset in ${train_set} ${valid_set} ${clip_sets}; do
            # training draws 3 frames around a random centre from every frame; valid/test use the 3 middle ones
            log "Stage 3: ${dset}: frames for SOP at ${size}x${size} (npy, dumped once)"
            centre=(--center_frames 3); [ "${dset}" = "${train_set}" ] && centre=()
            ${python} -m espnet2.enh.clipsep.bin.dump_frames --frames_scp "${datadir}/${dset}/frames.scp" \
                --output_dir "${dumpdir}/frames/${dset}" --size "${size}" --nj "${nj}" "${centre[@]}" \
                || { log "error: dumping the frames of ${dset} failed (see above)"; exit 1; }
        done
    fi
    if [[ "${kinds}" == *" bert "* ]]; then
        for dset in ${train_set} ${valid_set} ${clip_sets}; do
            log "Stage 3: ${dset}: BERT embeddings of the label text (${bert_dir})"
            # transformers lives in a directory of its own (tools/install.sh): ESPnet imports it at start-up
            env PYTHONPATH="${bert_pythonpath}${PYTHONPATH:+:${PYTHONPATH}}" ${python} -m espnet2.enh.clipsep.bin.embed \
                --text_encoder bert --bert_dir "${bert_dir}" --device "${device}" \
                --text "${datadir}/${dset}/utt2label" --output_dir "${dumpdir}/bert/${dset}" --name text \
                || { log "error: BERT embedding failed (see above)"; exit 1; }
        done
    fi
    for config in ${enh_configs}; do
        if [ "$(query_kind "${config}")" = label ]; then
            log "Stage 3: label ids for LabelSep (${config})"
            ${python} local/label_ids.py --label_list "${dumpdir}/labels/label_list.txt" \
                $(for d in ${train_set} ${valid_set} ${clip_sets}; do echo "--utt2label ${datadir}/${d}/utt2label --output_dir ${dumpdir}/labels/${d}"; done)
            break
        fi
    done
    stage_end 3 "CLIP embeddings"
}

# ------------------------------------------------------------------------------------------------------------
stage_4() {
    stage_start 4 "fixed mixtures and shape files"
    # each query table of a clip set, re-keyed per mixture source: NAME1.scp (target), NAME2.scp, ...
    set_queries() {
        queries=(--query "query=${dumpdir}/clip/$1/image.scp" --query "text_query=${dumpdir}/clip/$1/text.scp")
        local name file
        for name in label:labels/$1/label.scp frames:frames/$1/frames.scp bert_query:bert/$1/text.scp; do
            file=${dumpdir}/${name#*:}
            [ -f "${file}" ] && queries+=(--query "${name%%:*}=${file}")
        done
        return 0
    }
    for dset in ${valid_set} ${test_sets}; do
        set_queries "${dset}"
        # shellcheck disable=SC2086
        ${python} local/make_mixtures.py --source_dir "${datadir}/${dset}" \
            --output_dir "${datadir}/${dset}_mix" --segment "${mix_segment}" "${queries[@]}" ${mix_opts}
    done
    for spec in ${plus_sets}; do
        name=${spec%%=*} targets=${spec#*=}; pool=${targets#*+}; targets=${targets%%+*}
        log "Stage 4: ${name}: ${targets} clips with interferers from ${pool}"
        set_queries "${targets}"
        # shellcheck disable=SC2086
        ${python} local/make_mixtures.py --source_dir "${datadir}/${targets}" --interferer_dir "${datadir}/${pool}" \
            --output_dir "${datadir}/${name}_mix" --segment "${mix_segment}" "${queries[@]}" ${mix_opts}
    done
    mkdir -p "${expdir}/stats/train" "${expdir}/stats/valid"
    # Shapes are the sample counts (the separators normalise their input themselves: no feature statistics).
    cp "${datadir}/${train_set}/utt2num_samples" "${expdir}/stats/train/speech_ref1_shape"
    cp "${datadir}/${valid_set}_mix/utt2num_samples" "${expdir}/stats/valid/speech_mix_shape"
    stage_end 4 "mixtures"
}

# ------------------------------------------------------------------------------------------------------------
train_one() {  # train one config (stage 5)
    local config=$1 exp kind train_query valid_query vdir threads extra=()
    exp=${expdir}/$(exp_name "${config}")
    kind=$(query_kind "${config}")
    train_query=${dumpdir}/clip/${train_set}/image_frames.scp; valid_query=query
    case "${kind}" in
        label) train_query=${dumpdir}/labels/${train_set}/label.scp; valid_query=label;;
        frames) train_query=${dumpdir}/frames/${train_set}/frames.scp; valid_query=frames;;
        bert) train_query=${dumpdir}/bert/${train_set}/text.scp; valid_query=bert_query;;
        text) valid_query=text_query;;   # CLIPSep-Text validates on the label text too
    esac
    case "${kind}" in   # the label text of each training clip: text_query1, swapped in with text_query_prob
        text|hybrid) extra=(--train_data_path_and_name_and_type "${dumpdir}/clip/${train_set}/text.scp,text_query1,npy");;
    esac
    vdir=${datadir}/${valid_set}_mix
    local train_opts=(
        --config "${config}" --output_dir "${exp}" --ngpu "${ngpu}" --resume "${resume}"
        --use_tensorboard "${use_tensorboard}" --use_matplotlib false
        --train_data_path_and_name_and_type "${datadir}/${train_set}/wav.scp,speech_ref1,sound"
        --train_data_path_and_name_and_type "${train_query},query1,npy"
        --train_shape_file "${expdir}/stats/train/speech_ref1_shape"
        --valid_data_path_and_name_and_type "${vdir}/wav.scp,speech_mix,sound"
        --valid_data_path_and_name_and_type "${vdir}/spk1.scp,speech_ref1,sound"
        --valid_data_path_and_name_and_type "${vdir}/spk2.scp,speech_ref2,sound"
        --valid_data_path_and_name_and_type "${vdir}/${valid_query}1.scp,query1,npy"
        --valid_data_path_and_name_and_type "${vdir}/${valid_query}2.scp,query2,npy"
        --valid_shape_file "${expdir}/stats/valid/speech_mix_shape"
        "${extra[@]}"
    )
    if [ "${ngpu}" -gt 1 ] || [ "${num_nodes}" -gt 1 ]; then
        train_opts+=(--multiprocessing_distributed true)
    fi
    local launcher=(env)
    if [ "${train_jobs}" -gt 1 ] && [ "${ngpu}" -eq 0 ]; then
        threads=$(( $(nproc) / train_jobs )); [ "${threads}" -ge 1 ] || threads=1
        launcher=(env "OMP_NUM_THREADS=${threads}")
    fi
    if [ "${num_nodes}" -gt 1 ]; then
        # One task per node started by srun; ESPnet spawns one worker per GPU and rendezvous via a shared file.
        launcher+=(srun --export=ALL)
        train_opts+=(--dist_launcher slurm --dist_init_method "file://$(pwd)/${exp}/.dist_init_$$")
        [ "${ngpu}" -eq 0 ] && train_opts+=(--dist_backend gloo)
    fi
    log "Stage 5: training ${exp} (log: ${exp}/train.log)"
    mkdir -p "${exp}"
    # shellcheck disable=SC2086
    if ! ${cuda_cmd} --gpu "${ngpu}" --num_nodes "${num_nodes}" "${exp}/train.log" \
            "${launcher[@]}" ${python} -m espnet2.enh.clipsep.bin.train "${train_opts[@]}" ${enh_args}; then
        log "error: training failed; see ${exp}/train.log"
        tail -n 20 "${exp}/train.log" >&2
        return 1
    fi
    log "Stage 5: ${exp}: $(grep "epoch results" "${exp}/train.log" | tail -n 1 | grep -o '\[valid\].*')"
}

stage_5() {
    stage_start 5 "training: ${enh_configs} (${train_jobs} at once)"
    # The machine-speed gauge, measured while nothing else runs: RESULTS.md prints it beside the wall times.
    ${python} -m espnet2.enh.clipsep.bin.gauge --output "${expdir}/gauge.json" >/dev/null
    log "Stage 5: speed gauge $(${python} -c 'import json, sys; print(json.load(open(sys.argv[1]))["ms"])' "${expdir}/gauge.json") ms (${expdir}/gauge.json)"
    jobs=()
    for config in ${enh_configs}; do jobs+=("train_one ${config}"); done
    pool "${train_jobs}" "${jobs[@]}" || { log "error: a training failed"; exit 1; }
    stage_end 5 "training"
}

# ------------------------------------------------------------------------------------------------------------
infer_dirs() {  # "<query> <inference dir> <query table>" lines for one config and test set
    # <query> names the row's test query (text_noise: text with noise head 1 kept); <query table> is the mixture
    # dir's scp given as query1 ("-": none)
    local config=$1 dset=$2 exp kind q
    exp=${expdir}/$(exp_name "${config}")
    kind=$(query_kind "${config}")
    case "${kind}" in
        clip|text|hybrid)
            for q in ${test_queries}; do
                case "${q}" in
                    text) echo "text ${exp}/infer_${dset}_text text_query1.scp";;
                    image) echo "image ${exp}/infer_${dset}_image query1.scp";;
                    *) log "error: unknown query modality '${q}' (text, image)"; exit 1;;
                esac
            done
            if ${noise_head_rows} && has_noise_heads "${config}" && [[ " ${test_queries} " == *" text "* ]]; then
                echo "text_noise ${exp}/infer_${dset}_text_noise text_query1.scp"
            fi;;
        label) echo "label ${exp}/infer_${dset}_label label1.scp";;
        frames) echo "image ${exp}/infer_${dset}_image frames1.scp";;
        bert) echo "text ${exp}/infer_${dset}_text bert_query1.scp";;
        none) echo "oracle ${exp}/infer_${dset}_pit -";;
    esac
}
test_query_name() {  # the table's "test query" of a modality
    case "$1" in text_noise) echo "text + noise head 1";; oracle) echo "- (oracle selection)";; *) echo "$1";; esac
}

infer_one() {  # infer_one CONFIG DSET QUERY DIR TABLE: one model, test set and query modality (stage 6)
    local config=$1 dset=$2 q=$3 dir=$4 table=$5 exp mdir n scp name threads infer_ngpu extra=()
    exp=${expdir}/$(exp_name "${config}")
    mdir=${datadir}/${dset}_mix
    log "Stage 6: ${exp} on ${dset}, ${q} queries -> ${dir}"
    rm -rf "${dir}"; mkdir -p "${dir}/split"
    n=$(min "${inference_nj}" "$(wc -l < "${mdir}/wav.scp")")
    awk -v n="${n}" -v d="${dir}/split" '{ print > sprintf("%s/keys.%d.scp", d, (NR - 1) % n + 1) }' "${mdir}/wav.scp"
    local data=(--data_path_and_name_and_type "${mdir}/wav.scp,speech_mix,sound")
    [ "${table}" = - ] || data+=(--data_path_and_name_and_type "${mdir}/${table},query1,npy")
    [ "${q}" = text_noise ] && extra=(--add_noise_head 1)   # clamp(query mask + noise head 1's, 1), as the reference's calc_metrics
    local gpu_opt=(); infer_ngpu=0
    ${gpu_inference} && { gpu_opt=(--gpu 1); infer_ngpu=1; }
    threads=$(( $(nproc) / (n * infer_jobs) )); [ "${threads}" -ge 1 ] || threads=1
    # shellcheck disable=SC2086
    ${decode_cmd} "${gpu_opt[@]}" JOB=1:"${n}" "${dir}/split/infer.JOB.log" \
        env OMP_NUM_THREADS=${threads} \
        ${python} -m espnet2.enh.clipsep.bin.inference --train_config "${exp}/config.yaml" \
        --model_file "${exp}/${inference_model}" --ngpu "${infer_ngpu}" --num_workers 0 \
        --key_file "${dir}/split/keys.JOB.scp" --output_dir "${dir}/split/JOB" "${data[@]}" "${extra[@]}" ${inference_args} \
        || { log "error: inference failed; see ${dir}/split/infer.*.log"; return 1; }
    for scp in "${dir}"/split/1/spk*.scp; do
        name=$(basename "${scp}")
        cat "${dir}"/split/*/"${name}" | sort > "${dir}/${name}"
    done
}

stage_6() {
    stage_start 6 "inference (${infer_jobs} at once, ${inference_nj} jobs each)"
    jobs=()
    for config in ${enh_configs}; do
        for dset in ${eval_sets}; do
            while read -r q dir table; do
                jobs+=("infer_one ${config} ${dset} ${q} ${dir} ${table}")
            done < <(infer_dirs "${config}" "${dset}")
        done
    done
    pool "${infer_jobs}" "${jobs[@]}" || { log "error: inference failed (see the messages above)"; exit 1; }
    stage_end 6 "inference"
}

# ------------------------------------------------------------------------------------------------------------
stage_7() {
    stage_start 7 "scoring"
    for config in ${enh_configs}; do
        for dset in ${eval_sets}; do
            mdir=${datadir}/${dset}_mix
            while read -r q dir _; do
                inf=(--inf_scp "${dir}/spk1.scp")
                # PIT as the reference scores it: output 1 or its complement (mixture - output 1), the better
                [ "${q}" = oracle ] && inf+=(--oracle_complement)
                ${python} -m espnet2.enh.clipsep.bin.score --mix_scp "${mdir}/wav.scp" \
                    --ref_scp "${mdir}/spk1.scp" --ref_scp "${mdir}/spk2.scp" "${inf[@]}" \
                    --output_dir "${dir}/score" --nj "${nj}" --mix_cache "${expdir}/score_mix_${dset}.tsv"
            done < <(infer_dirs "${config}" "${dset}")
        done
    done
    stage_end 7 "scoring"
}

# ------------------------------------------------------------------------------------------------------------
step_time() {  # "SYSTEM|seconds per step|steps" from ESPnet's epoch summaries in a train.log
    # Each "Nepoch results: [train] ... train_time=T, ..., total_count=C, [valid] ..." line: T is the mean wall
    # time of that epoch's steps, C the steps so far (the first total_count of the line is the training one).
    grep "epoch results" "$2" | awk -v name="$1" '{
        seen = 0
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^train_time=/) { split($i, a, "="); sub(",", "", a[2]); t += a[2]; n++ }
            if ($i ~ /^total_count=/ && !seen) { split($i, c, "="); sub(",", "", c[2]); steps = c[2]; seen = 1 }
        }
    } END { if (n) printf "%s|%.4f|%d\n", name, t / n, steps }'
}

stage_8() {
    stage_start 8 "report -> ${results}"
    stage_end 8 "report"  # recorded first so that the report lists every stage up to here
    local table=() speed=() details=() targets spec
    for config in ${enh_configs}; do
        log_file=${expdir}/$(exp_name "${config}")/train.log
        name=$(system_name "$(exp_name "${config}")")
        [ -f "${log_file}" ] && line=$(step_time "${name}" "${log_file}") && [ -n "${line}" ] && speed+=(--step_time "${line}")
    done
    for dset in ${eval_sets}; do
        mdir=${datadir}/${dset}_mix
        targets=${dset}   # the clip set of the targets (a "+" set's TARGETS)
        for spec in ${plus_sets}; do [ "${spec%%=*}" = "${dset}" ] && { targets=${spec#*=}; targets=${targets%%+*}; }; done
        report=(); names=()
        for config in ${enh_configs}; do
            name=$(system_name "$(exp_name "${config}")")
            train_q=$(train_query_name "$(query_kind "${config}")")
            while read -r q dir _; do
                report+=(--result "${name}|${q}|${dir}/score|${dir}/spk1.scp")
                names+=("${name}|${q}")
                table+=(--row "${dset}|${name}|${train_q}|$(test_query_name "${q}")|${dir}/score")
            done < <(infer_dirs "${config}" "${dset}")
        done
        # The comparisons the paper makes, as paired per-item differences: NIT - CLIPSep per query modality,
        # and text - image queries per system.
        has() { local n; for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }
        for q in ${test_queries}; do
            has "CLIPSep-NIT|${q}" && has "CLIPSep|${q}" && report+=(--compare "CLIPSep-NIT|${q}" "CLIPSep|${q}")
        done
        for n in "${names[@]}"; do
            [ "${n##*|}" = text ] && has "${n%|*}|image" && report+=(--compare "${n}" "${n%|*}|image")
        done
        if [ -f "${dumpdir}/clip/${targets}/image.scp" ] && [ -f "${dumpdir}/clip/${targets}/text.scp" ]; then
            report+=(--retrieval "${dumpdir}/clip/${targets}/image.scp" "${dumpdir}/clip/${targets}/text.scp" "${datadir}/${targets}/utt2label")
        fi
        # what each example was asked: the target's label (the text query, before its templates) and the
        # frames of the target's video (the image query; the page shows the middle one)
        html=${expdir}/report_${dset}
        mkdir -p "${html}"
        report+=(--query_text "${mdir}/utt2label")
        if [ -f "${datadir}/${targets}/frames.scp" ] && [ -f "${mdir}/mix2sources" ]; then
            awk 'NR == FNR {f[$1] = $2; next} ($2 in f) {print $1, f[$2]}' "${datadir}/${targets}/frames.scp" \
                "${mdir}/mix2sources" > "${html}/query_frames.scp"
            report+=(--query_image "${html}/query_frames.scp")
        fi
        label=$(set_label "${dset}")
        ${python} -m espnet2.enh.clipsep.bin.report "${report[@]}" --mix_scp "${mdir}/wav.scp" \
            --ref_scp "${mdir}/spk1.scp" --label_file "${mdir}/utt2label" \
            --title "${label}: ${dset} ($(wc -l < "${mdir}/wav.scp") mixtures of ${corpus} clips)" \
            --per_class "${examples_per_class}" --output "${html}/results.md" --html_dir "${html}"
        details+=(--detail "${label} test set: ${dset}, $(wc -l < "${mdir}/wav.scp") mixtures=${html}/results.md")
        table+=(--set "${dset}=${label}")
        log "Stage 8: wrote ${html}/results.md and ${html}/index.html"
    done
    for spec in "${not_run[@]}"; do table+=(--not_run "${spec}"); done
    [ -f "${expdir}/gauge.json" ] && table+=(--gauge "${expdir}/gauge.json")
    ${python} -m espnet2.enh.clipsep.bin.results_table "${table[@]}" "${details[@]}" "${speed[@]}" \
        --timings "${timings}" --title "CLIPSep separation: ${corpus} clips (the paper's Tables 2 and 3)" \
        --output "${results}"
    log "Stage 8: wrote ${results}"
    cat "${results}"
}

# ------------------------------------------------------------------------------------------------------------
pack_one() {  # pack_one CONFIG (stage 9)
    local exp extra=()
    exp=${expdir}/$(exp_name "$1")
    [ -f "${results}" ] && extra=(--option "${results}")
    # the fitted CLIP travels with the model, so that the pack alone answers text queries anywhere
    ${fit_clip} && extra+=(--option "${clip_weights}" --option "${clip_weights}.json")
    ${python} -m espnet2.enh.clipsep.bin.pack --train_config "${exp}/config.yaml" \
        --model_file "${exp}/${inference_model}" --outpath "${exp}/packed.zip" "${extra[@]}"
}

stage_9() {
    stage_start 9 "pack"
    jobs=()
    for config in ${enh_configs}; do jobs+=("pack_one ${config}"); done
    pool "${nj}" "${jobs[@]}" || { log "error: packing failed (see the messages above)"; exit 1; }
    stage_end 9 "pack"
}

# ------------------------------------------------------------------------------------------------------------
# Every stage is a function stage_N above; the selected ones (--stage, --stop_stage) run in order.
stage_10() {
    local exp
    exp=${expdir}/$(exp_name "${enh_configs%% *}")
    stage_start 10 "upload ${exp}/packed.zip -> ${hf_repo}"
    ${python} -m espnet2.enh.clipsep.bin.upload --pack "${exp}/packed.zip" --hf_repo "${hf_repo}" --results "${results}" \
        || { log "error: the upload to ${hf_repo} failed (see above)"; exit 1; }
    stage_end 10 "upload"
}

run_stages 1 2 3 4 5 6 7 8
${skip_pack} || run_stages 9
[ -z "${hf_repo}" ] || run_stages 10
log "Successfully finished."
