"""A plain option given twice with different values on one command line is a usage error naming both:
argparse kept the last without a word (``--batch-size 8 … --batch-size 16`` ran with 16). Options
that add up (``--manifest``, ``--system``), flags and the same value twice are taken as before, and the
pipeline's own default it lets ``teacher.serve_args`` replace (``--log-level``) is given once."""

from __future__ import annotations

import pytest

from speechsum.cli import main
from speechsum.evaluation.cli import evaluate_parser
from speechsum.pipeline.command_args import option_problem, serve_parser
from speechsum.pipeline.teacher_server import quiet_unless_given
from speechsum.utils.repeated_options import repeated_option

# each command line ends in an option no command takes: were the repeat taken again, the command stops
# there instead of writing data or running the pipeline in the working folder
SAFE = ["--no-such-option"]
TWICE = "given twice, {!r} and then {!r}; give it once (argparse would keep the last without a word)"


@pytest.mark.parametrize(("argv", "line"), [
    (["pairs", "--ckpt", "c", "--manifest", "m", "--out", "o", "--batch-size", "8", "--batch-size", "16", *SAFE],
     "speechsum pairs: error: --batch-size: " + TWICE.format("8", "16")),
    (["evaluate", "--out", "a", "--manifest", "m", "--out=b", *SAFE],
     "speechsum evaluate: error: --out: " + TWICE.format("a", "b")),
    (["benchmark", "build", "--out", "x", "--size", "tiny", "--siz", "small", *SAFE],
     "speechsum benchmark build: error: --size / --siz: " + TWICE.format("tiny", "small")),
    (["pipeline", "--preset", "tiny", "--until", "sft", "--until", "kd", *SAFE],
     "speechsum pipeline: error: --until: " + TWICE.format("sft", "kd")),
    (["toydata", "--out", "a", "--train", "4", "--train", "5", *SAFE],
     "speechsum toydata: error: --train: " + TWICE.format("4", "5")),
])
def test_a_plain_option_given_twice_with_two_values_is_refused(argv, line, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == line


@pytest.mark.parametrize("args", [
    ["--batch-size", "8", "--batch-size", "08"],  # the same count
    ["--manifest", "a.jsonl", "--manifest", "b.jsonl", "--system", "text:a:x", "--system", "text:b:y"],  # they add
    ["--wandb", "--wandb"],
    ["--out", "a", "--", "--out", "b"],
])
def test_what_is_no_mistake_is_taken(args):
    assert repeated_option(evaluate_parser(), args) is None


def test_the_teacher_servers_log_level_is_given_once():
    """The pipeline gives ``speechsum serve`` ``--log-level WARNING`` unless teacher.serve_args give one."""
    assert quiet_unless_given([]) == ["--log-level", "WARNING"]
    assert quiet_unless_given(["--dtype", "bfloat16"]) == ["--log-level", "WARNING"]
    assert quiet_unless_given(["--log-level", "INFO"]) == []
    assert quiet_unless_given(["--log-l=DEBUG"]) == []
    args = ["--model", "m", *quiet_unless_given(["--log-level", "INFO"]), "--log-level", "INFO"]
    assert serve_parser().parse_args(args).log_level == "INFO"


def test_a_stage_options_given_twice_are_refused_when_the_run_starts():
    assert option_problem(evaluate_parser(), ["--asr-dtype", "float32", "--asr-dtype", "bfloat16"]) == (
        "--asr-dtype: " + TWICE.format("float32", "bfloat16"))
    assert option_problem(evaluate_parser(), ["--manifest", "val=v.jsonl", "--manifest", "dev=d.jsonl"]) is None


@pytest.mark.parametrize(("argv", "error"), [
    # the required --out was named, not the misspelled one given
    (["export", "c.ckpt", "--outt", "x"], "speechsum export: error: unrecognized arguments: --outt x\n"
                                          "  --outt (did you mean '--out'?)\n"),
    (["summarize", "a.wav", "--modle", "m"], "speechsum summarize: error: unrecognized arguments: --modle m\n"
                                             "  --modle (did you mean '--model'?)\n"),
    # the parent benchmark parser reports a subcommand's unknown option: the subcommand's closest one
    (["benchmark", "build", "--out", "x", "--sizee", "tiny"],
     "speechsum benchmark: error: unrecognized arguments: --sizee tiny\n  --sizee (did you mean '--size'?)\n"),
    (["pairs", "--ckpt", "c", "--manifest", "m", "--out", "o", "--judge-modle=gpt"],
     "speechsum pairs: error: unrecognized arguments: --judge-modle=gpt\n  --judge-modle (did you mean '--judge-model'?)\n"),
    (["evaluate", "--out", "o", "--judge-modle", "m"],
     "speechsum evaluate: error: unrecognized arguments: --judge-modle m\n  --judge-modle (did you mean '--judge-model'?)\n"),
    (["pipeline", "--present", "tiny"],
     "speechsum pipeline: error: unrecognized arguments: --present tiny\n  --present (did you mean '--preset'?)\n"),
    # nothing close: argparse's list alone; a wrong subcommand is still argparse's invalid choice
    (["serve", "--model", "m", "--bogus-flag"], "speechsum serve: error: unrecognized arguments: --bogus-flag\n"),
    (["benchmark", "biuld", "--out", "x"], "speechsum benchmark: error: argument command: invalid choice: 'biuld' "
                                          "(choose from 'build', 'info', 'tokenizer', 'textcorpus')\n"),
])
def test_an_unknown_option_of_a_tool_is_named_with_the_closest_one(capsys, argv, error):
    """Tools said "unrecognized arguments: --judge-modle m" and no more (the Lightning CLI names the
    closest option), or a required option when the unknown one was that option misspelled."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and capsys.readouterr().err.endswith(error)
