"""What the command line prints: quiet by default (the trainer's logs in a file), all of it with --verbose."""
from __future__ import annotations

import json
import logging
import re

import pytest
from typer.testing import CliRunner

from hardneg import output
from hardneg.cli import app
from hardneg.output import warnings_to_stderr as _setup_logging
from toybeir import write_toy_beir

runner = CliRunner()
#: as tests/test_cli_train.py's FAST, with the trainer's progress bar on (the default)
FAST = ["--batch-size", "4", "--lr", "1e-3", "--warmup-ratio", "0", "--max-seq-length", "32", "--max-steps", "2",
        "--logging-steps", "1", "--eval-corpus", "16", "--holdout-fraction", "0.25", "--eval-steps", "1"]
BAR = re.compile(r"\d+%\|")  # a tqdm bar: " 50%|█████     | 1/2 [...]"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_beir(tmp_path_factory.mktemp("toy") / "beir")


@pytest.fixture(autouse=True)
def library_default():
    """Each test starts, and leaves the process, as a library user has it: verbose."""
    output.configure(True)
    yield
    output.configure(True)


def train(toy, model, out, *extra):
    result = runner.invoke(app, [*extra, "train", "--data", str(toy), "--model", str(model), "--out", str(out),
                                 *FAST])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_keeps_the_trainer_logs_off_the_terminal_and_in_its_log_file(toy, tiny_model_dir, tmp_path):
    from transformers.utils import logging as tlogging

    verbosity = tlogging.get_verbosity()
    printed = train(toy, tiny_model_dir, tmp_path / "quiet")
    assert "{'loss'" not in printed and "'eval_dev_cosine" not in printed  # no trainer dict
    assert not BAR.search(printed) and "Loading weights" not in printed and "widget" not in printed
    assert "training: step" not in printed  # the status line never reaches a non-terminal
    assert "loss " in printed and "trained in" in printed and "train.log" in printed  # hardneg's own summary
    log = (tmp_path / "quiet" / "train.log").read_text()
    steps = [json.loads(line.split(": ", 2)[2]) for line in log.splitlines() if " step " in line and ": {" in line]
    assert [s["loss"] for s in steps if "loss" in s] and any("eval_dev_cosine_ndcg@10" in s for s in steps)
    assert "Running training" in log  # the trainer's INFO lines
    # the libraries' logging is as it was
    assert tlogging.get_verbosity() == verbosity and tlogging._get_library_root_logger().handlers
    assert logging.getLogger("sentence_transformers").propagate


def test_verbose_prints_the_trainer_logs_and_bars_and_still_writes_the_log(toy, tiny_model_dir, tmp_path):
    printed = train(toy, tiny_model_dir, tmp_path / "loud", "--verbose")
    assert "{'loss'" in printed and BAR.search(printed)
    assert '"loss"' in (tmp_path / "loud" / "train.log").read_text()
    # the same seed writes the same model, quiet or verbose
    quiet = tmp_path / "quiet"
    train(toy, tiny_model_dir, quiet)
    assert (quiet / "model.safetensors").read_bytes() == (tmp_path / "loud" / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "hardneg_train.json").read_text()) for d in (quiet, tmp_path / "loud"))
    assert a["losses"] == b["losses"] and a["evals"] == b["evals"]


def test_a_repeated_warning_is_shown_once_and_every_time_with_verbose(capsys):
    log = logging.getLogger("hardneg.test_output")
    output.configure(False)
    _setup_logging()  # what each command does first
    for _ in range(3):
        log.warning("the same thing again")
    log.warning("something else")
    assert capsys.readouterr().err.splitlines() == ["warning: the same thing again", "warning: something else"]
    _setup_logging()  # the next command shows it again
    log.warning("the same thing again")
    assert capsys.readouterr().err.count("the same thing again") == 1
    output.configure(True)
    log.warning("the same thing again")
    log.warning("the same thing again")
    assert capsys.readouterr().err.count("the same thing again") == 2
