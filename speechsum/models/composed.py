"""Composed backbone: a Whisper-family encoder + a projector (frame-stacking MLP or CTC) + any HF causal LM."""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speechsum.models.base import (
    SpeechLLM,
    backbone_tokenizer,
    load_causal_lm,
    sequence_positions,
    tokenizer_config_defaults,
)
from speechsum.models.composed_processor import DEFAULT_USER_PROMPT, ComposedProcessor, whisper_output_frames
from speechsum.models.config_fields import checked_config
from speechsum.models.decode import Prompt, drop_compressed_audio
from speechsum.models.encoder_windows import encode_in_windows
from speechsum.models.feature_cache import (
    EncoderFeatureCache,
    encoder_identity,
    weights_version,
)
from speechsum.models.model_folder import check_feature_extractor_file, check_model_folder
from speechsum.models.modes import eval_mode
from speechsum.models.policy import ModuleGroups, TrainingPolicy, seeded_init
from speechsum.models.projectors import CTCProjector, FrameStackProjector, ctc_keep_mask
from speechsum.models.whisper_ct2 import resolve_whisper_path
from speechsum.models.whisper_fast import ENCODER_DTYPES, FastWhisperEncoder
from speechsum.utils.cpu_bf16 import cpu_dtype_name

log = logging.getLogger(__name__)


def _load_encoder(spec: str | dict) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    if isinstance(spec, str):
        spec = resolve_whisper_path(spec)  # "bundled:whisper-tiny.en" → converted local directory
        check_model_folder(spec)
        check_feature_extractor_file(spec)
        encoder = WhisperModel.from_pretrained(spec).get_encoder()
        return encoder, WhisperFeatureExtractor.from_pretrained(spec)
    config = checked_config(WhisperConfig, spec, "encoder")
    return WhisperEncoder(config), WhisperFeatureExtractor(feature_size=config.num_mel_bins)


