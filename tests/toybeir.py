"""A toy BEIR folder for end-to-end runs with the tiny model: seconds, not minutes.

24 topics, one document each plus 8 fillers; 16 train queries (topics 0-15) and 8 test
queries (topics 16-23) whose positives are never train positives. Each query names its
topic word, so BM25 finds the positive and a few training steps teach the tiny model.
"""
from __future__ import annotations

import json
from pathlib import Path

WORDS = ("apple river guitar planet copper tiger violin desert glacier pepper rocket castle "
         "forest marble thunder lantern falcon harbor meadow nickel orchid quartz saddle walnut").split()
FILLERS = [f"A general note number {i} on nothing in particular." for i in range(8)]


def write_toy_beir(folder: Path, n_train: int = 16) -> Path:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{train,test}.tsv``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    docs = [{"_id": f"d{i}", "title": w.title(), "text": f"The {w} article: everything about the {w}."}
            for i, w in enumerate(WORDS)]
    docs += [{"_id": f"f{i}", "title": "", "text": t} for i, t in enumerate(FILLERS)]
    queries = [{"_id": f"q{i}", "text": f"where can I learn about the {w}"} for i, w in enumerate(WORDS)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    train = "".join(f"q{i}\td{i}\t1\n" for i in range(n_train))
    test = "".join(f"q{i}\td{i}\t1\n" for i in range(16, 24))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + train)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test)
    return folder
