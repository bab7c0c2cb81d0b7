#!/usr/bin/env bash
# Run a command (or an array of jobs) through Slurm, logging to a file: the slurm backend of cmd.sh.
#   utils/launch_slurm.sh [--gpu N] [--mem M] [--num_threads T] [--num_nodes K] [--time T] [JOB=1:N] LOG CMD...
# Same interface as utils/launch_local.sh. Each job is submitted with `sbatch --wait` (an array for JOB=a:b)
# and this script waits for all of them. Extra sbatch options: SLURM_OPTS in the environment or
# conf/slurm.conf (one option per line, e.g. --partition=gpu). With --num_nodes K > 1 the command itself
# must start its tasks with srun (the stage script does this for multi-node training).
set -uo pipefail

gpu=0; mem=""; threads=1; num_nodes=1; time_limit=""; max_jobs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) gpu=$2; shift 2;;
        --mem) mem=$2; shift 2;;
        --num_threads) threads=$2; shift 2;;
        --num_nodes) num_nodes=$2; shift 2;;
        --time) time_limit=$2; shift 2;;
        --max_jobs_run) max_jobs=$2; shift 2;;
        --*) echo "$0: error: unknown option $1" >&2; exit 1;;
        *) break;;
    esac
done
command -v sbatch >/dev/null || { echo "$0: error: sbatch not found (cmd.sh selects the slurm backend)" >&2; exit 1; }

first=1; last=1; array=false
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; array=true; shift
fi
[ $# -ge 2 ] || { echo "usage: $0 [options] [JOB=1:N] LOG CMD..." >&2; exit 1; }
log_pattern=$1; shift
cmd="$*"

opts=(--parsable --wait --export=ALL --nodes="${num_nodes}" --ntasks-per-node=1 --cpus-per-task="${threads}")
[ "${gpu}" -gt 0 ] && opts+=(--gres="gpu:${gpu}")
[ -n "${mem}" ] && opts+=(--mem="${mem}")
[ -n "${time_limit}" ] && opts+=(--time="${time_limit}")
[ -f conf/slurm.conf ] && while read -r line; do [[ "${line}" =~ ^-- ]] && opts+=("${line}"); done < conf/slurm.conf
# shellcheck disable=SC2206
[ -n "${SLURM_OPTS:-}" ] && opts+=(${SLURM_OPTS})

dir=$(dirname "${log_pattern}")
mkdir -p "${dir}/q"
script="${dir}/q/$(basename "${log_pattern//JOB/array}" .log).sh"
if ${array}; then
    opts+=(--array="${first}-${last}${max_jobs:+%${max_jobs}}" --output=/dev/null)
    job='${SLURM_ARRAY_TASK_ID}'
else
    opts+=(--output=/dev/null)
    job=1
fi
cat > "${script}" <<SCRIPT
#!/usr/bin/env bash
cd "$(pwd)"
job=${job}
log="${log_pattern}"; ${array} && log=\${log//JOB/\${job}}
cmd='${cmd//\'/\'\\\'\'}'; ${array} && cmd=\${cmd//JOB/\${job}}
{ echo "# \${cmd}"; echo "# Started at \$(date) on \$(hostname), Slurm job \${SLURM_JOB_ID}"; } > "\${log}"
start=\$(date +%s)
bash -c "\${cmd}" >> "\${log}" 2>&1
status=\$?
echo "# Ended (code \${status}) at \$(date), elapsed \$(( \$(date +%s) - start )) seconds" >> "\${log}"
exit \${status}
SCRIPT
chmod +x "${script}"
if ! sbatch "${opts[@]}" --job-name="$(basename "${script}" .sh)" "${script}" >/dev/null; then
    echo "$0: error: a Slurm job failed; see ${log_pattern}" >&2
    exit 1
fi
