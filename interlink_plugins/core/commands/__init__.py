"""Running commands: the one local runner, the SSH runner and job files over SFTP."""
