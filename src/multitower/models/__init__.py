"""multitower.models."""
