"""``speechsum pipeline``: the whole recipe, end to end, as resumable stages (see docs/pipeline.md)."""
