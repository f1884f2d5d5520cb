"""Probe: the run's text backbone summarising from the gold transcript, the gold transcript without
speaker labels, and the greedy CTC transcript of an aligned projector (docs/align.md).

    RUN=runs/pipeline python benchmarks/align_probe/texteval.py ALIGN_CKPT
"""
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
from speechsum.models.projectors import ctc_collapse
from speechsum.models.text_llm import TextLLM
from speechsum.stages.align import spoken_text

RUN = os.environ.get("RUN", "runs/pipeline")  # a pipeline run folder
which = sys.argv[2] if len(sys.argv) > 2 else "text_lm"
recs = [json.loads(line) for line in open(f"{RUN}/data/test.jsonl")][:30]
asr = ComposedSpeechLLM(llm=f"{RUN}/text_lm/model", encoder="bundled:whisper-tiny.en", projector="ctc",
                        feature_cache=f"{RUN}/feature_cache", end_of_turn="<|im_end|>")
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["state_dict"]
asr.load_state_dict({k[6:]: v for k, v in state.items()}, strict=False)
tok = asr.processor.tokenizer
ctc_text = []
for r in recs:
    items = [(Example(id=r["id"], audio=r["audio"], instruction="x", duration=r["duration"]), load_audio(f"{RUN}/data/{r['audio']}", 16000))]
    b = SpeechCollator(asr.processor)(items)
    with torch.no_grad():
        logits, n = asr.ctc_logits(b.audio)
    ctc_text.append(tok.decode(ctc_collapse(logits[0].argmax(-1), int(n[0]), asr.projector.blank)))
lm = TextLLM(llm=f"{RUN}/{which}/model", end_of_turn="<|im_end|>")
judge = FactJudge()
for name, texts in [("gold", [r["transcript"] for r in recs]), ("gold_nolabels", [spoken_text(r["transcript"], True) for r in recs]), ("ctc", ctc_text)]:
    scores = []
    for i in range(0, 30, 10):
        chunk = recs[i:i+10]
        items = [(Example(id=r["id"], audio=r["audio"], instruction=r["instruction"], transcript=t, duration=r["duration"]), __import__("numpy").zeros(16)) for r, t in zip(chunk, texts[i:i+10])]
        b = SpeechCollator(lm.processor)(items)
        ids, mask = lm.generate(b, max_new_tokens=128)
        for r, t in zip(chunk, lm.processor.decode_responses(ids, mask)):
            scores.append(judge.score(t, r["meta"], r["instruction"]))
    print(which, name, f"score {st.mean(v.score for v in scores):.2f} recall {st.mean(v.recall for v in scores):.3f} rep {st.mean(v.repetition for v in scores):.3f}", flush=True)
print(ctc_text[0][:300])
