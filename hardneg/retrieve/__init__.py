"""Retrievers behind one interface: ``search(query_ids, query_texts, k) -> Ranking``.

What the rest of hardneg uses of a retriever is declared in :mod:`hardneg.retrieve.base`
(:class:`Retriever`, :class:`Scorer`, :class:`DenseScorer`); each retriever is given its ``name``
at construction. A new retriever is a file in this folder satisfying one of those protocols, plus a
:class:`Kind` and a line in :func:`build_retrievers`; :class:`~hardneg.retrieve.fusion.HybridRetriever`
fuses any of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Sequence

from hardneg.checks import plain_name
from hardneg.encode import Encoder, EncoderConfig
from hardneg.errors import HardnegError
from hardneg.options import as_enum
from hardneg.retrieve.base import DenseScorer, Ranking, Retriever, Scorer
from hardneg.retrieve.bm25 import BM25Retriever
from hardneg.retrieve.dense import DenseRetriever
from hardneg.retrieve.fusion import HybridRetriever


class Kind(str, Enum):
    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class RetrieverSpec:
    """``KIND[:NAME][=MODEL]``, e.g. ``bm25``, ``dense``, ``dense:tuned=out/model``."""

    kind: Kind
    name: str
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> "RetrieverSpec":
        head, _, model = text.partition("=")
        kind, _, name = head.partition(":")
        k = as_enum(Kind, kind.strip().lower(), "retriever")
        name = plain_name(name.strip(), f"retriever {text!r}") if name.strip() else k.value  # it names run files
        return cls(k, name, model.strip() or None)


def build_retrievers(specs: Sequence[str | RetrieverSpec], doc_ids: Sequence[str], doc_texts: Sequence[str],
                     encoder_config=None, cache=None, search=None) -> dict[str, Retriever]:
    """Build named retrievers over one corpus, sharing the BM25 index and encoders between them.

    ``cache`` is an embedding cache (or its folder); None means the default one
    (``$HARDNEG_CACHE`` or ``~/.cache/hardneg``), so a second run never re-encodes.

    ``search`` (a :class:`~hardneg.retrieve.search.Search` kind or a
    :class:`~hardneg.retrieve.ann.SearchConfig`) sets how dense retrievers search; default exact.
    """
    encoder_config = encoder_config or EncoderConfig()
    lexical: list[BM25Retriever] = []  # the one BM25 index
    dense_by_model: dict[str | None, DenseRetriever] = {}  # one encoder (and its vectors) per model

    def bm25(name: str) -> BM25Retriever:
        if not lexical:
            lexical.append(BM25Retriever(doc_ids, doc_texts, name=name))
        return lexical[0] if lexical[0].name == name else lexical[0].with_name(name)

    def dense(model: str | None, name: str) -> DenseRetriever:
        if model not in dense_by_model:
            cfg = replace(encoder_config, model=model) if model else encoder_config
            encoder = Encoder(cfg) if cache is None else Encoder(cfg, cache=cache)
            dense_by_model[model] = DenseRetriever(encoder, doc_ids, doc_texts, name=name, search=search or "exact")
        first = dense_by_model[model]
        return first if first.name == name else first.with_name(name)

    out: dict[str, Retriever] = {}
    for spec in specs:
        spec = spec if isinstance(spec, RetrieverSpec) else RetrieverSpec.parse(spec)
        if spec.name in out:
            raise HardnegError(f"two retrievers are named '{spec.name}': name one with KIND:NAME")
        if spec.kind is Kind.BM25:
            out[spec.name] = bm25(spec.name)
        elif spec.kind is Kind.DENSE:
            out[spec.name] = dense(spec.model, spec.name)
        else:
            out[spec.name] = HybridRetriever([bm25("bm25"), dense(spec.model, "dense")], name=spec.name)
    return out

__all__ = ["DenseScorer", "Kind", "Ranking", "Retriever", "RetrieverSpec", "Scorer", "build_retrievers"]
