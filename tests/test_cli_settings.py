"""Settings the training commands cannot work with (a zero batch size, a negative learning rate,
top_p outside (0, 1], ...) end ``speechsum fit|validate|...`` at once with one line naming the
setting as the config spells it, exit 2; before, some were a traceback from deep in the run (the
sampler, AdamW) and others were taken silently (a batch-size-free bucket count of -5, sampling at
temperature 0 in validation hours later)."""

from __future__ import annotations

import pytest

from speechsum.cli import main
from speechsum.utils.arguments import ConfigError
from tests.helpers import run_config

BAD_SETTINGS = [
    (["--data.max_batch_size", "0"], "data.max_batch_size must be at least 1 (or null: no cap), got 0"),
    (["--data.max_batch_size", "-1"], "data.max_batch_size must be at least 1 (or null: no cap), got -1"),
    (["--data.max_batch_seconds", "0"], "data.max_batch_seconds must be a number above 0, got 0.0"),
    (["--data.num_buckets", "0"], "data.num_buckets must be at least 1, got 0"),
    (["--data.max_audio_seconds", "-2"], "data.max_audio_seconds must be a number above 0 (or null: the backbone's "
                                          "limit), got -2.0"),
    (["--data.num_workers", "-1"], "data.num_workers must be at least 0, got -1"),
    (["--data.hf_splits", "{bogus: train}"], "data.hf_splits: unknown split(s) ['bogus']"),
    (["--model.init_args.learning_rate", "-1"], "model.init_args.learning_rate must be a number at least 0, got -1.0"),
    (["--model.init_args.weight_decay", "-0.1"], "model.init_args.weight_decay must be a number at least 0, got -0.1"),
    (["--model.init_args.warmup_steps", "-1"], "model.init_args.warmup_steps must be at least 0, got -1"),
    (["--model.init_args.min_lr_ratio", "2"], "model.init_args.min_lr_ratio must be a number at least 0 and at most 1, got 2.0"),
    (["--model.init_args.num_val_samples", "-1"], "model.init_args.num_val_samples must be at least 0, got -1"),
    (["--model.init_args.generation.max_new_tokens", "0"],
     "model.init_args.generation.max_new_tokens must be at least 1, got 0"),
    (["--model.init_args.generation.max_new_tokens", "100000"],  # before: found by the first validation's generate
     "model.init_args.generation.max_new_tokens must be at most the LM's context of 2048 positions (the prompt and the "
     "completion share it), got 100000; lower it"),
    (["--model.init_args.generation.temperature", "0"],
     "model.init_args.generation.temperature must be a number above 0, got 0.0"),
    (["--model.init_args.generation.top_p", "1.5"], "model.init_args.generation.top_p must be a number above 0 and at most 1, got 1.5"),
    (["--model.init_args.generation.top_p", "0"], "model.init_args.generation.top_p must be a number above 0 and at most 1, got 0.0"),
    (["--trainer.max_steps", "-5"], "`max_steps` must be a non-negative integer or -1"),  # Lightning's own words
    # 0 trained nothing and saved the untrained model as the run's checkpoint (the pipeline refused it already)
    (["--trainer.max_steps", "0"], "trainer.max_steps must be at least 1 (or -1: no limit), got 0: fit would train "
                                   "nothing and save the untrained model as its checkpoint; to load a model without "
                                   "training, run `speechsum validate` with the same config"),
    (["--trainer.max_epochs", "0"], "trainer.max_epochs must be at least 1 (or -1: no limit), got 0: fit would "
                                    "train nothing"),
    # Lightning divided by these: a ZeroDivisionError at the first step or validation; and the loss by a
    # negative accumulate_grad_batches: gradient ascent, silently
    (["--trainer.accumulate_grad_batches", "0"], "trainer.accumulate_grad_batches must be at least 1, got 0"),
    (["--trainer.accumulate_grad_batches", "-2"], "trainer.accumulate_grad_batches must be at least 1, got -2"),
    (["--trainer.check_val_every_n_epoch", "0"], "trainer.check_val_every_n_epoch must be at least 1 (or null), got 0"),
    (["--trainer.val_check_interval", "0"], "trainer.val_check_interval must be a number above 0 (batches, or a "
                                            "fraction of the epoch), got 0"),
    # norm clipping multiplied the gradients by -1/norm: gradient ascent, silently; NaN: Lightning blamed a second value
    (["--trainer.gradient_clip_val", "-1"], "trainer.gradient_clip_val must be a number at least 0 (or null: no "
                                            "clipping), got -1"),
    # Lightning's seed_everything: "-1 is not in bounds, numpy accepts from 0 to 4294967295", a traceback
    (["--seed_everything", "-1"], "seed_everything must be an integer from 0 to 4294967295 (what numpy's seeding "
                                  "takes), true for a random seed, or false, got -1"),
    (["--seed_everything", "4294967296"], "seed_everything must be an integer from 0 to 4294967295 (what numpy's "
                                          "seeding takes), true for a random seed, or false, got 4294967296"),
    (["--trainer.gradient_clip_val", ".nan"], "trainer.gradient_clip_val must be a number at least 0 (or null: no "
                                             "clipping), got nan"),
]


