"""Judges of summaries: pairwise preference (DPO pairs), the 1–7 rubric, and the offline fact judge."""
