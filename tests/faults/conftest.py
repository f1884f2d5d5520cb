"""Fixtures shared with the fault-free tests of the same paths (the same tiny teacher and student)."""

from tests import test_pairs
from tests.stages import test_teachers

teacher_dir = test_teachers.teacher_dir  # a saved tiny causal LM (module scope)
student = test_pairs.student  # a tiny composed student's config + checkpoint (module scope)
