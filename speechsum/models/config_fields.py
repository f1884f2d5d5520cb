"""Fields of a backbone's config dict that its transformers config class does not know, and values
a command line gave as text.

``AutoConfig.for_model("llama", hiden_size=128)`` and ``WhisperConfig(d_modle=64)`` store the misspelt
field as an attribute nobody reads and build the model with the default (a 4096-wide Llama instead
of a 128-wide one), without a word; :func:`check_config_fields` refuses such a field instead. A field
set on the command line (``--model.init_args.model.init_args.encoder.encoder_layers 1``) arrives as
the string ``'1'``, which transformers' typed configs refuse; :func:`typed_values` reads it as YAML."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import yaml
from transformers import PretrainedConfig

from speechsum.utils.arguments import ConfigError
from speechsum.utils.config_keys import did_you_mean


class UnknownConfigField(ConfigError):
    """A field of a config dict (``setting``, e.g. ``llm``) its config class does not take; ``field``:
    its name as written (``hiden_size``), ``path`` its dotted place below the setting."""

    def __init__(self, setting: str, path: str, config_class: type, known: list[str]):
        self.setting, self.path, self.field = setting, path, path.rsplit(".", 1)[-1]
        self.problem = (f"not a field of {config_class.__name__}{did_you_mean(self.field, known)}; transformers "
                        "would keep it unread and build the model with its default: fix or remove it")
        super().__init__(self.located(""))

    def located(self, where: str) -> str:
        """The message, with ``where`` (``FILE:LINE``, "" for none) after the field's name."""
        return f"{self.setting}.{self.path}{f' ({where})' if where else ''}: {self.problem}"


def _unknown_fields(config: PretrainedConfig, spec: Mapping, prefix: str = "") -> list[tuple[str, type, list[str]]]:
    """``(dotted field, config class, its known fields)`` of each key of ``spec`` that ``config`` (built
    from it) merely stored: absent from the class's default fields and ``__init__`` arguments. Fields
    transformers renames or consumes (``torch_dtype``, ``num_labels``) are not stored under their name,
    so they pass. Sub-configs given as dicts (``text_config``) are checked the same way."""
    config_class = type(config)
    known = sorted(set(config_class().to_dict()) | set(inspect.signature(config_class.__init__).parameters) - {"self"})
    stored = config.to_dict()
    found = [(f"{prefix}{key}", config_class, known) for key in spec if key in stored and key not in known]
    for name in getattr(config, "sub_configs", None) or {}:
        sub = getattr(config, name, None)
        if isinstance(spec.get(name), Mapping) and isinstance(sub, PretrainedConfig):
            found += _unknown_fields(sub, spec[name], f"{prefix}{name}.")
    return found


def check_config_fields(config: PretrainedConfig, spec: Mapping, setting: str) -> None:
    """Raise :class:`UnknownConfigField` for the first field of the config dict ``spec`` (the backbone
    setting ``setting``) that ``config``, built from it, does not know."""
    unknown = _unknown_fields(config, spec)
    if unknown:
        path, config_class, known = unknown[0]
        raise UnknownConfigField(setting, path, config_class, known)


def typed_values(config_class: type[PretrainedConfig], spec: Mapping) -> dict:
    """``spec`` with each string given for a field whose default in ``config_class`` is no string read
    as YAML (``'1'`` → 1, ``'true'`` → True, ``'[1, 2]'`` → a list): jsonargparse passes a value set
    on the command line inside a dict setting as text. Other values are kept as they are."""
    defaults = config_class().to_dict()
    typed = dict(spec)
    for key, value in spec.items():
        if isinstance(value, str) and defaults.get(key) is not None and not isinstance(defaults[key], str):
            try:
                typed[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                pass  # left as given: the config class names the field and the type it wants
    return typed


def checked_config(config_class: type[PretrainedConfig], spec: Mapping, setting: str, defaults: Mapping | None = None,
                   fixed: Mapping | None = None) -> PretrainedConfig:
    """``config_class`` built from the config dict ``spec`` of the backbone setting ``setting`` (its
    command-line text read by :func:`typed_values`): ``defaults`` fill the fields ``spec`` leaves out,
    ``fixed`` override it; a field of ``spec`` the class does not know is refused
    (:func:`check_config_fields`)."""
    spec = typed_values(config_class, spec)
    try:
        config = config_class(**{**(defaults or {}), **spec, **(fixed or {})})
    except Exception as err:  # noqa: BLE001  (typed configs' StrictDataclass errors, TypeError, ZeroDivisionError, ...)
        # was a traceback (jsonargparse's wrapper around a dump of the whole config)
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"{setting}: {config_class.__name__} refuses these fields ({type(err).__name__}: {text}); "
                          "fix the field it names") from err
    check_config_fields(config, spec, setting)
    return config
