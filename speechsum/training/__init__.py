"""Trainer-side pieces named in YAML configs: callbacks, loggers, distributed-strategy policies."""
