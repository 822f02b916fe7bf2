"""Container logs read and followed with kubectl semantics."""
