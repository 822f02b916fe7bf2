"""What the plugin knows of each pod: its durable record (job, phase, lifecycle) and its container statuses."""
