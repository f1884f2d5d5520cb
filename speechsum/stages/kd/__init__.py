"""Stage 2, on-policy KD: the stage module, the text teachers, and the teacher-scoring callback."""

from speechsum.stages.kd.module import OnPolicyKDModule

__all__ = ["OnPolicyKDModule"]
