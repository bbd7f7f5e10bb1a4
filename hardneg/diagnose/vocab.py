"""Vocabulary fit: how finely a model's tokenizer splits a corpus, against general English.

Use it before tuning to see whether the model reads the domain in whole words or in crumbs
("immunoglobulin" is six WordPiece pieces in all-MiniLM-L6-v2, ``im ##mun ##og ##lo ##bu
##lin``). A corpus split much finer than everyday English means the model meets its domain's
words as rare fragments; tuning teaches it to use those fragments, so it tends to pay more.

The statistic is *subword pieces per word*: words are runs of letters (``[^\\W\\d_]+``, so
digits, punctuation and hyphens separate words), lowercased on both sides so that casing is
not counted as domain misfit. It is averaged over word *occurrences*: over the corpus's own
word counts, and over the reference's frequencies. The reference
(``hardneg/resources/english_words.tsv``) holds the 5,000 most frequent alphabetic English
words with their frequency per million words, derived offline from wordfreq 3.1.1 (Robyn
Speer; its data are CC BY-SA 4.0, so that file is too; its header names the sources). It was
chosen over the tokenizer's own vocabulary, which would be circular (every whole-word entry
is one piece by construction), and over a stopword list, which holds only function words.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["VocabFit", "vocab_fit"]

WORD = re.compile(r"[^\W\d_]+")
# Word-start markers of SentencePiece ("▁") and byte-level BPE ("Ġ"): a marker standing alone
# as a piece is not a piece of the word.
MARKERS = ("\u2581", "\u0120")
BATCH = 4096  # words per tokenizer call
REFERENCE = Path(__file__).parents[1] / "resources" / "english_words.tsv"


def reference_words() -> dict[str, float]:
    """The shipped general-English reference: ``{word: frequency per million words}``."""
    text = REFERENCE.read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {word: float(freq) for word, freq in rows[1:]}  # rows[0] is the header


def count_words(texts: Iterable[str]) -> Counter[str]:
    """Occurrences of each lowercased word (a run of letters) over ``texts``."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(WORD.findall(text.lower()))
    return counts


def count_pieces(tokenizer: Any, words: Sequence[str]) -> np.ndarray:
    """Subword pieces per word under a Hugging Face tokenizer, no special tokens; (len(words),) int64.

    Each word is tokenized alone, as it would be at the start of a text. A SentencePiece or
    byte-level word-start marker that the tokenizer emits as a piece of its own is not counted.
    """
    vocab = tokenizer.get_vocab()
    markers = {vocab[m] for m in MARKERS if m in vocab}
    out = np.zeros(len(words), dtype=np.int64)
    for s in range(0, len(words), BATCH):
        ids = tokenizer(list(words[s : s + BATCH]), add_special_tokens=False)["input_ids"]
        out[s : s + BATCH] = [sum(1 for i in row if i not in markers) for row in ids]
    return out


@dataclass(frozen=True)
class Fragmentation:
    """Pieces per word over word occurrences, and the share of occurrences split at all / in 3+."""

    pieces_per_word: float
    share_split: float  # occurrences cut into 2 or more pieces
    share_3plus: float  # occurrences cut into 3 or more pieces
    words: int  # distinct words
    occurrences: float  # total weight (corpus: a count; reference: frequency per million)


def fragmentation(weights: Mapping[str, float], pieces: Mapping[str, int]) -> Fragmentation:
    """Occurrence-weighted fragmentation of the words in ``weights`` (a count or a frequency each).

    ``pieces`` maps every word to its number of pieces (:func:`count_pieces`). Words of zero
    pieces (the tokenizer dropped them) are left out. Known answer: ``{"the": 2, "immuno": 1}``
    with pieces ``{"the": 1, "immuno": 3}`` gives (2*1 + 1*3) / 3 = 5/3 pieces per word.
    """
    w = np.array([weights[x] for x in weights if pieces[x] > 0], dtype=np.float64)
    p = np.array([pieces[x] for x in weights if pieces[x] > 0], dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        return Fragmentation(float("nan"), float("nan"), float("nan"), 0, 0.0)
    return Fragmentation(float((w * p).sum() / total), float(w[p >= 2].sum() / total),
                         float(w[p >= 3].sum() / total), int(w.size), total)


def fragmented_terms(counts: Mapping[str, int], pieces: Mapping[str, int], reference: Mapping[str, float],
                     top: int = 20, frequent: int = 500, min_count: int = 3, min_pieces: int = 3) -> list[str]:
    """The most fragmented of the corpus's frequent domain words (not in the reference).

    Among the ``frequent`` most common words absent from the reference that occur at least
    ``min_count`` times and split into at least ``min_pieces`` pieces, the ``top`` with the most
    pieces (then the most occurrences, then alphabetical).
    """
    domain = sorted((w for w, c in counts.items() if w not in reference and c >= min_count),
                    key=lambda w: (-counts[w], w))[:frequent]
    split = [w for w in domain if pieces[w] >= min_pieces]
    return sorted(split, key=lambda w: (-pieces[w], -counts[w], w))[:top]


@dataclass(frozen=True)
class VocabFit:
    """The corpus's fragmentation against the reference, and its worst frequent domain words."""

    corpus: Fragmentation
    reference: Fragmentation
    ratio: float  # corpus pieces per word / reference pieces per word
    out_of_reference: float  # share of corpus word occurrences not among the reference words
    terms: list[dict[str, Any]]  # {"word", "count", "pieces", "split"}
    docs_read: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vocab_fit(tokenizer: Any, texts: Sequence[str], reference: Mapping[str, float] | None = None,
              top: int = 20) -> VocabFit:
    """Fragmentation of ``texts`` vs the reference under ``tokenizer``, and the worst domain terms."""
    reference = reference_words() if reference is None else reference
    counts = count_words(texts)
    words = sorted(set(counts) | set(reference))
    pieces = dict(zip(words, count_pieces(tokenizer, words).tolist()))
    corpus = fragmentation(counts, pieces)
    ref = fragmentation(reference, pieces)
    total = sum(counts.values())
    outside = sum(c for w, c in counts.items() if w not in reference) / total if total else float("nan")
    terms = [{"word": w, "count": int(counts[w]), "pieces": int(pieces[w]),
              "split": " ".join(tokenizer.tokenize(w))}
             for w in fragmented_terms(counts, pieces, reference, top=top)]
    return VocabFit(corpus, ref, corpus.pieces_per_word / ref.pieces_per_word, float(outside), terms, len(texts))
