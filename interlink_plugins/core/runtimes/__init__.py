"""Container runtimes (apptainer, singularity, podman, enroot, none): a container as argv, probes and hooks."""
