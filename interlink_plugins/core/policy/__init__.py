"""The admin's policy: option annotations, allow-lists and per-namespace rules."""
