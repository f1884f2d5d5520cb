"""The pipeline's stages, declared once: :data:`PIPELINE` lists every stage with what it needs, the
function that runs it, what it writes and a one-line description (``--help``'s epilog and the
progress lines come from it). Adding a stage is adding one :class:`Stage` here. When several stages
are ready, the scheduler starts the one at the head of the longest chain first (:meth:`StageTable.chain`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from speechsum.pipeline.config import BASELINE_SYSTEMS, get_path, shared_settings, stage_base_settings
from speechsum.pipeline.stages import (
    STUDENTS_FOLDER,
    benchmark_outputs,
    pairs_outputs,
    report_outputs,
    run_benchmark,
    run_evaluate,
    run_features,
    run_fit,
    run_kd,
    run_pairs,
    run_report,
    student_row,
)
from speechsum.utils.remote import cache_key

StageFunction = Callable[..., list[Path]]  # (ctx) -> the stage's outputs (recorded in its marker)


def stage_folder(ctx) -> list[Path]:
    """``RUN/<stage>/``: where most stages write everything."""
    return [ctx.run_dir / ctx.stage]


@dataclass(frozen=True)
class Stage:
    """One stage. ``run(ctx)`` runs it and returns its outputs; ``outputs(ctx)`` names what it writes
    (deleted before it runs again, caches kept). A ``resumes`` stage (``speechsum fit``) keeps its
    folder: its run function continues from the last checkpoint or clears the folder itself.
    ``after`` names stages it waits for, when they run too, without reading their outputs: once
    every stage is ordered before or after it, nothing runs beside it and it gets every thread
    (:meth:`StageTable.runs_alone`); ``--until`` does not pull them in."""

    name: str
    needs: tuple[str, ...]
    run: StageFunction
    describe: str
    outputs: StageFunction = stage_folder
    resumes: bool = False
    reads: tuple[str, ...] = ()  # the pipeline-config sections (dotted paths) of its own settings
    after: tuple[str, ...] = ()

    @property
    def waits_for(self) -> tuple[str, ...]:
        """The stages that must be complete before it starts (when they run): ``needs`` and ``after``."""
        return self.needs + self.after


class StageTable:
    """The stages in the order they are listed (every stage after the stages it needs)."""

    def __init__(self, stages: Iterable[Stage]):
        self.stages = tuple(stages)
        self.names = tuple(stage.name for stage in self.stages)
        self._by_name = {stage.name: stage for stage in self.stages}
        if len(self._by_name) != len(self.stages):
            raise ValueError(f"duplicate stage names in {self.names}")
        for number, stage in enumerate(self.stages):
            late = [need for need in stage.waits_for if need not in self.names[:number]]
            if late:
                raise ValueError(f"stage {stage.name} needs {late}, which are not listed before it")
        self._chain: dict[str, int] = {}
        for stage in reversed(self.stages):  # every stage built on it comes later
            after = [self._chain[other.name] for other in self.stages if stage.name in other.waits_for]
            self._chain[stage.name] = 1 + max(after, default=0)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    def config_digests(self, config: Mapping) -> dict[str, str]:
        """Per stage, a digest of the settings it runs with: the sections it ``reads`` (and a training
        stage's base config file's settings), the :func:`shared_settings` and the digests of the stages it
        needs. A changed setting changes the digest of its stage and of every stage built on it, and of no other."""
        digests: dict[str, str] = {}
        shared = shared_settings(config)  # hashes the data: manifests: once, not once per stage
        for stage in self.stages:
            own = {path: get_path(config, path) for path in stage.reads}
            if stage.resumes:  # a `speechsum fit` stage: what its base config file holds (an edited configs/sft.yaml)
                own["base_config"] = stage_base_settings(config, stage.name)
            digests[stage.name] = cache_key(shared, own, [digests[n] for n in stage.needs])[:16]
        return digests

    def upstream(self, name: str) -> set[str]:
        """Every stage ``name`` is built from, directly or not."""
        return self._reachable(name, lambda stage: stage.needs)

    def _reachable(self, name: str, edges: Callable[[Stage], tuple[str, ...]]) -> set[str]:
        """The stages ``edges`` lead to from ``name``, directly or not."""
        direct = set(edges(self[name]))
        return direct.union(*(self._reachable(other, edges) for other in direct))

    def until(self, stages: Iterable[str] | None) -> list[str]:
        """The stages ``--until stages`` runs, in table order: those and what they are built from
        (None: every stage)."""
        if stages is None:
            return list(self.names)
        wanted = set(stages).union(*(self.upstream(stage) for stage in stages))
        return [name for name in self.names if name in wanted]

    def downstream(self, name: str) -> list[str]:
        """Every stage built on ``name``, directly or not, in table order."""
        return [other for other in self.names if name in self.upstream(other)]

    def before(self, name: str) -> set[str]:
        """Every stage that ends before ``name`` starts when both run: what it needs or waits for
        (``after``), directly or not. The scheduler waits for those of them that are planned, also
        through an ``after`` stage that is not (so a ``--until`` leaving it out keeps the order)."""
        return self._reachable(name, lambda stage: stage.waits_for)

    def runs_alone(self, name: str) -> bool:
        """Whether every other stage always ends before ``name`` starts or starts after it ends
        (:meth:`before`): no stage can ever run beside it (the benchmark, the report)."""
        later = {other for other in self.names if name in self.before(other)}
        return self.before(name) | later | {name} == set(self.names)

    def chain(self, name: str) -> int:
        """The number of stages on the longest chain from ``name`` to the end, ``name`` included: of
        the stages ready at once, the scheduler starts the one with the longest chain first (e.g. kd,
        which pairs, dpo, evaluate and report wait for, before evaluate_sft)."""
        return self._chain[name]

    def start_order(self, ready: Iterable[str]) -> list[str]:
        """``ready`` stages in the order the scheduler starts them: the longest :meth:`chain` first,
        ties in table order."""
        return sorted(ready, key=lambda name: (-self.chain(name), self.names.index(name)))

    def label(self, name: str) -> str:
        """``[3/13] align``: the stage's place in the table, for progress lines."""
        return f"[{self.names.index(name) + 1}/{len(self.names)}] {name}"

    def epilog(self) -> str:
        """One line per stage for ``--help``: name, what it does, what it needs and waits for."""
        width = max(map(len, self.names))
        lines = []
        for stage in self:
            order = ([f"needs {', '.join(stage.needs)}"] if stage.needs else []) + (
                [f"after {', '.join(stage.after)}"] if stage.after else [])
            lines.append(f"  {stage.name:<{width}}  {stage.describe}" + (f" ({'; '.join(order)})" if order else ""))
        return "\n".join(lines)

    def with_runs(self, runs: Mapping[str, StageFunction]) -> StageTable:
        """The same table with some stages' run functions replaced (tests run stand-ins)."""
        return StageTable(replace(stage, run=runs[stage.name]) if stage.name in runs else stage for stage in self)


