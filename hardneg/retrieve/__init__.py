"""Retrievers behind one interface: ``search(query_ids, query_texts, k) -> Ranking``.

A new retriever is a file in this folder plus a line in :func:`build_retrievers`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Sequence

from hardneg.errors import HardnegError
from hardneg.retrieve.base import Ranking, Retriever


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
        try:
            k = Kind(kind.strip().lower())
        except ValueError:
            raise HardnegError(f"unknown retriever '{kind}' (choose from {', '.join(k.value for k in Kind)})") from None
        return cls(k, name.strip() or k.value, model.strip() or None)


def build_retrievers(specs: Sequence[str | RetrieverSpec], doc_ids: Sequence[str], doc_texts: Sequence[str],
                     encoder_config=None, cache=None, search=None) -> dict[str, Retriever]:
    """Build named retrievers over one corpus, sharing the BM25 index and encoders between them.

    ``cache`` is an embedding cache (or its folder); None means the default one
    (``$HARDNEG_CACHE`` or ``~/.cache/hardneg``), so a second run never re-encodes.

    ``search`` (a :class:`~hardneg.retrieve.dense.Search` kind or a
    :class:`~hardneg.retrieve.ann.SearchConfig`) sets how dense retrievers search; default exact.
    """
    from hardneg.encode import Encoder, EncoderConfig
    from hardneg.retrieve.bm25 import BM25Retriever
    from hardneg.retrieve.dense import DenseRetriever
    from hardneg.retrieve.fusion import HybridRetriever

    encoder_config = encoder_config or EncoderConfig()
    shared: dict[object, Retriever] = {}

    def bm25() -> Retriever:
        if "bm25" not in shared:
            shared["bm25"] = BM25Retriever(doc_ids, doc_texts)
        return shared["bm25"]

    def dense(model: str | None) -> Retriever:
        key = ("dense", model)
        if key not in shared:
            cfg = replace(encoder_config, model=model) if model else encoder_config
            encoder = Encoder(cfg) if cache is None else Encoder(cfg, cache=cache)
            shared[key] = DenseRetriever(encoder, doc_ids, doc_texts, search=search or "exact")
        return shared[key]

    out: dict[str, Retriever] = {}
    for spec in specs:
        spec = spec if isinstance(spec, RetrieverSpec) else RetrieverSpec.parse(spec)
        if spec.name in out:
            raise HardnegError(f"two retrievers are named '{spec.name}': name one with KIND:NAME")
        if spec.kind is Kind.BM25:
            out[spec.name] = _named(bm25(), spec.name)
        elif spec.kind is Kind.DENSE:
            out[spec.name] = _named(dense(spec.model), spec.name)
        else:
            out[spec.name] = HybridRetriever([bm25(), dense(spec.model)], name=spec.name)
    return out


class _named:
    """The same retriever under another system name (shares its index and vectors)."""

    def __init__(self, inner: Retriever, name: str):
        self.inner, self.name = inner, name

    def search(self, query_ids, query_texts, k) -> Ranking:
        return self.inner.search(query_ids, query_texts, k)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


__all__ = ["Kind", "Ranking", "Retriever", "RetrieverSpec", "build_retrievers"]
