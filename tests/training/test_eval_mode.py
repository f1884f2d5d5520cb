"""Lightning's "Found N module(s) in eval mode" warning: left out, and said as expected, when the modules in
eval mode are all frozen parts (every fit stage's log carried it for the frozen encoder and LLM base);
still given when a module in eval mode holds a weight that trains."""

from __future__ import annotations

import logging
import warnings

import lightning as L
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.sft import SFTModule
from speechsum.training.eval_mode import FrozenEvalModeNotice, frozen_eval_modules


def fit_one_step(module: SFTModule, toy_data, caplog) -> tuple[list[str], list[str]]:
    """Lightning's warnings about modules in eval mode and the lines logged, of one training step of ``module``."""
    data = SpeechSumDataModule(train_manifest=str(toy_data["train"]), max_batch_seconds=60.0, max_batch_size=2,
                               num_buckets=1)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=data)
    eval_warnings = [str(w.message) for w in caught if "in eval mode" in str(w.message)]
    return eval_warnings, [r.getMessage() for r in caplog.records if "in eval mode" in r.getMessage()]


def test_frozen_parts_in_eval_mode_are_said_once_not_warned_about(tiny_composed, toy_data, caplog):
    module = SFTModule(tiny_composed)
    module.model.encoder.eval()  # as from_pretrained loads the bundled encoder: frozen under the default policy
    count = sum(1 for _ in module.model.encoder.modules())
    assert frozen_eval_modules(module) == [name for name, sub in module.named_modules() if not sub.training]
    eval_warnings, lines = fit_one_step(module, toy_data, caplog)
    assert eval_warnings == []
    assert lines == [f"{count} module(s) are in eval mode at the start of training, all in frozen parts "
                     f"(model.encoder: {count}): none of their weights trains, and they keep the mode they were "
                     "loaded in (dropout off, normalisation statistics fixed). This is expected: Lightning's "
                     "warning about them is left out"]
    assert not any("in eval mode" in str(entry[1]) for entry in warnings.filters)  # removed once training started


def test_a_trainable_module_in_eval_mode_is_still_warned_about(tiny_composed, toy_data, caplog):
    module = SFTModule(tiny_composed)
    module.model.encoder.eval()
    projector = [sub for name, sub in module.model.named_children() if name not in ("encoder", "llm")]
    assert projector and any(p.requires_grad for sub in projector for p in sub.parameters())
    for sub in projector:
        sub.eval()  # trainable weights in eval mode: a real case
    count = sum(1 for sub in module.modules() if not sub.training)
    assert frozen_eval_modules(module) is None
    eval_warnings, lines = fit_one_step(module, toy_data, caplog)
    assert (eval_warnings, lines) == ([f"Found {count} module(s) in eval mode at the start of training. This may "
                                       "lead to unexpected behavior during training. If this is intentional, you "
                                       "can ignore this warning."], [])


def test_the_filter_covers_that_count_only_and_is_removed(tiny_composed):
    module = SFTModule(tiny_composed)
    module.model.encoder.eval()
    count = len(frozen_eval_modules(module))
    before = list(warnings.filters)
    notice = FrozenEvalModeNotice()
    notice.start(module)
    added = warnings.filters[0]
    notice.stop()
    assert warnings.filters == before
    notice.stop()  # twice: nothing left to remove
    for n, shown in ((count, False), (count + 1, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("always")
            warnings.filters.insert(0, added)
            warnings.warn(f"Found {n} module(s) in eval mode at the start of training. This may lead to "
                          "unexpected behavior during training.", PossibleUserWarning, stacklevel=1)
        assert len(caught) == shown


def test_a_trained_encoder_loaded_in_eval_mode_is_no_frozen_part(tiny_composed):
    module = SFTModule(tiny_composed)
    module.model.encoder.requires_grad_(True).eval()
    assert frozen_eval_modules(module) is None