def student_evaluation(name: str, system: str, after: str) -> Stage:
    """The stage that evaluates the student after ``after`` (row ``system``, in ``RUN/evaluate/``) as
    soon as that student exists, in a lane the training chain leaves free, once ``features`` has
    encoded the test audio (when it runs)."""
    return Stage(name, (system,), partial(run_evaluate, rows=(system,), folder=STUDENTS_FOLDER),
                 f"evaluate the student after {after}", outputs=partial(student_row, system=system),
                 reads=("evaluate", "judge"), after=("features",))


PIPELINE = StageTable([
    Stage("benchmark", (), run_benchmark, "build the bundled benchmark, the text corpus and the tokenizer",
          outputs=benchmark_outputs, reads=("benchmark",)),
    Stage("text_lm", ("benchmark",), run_fit, "train the text backbone", resumes=True, reads=("text_lms.backbone",)),
    Stage("align", ("text_lm",), run_fit, "align the student's projector to the backbone (CTC)", resumes=True,
          reads=("stages.align",)),
    Stage("text_teacher", ("benchmark",), run_fit, "train the text teacher", resumes=True,
          reads=("text_lms.teacher",)),
    Stage("features", ("text_lm",), run_features,
          "encode the test audio once for the student evaluations (frozen-encoder feature cache)",
          reads=("evaluate", "stages.sft")),
    Stage("baselines", ("text_lm", "text_teacher"), partial(run_evaluate, rows=BASELINE_SYSTEMS),
          "evaluate the text teacher, the backbone and the ASR cascade", reads=("evaluate", "judge")),
    Stage("sft", ("align",), run_fit, "supervised fine-tuning of the speech student", resumes=True,
          reads=("stages.sft",)),
    Stage("kd", ("sft", "text_teacher"), run_kd, "on-policy distillation from the text teacher", resumes=True,
          reads=("stages.kd", "teacher")),
    Stage("pairs", ("kd",), run_pairs, "sample and judge preference pairs from the KD student",
          outputs=pairs_outputs, reads=("pairs", "judge")),
    student_evaluation("evaluate_sft", "sft", "SFT"),
    student_evaluation("evaluate_kd", "kd", "KD"),
    # as soon as the pairs exist, with one lane's threads, beside the baselines and the SFT and KD
    # evaluations (it waited for them until 2026-12-07, to run alone with every thread: on a 2-core
    # EPYC the other lane then idled while the baselines ended; the same weights with 1 or 2 threads there)
    Stage("dpo", ("pairs",), run_fit, "DPO on the preference pairs", resumes=True, reads=("stages.dpo",)),
    student_evaluation("evaluate_dpo", "dpo", "DPO"),
    Stage("report", ("baselines", "evaluate_sft", "evaluate_kd", "evaluate_dpo"), run_report,
          "write and print the report table and charts", outputs=report_outputs, reads=("report", "evaluate")),
])
STAGES = PIPELINE.names
# names --from/--until also take, for several stages at once (`evaluate` was one stage before 2026-12-04)
STAGE_GROUPS = {"evaluate": ("evaluate_sft", "evaluate_kd", "evaluate_dpo")}
