"""The live progress: the fit stages' `[progress]` lines, their parsing, the status line of a
stage (step/total, elapsed, ETA, metrics), the plain lines of a non-terminal run, and the callback
inside a real Lightning fit."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from speechsum.pipeline.progress import ProgressBoard, StageProgress, clock, parse_progress
from speechsum.pipeline.progress_callback import ProgressLines, progress_line


def test_progress_line_round_trips():
    line = progress_line(3, 8, {"val/loss": 2.0, "train/loss": 4.54123})
    assert line == "[progress] step=3 total=8 train/loss=4.541 val/loss=2"
    assert parse_progress(line) == {"step": "3", "total": "8", "train/loss": "4.541", "val/loss": "2"}
    assert progress_line(5, float("inf"), {}) == "[progress] step=5 total=0"
    assert parse_progress("Epoch 0/0  ━━━━╸  3/8 0:00:04") is None
    assert parse_progress("[progress] step=x total=8") is None


def test_clock():
    assert [clock(s) for s in (7.9, 725, 3723)] == ["0:07", "12:05", "1:02:03"]


def test_status_of_a_fit_stage_has_step_elapsed_eta_and_metrics():
    progress = StageProgress(started=100.0)
    progress.update("Seed set to 0\n", 101.0)
    assert progress.status(104.0) == "0:04 · Seed set to 0"
    progress.update("[progress] step=2 total=12 train/loss=5.1\n", 110.0)  # resumed at step 2
    assert progress.status(110.0) == "step 2/12 · 0:10 · train/loss=5.1"  # no pace yet: no ETA
    progress.update("[progress] step=4 total=12 train/loss=4.541\n", 120.0)  # 5 s a step
    assert progress.eta(120.0) == 40.0
    assert progress.status(125.0) == "step 4/12 · 0:25 · ETA 0:35 · train/loss=4.541"
    assert progress.status(125.0, width=20) == "step 4/12 · 0:25 · …"


def test_plain_lines_come_at_most_every_30_s(capsys):
    board = ProgressBoard(interactive=False)
    board.start("sft", 0.0)
    board.update("sft", "[progress] step=1 total=4 train/loss=3\n", 5.0)
    board.tick(29.0)
    assert capsys.readouterr().out == ""
    board.tick(30.0)
    board.tick(45.0)
    assert capsys.readouterr().out == "      [sft] step 1/4 · 0:30 · train/loss=3\n"
    board.finish("sft")
    board.tick(90.0)
    assert capsys.readouterr().out == ""


def test_the_callback_prints_progress_lines_during_fit(tmp_path, capsys):
    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(6, 2)), batch_size=2)
    trainer = pl.Trainer(max_epochs=2, callbacks=[ProgressLines(every_s=0.0)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(Tiny(), data)
    lines = [parse_progress(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[progress]")]
    assert [(p["step"], p["total"]) for p in lines] == [(str(step), "6") for step in range(7)]
    assert "train/loss" in lines[-1]


def test_a_terminal_gets_one_redrawn_status_line_under_the_event_lines(capsys, monkeypatch):
    import speechsum.pipeline.progress as progress

    monkeypatch.setenv("COLUMNS", "61")
    board = ProgressBoard(interactive=True)
    board.start("sft", 0.0)
    board.start("baselines", 0.0)
    board.update("sft", "[progress] step=1 total=4 train/loss=3\n", 2.0)
    board.update("baselines", "evaluate: 3/10 examples\n", 2.0)
    board.tick(12.0)
    status = "sft step 1/4 · 0:12 · train/lo… | baselines 0:12 · evaluate:"  # 60 columns
    assert capsys.readouterr().out == "\r\033[K" + status
    progress.say("[6/11] sft … done")  # the event line goes above, the status line is redrawn
    assert capsys.readouterr().out == "\r\033[K[6/11] sft … done\n\r\033[K" + status
    board.finish("sft")
    board.finish("baselines")
    assert capsys.readouterr().out == "\r\033[K"
