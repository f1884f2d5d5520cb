"""Lightning's ``config.yaml`` of a run, saved with the credentials of every URL in it masked (a remote
teacher's ``base_url: http://user:password@host/v1``): run folders are shared, uploaded and kept, and
the credentials stay in the user's own config, which a rerun or ``--ckpt_path last`` resume reads. The
checkpoints' hyperparameters are masked too (:meth:`SpeechStageModule.on_save_checkpoint`); a model that
``validate``/``test``/``predict`` rebuild from them gets the credentials back from the config given
(:func:`restore_credentials`)."""

from __future__ import annotations

import argparse
import copy
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback

from speechsum.utils.arguments import ConfigError, masked_credentials, without_url_credentials


class MaskedSaveConfigCallback(SaveConfigCallback):
    """``SaveConfigCallback`` writing the config with URL credentials masked (``http://***@host``)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        given = self.config
        self.config = masked_credentials(given)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.config = given


def restore_credentials(rebuilt: Any, given: Any, ckpt_path: str) -> Any:
    """``rebuilt`` (the model section Lightning rebuilt from a checkpoint's hyperparameters) with each URL whose
    credentials they hold masked put back whole from ``given`` (the model section of the config given) where it
    names the same URL with its credentials; a ``ConfigError`` saying what to give where it does not."""
    whole = {without_url_credentials(text): text for text in _strings(given) if without_url_credentials(text) != text}

    def restored(value: Any, key: str) -> Any:
        if isinstance(value, str) and "://***@" in value:
            if value not in whole:
                key = key.replace(".dict_kwargs.", ".init_args.")  # as a config spells it
                raise ConfigError(f"ckpt_path {ckpt_path}: {key} was saved with its URL's credentials masked ({value}): "
                                  "give the URL whole in the --config file or on the command line")
            return whole[value]
        if isinstance(value, dict | argparse.Namespace):
            fields = value if isinstance(value, dict) else vars(value)
            for name, item in list(fields.items()):
                fields[name] = restored(item, f"{key}.{name}")
        elif isinstance(value, list):
            value[:] = [restored(item, f"{key}[{index}]") for index, item in enumerate(value)]
        return value

    return restored(rebuilt, "model")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict | argparse.Namespace):
        return [text for item in (value if isinstance(value, dict) else vars(value)).values() for text in _strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    return []


def model_section(config: Any) -> Any:
    """A copy of ``config``'s model section, or None (before Lightning replaces it with a checkpoint's)."""
    return copy.deepcopy(config.get("model"))
