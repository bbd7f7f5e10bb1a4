"""The ``hardneg`` command line, a thin typer layer (parse, call one library function, print); ``main`` runs it."""
from __future__ import annotations

from hardneg.cli import data, evaluation, mining, recipes, selection, training
from hardneg.cli.common import app
from hardneg.metrics import private_numba_cache

#: every command, in the order ``hardneg --help`` lists them
COMMANDS = {"validate": data.validate, "eval": evaluation.eval_cmd, "mine": mining.mine, "select": selection.select_cmd,
            "train": training.train_cmd, "run": recipes.run_cmd, "demo": recipes.demo, "recipe": recipes.recipe_cmd,
            "audit": selection.audit, "calibrate": selection.calibrate, "rescore": selection.rescore_cmd,
            "train-reranker": selection.train_reranker_cmd, "report": evaluation.report_cmd, "clicks": data.clicks_cmd,
            "skip-above": data.skip_above_cmd, "synth": data.synth_cmd, "diagnose": evaluation.diagnose_cmd,
            "compare": recipes.compare_cmd}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:  # the console entry point: numba's cache in hardneg's own folder first (hardneg.metrics)
    private_numba_cache()
    app()
