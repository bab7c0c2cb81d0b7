#!/usr/bin/env bash
# Run a command (or an array of jobs) on this machine, logging to a file: the local backend of cmd.sh.
#   utils/launch_local.sh [--gpu N] [--mem M] [--num_threads T] [--num_nodes 1] [--time T] [JOB=1:N] LOG CMD...
# With JOB=a:b, every "JOB" in LOG and CMD is replaced by the job number and the jobs run in parallel.
# Resource options are accepted for compatibility with the Slurm backend (--num_nodes must be 1 here).
# Each log starts with the command and ends with "# Ended (code C) at DATE, elapsed S seconds".
# Exit status: 0 if every job succeeded, else 1 with the failed logs named on stderr.
set -uo pipefail

num_nodes=1
while [ $# -gt 0 ]; do
    case "$1" in
        --num_nodes) num_nodes=$2; shift 2;;
        --gpu|--mem|--num_threads|--time|--max_jobs_run) shift 2;;
        --*) echo "$0: error: unknown option $1" >&2; exit 1;;
        *) break;;
    esac
done
[ "${num_nodes}" = 1 ] || { echo "$0: error: the local backend runs on one node (--num_nodes ${num_nodes}); use the slurm backend in cmd.sh" >&2; exit 1; }

first=1; last=1; array=false
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; array=true; shift
fi
[ $# -ge 2 ] || { echo "usage: $0 [options] [JOB=1:N] LOG CMD..." >&2; exit 1; }
log_pattern=$1; shift
cmd_pattern="$*"

run_job() {
    local job=$1 log cmd start status
    log=${log_pattern//JOB/${job}}
    cmd=${cmd_pattern//JOB/${job}}
    ${array} || { log=${log_pattern}; cmd=${cmd_pattern}; }
    mkdir -p "$(dirname "${log}")"
    start=$(date +%s)
    { echo "# ${cmd}"; echo "# Started at $(date)"; } > "${log}"
    bash -c "${cmd}" >> "${log}" 2>&1
    status=$?
    echo "# Ended (code ${status}) at $(date), elapsed $(( $(date +%s) - start )) seconds" >> "${log}"
    return ${status}
}

pids=()
for ((job = first; job <= last; job++)); do
    run_job "${job}" &
    pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        job=$((first + i))
        log=${log_pattern}; ${array} && log=${log_pattern//JOB/${job}}
        echo "$0: job ${job} failed; see ${log}" >&2
        failed=1
    fi
done
exit ${failed}
