"""SpeechLLM: the one interface every stage uses (log-probs, generation, trainable parameters)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from speechsum.data.batch import SpeechBatch
from speechsum.data.processor import SpeechProcessor
from speechsum.losses import token_log_probs
from speechsum.models.config_fields import check_weight_dtype, checked_config
from speechsum.models.decode import Prompt, decode, fast_path_reason
from speechsum.models.modes import eval_mode
from speechsum.models.policy import ModuleGroups, TrainingPolicy, apply_training_policy
from speechsum.models.sampling import FiniteScores, check_decoding, sampling_processors, with_step_check
from speechsum.models.tokenizer import AUDIO_TOKEN, build_byte_tokenizer
from speechsum.utils.arguments import GREEDY_BELOW, ConfigError, check_count

log = logging.getLogger(__name__)
_past_context_warned: set[tuple[int, int]] = set()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spm.model", "sentencepiece.bpe.model")


def load_tokenizer(spec: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(spec)``, refusing a local folder without tokenizer files and a
    tokenizer of at most one id: transformers 5 builds an empty GPT-2 tokenizer for such a folder
    without a word (every text then encodes to no tokens)."""
    path = Path(spec)
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{path}: no tokenizer files in this folder (none of {', '.join(TOKENIZER_FILES)}): "
                          "save the tokenizer beside the model (tokenizer.save_pretrained(folder)) or give "
                          "the folder that has it")
    # imported here: model_folder imports checkpoint.py, which imports this module
    from speechsum.models.model_folder import check_model_folder

    check_model_folder(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError):
        raise
    except Exception as err:  # noqa: BLE001 - a file of the wrong structure: KeyError 'added_tokens', tokenizers' Exception
        if not path.is_dir():
            raise
        raise ConfigError(f"{path}: its tokenizer files do not load ({type(err).__name__}: {str(err)[:200]}): copy "
                          "them again from the model they belong to, or save the tokenizer anew "
                          "(tokenizer.save_pretrained(folder))") from None
    if len(tokenizer) <= 1:
        raise ConfigError(f"{spec}: the tokenizer loaded from it has {len(tokenizer)} id(s): not a tokenizer of "
                          "a language model; give the folder with its tokenizer.json / tokenizer_config.json")
    return tokenizer


def backbone_tokenizer(tokenizer: str | Path | None, llm: str | dict) -> PreTrainedTokenizerBase:
    """A backbone's tokenizer: ``tokenizer`` (default: the ``llm`` folder or hub id when ``llm`` is
    one; for a config-dict ``llm`` without one, the in-process byte tokenizer), with the audio
    placeholder ``<|audio|>`` added when it lacks it."""
    if tokenizer is None and isinstance(llm, str):
        tokenizer = llm
    tok = load_tokenizer(tokenizer) if tokenizer else build_byte_tokenizer()
    if AUDIO_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    return tok


def load_causal_lm(spec: str | dict, dtype: str | None = None, attn_implementation: str | None = None,
                   config_defaults: dict | None = None) -> PreTrainedModel:
    """A pretrained causal LM (hub id or directory; weights in ``dtype``, default the checkpoint's)
    or a random-init one from a config dict (``model_type`` plus fields; ``config_defaults`` fill
    the fields it leaves out). ``attn_implementation``: transformers' attention kernels (default:
    its choice); not saved with the model."""
    check_weight_dtype(dtype)
    if isinstance(spec, str):
        from speechsum.models.model_folder import check_model_folder, pretrained_with_report

        check_model_folder(spec)
        return pretrained_with_report(AutoModelForCausalLM, spec, dtype=dtype or "auto",
                                      attn_implementation=attn_implementation)[0]
    if not isinstance(spec.get("model_type"), str):
        raise ConfigError(f"llm: a config dict needs model_type (llama, qwen2, ...: a transformers model type), got "
                          f"{spec!r}: add it, or give a hub id or model folder instead of the dict")
    if spec["model_type"] not in CONFIG_MAPPING:
        AutoConfig.for_model(spec["model_type"])  # transformers' own error, naming the types it knows
    fields = {key: value for key, value in spec.items() if key != "model_type"}
    config = checked_config(CONFIG_MAPPING[spec["model_type"]], fields, "llm", defaults=config_defaults)
    drop_out_of_vocab_ids(config, keep=spec)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