class ComposedSpeechLLM(SpeechLLM):
    """Whisper-family encoder → projector → any ``AutoModelForCausalLM``.

    Args:
        llm: hub id or local directory of a causal LM, or a config dict (``model_type`` plus
            config fields) for a random-init model.
        encoder: hub id or local directory of a Whisper checkpoint (its encoder and feature
            extractor are used), ``"bundled:whisper-tiny.en"`` (the offline Whisper tiny.en,
            see :mod:`speechsum.models.whisper_ct2`), or a ``WhisperConfig`` dict for a
            random-init encoder.
        tokenizer: hub id or directory; default: the LLM's own when ``llm`` is a path, else the
            built-in byte-level tokenizer. ``<|audio|>`` is added if missing.
        stack: encoder frames per audio token (4 → 80 ms per token with Whisper).
        projector: "mlp" (:class:`FrameStackProjector`) or "ctc" (:class:`CTCProjector`: CTC
            posteriors over the LLM's vocabulary weight its input embeddings; pre-train it with
            :class:`speechsum.stages.align.CTCAlignModule`).
        projector_hidden: projector MLP width (default: the LLM width; 2× for "ctc").
        ctc_compress: with the CTC projector, attend only to the first frame of each non-blank
            greedy-label run (blank and repeated frames are masked out of attention and skipped in
            the position ids), so the LLM sees about one audio token per spoken token.
        end_of_turn: token that ends a response (default: the tokenizer's eos token).
        system_prompt: optional system message in every prompt.
        user_prompt: the user turn, with ``{audio}`` and ``{instruction}`` placeholders (default
            ``"{audio}\\n{instruction}"``). The bundled benchmark uses the text LMs' own layout
            (``"Transcript:\\n{audio}\\n\\n{instruction}"``), so a CTC-aligned student starts where
            its backbone reads text.
        policy: which parameters train (default: frozen encoder, projector, LoRA r=16 α=32).
        dtype: weight dtype for pretrained LLMs ("bfloat16", …; default: the checkpoint's).
        init_seed: seed for random-init parts, so a model is rebuilt identically on resume.
        feature_cache: directory of the on-disk cache of frozen-encoder frames
            (:mod:`speechsum.models.feature_cache`); None = no cache. Ignored (logged) while the
            encoder trains.
        max_audio_seconds: longest clip the data module feeds (truncation); None = no limit:
            clips longer than the encoder's window (30 s for Whisper) are encoded in windows.
        encoder_dtype: precision of the frozen encoder's inference forward
            (:class:`speechsum.models.whisper_fast.FastWhisperEncoder`): "float32" (default; the
            same frames as the module) or "bfloat16" (about 2× faster on CPUs with AVX512-BF16,
            frames within bf16 rounding; float32 on a CPU without bf16, :mod:`speechsum.utils.cpu_bf16`).
            Part of the feature-cache key. A trainable encoder
            always runs as the module, in the trainer's precision.
        attn_implementation: the LLM's attention kernels ("sdpa", "eager", "flash_attention_2",
            …; default: transformers' choice). Not saved with the model.
    """

    def __init__(
        self,
        llm: str | dict,
        encoder: str | dict,
        tokenizer: str | None = None,
        stack: int = 4,
        projector: Literal["mlp", "ctc"] = "mlp",
        projector_hidden: int | None = None,
        ctc_compress: bool = True,
        end_of_turn: str | None = None,
        system_prompt: str | None = None,
        user_prompt: str = DEFAULT_USER_PROMPT,
        policy: TrainingPolicy | None = None,
        dtype: str | None = None,
        init_seed: int = 0,
        feature_cache: str | None = None,
        max_audio_seconds: float | None = None,
        encoder_dtype: Literal["float32", "bfloat16"] = "float32",
        attn_implementation: str | None = None,
    ):
        super().__init__()
        with seeded_init(init_seed):
            self.encoder, feature_extractor = _load_encoder(encoder)
            tok = backbone_tokenizer(tokenizer, llm)
            self.llm = load_causal_lm(llm, dtype, attn_implementation, config_defaults=tokenizer_config_defaults(tok))
            if len(tok) > self.llm.get_input_embeddings().num_embeddings:
                self.llm.resize_token_embeddings(len(tok))
            encoder_dim, llm_dim = self.encoder.config.d_model, self.llm.config.get_text_config().hidden_size
            if projector == "ctc":
                vocab = self.llm.get_input_embeddings().num_embeddings
                self.projector = CTCProjector(encoder_dim, llm_dim, vocab, stack, projector_hidden)
            elif projector == "mlp":
                self.projector = FrameStackProjector(encoder_dim, llm_dim, stack, projector_hidden)
            else:
                raise ValueError(f"projector must be 'mlp' or 'ctc', not {projector!r}")
        self.ctc_compress = ctc_compress and projector == "ctc"
        if encoder_dtype not in ENCODER_DTYPES:
            raise ValueError(f"encoder_dtype must be one of {sorted(ENCODER_DTYPES)}, not {encoder_dtype!r}")
        self.encoder_dtype = encoder_dtype
        self._fast_encoder: tuple[tuple, FastWhisperEncoder] | None = None
        self.processor = ComposedProcessor(
            feature_extractor,
            tok,
            stack,
            end_of_turn=end_of_turn,
            system_prompt=system_prompt,
            max_audio_seconds=max_audio_seconds,
            user_prompt=user_prompt,
        )
        self.audio_token_id = self.processor.audio_token_id
        self.processor.compresses_audio = self.ctc_compress
        self.feature_cache = EncoderFeatureCache(feature_cache) if feature_cache else None
        self._encoder_id: tuple[tuple, str] | None = None
        self._cache_notice_logged = False
        self.finish_init(policy)
        # a cached clip's frames need no log-mel features: the processor leaves them to input_features
        self.processor.defer_log_mel = self.feature_cache is not None and self.encoder_frozen()
        if self.feature_cache is not None and not self.encoder_frozen():
            self._log_cache_off("the encoder trains (policy.train_encoder: true)")
        if encoder_dtype != "float32" and not self.encoder_frozen():
            log.warning("encoder_dtype %s is not used: the encoder trains, so it runs as the module", encoder_dtype)

    def module_groups(self) -> ModuleGroups:
        return ModuleGroups(encoder=self.encoder, projector=[self.projector], llm=self.llm)

    # -- the encoder --------------------------------------------------------------------------
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def encoder_id(self) -> str:
        """Identity of the encoder + mel settings (:func:`encoder_identity`), recomputed only
        when an encoder weight changed (:func:`weights_version`)."""
        version = weights_version(self.encoder)
        if self._encoder_id is None or self._encoder_id[0] != version:
            config, fe = self.encoder.config, self.processor.feature_extractor
            settings = {
                key: getattr(config, key)
                for key in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                            "num_mel_bins", "max_source_positions", "activation_function")
            }
            settings["compute_dtype"] = self.encoder_compute_dtype()
            settings["mel"] = {k: getattr(fe, k, None) for k in ("feature_size", "sampling_rate", "hop_length",
                                                                  "n_fft", "dither", "padding_value")}
            self._encoder_id = (version, encoder_identity(self.encoder, settings))
        return self._encoder_id[1]

    def fast_encoder(self) -> FastWhisperEncoder:
        """The frozen encoder's inference snapshot in :meth:`encoder_compute_dtype`, rebuilt when a weight changed."""
        version = weights_version(self.encoder)
        if self._fast_encoder is None or self._fast_encoder[0] != version:
            self._fast_encoder = (version, FastWhisperEncoder(self.encoder, ENCODER_DTYPES[self.encoder_compute_dtype()]))
        return self._fast_encoder[1]

    def encoder_compute_dtype(self) -> str:
        """``encoder_dtype``; float32 in place of bfloat16 on a CPU without bf16 (:func:`cpu_dtype_name`)."""
        on_cpu = next(self.encoder.parameters()).device.type == "cpu"
        return cpu_dtype_name(self.encoder_dtype, "encoder_dtype bfloat16") if on_cpu else self.encoder_dtype

    def _encode_windows(self, input_features: Tensor, mel_frames: Tensor) -> Tensor:
        """``(N, n_mels, T)`` windows → ``(N, ceil(T / 2), d_enc)`` frames: a frozen encoder runs
        its inference snapshot (:meth:`fast_encoder`, no autograd), a trainable one the module
        (:meth:`_encode_windows_module`)."""
        if self.encoder_frozen():
            return self.fast_encoder()(input_features, mel_frames)
        return self._encode_windows_module(input_features, mel_frames)

    def _encode_windows_module(self, input_features: Tensor, mel_frames: Tensor) -> Tensor:
        """Masked Whisper encoder on windows of at most ``2 · max_source_positions`` mel frames:
        ``(N, n_mels, T)`` → ``(N, ceil(T / 2), d_enc)`` post final layer-norm, zero beyond each
        row's ``ceil(mel_frames / 2)`` frames. The position table is sliced to the batch's length
        (not 30 s); padding is zeroed after conv1 and masked out of self-attention, so each row
        encodes as it would alone."""
        enc = self.encoder
        input_features = input_features.to(enc.conv1.weight.dtype)
        mel_valid = torch.arange(input_features.shape[-1], device=mel_frames.device) < mel_frames[:, None]
        hidden = nn.functional.gelu(enc.conv1(input_features)) * mel_valid[:, None, :].to(input_features.dtype)
        hidden = nn.functional.gelu(enc.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + enc.embed_positions.weight[: hidden.shape[1]]
        hidden = nn.functional.dropout(hidden, p=enc.dropout, training=enc.training)
        frames = torch.arange(hidden.shape[1], device=mel_frames.device)
        key_valid = frames[None, :] < whisper_output_frames(mel_frames)[:, None]
        attention_mask = torch.zeros(key_valid.shape, dtype=hidden.dtype, device=hidden.device)
        attention_mask = attention_mask.masked_fill(~key_valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for layer in enc.layers:
            hidden = layer(hidden, attention_mask)
        return enc.layer_norm(hidden) * key_valid[..., None].to(hidden.dtype)

    def encoder_frames(self, input_features: Tensor, mel_frames: Tensor) -> list[Tensor]:
        """Each clip's real encoder frames, ``[(ceil(n_i / 2), d_enc)]`` for ``n_i = mel_frames[i]``.

        A clip longer than the encoder's window ``W = 2 · max_source_positions`` mel frames (30 s
        for Whisper) is cut into windows ``[0, W), [W, 2W), …``; the batch's windows are encoded
        independently, sorted by length in :meth:`_encode_windows` calls that each pad only to
        their longest window (:mod:`speechsum.models.encoder_windows`), and each clip's windows'
        frames are concatenated (W is even, so the counts add up to ``ceil(n_i / 2)``).
        """
        window = 2 * self.encoder.config.max_source_positions
        return encode_in_windows(self._encode_windows, input_features, mel_frames, window)

    def _log_cache_off(self, reason: str) -> None:
        if not self._cache_notice_logged:
            log.warning("feature cache %s is not used: %s", self.feature_cache.root, reason)
            self._cache_notice_logged = True

    def clip_frames(self, audio: dict) -> list[Tensor]:
        """Encoder frames per clip: precomputed ones (:meth:`precompute_audio`) if the dict has
        them; else from the feature cache when the encoder is frozen and a cache is set; else
        computed. A frozen encoder runs without autograd and in eval mode (deterministic); with the cache, also
        outside autocast (a ``*-mixed`` trainer precision), so a clip's cached frames do not depend on the
        precision of the stage that wrote them."""
        if "encoder_frames" in audio:
            return [f[:n] for f, n in zip(audio["encoder_frames"], audio["encoder_lengths"].tolist())]
        mel_frames, keys = audio["mel_frames"], audio.get("content_keys")

        def encode(rows: list[int] | None = None) -> list[Tensor]:
            """The encoder on ``rows`` (all when None), their features padded to their own longest clip."""
            subset = mel_frames if rows is None else mel_frames[rows]
            return self.encoder_frames(self.processor.input_features(audio, rows)[:, :, : int(subset.max())], subset)

        if not self.encoder_frozen():
            if self.feature_cache is not None:
                self._log_cache_off("the encoder trains")
            return encode()
        with torch.no_grad(), eval_mode(self.encoder):
            if self.feature_cache is None:
                return encode()
            if keys is None or len(keys) != len(mel_frames):
                self._log_cache_off("the audio dict has no content key per clip (audio['content_keys'])")
                return encode()
            # outside the step's autocast (bf16-mixed): the frames are the encoder's in encoder_dtype, which their
            # key says, whatever precision a stage trains in (a miss was a TypeError in the log-mel under it)
            with torch.autocast(mel_frames.device.type, enabled=False):
                return self.feature_cache.frames(self.encoder_id(), keys, encode, mel_frames.device,
                                                 self.encoder.config.d_model, [(n + 1) // 2 for n in mel_frames.tolist()])

    def precompute_audio(self, audio: dict) -> dict:
        """A copy of ``audio`` with ``encoder_frames`` ``(B, T_max, d_enc)`` (zero-padded) and
        ``encoder_lengths`` ``(B,)`` added, when the encoder is frozen; later forwards and
        ``generate`` on it skip the encoder (rows may be repeated/concatenated along dim 0 like
        every other entry). With a trainable encoder, ``audio`` is returned unchanged."""
        if "encoder_frames" in audio or not self.encoder_frozen():
            return audio
        frames = self.clip_frames(audio)
        lengths = torch.tensor([f.shape[0] for f in frames], device=audio["mel_frames"].device)
        return {**audio, "encoder_frames": pad_sequence(frames, batch_first=True), "encoder_lengths": lengths}

    def _projector_inputs(self, audio: dict) -> tuple[Tensor, list[int]]:
        """Encoder frames padded ``(B, T_max, d_enc)`` in the projector's dtype, and each clip's
        audio-token count ``ceil(T_i / stack)``."""
        frames = self.clip_frames(audio)
        dtype = next(self.projector.parameters()).dtype
        counts = [math.ceil(f.shape[0] / self.projector.stack) for f in frames]
        return pad_sequence(frames, batch_first=True).to(dtype), counts

    def ctc_logits(self, audio: dict) -> tuple[Tensor, Tensor]:
        """CTC projector only: logits ``(B, T', V + 1)`` (blank = ``V``) and each clip's frame
        count ``(B,)``, for :class:`speechsum.stages.align.CTCAlignModule`."""
        if not isinstance(self.projector, CTCProjector):
            raise ValueError("CTC alignment needs `projector: ctc` in the model's init_args")
        frames, counts = self._projector_inputs(audio)
        return self.projector.logits(frames), torch.tensor(counts, device=frames.device)

    def encode_audio(self, audio: dict) -> tuple[Tensor, Tensor | None]:
        """Audio embeddings of every clip's real frames, concatenated: ``(Σ_i ceil(T_i / stack), d_llm)``,
        and, under CTC compression, which of them the LLM attends to ``(Σ_i …,)`` bool (else None);
        the others' embeddings are 0 (not computed: they take no part in the LLM's attention). The
        projector runs on the real frames only, not on the padding after shorter clips."""
        dtype = next(self.projector.parameters()).dtype
        clips = [frames.to(dtype) for frames in self.clip_frames(audio)]
        if not isinstance(self.projector, CTCProjector):
            return self.projector.clip_rows(clips), None
        logits = self.projector.clip_logits(clips)  # (Σ_i …, V + 1)
        table = self.llm.get_input_embeddings().weight
        if not self.ctc_compress:
            return self.projector.embed(logits, table), None
        # compressed-away frames are masked out of attention and their outputs never read: only the
        # kept ones need softmax(logits) @ table (the projector's costliest part), the rest stay 0
        counts = torch.tensor([math.ceil(len(clip) / self.projector.stack) for clip in clips], device=logits.device)
        valid = torch.arange(int(counts.max()), device=logits.device)[None, :] < counts[:, None]  # (B, T')
        labels = torch.full(valid.shape, self.projector.blank, device=logits.device)
        labels[valid] = logits.max(-1).indices  # max's indices: argmax (first of ties), twice as fast on CPU
        keep = ctc_keep_mask(labels, self.projector.blank)[valid]
        kept = self.projector.embed(logits[keep], table)
        return kept.new_zeros(logits.shape[0], kept.shape[-1]).masked_scatter(keep[:, None], kept), keep

    def embed_prompt(self, audio: dict, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Token embeddings with each ``<|audio|>`` position replaced by its audio embedding, and
        the attention mask with compressed-away audio positions set to 0."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        is_audio = input_ids == self.audio_token_id
        audio_embeds, keep = self.encode_audio(audio)
        if audio_embeds.shape[0] != int(is_audio.sum()):
            raise ValueError(
                f"{int(is_audio.sum())} audio placeholders but {audio_embeds.shape[0]} audio frames"
            )
        embeds = embeds.masked_scatter(is_audio.unsqueeze(-1), audio_embeds.to(embeds.dtype))
        if keep is not None:
            attention_mask = attention_mask.masked_scatter(is_audio, keep.to(attention_mask.dtype) * attention_mask[is_audio])
        return embeds, attention_mask

    def forward(
        self,
        audio: dict[str, Tensor],
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        logits_to_keep: int = 0,
    ) -> Tensor:
        inputs_embeds, kept_mask = self.embed_prompt(audio, input_ids, attention_mask)
        if self.ctc_compress:  # skipped audio positions take no position id
            self._check_context(kept_mask)
            if logits_to_keep > 0:  # and, when only the last positions' logits are read, no place at all
                inputs_embeds, kept_mask = drop_compressed_audio(inputs_embeds, kept_mask, input_ids == self.audio_token_id)
            position_ids = sequence_positions(kept_mask)
        outputs = self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=kept_mask,
            position_ids=position_ids,
            logits_to_keep=logits_to_keep,
            use_cache=False,
        )
        return outputs.logits

    def causal_lm(self) -> nn.Module:
        return self.llm

    def _check_context(self, kept_mask: Tensor) -> None:
        """A row longer than the LM's context after CTC compression is an error (the collator counts the
        text of each example, :func:`speechsum.data.batch.too_long_rows`, not the audio positions kept)."""
        limit = self.processor.context_length
        if limit is None or kept_mask.shape[1] <= limit:
            return
        longest = int(kept_mask.sum(1).max())
        if longest > limit:
            raise ValueError(f"a sequence of this batch takes {longest} positions (its audio after CTC compression, "
                             f"prompt and response) and the LM reads at most {limit} (max_position_embeddings): "
                             "lower data.max_audio_seconds, shorten the summaries or use a model with a longer context")

    def decode_prompt(self, audio: dict[str, Tensor], prompt_ids: Tensor, prompt_mask: Tensor) -> Prompt:
        inputs_embeds, kept_mask = self.embed_prompt(audio, prompt_ids, prompt_mask)
        return Prompt(kept_mask, embeds=inputs_embeds)

    def generate_tokens(
        self,
        audio: dict[str, Tensor],
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        config: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
    ) -> Tensor:
        inputs_embeds, kept_mask = self.embed_prompt(audio, prompt_ids, prompt_mask)
        if self.ctc_compress:  # as forward reads the prompt: sliding windows count the kept positions only
            inputs_embeds, kept_mask = drop_compressed_audio(inputs_embeds, kept_mask, prompt_ids == self.audio_token_id)
        return self.llm.generate(  # position ids = cumsum(mask) - 1, as in forward
            inputs_embeds=inputs_embeds,
            attention_mask=kept_mask,
            generation_config=config,
            logits_processor=logits_processor,
        )
