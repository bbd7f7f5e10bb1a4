"""What a run is told (:class:`RunConfig`, built by :mod:`hardneg.recipe` from a TOML file): the data,
the rounds (:class:`LoopConfig`), the evaluation, and every stage's config."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from hardneg.audit import AuditConfig
from hardneg.chunking import chunked_like
from hardneg.crossencoder import DenoiseConfig
from hardneg.data import Dataset, load_dataset
from hardneg.encode import EncoderConfig
from hardneg.retrieve.prior import PRIOR_WEIGHTS
from hardneg.evaluate import N_RESAMPLES
from hardneg.errors import HardnegError
from hardneg.mine import MineConfig, same_corpus
from hardneg.options import check, option, seed_option
from hardneg.select import SelectionPolicy
from hardneg.train import TrainConfig

__all__: list[str] = []  # internal: import from hardneg.loop


class RoundInit(str, Enum):
    """Where each re-mining round starts training from."""

    BASE = "base"  # the starting model: rounds differ only by their negatives (default)
    PREVIOUS = "previous"  # the last kept model: training continues


class RoundGate(str, Enum):
    """When a round is kept: any dev NDCG@10 gain, or only a significant one."""

    GAIN = "gain"
    SIGNIFICANT = "significant"


@dataclass(frozen=True)
class DataConfig:
    """The dataset and its splits. ``path`` is a BEIR folder or a pairs JSONL (with ``corpus``).

    ``dev_split`` None: the ``dev`` split if there is one, else ``dev_holdout`` of the train
    queries (at most ``dev_max_queries``) are held out once, for every round, and never
    trained on. ``test_split`` is only ever used for the final evaluation.
    """

    path: str = option("", "A BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/*.tsv), or a pairs JSONL "
                           "together with corpus.", cli="--data")
    corpus: str | None = option(None, "Corpus JSONL when the data is a pairs file.")
    skip_unknown: bool = option(False, "Drop qrels rows naming unknown queries/documents (counted in a warning) "
                                       "instead of failing.", cli="--skip-unknown")
    dev_split: str | None = option(None, "Split evaluated while training and judging rounds; none: dev if present, "
                                         "else held-out train queries.")
    dev_holdout: float = option(0.2, "Without a dev split: this fraction of the train queries is held out, never "
                                     "trained on.", ge=0, lt=1)
    dev_max_queries: int = option(500, "... at most this many.", ge=1)
    test_split: str = option("test", "Only ever used for the final evaluation.")

    def __post_init__(self) -> None:
        check(self)

    def load(self) -> Dataset:
        """The dataset (:func:`hardneg.data.load_dataset` of ``path``, ``corpus``, ``skip_unknown``)."""
        return load_dataset(Path(self.path), corpus=Path(self.corpus) if self.corpus else None,
                            skip_unknown=self.skip_unknown)

    def dataset_of(self, cands: Any) -> Dataset:
        """The dataset a candidate set was mined on (``path``, when set, overrides it), chunked like it."""
        source = self.path or cands.meta.get("data")
        if not source:
            raise HardnegError("the candidates record no dataset; pass --data")
        return same_corpus(chunked_like(replace(self, path=str(source)).load(), cands.meta), cands.meta)


@dataclass(frozen=True)
class LoopConfig:
    """Re-mining rounds and how each is judged on dev.

    ``rounds`` counts re-mining rounds after the first fine-tune (0: train once). A round is
    kept when its dev NDCG@10 beats the incumbent's by more than ``min_gain`` and, with
    ``round_gate = significant``, the paired randomization test gives p < ``alpha``.
    ``seed`` draws the held-out dev queries and seeds the dev tests.
    """

    rounds: int = option(1, "Re-mining rounds after the first fine-tune (ANCE-style); 0: train once.", ge=0)
    round_init: RoundInit = option(RoundInit.BASE, "Each round trains from: base (the starting model) | previous "
                                                   "(the last kept model).")
    round_gate: RoundGate = option(RoundGate.GAIN, "Keep a round when dev NDCG@10 improves: gain (any) | "
                                                   "significant (paired p < alpha).")
    alpha: float = option(0.05, "Significance level of round_gate significant.", gt=0, lt=1)
    min_gain: float = option(0.0, "The dev NDCG@10 gain a round must exceed.")
    seed: int = seed_option(0, "Seed of the held-out dev draw and of the dev tests.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class EvalConfig:
    """The final evaluation: documents retrieved per query, seed of the tests and intervals, and the
    RRF k grid the hybrids of `hardneg run` (BM25 fused with the base and with the tuned model) choose from on dev."""

    depth: int = option(100, "Documents retrieved per query (metrics use @10 and @100).", ge=10)
    seed: int = seed_option(0, "Seed of the paired randomization tests and bootstrap intervals.")
    n_resamples: int = option(N_RESAMPLES, "Sign flips per randomization test.", ge=100)
    rrf_k: list[int] = option(help="RRF k values tried on dev for hybrid(bm25+base) and hybrid(bm25+tuned) (the same "
                                   "grid for both; each takes its best on dev NDCG@10).",
                              factory=lambda: [10, 30, 60, 100], ge=1, cli=False)
    prior_weights: list[float] = option(help="bm25+prior: the weights of the train-positive document prior tried on "
                                             "dev (0: BM25 alone, normalised per query).",
                                        factory=lambda: list(PRIOR_WEIGHTS), ge=0, cli=False)

    def __post_init__(self) -> None:
        check(self)
        if not self.rrf_k:
            raise HardnegError("rrf_k needs at least one value")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; :mod:`hardneg.recipe` builds it from a TOML file.

    ``encoder`` embeds for mining and evaluation (its ``model`` is the base model);
    ``policy.rank_by`` / ``policy.score_by`` also name the mining scorers, as on the CLI.
    ``auto_window``: each round audits its candidates and takes the window (and percent)
    that :func:`hardneg.audit.calibrate` picks under ``audit.target`` (recipe ``window = "auto"``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cache_dir: str | None = None
    mine: MineConfig = field(default_factory=MineConfig)
    policy: SelectionPolicy = field(default_factory=SelectionPolicy)
    fmt: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    auto_window: bool = False

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            if isinstance(x, Enum):
                return x.value
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            return x

        names = ("data", "encoder", "mine", "loop", "eval", "audit", "denoise")
        out = {name: plain(asdict(getattr(self, name))) for name in names}
        out |= {"policy": self.policy.to_dict(), "train": self.train.to_dict(), "cache_dir": self.cache_dir,
                "fmt": self.fmt, "auto_window": self.auto_window}
        return out
