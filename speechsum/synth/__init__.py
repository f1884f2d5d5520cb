"""``speechsum synth``: the paper's SFT data from your own audio (queries, ratings, answers by an LLM)."""
