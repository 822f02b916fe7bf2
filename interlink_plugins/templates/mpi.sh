#!/usr/bin/env bash
# interlink-plugins MPI helper, installed in the job dir (pods with slurm-job.vk.io/mpi-flags).
#   mpi.sh launch LAUNCHER... --il-task RUNTIME ARGV...
#       runs LAUNCHER (srun --export=ALL, mpiexec -np @NTASKS@, ... plus the pod's mpi flags) with
#       `bash mpi.sh task RUNTIME ARGV...` as its program; the word @NTASKS@ becomes $SLURM_NTASKS
#   mpi.sh task RUNTIME ARGV...
#       once per task: passes the task's rank variables (SLURM_*, SLURMD_NODENAME, PMI_*, PMIX_*,
#       OMPI_*, ...) into the container through the runtime's own env mechanism, then execs ARGV
# Every value arrives as an argument: nothing here evaluates it.
set -u
self=${BASH_SOURCE[0]}
mode=${1-}
shift || true
case $mode in
  launch)
    launcher=()
    while (($#)) && [[ $1 != --il-task ]]; do
      if [[ $1 == @NTASKS@ ]]; then
        launcher+=("${SLURM_NTASKS:-1}")
      else
        launcher+=("$1")
      fi
      shift
    done
    [[ ${1-} == --il-task ]] || { echo "mpi.sh: missing --il-task" >&2; exit 2; }
    shift
    exec "${launcher[@]}" bash "$self" task "$@"
    ;;
  task)
    runtime=${1-}
    shift || true
    argv=("$@")
    rank=()
    while IFS= read -r -d '' entry; do
      case ${entry%%=*} in
        SLURM_* | SLURMD_NODENAME | PMI_* | PMIX_* | OMPI_* | MPI_* | I_MPI_* | HYDRA_* | HYDI_* | MV2_* | UCX_*) rank+=("$entry") ;;
      esac
    done < <(env -0)
    # task_file SRC: a copy of the env file SRC (NUL-separated NAME=VALUE records) with the rank
    # variables added (later records win), in a new 0600 file of its own beside SRC; prints its path.
    # One file per task process: the ranks of every node write beside the same SRC, and a launcher
    # other than srun (mpirun) leaves SLURM_PROCID the batch step's in all of them
    task_file() {
      local target entry
      target=$(mktemp -- "$1.task-XXXXXXXXXX") || { echo "mpi.sh: cannot create a file beside $1" >&2; exit 125; }
      {
        cat -- "$1" && for entry in "${rank[@]}"; do printf '%s\0' "$entry"; done
      } >"$target" || { echo "mpi.sh: cannot write $target" >&2; exit 125; }
      printf '%s' "$target"
    }
    out=()
    done_=0
    if [[ ($runtime == apptainer || $runtime == singularity) && ${argv[1]-} == */apptainer.sh ]]; then
      # bash apptainer.sh BINARY FALLBACK ENV_FILE ...: the env file carries the container's env
      out=("${argv[@]}")
      out[4]=$(task_file "${argv[4]}") || exit 125
      done_=1
    fi
    case $runtime in
      none)
        # ns-exec.sh --env-file FILE ..., or env -i -- NAME=VALUE... PROGRAM
        for ((k = 0; k < ${#argv[@]}; k++)); do
          if ((!done_)) && [[ ${argv[k]} == --env-file && $((k + 1)) -lt ${#argv[@]} ]]; then
            out+=(--env-file "$(task_file "${argv[k + 1]}")") || exit 125
            k=$((k + 1))
            done_=1
            continue
          fi
          out+=("${argv[k]}")
          if ((!done_)) && [[ ${argv[k]} == -- && ${argv[k - 1]-} == -i && ${argv[k - 2]-} == env ]]; then
            out+=("${rank[@]}")
            done_=1
          fi
        done
        ;;
      apptainer | singularity)
        if ((!done_)); then
          # env PREFIX_NAME=VALUE... apptainer exec ...
          prefix=APPTAINERENV_
          [[ $runtime == singularity ]] && prefix=SINGULARITYENV_
          out=("${argv[0]}")
          for entry in "${rank[@]}"; do
            out+=("$prefix$entry")
          done
          out+=("${argv[@]:1}")
        fi
        ;;
      *)
        out=("${argv[@]}")
        ;;
    esac
    exec "${out[@]}"
    ;;
  *)
    echo "mpi.sh: unknown mode ${mode@Q}" >&2
    exit 2
    ;;
esac
