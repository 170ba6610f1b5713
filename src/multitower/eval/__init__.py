"""multitower.eval."""
