"""Published SciFact test NDCG@10 through the user's `hardneg eval` path (full corpus).

BM25 runs in seconds and is part of the default run; the dense one embeds 5,183 abstracts
(about 5 minutes on 2 cores) and is marked slow (`make test-slow`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardneg.cli import app

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
pytestmark = pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/data/scifact not present")


def run_eval(tmp_path: Path, retriever: str) -> dict:
    out = tmp_path / retriever
    result = CliRunner().invoke(app, ["eval", "--data", str(SCIFACT), "--split", "test", "-r", retriever,
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())[retriever]


def test_bm25_reproduces_published_ndcg(tmp_path):
    metrics = run_eval(tmp_path, "bm25")
    assert metrics["ndcg@10"] == pytest.approx(0.679, abs=0.005)  # bm25s 0.680, Pyserini 0.6789


@pytest.mark.slow
def test_bundled_minilm_reproduces_mteb_ndcg(tmp_path):
    metrics = run_eval(tmp_path, "dense")
    assert metrics["ndcg@10"] == pytest.approx(0.645, abs=0.005)  # MTEB: 0.6451
