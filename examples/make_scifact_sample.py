"""Cut the demo sample in examples/scifact-sample from the full BEIR SciFact in ../shared/data.

Keeps 150 train and 100 test queries (seeded), all their positives, the top BM25 hits of each
query (so the sample keeps hard distractors), then random abstracts up to 1,000 documents.
Run from the repo root: ``python examples/make_scifact_sample.py``.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

from hardneg.data import load_dataset
from hardneg.retrieve.bm25 import BM25Retriever

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/scifact")
DST = Path(__file__).parent / "scifact-sample"
N_DOCS, N_TRAIN, N_TEST, SEED = 1000, 150, 100, 13


def main() -> None:
    ds = load_dataset(SRC)
    rng = np.random.default_rng(SEED)
    picked = {s: sorted(rng.choice(sorted(ds.positives(s)), n, replace=False).tolist(), key=int)
              for s, n in (("train", N_TRAIN), ("test", N_TEST))}
    keep: dict[str, None] = {}
    for s, qids in picked.items():
        for q in qids:
            keep.update(dict.fromkeys(ds.positives(s)[q]))
    bm25 = BM25Retriever(ds.doc_ids, ds.doc_texts())
    qids = [q for s in picked.values() for q in s]
    top = bm25.search(qids, [ds.queries[q] for q in qids], 3)
    for i in range(len(qids)):
        keep.update(dict.fromkeys(ds.doc_ids[j] for j in top.indices[i]))
    rest = [d for d in ds.doc_ids if d not in keep]
    keep.update(dict.fromkeys(rng.permutation(rest)[: N_DOCS - len(keep)].tolist()))
    write(ds, picked, set(keep))


def write(ds, picked, keep) -> None:
    (DST / "qrels").mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(DST / "corpus.jsonl.gz", "wb", mtime=0) as fh:
        for d, t, x in zip(ds.doc_ids, ds.titles, ds.texts):
            if d in keep:
                fh.write((json.dumps({"_id": d, "title": t, "text": x, "metadata": {}}) + "\n").encode())
    qids = {q for s in picked.values() for q in s}
    with gzip.GzipFile(DST / "queries.jsonl.gz", "wb", mtime=0) as fh:
        for q, text in ds.queries.items():
            if q in qids:
                fh.write((json.dumps({"_id": q, "text": text, "metadata": {}}) + "\n").encode())
    for s, qs in picked.items():
        rows = [f"{q}\t{d}\t1" for q in qs for d in ds.positives(s)[q]]
        (DST / "qrels" / f"{s}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    print(f"wrote {len(keep)} documents, {len(qids)} queries to {DST}")


if __name__ == "__main__":
    main()
