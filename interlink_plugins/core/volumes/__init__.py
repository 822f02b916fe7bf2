"""Pod volumes written into the job dir, their mounts, and bind sources checked before each start."""
