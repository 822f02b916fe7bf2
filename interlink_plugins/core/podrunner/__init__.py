"""The pod runner: the bash script that runs a pod's containers inside a job, its job dir and state files."""
