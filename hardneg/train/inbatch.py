"""In-batch false negatives: candidates of an anchor's softmax that are its own labeled positives.

MNRL scores each anchor against every document text of its batch: its positive (the target),
the other rows' positives and every row's mined negatives. When queries share positives (on
NFCorpus a train query has ~43), another row's positive is often a labeled positive of the
anchor, pushed away as if it were a negative. :class:`KnownPositives` finds them for a batch
of row numbers, :func:`count_collisions` measures them over the batches the trainer formed
(:func:`trained_batches` replays its batch sampler) and the masked losses of
:func:`in_batch_loss` give them a logit of -inf (``inbatch_positives = "mask"``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import datasets

__all__: list[str] = []  # internal: import from hardneg.train

ROW_ID = "label"  # the column of row numbers the masked losses read: the collator hands "label" to the loss
                  # as a tensor and never tokenizes it; the no-duplicates sampler ignores it


@dataclass(frozen=True)
class KnownPositives:
    """Each training row's document columns as numbers and its anchor's labeled positives.

    Use :meth:`collisions` for the mask of one batch. Texts are matched, not ids: the loss sees
    texts only, and a mined negative may carry no id. A query's positives are the union of
    ``pos`` over every row with its text (per-pair exports spread them over lines).
    """

    columns: np.ndarray  # (rows, 1 + k) doc numbers: positive, negative_1 .. negative_k
    queries: np.ndarray  # (rows,) the number of each row's anchor text
    pairs: np.ndarray  # sorted query * n_docs + doc for every labeled (query, positive)
    n_docs: int

    @classmethod
    def build(cls, train_ds: "datasets.Dataset", rows: Iterable[Mapping[str, Any]]) -> "KnownPositives":
        """From the training rows (anchor, positive, negative_i columns) and the rows they came from
        (every row's ``query`` and ``pos``, held-out ones included: their positives are labels too)."""
        docs: dict[str, int] = {}
        queries: dict[str, int] = {}
        labeled = [(queries.setdefault(r["query"], len(queries)), docs.setdefault(t, len(docs)))
                   for r in rows for t in r["pos"]]
        names = [c for c in train_ds.column_names if c not in ("anchor", ROW_ID)]
        columns = np.array([[docs.setdefault(t, len(docs)) for t in train_ds[c]] for c in names], np.int64).T
        anchors = np.array([queries.setdefault(q, len(queries)) for q in train_ds["anchor"]], np.int64)
        pairs = np.unique(np.array([q * len(docs) + d for q, d in labeled], np.int64))
        return cls(columns, anchors, pairs, len(docs))

    def collisions(self, anchors: Sequence[int], pool: Sequence[int] | None = None) -> np.ndarray:
        """Bool (len(anchors), (1 + k) * len(pool)): candidate j of anchor i is one of its labeled
        positives, its own target excluded. Candidates are ordered as sentence-transformers' MNRL
        concatenates them: every pool row's positive, then every row's negative_1, and so on.
        ``pool`` (default: ``anchors``) is the batch whose texts are scored (the global batch under
        DDP gathering); each anchor's own row must be in it."""
        anchors = np.asarray(anchors, np.int64)
        pool = anchors if pool is None else np.asarray(pool, np.int64)
        keys = self.queries[anchors][:, None] * self.n_docs + self.columns[pool].T.reshape(-1)[None, :]
        found = np.searchsorted(self.pairs, keys).clip(max=max(len(self.pairs) - 1, 0))
        hit = self.pairs[found] == keys if len(self.pairs) else np.zeros(keys.shape, bool)
        own = (pool[None, :] == anchors[:, None]).argmax(axis=1)  # the target: the anchor's row, positive column
        hit[np.arange(len(anchors)), own] = False
        return hit


@dataclass
class Collisions:
    """How often an anchor met its own labeled positives among its in-batch candidates.

    ``rate``: share of anchors with at least one; ``mean``: how many an anchor met on average
    (over all anchors, as issue 18 measured NFCorpus: 70%, 3.3); ``masked``: how many the masked loss excluded (None when kept; it equals
    ``collisions`` when the replay saw the batches the loss saw).
    """

    mode: str
    batches: int = 0
    anchors: int = 0
    colliding_anchors: int = 0
    collisions: int = 0
    masked: int | None = None

    @property
    def rate(self) -> float:
        return self.colliding_anchors / self.anchors if self.anchors else 0.0

    @property
    def mean(self) -> float:
        return self.collisions / self.anchors if self.anchors else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 6), "mean": round(self.mean, 6)}

    def summary(self) -> str:
        what = "kept as negatives" if self.masked is None else f"{self.masked} masked out of the softmax"
        return (f"in-batch positives: {self.colliding_anchors} of {self.anchors} anchors ({self.rate:.1%}) met "
                f"their own labeled positives among the in-batch candidates, {self.mean:.2f} an anchor on "
                f"average ({self.collisions} in {self.batches} batches; {what})")


