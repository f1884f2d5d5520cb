"""The systems `speechsum evaluate` compares, and how each one is built.

Three kinds (the rows of the paper's table):

- ``student``: a speech LLM on **audio**. ``path`` is a stage checkpoint (``.ckpt`` from ``fit``:
  the model is rebuilt from the checkpoint's own hyperparameters — the YAML config LightningCLI
  saved in it — or from ``config`` when given, then the checkpoint's weights are loaded
  non-strictly, as ``predict --ckpt_path`` does: checkpoints hold only trainable weights; see
  :mod:`speechsum.models.checkpoint`, which refuses checkpoints that are not weights-only), or a
  LightningCLI YAML config (the model as configured, no trained weights: the untrained baseline).
- ``text``: a text LM reading the **reference transcript** (``speechsum.models.text_llm.TextLLM``;
  ``path`` is a Hugging Face model directory or a ``.ckpt`` of a text-LM stage). Role ``teacher``
  or ``backbone`` (taken from the name when it is one of those).
- ``cascade``: Whisper ASR transcribes the audio, then a text LM reads the ASR transcript
  (``path`` as for ``text``; ``asr_model`` a Whisper directory, default the bundled tiny.en).

Spec on the command line: ``kind:name:path`` (``student:sft:runs/sft/checkpoints/last.ckpt``);
in a YAML file a list of mappings with the fields of :class:`SystemSpec`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import (
    instantiate_speech_llm,
    load_speech_llm,
    model_config_from_yaml,
)
from speechsum.utils.io import read_yaml
from speechsum.utils.project_configs import project_config

log = logging.getLogger(__name__)

KINDS = ("student", "text", "cascade")
ROLES = ("teacher", "backbone", "text", "cascade", "student")
# Stage module class → stage name in the report (students are ordered base < sft < kd < dpo).
STAGE_OF_CLASS = {"SFTModule": "sft", "OnPolicyKDModule": "kd", "DPOModule": "dpo"}


@dataclass
class SystemSpec:
    """One system to evaluate.

    Args:
        kind: ``student`` | ``text`` | ``cascade`` (see the module docstring).
        name: unique name; the run folder ``<out>/<name>`` and the report row use it.
        path: checkpoint, YAML config (student) or HF model directory (text LMs).
        role: report row: teacher | backbone | text | cascade | student (default from kind/name).
        stage: students only: base | sft | kd | dpo | … (default: from the checkpoint's stage class).
        config: students only: a LightningCLI config to rebuild the model from instead of the
            checkpoint's saved hyperparameters.
        asr_model: cascade only: Whisper model directory (default: the bundled Whisper tiny.en).
        splits: the test splits this system runs on (default: every manifest given), e.g. the
            cascade on ``test`` alone when the held-out splits are for the students.
    """

    kind: str
    name: str
    path: str
    role: str | None = None
    stage: str | None = None
    config: str | None = None
    asr_model: str | None = None
    splits: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"system {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name or "") or self.name in (".", ".."):
            # "." and ".." would write the run folder <out>/<name> into --out itself or its parent
            raise ValueError(f"system name {self.name!r}: use letters, digits, '_', '-', '.', '+' only "
                             "(not '.' or '..')")
        if self.role is None:
            if self.kind == "text":
                self.role = self.name if self.name in ("teacher", "backbone") else "text"
            else:
                self.role = self.kind
        if self.role not in ROLES:
            raise ValueError(f"system {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if not Path(self.path).exists():
            raise FileNotFoundError(f"system {self.name!r}: {self.path} does not exist")
        if self.splits is not None:
            if isinstance(self.splits, str) or not all(isinstance(split, str) and split for split in self.splits):
                raise ValueError(f"system {self.name!r}: splits must be a list of split names, got {self.splits!r}")
            self.splits = list(self.splits)

    def manifests(self, manifests: dict[str, Path]) -> dict[str, Path]:
        """Those of ``manifests`` (split name → path) this system runs on; a split it names that is
        not among them is an error."""
        if self.splits is None:
            return dict(manifests)
        if not self.splits:  # it ran on nothing and wrote an empty metrics.json
            raise ValueError(f"system {self.name!r}: an empty list of splits: name at least one test split "
                             f"({', '.join(manifests) or 'none given'}), or leave them out for every one")
        unknown = [split for split in self.splits if split not in manifests]
        if unknown:
            raise ValueError(f"system {self.name!r}: splits {unknown} are not among the test manifests "
                             f"({', '.join(manifests) or 'none'}); give them with --manifest SPLIT=PATH")
        return {split: path for split, path in manifests.items() if split in self.splits}

    @classmethod
    def parse(cls, text: str) -> SystemSpec:
        """``kind:name:path`` (the path may itself contain ':'); a student's stage YAML not in the working
        folder is the project's own (``student:base:configs/sft.yaml``, as ``speechsum fit --config``)."""
        parts = text.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"--system {text!r}: expected kind:name:path, e.g. student:sft:runs/sft/checkpoints/last.ckpt")
        yaml_config = parts[0] == "student" and parts[2].endswith((".yaml", ".yml"))
        return cls(kind=parts[0], name=parts[1], path=project_config(parts[2], '--system') if yaml_config else parts[2])

    def to_dict(self) -> dict:
        return asdict(self)

    def check_source(self) -> None:
        """A ``ValueError`` naming the system when ``path`` is no kind of model it can be built from
        (cheap: no weights are read), so that ``evaluate`` refuses it before any system runs."""
        if not str(self.path).strip():  # Path("") is the working folder: it was ". is not a .ckpt"
            raise ValueError(f"system {self.name!r}: no path given; write KIND:NAME:PATH")
        self.check_extra_paths()
        path = Path(self.path)
        if path.suffix in (".yaml", ".yml", ".ckpt") and path.is_file():
            return
        if path.is_dir() and self.kind in ("text", "cascade"):
            if not (path / "config.json").is_file():
                raise ValueError(f"system {self.name!r}: {path} is not a Hugging Face model folder (no config.json)")
            return
        raise ValueError(
            f"system {self.name!r}: {path} is not a .ckpt, a .yaml config"
            + (" or a model directory" if self.kind != "student" else " (students need a checkpoint or config)")
        )


    def check_extra_paths(self) -> None:
        """``config`` a file, ``asr_model`` (written as a local path) a folder: they failed only
        when the system ran, naming neither field nor system ('[Errno 2] …', 'Repo id must use …')."""
        if self.config is not None and not Path(self.config).is_file():
            raise ValueError(f"system {self.name!r}: config {self.config}: no such file (a stage config to rebuild "
                             "the student from; leave it out to use the checkpoint's own)")
        local = str(self.asr_model or "").startswith(("/", "./", "../", "~"))
        if local and not Path(self.asr_model).expanduser().is_dir():
            raise ValueError(f"system {self.name!r}: asr_model {self.asr_model}: no such folder (a Whisper model "
                             "folder; leave it out for the bundled Whisper tiny.en)")