def drop_out_of_vocab_ids(config: PretrainedConfig, keep: dict) -> None:
    """Set to None the pad / bos / eos ids that the user's config dict ``keep`` does not name but
    that lie outside ``config``'s vocabulary (a config class default such as Phi-3's
    ``pad_token_id=32000``, or a tokenizer's id beyond a smaller table that grows later): an
    embedding ``padding_idx`` beyond the table fails to build."""
    text = config.get_text_config()
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(text, key, None)
        ids = value if isinstance(value, list) else [value]
        if key not in keep and value is not None and any(not 0 <= i < text.vocab_size for i in ids):
            setattr(text, key, None)


def tokenizer_config_defaults(tokenizer: PreTrainedTokenizerBase) -> dict:
    """Config fields a random-init LM takes from its tokenizer unless its config dict sets them:
    eos and pad ids, no bos (not the config class's defaults, e.g. Llama's ``eos_token_id=2``,
    which would become a stop token, :meth:`SpeechLLM.finish_init`)."""
    return {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}


def sequence_positions(attention_mask: Tensor) -> Tensor:
    """Position ids for left/right-padded rows: ``cumsum(mask) - 1``, 0 on leading padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def mask_after_stop(token_ids: Tensor, stop_ids: list[int]) -> Tensor:
    """``(B, N)`` mask: 1 up to and including each row's first stop token, 0 after it."""
    is_stop = torch.isin(token_ids, torch.tensor(stop_ids, device=token_ids.device)).long()
    stops_before = is_stop.cumsum(-1) - is_stop
    return (stops_before == 0).long()


def check_generate(max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, num_return_sequences: int,
                   context: int | None) -> None:
    """:meth:`SpeechLLM.generate`'s arguments (:func:`~speechsum.models.sampling.check_decoding`; the
    temperature and top_p only when sampling: greedy decoding with ``temperature=0`` is the usual
    way to ask for it), ``do_sample`` a bool, ``num_return_sequences`` an integer ≥ 1."""
    if not isinstance(do_sample, bool):
        raise ConfigError(f"generate(): do_sample must be True or False, got {do_sample!r}")
    check_decoding("generate(): ", max_new_tokens, temperature if do_sample else None, top_p if do_sample else None,
                   context)
    check_count("generate(): num_return_sequences", num_return_sequences, 1)


def check_prompt_fits(processor: SpeechProcessor, batch: SpeechBatch, context: int | None, max_new_tokens: int = 0) -> None:
    """A ``ValueError`` when a prompt of ``batch`` takes more positions than the LM's ``context`` (at least: audio a
    CTC-compressing backbone drops is not counted), which the LM was never trained on; a warning (once per context and
    ``max_new_tokens``) when ``max_new_tokens`` may pass it (HF ``generate``'s tokens; it only warns itself)."""
    if context is None or batch.prompt_mask.numel() == 0:
        return
    positions = processor.prompt_positions_at_least(batch.prompt_ids, batch.prompt_mask)
    row = int(positions.argmax())
    if int(positions[row]) > context:
        raise ValueError(f"generate(): the prompt of example {row} takes {int(positions[row])} positions, more than the "
                         f"LM's context of {context}; shorten its audio, instruction or transcript")
    if int(positions[row]) + max_new_tokens > context and (context, max_new_tokens) not in _past_context_warned:
        _past_context_warned.add((context, max_new_tokens))
        log.warning("generate(): the prompt of example %r takes %d positions, and max_new_tokens=%d may take its answer past "
                    "the LM's context of %d (its later tokens come from positions the LM never trained on); lower "
                    "max_new_tokens to %d or shorten the prompt (logged once)", batch.ids[row], int(positions[row]),
                    max_new_tokens, context, context - int(positions[row]))


