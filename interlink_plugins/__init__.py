"""interLink sidecar plugins for SLURM, HTCondor and Podman."""

# The one version source: pyproject.toml reads it (tool.setuptools.dynamic), `interlink-plugin --version` prints it.
__version__ = "0.2.0"
