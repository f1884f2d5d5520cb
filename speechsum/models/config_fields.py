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

import torch
import yaml
from transformers import PretrainedConfig

from speechsum.utils.arguments import ConfigError, ConfigFieldError
from speechsum.utils.config_keys import did_you_mean


class UnknownConfigField(ConfigFieldError):
    """A field its config class (``config_class``, whose fields are ``known``) does not take (``hiden_size``)."""

    def __init__(self, setting: str, path: str, config_class: type, known: list[str]):
        field = path.rsplit(".", 1)[-1]
        super().__init__(setting, path, f"not a field of {config_class.__name__}{did_you_mean(field, known)}; "
                         "transformers would keep it unread and build the model with its default: fix or remove it")


# sizes of a backbone that must be at least 1: at 0 or below, transformers built no layers (encoder_layers: -1)
# or a head that ignores its sign, without a word, or failed deep inside torch (ZeroDivisionError, negative dimension)
SIZE_FIELDS = frozenset({
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "vocab_size", "max_position_embeddings", "d_model", "encoder_layers", "encoder_attention_heads",
    "encoder_ffn_dim", "num_mel_bins", "max_source_positions",
})


def check_sizes(config_class: type[PretrainedConfig], spec: Mapping, setting: str, prefix: str = "") -> None:
    """Raise :class:`ConfigFieldError` for the first size field (:data:`SIZE_FIELDS`) of the config dict
    ``spec`` given as an integer below 1, naming ``config_class``'s default as an example; sub-config
    dicts (``text_config``, ``audio_config``) are checked as well."""
    for key, value in spec.items():
        if isinstance(value, Mapping):
            check_sizes(config_class, value, setting, f"{prefix}{key}.")
        elif key in SIZE_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            default = config_class().to_dict().get(key) if not prefix else None
            example = f" ({config_class.__name__}'s default: {default})" if isinstance(default, int) else ""
            raise ConfigFieldError(setting, f"{prefix}{key}", f"must be a positive integer (a size of the model), "
                                   f"got {value}: write 1 or more{example}", value)


# (width, heads): a Whisper encoder splits its width among its heads (else a ValueError naming neither field)
SPLIT_WIDTHS = (("d_model", "encoder_attention_heads"),)


def check_head_split(config: PretrainedConfig, spec: Mapping, setting: str) -> None:
    """Raise :class:`ConfigFieldError` when ``spec`` set a width or head count (:data:`SPLIT_WIDTHS`) of
    ``config`` (built from it) and the heads do not divide the width."""
    for width, heads in SPLIT_WIDTHS:
        if (width in spec or heads in spec) and hasattr(config, width) and hasattr(config, heads):
            value, count = getattr(config, width), getattr(config, heads)
            if value % count:
                raise ConfigFieldError(setting, heads, f"{count} heads do not divide {width} {value}: write a "
                                       f"divisor of {value}, or a {width} that {count} divides", count)


def check_weight_dtype(dtype: str | None) -> None:
    """Raise :class:`ConfigFieldError` unless the ``dtype`` setting of a backbone or teacher is None,
    ``auto`` or a floating-point torch dtype's name (``bfloat16``): ``bf16`` was an AttributeError
    traceback from ``getattr(torch, dtype)``, ``int8`` transformers' error naming no setting."""
    if dtype is None or dtype == "auto":
        return
    kind = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(kind, torch.dtype) or not kind.is_floating_point:
        raise ConfigFieldError("", "dtype", f"{dtype!r} is no floating-point torch dtype: write bfloat16, float16 or "
                               "float32, or null for the checkpoint's own", dtype)


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


def check_fixed_field(setting: str, path: str, given: object, fixed: object) -> None:
    """Raise :class:`ConfigFieldError` when a config dict gives ``path`` a value other than the one
    the backbone sets it to (a token id of its built-in tokenizer): it was replaced without a word."""
    if given == fixed or [given] == fixed:
        return
    raise ConfigFieldError(setting, path, f"{given!r}, but the model's built-in tokenizer sets it to {fixed!r} (a "
                           "random-init model takes its token ids from its tokenizer): remove the field", given)


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
    ``fixed`` override it; a field of ``spec`` the class does not know (:func:`check_config_fields`),
    a size below 1 (:func:`check_sizes`) and heads that do not divide their width
    (:func:`check_head_split`) are refused."""
    spec = typed_values(config_class, spec)
    check_sizes(config_class, spec, setting)
    for key, value in (fixed or {}).items():
        aliases = {key, config_class.attribute_map.get(key)} | {a for a, real in config_class.attribute_map.items()
                                                                if real == key}
        for name in sorted(aliases & spec.keys()):
            check_fixed_field(setting, name, spec[name], value)
    try:
        config = config_class(**{**(defaults or {}), **spec, **(fixed or {})})
    except Exception as err:  # noqa: BLE001  (typed configs' StrictDataclass errors, TypeError, ZeroDivisionError, ...)
        # was a traceback (jsonargparse's wrapper around a dump of the whole config)
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"{setting}: {config_class.__name__} refuses these fields ({type(err).__name__}: {text}); "
                          "fix the field it names") from err
    check_config_fields(config, spec, setting)
    check_head_split(config, spec, setting)
    return config
