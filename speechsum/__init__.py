"""speechsum: train speech LLMs to summarise speech with SFT, on-policy KD and DPO."""

__version__ = "0.1.0"
