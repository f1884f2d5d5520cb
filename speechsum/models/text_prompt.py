"""The one prompt format for text LLMs that read a transcript (teacher, text backbone, cascade).

The audio student hears the speech; a text model reads what was said instead. Every text-side
component (the benchmark's text LMs, KD teachers local and remote, the text and cascade rows of
the evaluation) builds its prompt here, so teacher scoring and text evaluation see the same input
the text LMs were trained on.
"""

from __future__ import annotations

TRANSCRIPT_HEADER = "Transcript:"


def text_user_content(instruction: str, transcript: str) -> str:
    """``"{transcript header}\\n{transcript}\\n\\n{instruction}"``: the transcript first, then the ask."""
    return f"{TRANSCRIPT_HEADER}\n{transcript.strip()}\n\n{instruction.strip()}"


def text_messages(instruction: str, transcript: str, system_prompt: str | None = None) -> list[dict]:
    """Chat messages (system prompt optional) for a text LLM reading ``transcript``."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": text_user_content(instruction, transcript)}]
