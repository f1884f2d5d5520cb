"""The advice that ends an error on a bad clip: to drop it from the manifest that names it, or, for
audio no manifest names (a file ``speechsum summarize`` reads, an array given in Python), what
:func:`without_manifest` puts there instead (they were told to fix a manifest)."""

from __future__ import annotations

DROP_FROM_MANIFEST = "drop it from the manifest"


def without_manifest(error: ValueError, instead: str) -> ValueError:
    """``error`` (same class and attributes) with its advice to drop the clip from the manifest
    replaced by ``instead`` (``error`` itself when it gives no such advice)."""
    text = str(error)
    if DROP_FROM_MANIFEST not in text:
        return error
    advised = type(error).__new__(type(error))
    advised.__dict__.update(error.__dict__)
    advised.args = (text.replace(DROP_FROM_MANIFEST, instead),)
    return advised