def count_collisions(known: KnownPositives, batches: Iterable[Sequence[int]], mode: str,
                     masked: int | None = None) -> Collisions:
    """:class:`Collisions` over ``batches`` (lists of row numbers, each a softmax's candidate pool)."""
    out = Collisions(mode, masked=masked)
    for batch in batches:
        hits = known.collisions(batch).sum(axis=1)
        out.batches += 1
        out.anchors += len(batch)
        out.colliding_anchors += int((hits > 0).sum())
        out.collisions += int(hits.sum())
    return out


def trained_batches(trainer, train_ds: "datasets.Dataset", n_batches: int, group: int = 1) -> Iterator[list[int]]:
    """The first ``n_batches`` batches (row numbers) of ``trainer``'s batch sampler, epoch after epoch.

    Replays what the trainer drew: its own :meth:`get_batch_sampler` with the run's seed, and
    ``set_epoch`` as transformers calls it. ``group`` > 1 (DDP with gathering) joins that many
    consecutive batches, the processes' shares of one global batch.
    """
    import torch

    args = trainer.args
    generator = torch.Generator()
    if args.seed is not None:
        generator.manual_seed(args.seed)
    sampler = trainer.get_batch_sampler(train_ds, batch_size=args.train_batch_size,
                                        drop_last=args.dataloader_drop_last,
                                        valid_label_columns=trainer.data_collator.valid_label_columns,
                                        generator=generator, seed=args.seed)
    drawn, epoch, joined = 0, 0, []
    while drawn < n_batches:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for batch in sampler:
            joined += list(batch)
            drawn += 1
            if drawn % group == 0 or drawn == n_batches:
                yield joined
                joined = []
            if drawn == n_batches:
                return
        epoch += 1


# ---- the masked losses ------------------------------------------------------------------------
class _PositiveMask:
    """The similarity function of a masked loss: ST's ``cos_sim``, then -inf where a batch's
    candidate is a labeled positive of the anchor.

    Hand-written because sentence-transformers 6 has no mask hook in MNRL: ``hardness_mode``
    only adds a penalty, and GIST masks by a guide model's scores, not by labels. The loss
    computes its query-to-doc scores with its ``similarity_fct``, for all anchors at once (MNRL)
    or chunk after chunk in order (cached MNRL), so each call takes the next rows of the mask.
    """

    __name__ = "cos_sim"  # how the loss's config (and ST's model card) names it

    def __init__(self, known: KnownPositives) -> None:
        from sentence_transformers.util import cos_sim

        self.known, self.cos_sim = known, cos_sim
        self.mask, self.cursor, self.masked = None, 0, 0

    def start(self, row_ids, gather: bool) -> None:
        """Before a forward pass: the batch's row numbers (and, ``gather``, every process's)."""
        from sentence_transformers.util import all_gather

        anchors = row_ids.tolist()
        pool = all_gather(row_ids).tolist() if gather else anchors
        self.mask = self.known.collisions(anchors, pool)
        self.cursor = 0
        self.masked += int(self.mask.sum())

    def __call__(self, a, b):
        import torch

        sim = self.cos_sim(a, b)
        rows = self.mask[self.cursor:self.cursor + len(a)]
        if rows.shape != tuple(sim.shape):
            raise RuntimeError(f"mask {rows.shape} does not fit the scores {tuple(sim.shape)}: "
                               "inbatch_positives mask supports the query-to-doc direction only")
        self.cursor += len(a)
        return sim.masked_fill(torch.from_numpy(rows).to(sim.device), float("-inf"))


def in_batch_loss(kind: type, model, known: KnownPositives | None, **kwargs):
    """``kind(model, **kwargs)`` (ST's MultipleNegativesRankingLoss or its cached twin), with the
    labeled positives of ``known`` masked unless it is None. Masked, the dataset must carry
    :data:`ROW_ID` and ``loss.similarity_fct.masked`` counts what was masked."""
    if known is None:
        return kind(model, **kwargs)

    class Masked(kind):
        def forward(self, sentence_features, labels):
            self.similarity_fct.start(labels, self.gather_across_devices)
            return super().forward(sentence_features, labels)

    Masked.__name__ = Masked.__qualname__ = f"Masked{kind.__name__}"
    return Masked(model, similarity_fct=_PositiveMask(known), **kwargs)
