#!/usr/bin/env bash
# Shell helpers of the clipsep recipes' stage scripts (enh1/clipsep.sh, tts1/clipsonic.sh, whose utils/ links
# here): log lines, stage selection, stage wall times and a job pool. Source it; it defines functions only (no
# variables, so utils/parse_options.sh sees no new options). The sourcing script sets its shell options
# (set -euo pipefail) and the variables the helpers read: stage, stop_stage (run_stage) and timings (the TSV of
# stage wall times that the report reads).
# shellcheck disable=SC2154  # stage, stop_stage, timings: set by the sourcing script

# log MSG...: print "DATE (FILE:LINE:FUNCTION) MSG", FILE:LINE:FUNCTION being where log was called.
log() { log_up 1 "$@"; }

# log_up K MSG...: as log, placed where the function K calls up was called: log_up 1 in a helper names the
# helper's caller (so the stage and pool helpers below report the script's line, not their own).
log_up() {
    local k=$1
    shift
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[k+1]##*/}:${BASH_LINENO[k]}:${FUNCNAME[k+1]-}) $*"
}

# run_stage N: true when stage N is selected, i.e. stage <= N <= stop_stage.
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }

# run_stages N...: call the function stage_N of each selected stage N, in the order given.
run_stages() {
    local n
    for n in "$@"; do
        if run_stage "${n}"; then "stage_${n}"; fi
    done
}

# stage_start N DESC: log "Stage N: DESC" and start the stage's clock (one per shell: pooled stages, each in
# its own subshell, keep their own).
stage_start() {
    STAGE_T0=$(date +%s)
    log_up 1 "Stage $1: $2"
}

# stage_end N DESC: record the seconds since stage_start as the row "N<TAB>DESC<TAB>SECONDS" of ${timings},
# then log "Stage N done in SECONDS s".
stage_end() {
    local sec=$(( $(date +%s) - STAGE_T0 ))
    record_time "$1" "$2" "${sec}"
    log_up 1 "Stage $1 done in ${sec} s"
}

# record_time STAGE DESC SECONDS: set STAGE's row of ${timings} (replacing an earlier one). Rows are sorted by
# stage number, a range "2-6" right after its last stage; concurrent jobs take ${timings}.lock.
record_time() {
    (
        flock 9
        { [ -f "${timings}" ] && awk -F'\t' -v s="$1" '$1 != s' "${timings}"; printf '%s\t%s\t%s\n' "$1" "$2" "$3"; } \
            | awk -F'\t' '{ k = $1; r = sub(/.*-/, "", k); print 2 * k + r "\t" $0 }' | sort -s -n -k1,1 | cut -f2- \
            > "${timings}.tmp" && mv "${timings}.tmp" "${timings}"
    ) 9> "${timings}.lock"
}

# pool N ITEM...: run every ITEM as a background job, at most N at once, and wait for them all. An ITEM is
# "FUNC ARG..." (split into words, no globbing) or "FUNC:AFTER ARG...", which starts only once every other item
# whose FUNC is AFTER has succeeded and is not started at all (counts as failed, with a log line) if one failed
# or none is in the list. A free slot takes the first waiting ITEM that may start. Each job runs in a subshell
# with set +e (FUNC returns its errors, as in an `if` condition) and fails when it ends with a non-zero status
# (a return or an exit). Returns 1, after a log line "error: failed: ITEM, ITEM...", if any ITEM failed.
pool() {
    local n=$1 dir i j why ready running
    local -a item=("${@:2}") fn=() after=() state=() pid=() w=() failed=()
    [ "${n}" -ge 1 ] || n=1
    dir=$(mktemp -d)
    for i in "${!item[@]}"; do  # item[i] becomes "FUNC ARG..." (as run and as named in log lines)
        read -ra w <<< "${item[i]}"
        fn[i]=${w[0]%%:*}; after[i]=${w[0]#"${fn[i]}"}; after[i]=${after[i]#:}
        w[0]=${fn[i]}; item[i]=${w[*]}; state[i]=waiting
    done
    while :; do
        running=0
        for i in "${!item[@]}"; do  # a job has ended when its process has; it succeeded if it left its flag
            [ "${state[i]}" = running ] || continue
            if kill -0 "${pid[i]}" 2>/dev/null; then running=$(( running + 1 ))
            elif [ -e "${dir}/${i}.ok" ]; then state[i]=ok
            else state[i]=failed; fi
        done
        for i in "${!item[@]}"; do  # start what may start, in list order
            [ "${state[i]}" = waiting ] || continue
            ready=true; why=
            if [ -n "${after[i]}" ]; then
                why="${after[i]} is not in the pool"
                for j in "${!item[@]}"; do
                    if [ "${j}" = "${i}" ] || [ "${fn[j]}" != "${after[i]}" ]; then continue; fi
                    why=
                    case "${state[j]}" in ok) ;; failed) why="${after[i]} failed"; break;; *) ready=false;; esac
                done
            fi
            if [ -n "${why}" ]; then
                log_up 1 "${item[i]}: not started: ${why}"; state[i]=failed
            elif ${ready} && [ "${running}" -lt "${n}" ]; then
                read -ra w <<< "${item[i]}"
                # shellcheck disable=SC2064  # the flag's path is expanded now, on purpose
                ( set +e; trap "[ \$? -ne 0 ] || touch $(printf %q "${dir}/${i}.ok")" EXIT; "${w[@]}" ) &
                pid[i]=$!; state[i]=running; running=$(( running + 1 ))
            fi
        done
        [ "${running}" -gt 0 ] || break    # all done, or the rest wait on each other
        wait -n 2>/dev/null || sleep 0.1   # until a job ends (also after a failed one; bash < 4.3: polls)
    done
    rm -rf "${dir}"
    for i in "${!item[@]}"; do
        if [ "${state[i]}" = waiting ]; then
            log_up 1 "${item[i]}: not started: ${after[i]} never finished (a cycle)"; state[i]=failed
        fi
        [ "${state[i]}" != failed ] || failed+=("${item[i]}")
    done
    [ "${#failed[@]}" -eq 0 ] && return 0
    log_up 1 "error: failed: $(printf '%s, ' "${failed[@]}" | sed 's/, $//')"
    return 1
}
