"""Probe: a composed CTC student checkpoint, greedy summaries of a pipeline run's test split, fact judge.

    RUN=runs/pipeline python benchmarks/align_probe/quickeval.py CKPT header|plain [SPLIT] [N]

`header` = the text LMs' prompt layout (user_prompt "Transcript:\n{audio}\n\n{instruction}"). Prints
mean fact-judge score, fact recall and repetition (docs/align.md)."""
import json
import os
import statistics as st
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from speechsum.benchmark.fact_judge import FactJudge
from speechsum.data.audio import load_audio
from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy

RUN = os.environ.get("RUN", "runs/pipeline")  # a pipeline run folder
ckpt = sys.argv[1]
split = sys.argv[3] if len(sys.argv) > 3 else "test"
n = int(sys.argv[4]) if len(sys.argv) > 4 else 30
model = ComposedSpeechLLM(llm=f"{RUN}/text_lm/model", encoder="bundled:whisper-tiny.en", projector="ctc",
                          feature_cache=f"{RUN}/feature_cache", end_of_turn="<|im_end|>",
                          user_prompt="Transcript:\n{audio}\n\n{instruction}" if sys.argv[2] == "header" else "{audio}\n{instruction}",
                          policy=TrainingPolicy(llm="lora", lora_r=16, lora_alpha=32))
state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
res = model.load_state_dict({k[6:]: v for k, v in state.items()}, strict=False)
assert not res.unexpected_keys, res.unexpected_keys[:3]
recs = [json.loads(line) for line in open(f"{RUN}/data/{split}.jsonl")][:n]
judge = FactJudge()
scores = []
for i in range(0, len(recs), 8):
    chunk = recs[i:i+8]
    items = [(Example(id=r["id"], audio=r["audio"], instruction=r["instruction"], summary=r["summary"], transcript=r["transcript"], duration=r["duration"]),
              load_audio(f"{RUN}/data/{r['audio']}", 16000)) for r in chunk]
    batch = SpeechCollator(model.processor)(items)
    ids, mask = model.generate(batch, max_new_tokens=128)
    for r, t in zip(chunk, model.processor.decode_responses(ids, mask)):
        scores.append(judge.score(t, r["meta"], r["instruction"]))
print(f"{ckpt} {split} n={len(scores)} score {st.mean(v.score for v in scores):.2f} recall {st.mean(v.recall for v in scores):.3f} rep {st.mean(v.repetition for v in scores):.3f}")
print("example:", t[:300])