class SpeechLLM(nn.Module, ABC):
    """An audio-conditioned causal LM.

    Subclasses provide ``processor``, :meth:`forward` (logits for full token sequences with the
    audio placeholders filled), :meth:`generate_tokens` and :meth:`module_groups`; everything the
    stages need is built on those three here.
    """

    processor: SpeechProcessor
    audio_token_id: int
    fast_decoding: bool = True  # False: generate() always goes through HF generate (generate_tokens)

    # -- what a backbone implements ---------------------------------------------------------
    @abstractmethod
    def forward(
        self,
        audio: dict[str, Tensor],
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits ``(B, L, V)``, or of the last ``logits_to_keep`` positions when it is > 0."""

    @abstractmethod
    def generate_tokens(
        self,
        audio: dict[str, Tensor],
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        config: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
    ) -> Tensor:
        """New token ids ``(B, N)`` after the prompt (KV-cached ``generate`` with ``config`` and the
        extra ``logits_processor``, applied after ``config``'s own processors)."""

    @abstractmethod
    def module_groups(self) -> ModuleGroups:
        """Encoder, projector and LLM modules, for the training policy."""

    def causal_lm(self) -> nn.Module | None:
        """The HF causal LM that :func:`speechsum.models.decode.decode` steps (its decoder stack and
        head), or None: :meth:`generate` always uses :meth:`generate_tokens`."""
        return None

    def decode_prompt(self, audio: dict[str, Tensor], prompt_ids: Tensor, prompt_mask: Tensor) -> Prompt:
        """What :meth:`causal_lm`'s forward reads for this prompt, for :func:`~speechsum.models.decode.decode`."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def finish_init(self, policy: TrainingPolicy | None) -> None:
        r"""End of every backbone's ``__init__`` (after ``self.processor`` is set): forget the
        checkpoint's decoding defaults (top-k, repetition penalty, … from ``generation_config.json``:
        only :meth:`generate`'s arguments decide how to decode, so on-policy samples come from the
        policy that is scored) but keep its stop tokens — its ``eos_token_id``\ (s) join
        ``processor.extra_stop_token_ids`` (e.g. ``<|im_end|>`` of a ChatML model whose tokenizer's
        eos is ``<|endoftext|>``) — then apply the training policy."""
        stop_ids: list[int] = []
        for module in self.modules():
            if isinstance(module, GenerationMixin):
                eos = getattr(module.generation_config, "eos_token_id", None)
                stop_ids += [eos] if isinstance(eos, int) else list(eos or [])
                module.generation_config = GenerationConfig()
        self.processor.extra_stop_token_ids = tuple(dict.fromkeys(stop_ids))
        self.processor.context_length = self.context_length()
        apply_training_policy(self, self.module_groups(), policy or TrainingPolicy())

    def context_length(self) -> int | None:
        """The LM's ``max_position_embeddings`` (prompt + completion positions), None when it has none."""
        config = getattr(self.causal_lm(), "config", None)
        if config is None:
            return None
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def response_logits(self, batch: SpeechBatch, response_ids: Tensor, response_mask: Tensor) -> Tensor:
        """Logits ``(B, R, V)`` where ``[:, j]`` predicts ``response_ids[:, j]`` given audio, prompt
        and ``response_ids[:, :j]``. Only the response positions go through the LM head."""
        input_ids = torch.cat([batch.prompt_ids, response_ids], dim=1)
        attention_mask = torch.cat([batch.prompt_mask, response_mask], dim=1)
        logits = self(
            batch.audio,
            input_ids,
            attention_mask,
            sequence_positions(attention_mask),
            logits_to_keep=response_ids.shape[1] + 1,
        )
        return logits[:, :-1]

    def response_logprobs(self, batch: SpeechBatch, response_ids: Tensor, response_mask: Tensor) -> Tensor:
        """``log p(response_ids[:, j] | …)`` as ``(B, R)`` float32, 0 where ``response_mask`` is 0."""
        logits = self.response_logits(batch, response_ids, response_mask)
        return token_log_probs(logits, response_ids) * response_mask

    @torch.no_grad()
    def generate(
        self,
        batch: SpeechBatch,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        num_return_sequences: int = 1,
        step_check: Callable[[Tensor], Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Batched generation from audio + instruction; returns ``(response_ids, response_mask)``,
        ``(B * num_return_sequences, N)``, row ``b * n + k`` the k-th sample of example b (see
        ``SpeechBatch.repeat_interleave``); the mask covers tokens up to and including the first
        stop token (a response with no stop token was cut at ``max_new_tokens``). Runs in eval
        mode (no dropout, KV cache on) and restores the previous mode. Settings no decoding can use
        are a :class:`~speechsum.utils.arguments.ConfigError` naming the argument
        (:func:`check_generate`); a sampling ``temperature`` below ``GREEDY_BELOW`` (1e-5) decodes
        greedily, as ``serve`` and vLLM do (smaller ones overflow the scaled scores). ``step_check`` is
        called before each new token with the new tokens so far, ``(rows, t)`` (what it raises ends the
        generation; a ``(rows,)`` bool tensor it returns ends those rows with a stop token; the other
        tokens are unchanged: :class:`~speechsum.models.sampling.StepCheck`)."""
        context = self.context_length()
        check_generate(max_new_tokens, do_sample, temperature, top_p, num_return_sequences, context)
        check_prompt_fits(self.processor, batch, context, max_new_tokens)
        stop_ids = self.processor.stop_token_ids
        config = self.greedy_config(max_new_tokens)
        sampled = do_sample and temperature >= GREEDY_BELOW  # below: greedy, as serve and vLLM
        processors = with_step_check(sampling_processors(temperature, top_p) if sampled else None, step_check,
                                     stop_ids[0])
        if num_return_sequences > 1:  # greedy generate decodes one sequence per row
            batch = batch.repeat_interleave(num_return_sequences)
        with eval_mode(self):
            new_tokens = self._decode(batch, config, processors)
        return new_tokens, mask_after_stop(new_tokens, stop_ids)

    def greedy_config(self, max_new_tokens: int) -> GenerationConfig:
        """HF ``generate``'s settings for :meth:`generate`: greedy, every field that a checkpoint's
        ``generation_config`` could fill pinned (so only :meth:`generate`'s arguments decide how to
        decode and samples stay exact samples of the policy), stop at any stop token, pad after it,
        never emit the audio placeholder. Sampling runs as greedy decoding over Gumbel-perturbed
        scores (:func:`~speechsum.models.sampling.sampling_processors`): the distribution of
        ``generate``'s softmax + multinomial, cheaper per step."""
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            length_penalty=1.0,
            min_new_tokens=0,
            bad_words_ids=None,
            eos_token_id=self.processor.stop_token_ids,
            pad_token_id=self.processor.pad_id,
            suppress_tokens=[self.audio_token_id],
            use_cache=True,
        )

    def _decode(self, batch: SpeechBatch, config: GenerationConfig, processors: LogitsProcessorList | None) -> Tensor:
        """New tokens ``(B, N)``: :func:`~speechsum.models.decode.decode` when the LM allows it
        (same tokens as HF ``generate``, a fraction of its per-token overhead), else ``generate``."""
        if batch.prompt_ids.shape[0] == 0:  # no rows (before 2026-12-07: a RuntimeError from max())
            return batch.prompt_ids.new_zeros(0, 0)
        lm = self.causal_lm() if self.fast_decoding else None
        max_position = int(batch.prompt_mask.sum(1).max()) + config.max_new_tokens  # an upper bound
        if lm is None or fast_path_reason(lm, max_position) is not None:
            return self.generate_tokens(batch.audio, batch.prompt_ids, batch.prompt_mask, config,
                                        LogitsProcessorList([*(processors or []), FiniteScores()]))
        prompt = self.decode_prompt(batch.audio, batch.prompt_ids, batch.prompt_mask)
        return decode(
            lm, prompt, config.max_new_tokens, list(config.eos_token_id), config.pad_token_id,
            suppress_ids=list(config.suppress_tokens), logits_processor=processors, processor_ids=prompt.ids,
        )

    def precompute_audio(self, audio: dict) -> dict:
        """The audio dict with the frozen encoder's work already done, so every later
        :meth:`forward` / :meth:`generate` on it (generation, training forward, reference forward)
        reuses one encoding; rows stay aligned with the batch, so ``SpeechBatch.repeat_interleave``
        and concatenation along dim 0 keep working. Must be called where gradients are not needed
        through the encoder. Default: ``audio`` unchanged (backbones that cannot split encoding off)."""
        return audio

    def input_settings(self) -> str:
        """The options besides the weights that change this model's log-probs (prompt layout, stop
        token, CTC compression), as one string for cache keys of precomputed log-probs."""
        processor = self.processor
        fields = {name: getattr(processor, name, None) for name in ("system_prompt", "user_prompt", "end_of_turn")}
        fields["ctc_compress"] = getattr(self, "ctc_compress", None)
        return repr(sorted(fields.items()))

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.named_parameters() if p.requires_grad]


class NativeSpeechLLM(SpeechLLM):
    """A backbone that is one Hugging Face model (``self.hf``) taking the prompt ids and its audio
    inputs (``**audio``, none for a text LLM) itself: Phi-4-multimodal, Qwen2-Audio, text LLMs."""

    hf: nn.Module

    def forward(
        self,
        audio: dict[str, Tensor],
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits ``(B, L, V)`` (last ``logits_to_keep`` positions when > 0) from the model's forward."""
        outputs = self.hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **audio,
            logits_to_keep=logits_to_keep,
            use_cache=False,
        )
        return outputs.logits

    def causal_lm(self) -> nn.Module:
        return self.hf

    def decode_prompt(self, audio: dict[str, Tensor], prompt_ids: Tensor, prompt_mask: Tensor) -> Prompt:
        return Prompt(prompt_mask, ids=prompt_ids, extra=audio)

    def generate_tokens(
        self,
        audio: dict[str, Tensor],
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        config: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
    ) -> Tensor:
        output = self.hf.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, **audio, generation_config=config,
            logits_processor=logits_processor,
        )
        return output[:, prompt_ids.shape[1] :]  # native generate returns prompt + new tokens
