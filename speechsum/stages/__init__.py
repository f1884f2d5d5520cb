"""Stage modules. Each is imported here so the CLI knows it by its short class name."""

from speechsum.stages import align, dpo, kd, sft, text_lm  # noqa: F401