def load_systems_file(path: str | Path) -> list[SystemSpec]:
    """Systems from YAML: a list (or ``systems:`` list) of mappings with :class:`SystemSpec` fields.
    Relative paths resolve against the file's folder."""
    path = Path(path)
    data = read_yaml(path)
    entries = data.get("systems") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of systems (or a `systems:` list)")
    allowed = {f.name for f in fields(SystemSpec)}
    specs = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: system #{number}: expected a mapping, got {type(entry).__name__}")
        unknown = sorted(entry.keys() - allowed)
        if unknown:
            raise ValueError(f"{path}: system #{number}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [key for key in ("kind", "name", "path") if key not in entry]
        wrong = [f"{key} ({type(value).__name__})" for key, value in entry.items()
                 if value is not None and key != "splits" and not isinstance(value, str)]
        if missing or wrong:
            raise ValueError(f"{path}: system #{number}: " + "; ".join(
                ([f"missing field(s) {', '.join(missing)}"] if missing else [])
                + ([f"field(s) {', '.join(wrong)} must be text"] if wrong else [])))
        entry = dict(entry)
        for key in ("path", "config", "asr_model"):
            if entry.get(key) and not Path(entry[key]).is_absolute():
                entry[key] = str(path.parent / entry[key])
        try:
            specs.append(SystemSpec(**entry))
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise ValueError(f"{path}: system #{number}: {err}") from err
    return specs


def build_model(spec: SystemSpec) -> SpeechLLM:
    """The system's ``SpeechLLM`` in eval mode; sets ``spec.stage`` for students when unset."""
    spec.check_source()
    path = Path(spec.path)
    if path.suffix in (".yaml", ".yml"):
        model = instantiate_speech_llm(model_config_from_yaml(path), path)
        spec.stage = spec.stage or "base"
    elif path.suffix == ".ckpt":
        model, hparams = load_speech_llm(path, spec.config)
        stage_class = str(hparams.get("_class_path", "")).rpartition(".")[2]
        spec.stage = spec.stage or STAGE_OF_CLASS.get(stage_class, stage_class.lower() or None)
    else:  # a model folder (check_source)
        from speechsum.models.text_llm import TextLLM

        model = TextLLM(llm=str(path))
    reads_transcripts = getattr(model.processor, "reads_transcripts", False)
    if spec.kind == "student" and reads_transcripts:
        raise ValueError(f"system {spec.name!r}: kind student but {path} is a text LM; use kind text")
    if spec.kind != "student" and not reads_transcripts:
        raise ValueError(f"system {spec.name!r}: kind {spec.kind} needs a text LM, but {path} is a speech model")
    return model.eval()
