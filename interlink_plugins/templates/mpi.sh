#!/usr/bin/env bash
# interlink-plugins MPI helper, installed in the job dir (pods with slurm-job.vk.io/mpi-flags).
#   mpi.sh launch LAUNCHER... --il-task RUNTIME ARGV...
#       runs LAUNCHER (srun --export=ALL, mpiexec -np @NTASKS@, ... plus the pod's mpi flags) with
#       `bash mpi.sh task RUNTIME ARGV...` as its program; the word @NTASKS@ becomes $SLURM_NTASKS
#   mpi.sh task RUNTIME ARGV...
#       once per task: passes the task's rank variables (SLURM_*, PMI_*, PMIX_*, OMPI_*, ...) into
#       the container through the runtime's own env mechanism, then execs ARGV
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
        SLURM_* | PMI_* | PMIX_* | OMPI_* | MPI_* | I_MPI_* | HYDRA_* | HYDI_* | MV2_* | UCX_*) rank+=("$entry") ;;
      esac
    done < <(env -0)
    out=()
    case $runtime in
      none)
        # ns-exec.sh --env-file FILE ...: a copy of FILE (NUL-separated NAME=VALUE records, 0600)
        # with the rank variables added, one per task; or env -i -- NAME=VALUE... PROGRAM
        done_=0
        for ((k = 0; k < ${#argv[@]}; k++)); do
          if ((!done_)) && [[ ${argv[k]} == --env-file && $((k + 1)) -lt ${#argv[@]} ]]; then
            source_file=${argv[k + 1]}
            task_file="$source_file.task-${SLURM_PROCID:-0}"
            (
              umask 077
              cat -- "$source_file" >"$task_file.tmp" || exit 1
              for entry in "${rank[@]}"; do
                printf '%s\0' "$entry"
              done >>"$task_file.tmp"
              mv -f -- "$task_file.tmp" "$task_file"
            ) || { echo "mpi.sh: cannot write $task_file" >&2; exit 125; }
            out+=(--env-file "$task_file")
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
        # env PREFIX_NAME=VALUE... apptainer exec ...
        prefix=APPTAINERENV_
        [[ $runtime == singularity ]] && prefix=SINGULARITYENV_
        out=("${argv[0]}")
        for entry in "${rank[@]}"; do
          out+=("$prefix$entry")
        done
        out+=("${argv[@]:1}")
        ;;
      enroot)
        # env NAME=VALUE... enroot start --env NAME ... : each variable named after `start`
        out=("${argv[0]}" "${rank[@]}")
        done_=0
        for ((k = 1; k < ${#argv[@]}; k++)); do
          out+=("${argv[k]}")
          if ((!done_)) && [[ ${argv[k]} == start ]]; then
            done_=1
            for entry in "${rank[@]}"; do
              out+=(--env "${entry%%=*}")
            done
          fi
        done
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