@pytest.mark.parametrize(("options", "message"), BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
def test_a_setting_out_of_range_is_one_line_naming_it(tmp_path, toy_data, capsys, options, message):
    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), *options])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"speechsum fit: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_max_steps_minus_1_means_no_limit_and_stays_accepted(tmp_path, toy_data):
    """-1 is Lightning's "no limit" (max_epochs decides); only 0 is refused."""
    config = run_config(tmp_path, toy_data, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    main(["fit", "--config", str(config)])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_log_every_n_steps_0_turns_logging_off_as_lightning_has_it(tmp_path, toy_data):
    """Lightning takes 0 for "no logging"; the stages' throughput window divided by it (ZeroDivisionError)."""
    config = run_config(tmp_path, toy_data, max_steps=2, log_every_n_steps=0)
    main(["fit", "--config", str(config)])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert not any("train/" in path.read_text() for path in (tmp_path / "run").rglob("metrics.csv"))


def test_fit_without_a_train_manifest_is_one_line_naming_the_setting(tmp_path, toy_data, capsys):
    """Before: RuntimeError: no train data ... a traceback, exit 1."""
    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--data.train_manifest", "null"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert ("speechsum fit: error: data.train_manifest: no train data: set it to a manifest (or set `data.hf_dataset` "
            "with that split) in the data config\n") in err and "Traceback" not in err


def test_fit_with_a_null_train_manifest_in_a_config_file_names_its_file_and_line(tmp_path, toy_data, capsys):
    """Before: "no train data: set train_manifest ..." without the --config file and line that set it null."""
    config = run_config(tmp_path, toy_data, max_steps=1)
    text = config.read_text()
    config.write_text(text.replace(f"train_manifest: {toy_data['train']}", "train_manifest: null"))
    line = 1 + config.read_text().splitlines().index("  train_manifest: null")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert (f"speechsum fit: error: data.train_manifest ({config}:{line}): no train data: set it to a manifest (or set "
            "`data.hf_dataset` with that split) in the data config\n") in err and "Traceback" not in err


def test_the_shipped_settings_pass(tiny_composed):
    """The defaults (and 0 warm-up steps, a learning rate of 0, greedy decoding) are accepted."""
    from speechsum.data.datamodule import SpeechSumDataModule
    from speechsum.models.generation import GenerationSettings
    from speechsum.stages.sft import SFTModule

    SpeechSumDataModule(max_batch_size=None)
    SFTModule(tiny_composed, learning_rate=0.0, warmup_steps=0, num_val_samples=0,
              generation=GenerationSettings(max_new_tokens=1, top_p=1.0))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0.0}, "model.init_args.temperature must be a number above 0, got 0.0"),
    ({"top_p": 0.0}, "model.init_args.top_p must be a number above 0 and at most 1, got 0.0"),
    ({"max_new_tokens": 0}, "model.init_args.max_new_tokens must be at least 1, got 0"),
    ({"max_new_tokens": 4096}, "model.init_args.max_new_tokens must be at most the LM's context of 2048 positions (the "
                               "prompt and the completion share it), got 4096; lower it"),
    ({"beta": 1.5}, "model.init_args.beta must be a number at least 0 and at most 1, got 1.5"),
    ({"loss_temperature": -1.0}, "model.init_args.loss_temperature must be a number above 0, got -1.0"),
    ({"lmbda": 2.0}, "model.init_args.lmbda must be a number at least 0 and at most 1, got 2.0"),
])
def test_kd_sampling_settings_are_checked(tiny_composed, kwargs, message):
    from speechsum.stages.kd.module import OnPolicyKDModule
    from speechsum.stages.kd.teachers import OpenAICompatibleTeacher

    teacher = OpenAICompatibleTeacher("gpt-4o", base_url="http://127.0.0.1:9/v1", scoring="none")
    with pytest.raises(ConfigError) as info:
        OnPolicyKDModule(tiny_composed, teacher, **{"seq_kd": True, "lmbda": 0.0, **kwargs})
    assert str(info.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"beta": 0.0}, "model.init_args.beta must be a number above 0, got 0.0"),
    ({"label_smoothing": 0.5}, "model.init_args.label_smoothing must be a number at least 0 and below 0.5, got 0.5"),
    ({"rpo_alpha": -1.0}, "model.init_args.rpo_alpha must be a number at least 0, got -1.0"),
    ({"loss_type": "ipo", "label_smoothing": 0.1}, "model.init_args.label_smoothing (0.1) is for loss_type: sigmoid; "
     "the ipo loss has no labels to smooth: set label_smoothing: 0 or loss_type: sigmoid"),
])
def test_dpo_settings_are_checked(tiny_composed, kwargs, message):
    from speechsum.stages.dpo.module import DPOModule

    with pytest.raises(ConfigError) as info:
        DPOModule(tiny_composed, reference="frozen_copy", **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty.yaml: an empty config file (no settings); fill it or leave the --config out"),
    ("# only a comment\n", "empty.yaml: an empty config file (no settings); fill it or leave the --config out"),
    ("- trainer\n- model\n", "empty.yaml: a config file is a mapping of settings (trainer:, model:, data:, ...), "
                             "got a list"),
    ("hello\n", "empty.yaml: a config file is a mapping of settings (trainer:, model:, data:, ...), got a str"),
])
def test_a_config_file_without_settings_is_named(tmp_path, capsys, text, message):
    """jsonargparse said 'Unexpected config: ' and not which file."""
    (tmp_path / "empty.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(tmp_path / "empty.yaml")])
    assert info.value.code == 2
    assert f"error: {tmp_path}/{message}" in capsys.readouterr().err


SECTION = "a section of settings (a mapping, each setting indented under it), got {}: write its settings under it, or delete the key"


@pytest.mark.parametrize(("text", "message"), [
    # the earlier files' trainer settings were replaced by Lightning's defaults without a word (logs, checkpoints
    # and progress bar in the working folder)
    ("trainer: 5\n", "stack.yaml:1: trainer: " + SECTION.format("'5'")),
    ("trainer:\n  # max_steps: 5\n", "stack.yaml:1: trainer: " + SECTION.format("empty (null)")),
    # TypeError tracebacks ("argument after ** must be a mapping")
    ("data:\n  # num_workers: 2\n", "stack.yaml:1: data: " + SECTION.format("empty (null)")),
    ("data: [1]\n", "stack.yaml:1: data: " + SECTION.format("a list")),
    # PyYAML kept the last, silently
    ("trainer:\n  max_steps: 1\n  max_steps: 2\n", "stack.yaml:3: key 'max_steps' (under 'trainer') is given twice "
                                                   "(first on line 2); YAML would keep only the last: merge the two or "
                                                   "delete one"),
])
def test_a_section_without_settings_or_a_key_given_twice_is_named_with_its_line(tmp_path, toy_data, capsys, text,
                                                                                 message):
    config = run_config(tmp_path, toy_data, max_steps=1)
    (tmp_path / "stack.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(tmp_path / "stack.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/{message}\n"
    assert not (tmp_path / "run").exists() and not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(("word", "hint"), [("evalute", " (did you mean 'evaluate'?)"), ("fitt", " (did you mean 'fit'?)"),
                                            ("xyzzy", "")])
def test_an_unknown_command_suggests_the_closest_of_all_commands(capsys, word, hint):
    """The Lightning CLI answered a misspelled tool with 'choose from fit, validate, test, predict'."""
    with pytest.raises(SystemExit) as info:
        main([word])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"speechsum: unknown command {word!r}{hint}; commands: fit, validate, test, predict, toydata, toyscore, "
        "benchmark, serve, export, summarize, pairs, evaluate, report, synth, pipeline (speechsum --help)\n")


UNKNOWN_KEYS = [
    ("trainer:\n  max_stepz: 3\n", "  trainer.max_stepz (did you mean 'trainer.max_steps'?): in {file}:2\n"),
    ("model:\n  init_args:\n    learning_rat: 3\n",
     "  learning_rat (a setting of speechsum.stages.sft.SFTModule) (did you mean 'learning_rate'?): in {file}:3\n"),
    ("model:\n  init_args:\n    model:\n      init_args:\n        stak: 4\n",
     "  stak (a setting of speechsum.models.composed.ComposedSpeechLLM) (did you mean 'stack'?): in {file}:5\n"),
]


@pytest.mark.parametrize(("text", "note"), UNKNOWN_KEYS, ids=["trainer", "stage", "backbone"])
def test_an_unknown_key_in_a_config_file_is_named_with_file_line_and_the_closest_key(tmp_path, toy_data, capsys,
                                                                                     text, note):
    """jsonargparse named neither the file (of several stacked) nor the line, and suggested nothing."""
    config = run_config(tmp_path, toy_data)
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(tmp_path / "typo.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(note.format(file=tmp_path / "typo.yaml"))


@pytest.mark.parametrize(("text", "note"), [
    ("trainer:\n  max_stepz: 3\n", "  trainer.max_stepz (did you mean 'trainer.max_steps'?): in {file}:2\n"),
    ("data:\n  max_batch_sise: 3\n", "  data.max_batch_sise (did you mean 'data.max_batch_size'?): in {file}:2\n"),
], ids=["trainer", "data"])
def test_an_unknown_key_found_by_print_config_is_named_with_file_line_and_the_closest_key(tmp_path, toy_data, capsys,
                                                                                          text, note):
    """With --print_config jsonargparse says "Group 'trainer' does not accept option 'max_stepz'" from the top
    parser: the note was a bare '  max_stepz', no closest key, no file."""
    config = run_config(tmp_path, toy_data)
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(tmp_path / "typo.yaml"), "--print_config"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(note.format(file=tmp_path / "typo.yaml"))


def test_a_misspelled_option_suggests_the_closest(tmp_path, toy_data, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(run_config(tmp_path, toy_data)), "--data.batch_size", "3"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --data.batch_size 3\n"
                                            "  --data.batch_size (did you mean '--data.max_batch_size'?)\n")


@pytest.mark.parametrize("tool", ["serve", "evaluate", "pairs", "synth"])
def test_a_key_given_as_api_key_env_is_refused_without_echoing_it(capsys, tool):
    """``--api-key-env sk-…`` (the key, not its variable's name) was echoed in 'the environment
    variable sk-… is not set. Export it (export sk-…=...)', or sent as is with a --base-url."""
    with pytest.raises(SystemExit) as info:
        main([tool, "--api-key-env", "sk-PROBE-123"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "sk-PROBE" not in error
    assert error.endswith("error: argument --api-key-env: expected the name of the environment variable holding the "
                          "API key (letters, digits and _, e.g. OPENAI_API_KEY), not the key itself: export the key in "
                          "a variable and give its name (the value given is not repeated here)\n")


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A tiny text LM saved as a Hugging Face folder (config.json, model.safetensors, tokenizer files)."""
    from speechsum.models.text_llm import TextLLM
    from tests.stages.test_kd import TEACHER_LLM

    folder = tmp_path_factory.mktemp("lm") / "lm"
    TextLLM(llm=TEACHER_LLM, end_of_turn="<|im_end|>", init_seed=7).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("removed", "message"), [
    ("config.json", "{folder} cannot be loaded: ValueError: Unrecognized model in {folder}. Should have a `model_type` "
                    "key in its config.json."),
    ("model.safetensors", "{folder} cannot be loaded: OSError: Error no file named model.safetensors, or "
                          "pytorch_model.bin, found in directory {folder}."),
    ("", "{folder} does not exist: give a Hugging Face model folder or hub id (OSError: Repo id must be in the form "
         "'repo_name' or 'namespace/repo_name': '{folder}'. Use `repo_type` argument if needed.)"),
])
def test_a_model_folder_that_cannot_be_loaded_is_one_line_naming_the_setting(tmp_path, toy_data, capsys, lm_folder,
                                                                            removed, message):
    """jsonargparse said 'Does not validate against any of the Union subtypes' around a dump of the
    whole config, with the loader's own error in a traceback (exit 1)."""
    import shutil

    folder = tmp_path / "llm"
    if removed:
        shutil.copytree(lm_folder, folder)
        (folder / removed).unlink()
    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--model.init_args.model.init_args.llm", str(folder)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    expected = "model.init_args.model.init_args.llm: " + message.format(folder=folder)
    assert f"speechsum fit: error: {expected}\n" in err and "Traceback" not in err and "Given value" not in err


def test_a_benchmark_folder_not_made_yet_names_the_file_line_and_what_makes_it(tmp_path, toy_data, capsys, monkeypatch):
    """``speechsum fit --config configs/kd.yaml`` before the benchmark pipeline ran: the setting was named, not the
    file that set it nor what writes runs/benchmark/."""
    config = run_config(tmp_path, toy_data, max_steps=1)
    mistake = tmp_path / "mistake.yaml"
    mistake.write_text("model:\n  init_args:\n    model:\n      init_args:\n        llm: runs/benchmark/text_lm/model\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(mistake)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2] == (
        f"speechsum fit: error: model.init_args.model.init_args.llm ({mistake}:5): runs/benchmark/text_lm/model does "
        "not exist (the benchmark pipeline writes runs/benchmark/: speechsum pipeline --run-dir runs/benchmark --until "
        "STAGE, docs/pipeline.md): give a Hugging Face model folder or hub id (OSError: Repo id must be in the form "
        "'repo_name' or 'namespace/repo_name': 'runs/benchmark/text_lm/model'. Use `repo_type` argument if needed.)")
