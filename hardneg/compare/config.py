"""What a comparison is told beyond its recipe (:class:`CompareConfig`), and the training budget every
trained row shares (:class:`Budget`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hardneg.data import Dataset
from hardneg.options import check, option
from hardneg.train import TrainConfig

__all__: list[str] = []  # internal: import from hardneg.compare


@dataclass(frozen=True)
class CompareConfig:
    """How ``hardneg compare`` runs the rows of its table: which strategies, how many training seeds,
    and how the table's extra columns are defined (hub documents, the prior's weight grid, the
    dropped-queries warning; the prior's weights are ``[eval] prior_weights``)."""

    strategies: list[str] = option(factory=list, help="Rows of the table, comma-separated or repeated (base, bm25, "
                                                      "default, st-default, ...: hardneg.compare.STRATEGIES); none: "
                                                      "every one.")
    seeds: int = option(3, "Training seeds per trained row (untrained rows run once).", ge=1)
    hub_share: float = option(0.05, "Hub documents: positive for more than this share of the train queries "
                                    "(the NDCG@10 without them).", gt=0, lt=1)
    drop_warning: float = option(0.2, "Warn when a row's selection drops more than this share of the train "
                                      "queries.", ge=0, le=1)

    def __post_init__(self) -> None:
        names = [self.strategies] if isinstance(self.strategies, str) else self.strategies
        object.__setattr__(self, "strategies", [s.strip() for n in names for s in n.split(",") if s.strip()])
        check(self)


@dataclass(frozen=True)
class Budget:
    """The same training for every trained row: ``epochs`` passes of one row per train query (its
    positive a seeded choice per epoch), ``steps`` optimizer steps of ``batch_size``, ``k`` negatives,
    ``max_seq_length`` tokens, learning rate ``lr``."""

    queries: int
    epochs: int
    steps: int
    batch_size: int
    k: int
    max_seq_length: int
    lr: float

    def to_dict(self) -> dict:
        return asdict(self)


def budget_of(view: Dataset, train: TrainConfig, k: int) -> Budget:
    """The recipe's budget: ``max_steps`` when set, else the steps of ``ceil(epochs)`` passes of one
    row per train query."""
    queries = len(view.positives("train"))
    epochs = max(1, math.ceil(train.epochs))
    steps = train.max_steps or max(1, math.ceil(epochs * queries / train.batch_size))
    return Budget(queries, epochs, steps, train.batch_size, k, train.max_seq_length, train.lr)

