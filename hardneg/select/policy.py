"""The selection policy: :class:`SelectionPolicy` (every filter, the sampler, k, the seed) with
its checks against a candidate set; :class:`OnShort` and :class:`PosRef`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from hardneg.candidates import CandidateSet, Column
from hardneg.errors import HardnegError
from hardneg.options import check, option, seed_option
from hardneg.select import samplers
from hardneg.select.samplers import Sampler

__all__: list[str] = []  # internal: import from hardneg.select


class OnShort(str, Enum):
    DROP = "drop"
    KEEP = "keep"
    PAD_RANDOM = "pad-random"


class PosRef(str, Enum):
    MAX = "max"
    MIN = "min"
    PER_PAIR = "per-pair"
    QUANTILE = "quantile"



def parse_window(text: str) -> tuple[int, int]:
    """``"10:100"`` -> ``(10, 100)``: 1-based original ranks, both ends included."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise HardnegError(f"window must look like MIN:MAX (e.g. 10:100), got {text!r}") from None
    return lo, hi


def _default(name: str) -> Any:
    """A :class:`SelectionPolicy` field's declared default."""
    return next(f.default for f in fields(SelectionPolicy) if f.name == name)


@dataclass(frozen=True)
class SelectionPolicy:
    """How to turn a candidate set into negatives: the one home of the default policy.

    ``SelectionPolicy()`` is what ``hardneg mine`` / ``select`` and the default recipe use:
    the 7 top-scoring candidates per query among original ranks 10..100 whose score is at most
    0.95 x the positive's (NV-Retriever's positive-aware filter; a FlagEmbedding group of
    1 positive + 7 negatives); a query with several positives compares with its highest-scoring
    one (``pos_ref="max"``: against the lowest, NFCorpus queries with ~43 positives keep almost
    no candidate; docs/selection.md, "Queries with many positives"). ``simans_a``/``simans_b``
    and ``temperature`` act on per-query standardised scores (see :mod:`hardneg.select.samplers`).

    Samplers that do not read candidates (the ``random`` and ``none`` baselines) take no
    window or percent: left at their defaults they become None; any other filter set with
    them is refused, since it would have no effect.
    """

    window: tuple[int, int] | None = option((10, 100), "MIN:MAX 1-based ranks on the ORIGINAL ranking (counted "
                                             "with known positives), both ends kept, applied before any other "
                                             "filter; 'off': none. Unlike sentence-transformers' range_min, "
                                             "which skips surviving candidates.")
    max_score: float | None = option(None, "Keep only if score <= X (TopK-Abs).")
    margin: float | None = option(None, "Keep only if score <= positive score - M.", ge=0)
    percent: float | None = option(0.95, "Keep a candidate only if score <= P x positive score (NV-Retriever); "
                                         "'off': none. Refused for scorers whose scores can be negative: use "
                                         "margin.", gt=0, le=1)
    pos_ref: PosRef = option(PosRef.MAX, "Positive score the filters compare with: 'max' (the query's highest; "
                                         "the one positive's where there is one), 'min' (the lowest: collapses on "
                                         "queries with dozens of positives), 'quantile' (the pos_quantile of the "
                                         "query's positive scores) or 'per-pair' (one output row per (query, "
                                         "positive)).")
    pos_quantile: float = option(0.5, "With pos_ref 'quantile': which quantile of the query's positive scores the "
                                      "filters compare with (0: the lowest, as 'min'; 0.5: the median; 1: the "
                                      "highest). One positive: that positive's score.", ge=0, le=1)
    pos_top: int | None = option(None, "Positive consistency: train only on positives the ranking scorer (rank_by) "
                                       "ranks in its top N (Tevatron's and nomic's practice); a query left "
                                       "without one gives no row. None: every positive.", ge=1)
    near_dup_cosine: float | None = option(None, "Drop candidates whose embedding cosine to a positive exceeds "
                                                 "this.", ge=-1, le=1, key="near_dup")
    denoise_above: float | None = option(None, "Drop candidates the cross-encoder (denoise_by) scores above this "
                                               "(a logit; `hardneg rescore` adds the scores).")
    denoise_by: str = option("ce", "The scorer denoise_above reads.")
    promote_above: float | None = option(None, "Promote instead of dropping: candidates the judge (denoise_by) "
                                               "scores above this become extra positives of their query (never "
                                               "negatives; RocketQA, RLHN). None: off.")
    promote_near_dup: float | None = option(None, "Candidates whose embedding cosine to a positive exceeds this "
                                                  "become extra positives of their query. None: off.", ge=-1, le=1)
    rank_by: str | None = option(None, "Scorer whose ranks the window uses; none: the retriever.")
    score_by: str | None = option(None, "Scorer whose scores the filters use; none: the retriever (never an "
                                        "RRF value).")
    sampler: Sampler = option(Sampler.TOP, f"{samplers.help_text()} {' and '.join(samplers.baselines())} take no "
                                           "window or percent.")
    num_negatives: int = option(7, "Negatives per output row (k).", ge=0)
    on_short: OnShort = option(OnShort.KEEP, "When fewer than k survive: drop | keep | pad-random.")
    seed: int = seed_option(42, "Seed of every random choice in selection.")
    simans_a: float = option(1.0, "SimANS sharpness a (on per-query standardised scores).", ge=0)
    simans_b: float = option(0.0, "SimANS offset b.")
    temperature: float = option(1.0, "Softmax sampler temperature.", gt=0)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if isinstance(self.window, str):
            set_("window", parse_window(self.window))
        check(self)
        if self.window is not None:
            lo, hi = (int(x) for x in self.window)
            if lo < 1:
                raise HardnegError(f"window ranks are 1-based: min must be >= 1, got {lo}")
            if lo > hi:
                raise HardnegError(f"window min {lo} is greater than max {hi}")
            set_("window", (lo, hi))
        if self.pos_ref == PosRef.PER_PAIR and self.promotes:
            raise HardnegError("promote_above / promote_near_dup add positives to a query's row: use pos_ref "
                               "max, min or quantile (one row per query), not per-pair")
        if self.pos_ref != PosRef.QUANTILE and self.pos_quantile != _default("pos_quantile"):
            raise HardnegError(f"pos_quantile is read only with pos_ref 'quantile' (pos_ref is "
                               f"'{self.pos_ref.value}'): set pos_ref = 'quantile' or drop pos_quantile")
        if int(self.num_negatives) != self.num_negatives:
            raise HardnegError(f"num_negatives must be an integer >= 0, got {self.num_negatives}")
        if self.sampler.value in samplers.baselines():
            defaults = {f.name: f.default for f in fields(self)}
            for name in ("window", "percent"):  # the default filters are for samplers that read candidates
                if getattr(self, name) == defaults[name]:
                    set_(name, None)
            if self._filters_set():
                raise HardnegError(
                    f"sampler '{self.sampler.value}' does not use the candidates, so "
                    f"{', '.join(self._filters_set())} would have no effect; drop them"
                )

    @classmethod
    def unfiltered(cls, **fields: Any) -> "SelectionPolicy":
        """A policy without the default window and percent: every candidate the exclusions leave
        (sentence-transformers' ``mine_hard_negatives`` without ``range_min`` / ``relative_margin``).
        Use it to study one filter alone, or as the base of a policy of your own."""
        return cls(**{"window": None, "percent": None, **fields})

    @property
    def promotes(self) -> bool:
        """Whether some candidates become extra positives (``promote_above`` / ``promote_near_dup``)."""
        return self.promote_above is not None or self.promote_near_dup is not None

    def _filters_set(self) -> list[str]:
        names = ("window", "max_score", "margin", "percent", "near_dup_cosine", "denoise_above", "promote_above",
                 "promote_near_dup")
        return [n for n in names if getattr(self, n) is not None]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (enums as strings, window as a list)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Enum):
                out[key] = value.value
        if self.window is not None:
            out["window"] = list(self.window)
        return out

    def check(self, cands: CandidateSet) -> tuple[str, str]:
        """Validate against a candidate set's scorers; return ``(rank_by, score_by)``."""
        scorers = cands.scorers
        rank_by = self.rank_by or cands.rank_by
        score_by = self.score_by or cands.score_by
        for what, name in (("rank_by", rank_by), ("score_by", score_by)):
            if name not in scorers:
                raise HardnegError(f"unknown scorer {name!r} for {what}; this candidate set has {scorers}")
        score_only = cands.meta.get("score_only") or []
        if rank_by in score_only:
            raise HardnegError(f"scorer '{rank_by}' has no ranks (it rescored some candidates only); rank by one "
                               f"of {[s for s in scorers if s not in score_only]}")
        if self.near_dup_cosine is not None and cands.table[Column.POS_COSINE].isna().all():
            raise HardnegError("near_dup: these candidates hold no pos_cosine (mined without a dense scorer), "
                               "so it would drop nothing; mine with a dense or hybrid retriever or a dense teacher")
        for name in ("denoise_above", "promote_above"):
            if getattr(self, name) is not None and self.denoise_by not in scorers:
                raise HardnegError(f"{name} needs a '{self.denoise_by}' scorer (rescore first); have {scorers}")
        if self.promote_near_dup is not None and cands.table[Column.POS_COSINE].isna().all():
            raise HardnegError("promote_near_dup: these candidates hold no pos_cosine (mined without a dense "
                               "scorer); mine with a dense or hybrid retriever or a dense teacher")
        if self.percent is not None:
            negative = cands.can_be_negative(score_by)
            if negative is None or negative:
                why = ("its scores can be negative" if negative
                       else "the candidate metadata does not say whether its scores can be negative")
                raise HardnegError(
                    f"percent compares a score with a fraction of the positive's score, which is "
                    f"meaningless for scorer '{score_by}': {why}. Use --margin instead"
                )
        return rank_by, score_by

