"""hardneg: mine, select and audit hard negatives to fine-tune embedding retrievers.

The public surface is small on purpose: load a :class:`Dataset`, build retrievers, evaluate.
"""
from hardneg.data import Dataset, leakage, load_dataset
from hardneg.evaluate import EvalResult, evaluate
from hardneg.retrieve import Ranking, build_retrievers

__all__ = ["Dataset", "EvalResult", "Ranking", "build_retrievers", "evaluate", "leakage", "load_dataset"]
__version__ = "0.1.0"
