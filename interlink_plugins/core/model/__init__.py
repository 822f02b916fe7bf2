"""The pod as the plugin understands it: parsed, named, measured and checked."""
