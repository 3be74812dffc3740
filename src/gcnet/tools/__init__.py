"""Analysis tools: memory and time measurement, FLOPs/params, attention maps."""
