"""Transcript text as the audio says it: without the ``Name:`` turn labels a diarised transcript
carries (the alignment stage's CTC targets, and the text LMs' unlabeled documents)."""

from __future__ import annotations

import re

# "Name:" at a line start: a letter, up to 40 more characters, a colon, then a space ("10:30", "3:1" stay)
SPEAKER_LABEL = re.compile(r"^[^\W\d_][^:\n]{0,40}:[ \t]+", flags=re.MULTILINE)


def spoken_text(transcript: str, strip_speaker_labels: bool) -> str:
    """What the audio says: the transcript, its lines joined by spaces; with
    ``strip_speaker_labels`` a leading ``Name:`` is removed from every line (a transcript that
    labels turns whose audio does not speak the label, like the bundled benchmark's)."""
    if strip_speaker_labels:
        transcript = SPEAKER_LABEL.sub("", transcript)
    return " ".join(line.strip() for line in transcript.splitlines() if line.strip())
