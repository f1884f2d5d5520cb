"""The pipeline's stages, declared once: :data:`PIPELINE` lists every stage with what it needs, the
function that runs it, what it writes and a one-line description (``--help``'s epilog and the
progress lines come from it). Adding a stage is adding one :class:`Stage` here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from speechsum.pipeline.stages import (
    BASELINE_SYSTEMS,
    STUDENT_SYSTEMS,
    benchmark_outputs,
    pairs_outputs,
    report_outputs,
    run_benchmark,
    run_evaluate,
    run_fit,
    run_kd,
    run_pairs,
    run_report,
)

StageFunction = Callable[..., list[Path]]  # (ctx) -> the stage's outputs (recorded in its marker)


def stage_folder(ctx) -> list[Path]:
    """``RUN/<stage>/``: where most stages write everything."""
    return [ctx.run_dir / ctx.stage]


@dataclass(frozen=True)
class Stage:
    """One stage. ``run(ctx)`` runs it and returns its outputs; ``outputs(ctx)`` names what it writes
    (deleted before it runs again, caches kept). A ``resumes`` stage (``speechsum fit``) keeps its
    folder: its run function continues from the last checkpoint or clears the folder itself."""

    name: str
    needs: tuple[str, ...]
    run: StageFunction
    describe: str
    outputs: StageFunction = stage_folder
    resumes: bool = False


class StageTable:
    """The stages in the order they are listed (every stage after the stages it needs)."""

    def __init__(self, stages: Iterable[Stage]):
        self.stages = tuple(stages)
        self.names = tuple(stage.name for stage in self.stages)
        self._by_name = {stage.name: stage for stage in self.stages}
        if len(self._by_name) != len(self.stages):
            raise ValueError(f"duplicate stage names in {self.names}")
        for number, stage in enumerate(self.stages):
            late = [need for need in stage.needs if need not in self.names[:number]]
            if late:
                raise ValueError(f"stage {stage.name} needs {late}, which are not listed before it")

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    def upstream(self, name: str) -> set[str]:
        """Every stage ``name`` is built from, directly or not."""
        needed = set(self[name].needs)
        for need in self[name].needs:
            needed |= self.upstream(need)
        return needed

    def downstream(self, name: str) -> list[str]:
        """Every stage built on ``name``, directly or not, in table order."""
        return [other for other in self.names if name in self.upstream(other)]

    def label(self, name: str) -> str:
        """``[3/11] align``: the stage's place in the table, for progress lines."""
        return f"[{self.names.index(name) + 1}/{len(self.names)}] {name}"

    def epilog(self) -> str:
        """One line per stage for ``--help``: name, what it does, what it needs."""
        width = max(map(len, self.names))
        return "\n".join(f"  {stage.name:<{width}}  {stage.describe}"
                         + (f" (needs {', '.join(stage.needs)})" if stage.needs else "") for stage in self)

    def with_runs(self, runs: Mapping[str, StageFunction]) -> StageTable:
        """The same table with some stages' run functions replaced (tests run stand-ins)."""
        return StageTable(replace(stage, run=runs[stage.name]) if stage.name in runs else stage for stage in self)


PIPELINE = StageTable([
    Stage("benchmark", (), run_benchmark, "build the bundled benchmark, the text corpus and the tokenizer",
          outputs=benchmark_outputs),
    Stage("text_lm", ("benchmark",), run_fit, "train the text backbone", resumes=True),
    Stage("align", ("text_lm",), run_fit, "align the student's projector to the backbone (CTC)", resumes=True),
    Stage("text_teacher", ("benchmark",), run_fit, "train the text teacher", resumes=True),
    Stage("baselines", ("text_lm", "text_teacher"), partial(run_evaluate, rows=BASELINE_SYSTEMS),
          "evaluate the text teacher, the backbone and the ASR cascade"),
    Stage("sft", ("align",), run_fit, "supervised fine-tuning of the speech student", resumes=True),
    Stage("kd", ("sft", "text_teacher"), run_kd, "on-policy distillation from the text teacher", resumes=True),
    Stage("pairs", ("kd",), run_pairs, "sample and judge preference pairs from the KD student",
          outputs=pairs_outputs),
    Stage("dpo", ("pairs",), run_fit, "DPO on the preference pairs", resumes=True),
    Stage("evaluate", ("dpo",), partial(run_evaluate, rows=STUDENT_SYSTEMS),
          "evaluate the student after SFT, KD and DPO"),
    Stage("report", ("baselines", "evaluate"), run_report, "write and print the report table and charts",
          outputs=report_outputs),
])
STAGES = PIPELINE.names
