"""Text backbone: any HF causal LM that reads the *transcript* + instruction instead of audio.

The benchmark's text LMs (the student's backbone LM and the text teacher), the "text on
transcripts" rows of the evaluation and the cascade (ASR transcript → LM) all run through this
class, so SFT, generation and log-probs are the same code as for the speech backbones. Its prompt
is :func:`speechsum.models.text_prompt.text_messages` rendered with the tokenizer's chat template;
it never opens audio (``processor.reads_audio`` is False, so the data module skips decoding).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from speechsum.data.processor import (
    PromptInputs,
    SpeechProcessor,
    checked_end_of_turn,
    pad_sequences,
    require_chat_template,
)
from speechsum.models.base import (
    NativeSpeechLLM,
    backbone_tokenizer,
    load_causal_lm,
    tokenizer_config_defaults,
)
from speechsum.models.copy_init import init_copy_circuits
from speechsum.models.policy import ModuleGroups, TrainingPolicy, seeded_init
from speechsum.models.text_prompt import text_messages
from speechsum.models.tokenizer import AUDIO_TOKEN


class TextProcessor(SpeechProcessor):
    """Prompt = ``tokenizer.apply_chat_template(text_messages(instruction, transcript),
    add_generation_prompt=True)``; no audio features (``audio == {}``)."""

    reads_audio = False  # the data module skips audio decoding (durations still come from headers)
    reads_transcripts = True  # the collator passes ``transcripts=`` to encode_prompts

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, end_of_turn: str | None = None, system_prompt: str | None = None
    ):
        require_chat_template(tokenizer, "TextLLM")
        self.tokenizer = tokenizer
        self.end_of_turn = checked_end_of_turn(tokenizer, end_of_turn, tokenizer.eos_token, AUDIO_TOKEN)
        self.system_prompt = system_prompt
        self.check_prompt_settings(system_prompt=system_prompt)

    def prompt_ids(self, instruction: str, transcript: str) -> list[int]:
        """Token ids of one chat-formatted prompt, ending in the assistant turn header."""
        messages = text_messages(instruction, transcript, self.system_prompt)
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompts(
        self,
        waveforms: Sequence[np.ndarray],
        instructions: Sequence[str],
        transcripts: Sequence[str | None] | None = None,
    ) -> PromptInputs:
        """Left-padded prompts from ``transcripts`` (required, one per instruction); waveforms unused."""
        if transcripts is None or len(transcripts) != len(instructions):
            raise ValueError("a text LLM reads transcripts: pass one transcript per instruction")
        missing = [i for i, t in enumerate(transcripts) if not t]
        if missing:
            raise ValueError(
                f"a text LLM needs a transcript for every example; rows {missing} have none "
                "(set data.require_transcript: true to check manifests when they load)"
            )
        prompts = [self.prompt_ids(ins, tr) for ins, tr in zip(instructions, transcripts)]
        prompt_ids, prompt_mask = pad_sequences(prompts, self.pad_id, side="left")
        return PromptInputs(audio={}, prompt_ids=prompt_ids, prompt_mask=prompt_mask)


def merged_copy(llm: nn.Module) -> nn.Module:
    """A copy of ``llm`` with any LoRA adapters merged into their base layers (plain HF modules)."""
    from peft.tuners.lora import LoraLayer

    llm = copy.deepcopy(llm)
    for name, module in list(llm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(llm.get_submodule(parent_name) if parent_name else llm, child, module.get_base_layer())
    return llm


class TextLLM(NativeSpeechLLM):
    """A causal LM reading transcript + instruction, behind the :class:`SpeechLLM` interface.

    Args:
        llm: hub id or local directory of a causal LM, or a config dict (``model_type`` plus
            config fields) for a random-init model; ``vocab_size`` may be left out (it becomes
            ``len(tokenizer)``).
        tokenizer: hub id or directory (e.g. the benchmark's BPE); default: the LLM's own when
            ``llm`` is a path, else the built-in byte tokenizer. ``<|audio|>`` is added if missing
            (so the vocabulary equals a composed student's built on the same tokenizer) and the
            embeddings grow to ``len(tokenizer)`` when smaller.
        end_of_turn: token that ends a response (default: the tokenizer's eos token).
        system_prompt: optional system message in every prompt.
        policy: which parameters train (default ``llm: full``: text LMs are trained whole here;
            there is no encoder or projector).
        dtype: weight dtype for pretrained LLMs ("bfloat16", …; default: the checkpoint's).
        init_seed: seed for random-init weights (rebuilt identically on resume).
        copy_init: write previous-token, induction and copy heads into a random-init Phi-type
            ``llm`` before training (:func:`speechsum.models.copy_init.init_copy_circuits`), so
            a small LM trained for minutes can copy names and numbers from its transcript.
        attn_implementation: the LM's attention kernels ("eager", "sdpa", "flash_attention_2", …;
            default: transformers' choice, "sdpa"). Not saved with the model: a saved or exported
            model loads with the default again.
    """

    def __init__(
        self,
        llm: str | dict,
        tokenizer: str | None = None,
        end_of_turn: str | None = None,
        system_prompt: str | None = None,
        policy: TrainingPolicy | None = None,
        dtype: str | None = None,
        init_seed: int = 0,
        copy_init: bool = False,
        attn_implementation: str | None = None,
    ):
        super().__init__()
        if copy_init and not isinstance(llm, dict):
            raise ValueError("copy_init applies to random-init LLMs only: give llm as a config dict")
        tok = backbone_tokenizer(tokenizer, llm)
        with seeded_init(init_seed):
            # a random-init LM: the tokenizer's vocabulary size and eos/pad ids unless the dict sets them
            defaults = {"vocab_size": len(tok), **tokenizer_config_defaults(tok)}
            self.llm = load_causal_lm(llm, dtype, attn_implementation, config_defaults=defaults)
            if len(tok) > self.llm.get_input_embeddings().num_embeddings:
                self.llm.resize_token_embeddings(len(tok))
            if copy_init:
                init_copy_circuits(self.llm, seed=init_seed)
        self.processor = TextProcessor(tok, end_of_turn=end_of_turn, system_prompt=system_prompt)
        self.audio_token_id = tok.convert_tokens_to_ids(AUDIO_TOKEN)  # never generated (suppressed)
        self.finish_init(policy or TrainingPolicy(train_projector=False, llm="full"))

    def module_groups(self) -> ModuleGroups:
        return ModuleGroups(encoder=nn.Identity(), projector=[], llm=self.llm)

    @property
    def hf(self) -> PreTrainedModel:
        """The LM itself: :class:`NativeSpeechLLM`'s forward and generate drive it (no audio inputs)."""
        return self.llm

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write a Hugging Face model directory: the LLM (fp32, LoRA merged if any) with a
        ``generation_config.json`` that stops at the end-of-turn token, and the tokenizer with its
        chat template. ``AutoModelForCausalLM`` / ``AutoTokenizer`` / ``TextLLM(llm=out_dir)`` and
        ``ComposedSpeechLLM(llm=out_dir)`` load it like a hub model."""
        llm = merged_copy(self.llm).float()
        llm.generation_config = GenerationConfig(
            eos_token_id=self.processor.stop_token_ids, pad_token_id=self.processor.pad_id
        )
        llm.save_pretrained(str(out_dir))
        self.processor.tokenizer.save_pretrained(str(out_dir))
