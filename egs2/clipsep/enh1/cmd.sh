# Job launchers used by clipsep.sh: "local" runs on this machine, "slurm" submits with sbatch.
# Both take: [--gpu N] [--mem M] [--num_threads T] [--num_nodes K] [--time T] [JOB=1:N] LOG CMD...
# Extra sbatch options go in conf/slurm.conf (one per line) or SLURM_OPTS.
cmd_backend=${cmd_backend:-${CLIPSEP_CMD_BACKEND:-local}}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/launch_local.sh"
        export cuda_cmd="utils/launch_local.sh"
        export decode_cmd="utils/launch_local.sh";;
    slurm)
        export train_cmd="utils/launch_slurm.sh"
        export cuda_cmd="utils/launch_slurm.sh"
        export decode_cmd="utils/launch_slurm.sh";;
    *) echo "cmd.sh: error: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2; return 1;;
esac
