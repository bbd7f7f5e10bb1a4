"""hardneg: mine, select and audit hard negatives to fine-tune embedding retrievers.

The flow, each step one name here (their configs beside them)::

    ds = load_dataset(path)                                   # Dataset
    cands = mine_candidates(ds, MineConfig(...))              # CandidateSet (columns: Column)
    mined = select(cands, SelectionPolicy(...))               # negatives per query
    export(mined, ds.doc_text_map(), ds.queries, out, "st-ntuple")
    train(ds, f"{out}/negatives.jsonl", None, model_dir, TrainConfig(...))
    evaluate(ds, "test", runs)                                # EvalResult; runs from build_retrievers
    run(load_recipe(path), out)                               # the whole loop from a recipe (RunConfig)

Everything else lives in its module (``hardneg.audit``, ``hardneg.crossencoder``,
``hardneg.positives.clicks``, ...). ``hardneg.select``, ``hardneg.export``, ``hardneg.train``
and ``hardneg.evaluate`` name the functions; import from the modules of the same name for the
rest (``from hardneg.train import TrainResult``). Importing hardneg loads neither torch nor
transformers: they load when used.

The layout follows the flow: one module (or package) per stage at the top (``data``, ``mine``,
``candidates``, ``select``, ``export``, ``train``, ``evaluate``, ``loop``, ``recipe``, ``audit``);
what a stage uses sits in a subpackage (``encode/``, ``retrieve/``, ``positives/``,
``report/``, ``diagnose/``, ``cli/``).
"""
__version__ = "0.1.0"  # before the imports: hardneg.mine records it

from hardneg.candidates import CandidateSet, Column
from hardneg.data import Dataset, load_dataset
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.evaluate import EvalResult, evaluate
from hardneg.export import export
from hardneg.loop import RunConfig, run
from hardneg.mine import MineConfig, mine_candidates
from hardneg.recipe import load_recipe
from hardneg.retrieve import Ranking, build_retrievers
from hardneg.select import SelectionPolicy, select
from hardneg.train import TrainConfig, train

__all__ = [
    "load_dataset", "Dataset",
    "MineConfig", "EncoderConfig", "mine_candidates", "CandidateSet", "Column",
    "SelectionPolicy", "select",
    "export",
    "TrainConfig", "train",
    "build_retrievers", "Ranking", "evaluate", "EvalResult",
    "load_recipe", "RunConfig", "run",
    "HardnegError",
]
