"""A training stage's resolved config kept apart from the credentials of the URLs in it (a remote
teacher's ``base_url: http://user:password@host/v1`` in the pipeline YAML, an MLflow logger's
``tracking_uri`` in the ``trainer.logger`` list): ``RUN/<stage>/config.yaml`` is written with them
masked, and ``speechsum fit`` reads them back from a second ``--config``, a file only its owner can
read (0600) in ``RUN/.state``, deleted once fit ends: on its command line they were visible to every
user of the machine (``ps``). So does a judging command (``pairs``, ``evaluate``) get a judge base_url with
credentials, from its environment (:func:`judge_url_options`). A rerun reads them from the user's pipeline YAML
again, never from the run folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from speechsum.utils.arguments import masked_credentials, without_url_credentials

NONE = object()  # a setting that holds no credentials
JUDGE_URL_VARIABLE = "SPEECHSUM_JUDGE_BASE_URL"  # a judge base_url with credentials, for the command alone


def credentials_apart(resolved: dict) -> tuple[dict, dict]:
    """(``resolved`` with every URL's credentials masked, the settings that held them, whole, nested as in
    ``resolved``: a config that sets them back on top of the masked one). A setting inside a list (no key
    names one item alone) is masked inside it, and set back as the whole list."""

    def walk(value: Any) -> tuple[Any, Any]:
        if isinstance(value, dict):
            masked, whole = {}, {}
            for name, item in value.items():
                masked[name], kept = walk(item)
                if kept is not NONE:
                    whole[name] = kept
            return masked, whole or NONE
        masked = masked_credentials(value)
        return masked, NONE if masked == value else value

    masked, whole = walk(resolved)
    return masked, {} if whole is NONE else whole


@contextlib.contextmanager
def credentials_config(state_dir: Path, stage: str, credentials: dict) -> Iterator[list[str]]:
    """The ``--config FILE`` options that give ``speechsum fit`` the ``credentials`` (none when there are
    none): FILE is created 0600 in ``state_dir`` and deleted on exit, however fit ended (one a killed run left
    there goes first)."""
    for stale in state_dir.glob(f"{stage}.credentials.*.yaml"):  # left by a run killed outright (SIGKILL, power)
        stale.unlink(missing_ok=True)
    if not credentials:
        yield []
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{stage}.credentials.", suffix=".yaml", dir=state_dir)  # 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(yaml.safe_dump(credentials, sort_keys=False))
        yield ["--config", name]
    finally:
        Path(name).unlink(missing_ok=True)


def judge_url_options(ctx: Any, url: str | None) -> list[str]:
    """``--judge-base-url`` of a judging command (none for the official API); a URL with ``user:password@``
    goes to the command in its environment, as ``env:`` :data:`JUDGE_URL_VARIABLE` (on its command line
    every user of the machine saw it, in ``ps``)."""
    if not url:
        return []
    if without_url_credentials(url) == url:
        return ["--judge-base-url", url]
    ctx.secret_env[JUDGE_URL_VARIABLE] = url
    return ["--judge-base-url", f"env:{JUDGE_URL_VARIABLE}"]
