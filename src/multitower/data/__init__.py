"""multitower.data."""
