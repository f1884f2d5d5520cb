"""A training stage's resolved config kept apart from the credentials of the URLs in it (a remote
teacher's ``base_url: http://user:password@host/v1`` in the pipeline YAML): ``RUN/<stage>/config.yaml``
is written with them masked, and ``speechsum fit`` gets them on its command line (which the stage log
shows masked). A rerun reads them from the user's pipeline YAML again, never from the run folder."""

from __future__ import annotations

from typing import Any

from speechsum.utils.arguments import masked_credentials


def credentials_apart(resolved: dict) -> tuple[dict, list[str]]:
    """(``resolved`` with every URL's credentials masked, the ``--KEY VALUE`` options that set each masked
    setting back for ``speechsum fit``). A setting inside a list (no ``--KEY`` names it) stays whole."""
    options: list[str] = []

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {name: walk(item, f"{key}.{name}" if key else str(name)) for name, item in value.items()}
        masked = masked_credentials(value) if isinstance(value, str) else value
        if masked != value:
            options.extend([f"--{key}", value])
        return masked

    return walk(resolved, ""), options
