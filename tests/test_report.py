"""The HTML report: built from a tiny `hardneg run` (toy BEIR, tiny model; seconds), checked as a
file (self-contained, escaped, every section, the run's own numbers, valid embedded PNGs) and
rendered in headless Chromium (skipped when Debian's `chromium` is not installed).
"""
from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.report.htmlpage import markdown
from hardneg.report.plots import false_negative_curve, filter_drops, score_histogram
from hardneg.report import write_report
from hardneg.report.sections import sample_queries
from test_loop import RECIPE
from toybeir import write_toy_beir

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script>'
EVIL_ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


def _bucket(lo, hi, n, k, ci):
    return {"bucket": f"{lo}-{hi}", "lo": lo, "hi": hi, "n": n, "k": k, "rate": k / n if n else None, "ci": ci}


AUDIT = {
    "labels": {"buckets": [_bucket(1, 5, 40, 12, [0.18, 0.45]), _bucket(6, 10, 50, 5, [0.043, 0.214]),
                           _bucket(11, 20, 100, 4, [0.016, 0.098]), _bucket(21, 50, 0, 0, None)],
               "hidden_fraction": 0.5, "queries": 77},
    "judge": {"buckets": [_bucket(1, 5, 30, 15, [0.33, 0.67]), _bucket(6, 10, 30, 6, [0.095, 0.373]),
                          _bucket(11, 20, 30, 3, [0.035, 0.256])], "threshold": 0.5, "sampled": 90},
    "window": [11, 100],
}
PROGRESSION = """# SciFact progression

| row | NDCG@10 | p vs base |
|---|---|---|
| base | 0.6451 | - |
| <b>tuned</b> | 0.7012 ± 0.0040 | < 1e-4 |

300 test queries; p: paired randomization test
"""


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A finished tiny run whose queries (and one document) carry markup, plus the report the run
    wrote itself; then an audit and a progression table are added and `hardneg report` rewrites it."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_toy_beir(tmp / "toy")
    queries = [json.loads(line) for line in (data / "queries.jsonl").read_text().splitlines()]
    (data / "queries.jsonl").write_text("".join(json.dumps(q | {"text": f"{q['text']} {EVIL}"}) + "\n" for q in queries))
    recipe = tmp / "tiny.toml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_model_dir, cache=tmp / "cache"))
    out = tmp / "out"
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = (out / "report.html").read_text()
    (out / "audit.json").write_text(json.dumps(AUDIT))
    (out / "progression.md").write_text(PROGRESSION)
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output
    return out, first


def _html(out) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b64, validate=True) for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _block(html: str, qid: str) -> str:
    """The per-query block of ``qid``."""
    start = html.index(f'<details class="query"><summary><code>{qid}</code>')
    return html[start:html.index('<details class="query">', start + 1) if html.count('<details class="query">', start + 1)
                else html.index("</section>", start)]


def test_the_run_writes_the_report_and_says_what_is_absent(run_dir):
    out, first = run_dir
    assert "No audit.json in this folder" in first and "No progression.md in this folder" in first
    assert 'id="queries"' in first and "Lift of the tuned systems" in first
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "false_negatives.png", "filters.png", "metrics.png", "scores_r0.png", "scores_r1.png"]


def test_the_report_is_self_contained(run_dir):
    html = _html(run_dir[0])
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html.lower() and "<script" not in html.lower() and "url(" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "img-src data:" in html and "default-src 'none'" in html  # the page may fetch nothing


def test_embedded_images_are_the_pngs_written_beside_it(run_dir):
    out, _ = run_dir
    images = _images(_html(out))
    assert all(img.startswith(PNG) and len(img) > 2000 for img in images)
    assert sorted(images) == sorted(p.read_bytes() for p in (out / "plots").glob("*.png"))


def test_texts_are_html_escaped(run_dir):
    html = _html(run_dir[0])
    assert EVIL not in html and EVIL_ESCAPED in html
    assert "&lt;b&gt;tuned&lt;/b&gt;" in html  # the progression table too


def test_sections_show_the_runs_own_numbers(run_dir):
    out, _ = run_dir
    html = _html(out)
    metrics = json.loads((out / "metrics.json").read_text())
    for anchor in ("metrics", "rounds", "filters", "scores", "queries", "audit", "progression"):
        assert f'<section id="{anchor}">' in html
    tuned = metrics["systems"]["tuned"]["ndcg@10"]
    lo, hi = metrics["ci95"]["tuned"]["ndcg@10"]
    assert f'{tuned:.4f}<span class="ci">[{lo:.4f}, {hi:.4f}]</span>' in html
    assert f"{metrics['lift']['over_base']['ndcg@10']['diff']:+.4f}" in html
    for s in ("bm25", "base", "hybrid(bm25+base)", "tuned", "hybrid(bm25+tuned)"):  # the five systems, in order
        assert f"<td>{s}</td>" in html
    rows = [html.index(f"<td>{s}</td>") for s in ("bm25", "base", "hybrid(bm25+base)", "tuned", "hybrid(bm25+tuned)")]
    assert rows == sorted(rows)
    for c in metrics["comparisons"]:  # every tested pair, with its Holm-adjusted p
        assert f"<td>{c['system']} − {c['vs']}</td>" in html and f"<td>p vs {c['vs']} (Holm)</td>" in html
    section = html[html.index('<section id="metrics">'):]
    assert section.index(metrics["deploy"]["sentence"]) < section.index("<table")  # what to deploy comes first
    assert "<td>known_positive</td>" in html and "<td>r0</td><td>base</td><td>dense</td><td>base</td>" in html
    # the audit: buckets, both kinds, the window; the progression table as a table
    assert "Shaded: the window 11:100 (chosen by the audit)" in html and "<td>11-20</td>" in html
    assert "judge: relevant above 0.5, 90 unlabeled" in html
    assert "<td>0.7012 ± 0.0040</td>" in html and "<h3>SciFact progression</h3>" in html


def test_per_query_view_matches_the_exported_negatives(run_dir):
    out, _ = run_dir
    html = _html(out)
    tuned = json.loads((out / "metrics.json").read_text())["tuned_from"]
    rows = [json.loads(line) for line in (out / "rounds" / tuned / "negatives.jsonl").read_text().splitlines()]
    assert html.count('<details class="query">') == len(rows) == 12  # all 12 train queries (fewer than 20)
    for row in rows:
        block = _block(html, row["query_id"])
        chosen = block[block.index("<h3>Chosen negatives</h3>"):block.index("candidates not chosen")]
        found = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>([^<]+)</td>", chosen)
        assert [(int(r), d) for r, d in found] == list(zip(row["neg_ranks"], row["neg_ids"]))
        assert f"<td>{row['pos_ids'][0]}</td>" in block[:block.index("<h3>Chosen negatives</h3>")]
        assert "survived, not sampled" in block  # the filter (here: the sampler) that passed over the others


def test_per_query_view_names_the_filter_that_dropped_each_candidate(run_dir, tmp_path):
    """With a rank window 3:8 in the round's policy, candidates ranked outside it are dropped by the
    window, those inside but not among the top 2 by the sampler, and the chosen ones lie inside."""
    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("model", "plots"))
    for stats_file in copy.glob("rounds/r*/stats.json"):
        stats = json.loads(stats_file.read_text())
        stats["policy"]["window"] = [3, 8]
        stats_file.write_text(json.dumps(stats))
    html = _html(write_report(copy).parent)
    lists = re.findall(r"candidates not chosen:.*?</details>", html)
    row = r'<tr><td class="num">(\d+)</td><td>(\w+)</td><td class="num">[^<]*</td><td>([^<]+)</td>'
    others = [hit for part in lists for hit in re.findall(row, part)]
    assert others and {reason for _, _, reason in others} == {"rank window", "survived, not sampled"}
    for rank, _, reason in others:
        assert reason == ("survived, not sampled" if 3 <= int(rank) <= 8 else "rank window")
    for qid in ("q0", "q5"):
        if f"<code>{qid}</code>" in html:
            block = _block(html, qid)
            chosen = block[block.index("<h3>Chosen negatives</h3>"):block.index("candidates not chosen")]
            assert all(3 <= int(r) <= 8 for r in re.findall(r'<tr><td class="num">(\d+)</td>', chosen))


def test_the_report_is_deterministic(run_dir):
    out, _ = run_dir
    before = (out / "report.html").read_bytes()
    plots = {p.name: p.read_bytes() for p in (out / "plots").glob("*.png")}
    write_report(out)
    assert (out / "report.html").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (out / "plots").glob("*.png")} == plots


def test_the_report_reads_the_stored_decisions_and_reselects_only_without_them(run_dir, tmp_path, monkeypatch):
    """Each round's decisions.parquet (written when it selected) is what the report shows: no
    select re-run. A folder without it (written before it existed) re-runs select: the same page."""
    run_folder = importlib.import_module("hardneg.report.run_folder")  # where the report would call select

    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("model", "plots"))
    assert sorted(p.parent.name for p in copy.glob("rounds/r*/decisions.parquet")) == ["r0", "r1"]
    with monkeypatch.context() as m:
        m.setattr(run_folder, "select", lambda *a, **k: pytest.fail("the report re-ran select"))
        stored = write_report(copy).read_bytes()
    for file in copy.glob("rounds/r*/decisions.parquet"):
        file.unlink()
    assert write_report(copy).read_bytes() == stored


def test_options_missing_inputs_and_an_unreadable_dataset(run_dir, tmp_path):
    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("model", "audit.json", "progression.md", "plots"))
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["config"]["data"]["path"] = str(tmp_path / "gone")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "a.json").write_text(json.dumps(AUDIT | {"window": None}))
    (tmp_path / "table.md").write_text(PROGRESSION)
    result = runner.invoke(app, ["report", str(copy), "--audit", str(tmp_path / "a.json"),
                                 "--progression", str(tmp_path / "table.md"), "--sample", "3"])
    assert result.exit_code == 0, result.output
    html = _html(copy)
    assert "could not be read" in html and "ids only" in html and EVIL_ESCAPED not in html
    assert html.count('<details class="query">') == 3
    assert "Shaded: the window" not in html  # the policy had no window, the audit names none
    assert "<td>0.7012 ± 0.0040</td>" in html
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.json" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["report", str(copy), "--audit", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "no such audit file" in result.output


# ---- pure pieces ------------------------------------------------------------------------------
def test_markdown_tables_headings_and_escaping():
    html = markdown("# Title\n\n| a | b \\| c |\n|:---|---:|\n| 1 | <i>2</i> |\n| 3 | 4 |\nafter & done\n")
    assert html.startswith("<h3>Title</h3>")
    assert "<th>a</th><th>b | c</th>" in html and "<td>&lt;i&gt;2&lt;/i&gt;</td>" in html and "<td>4</td>" in html
    assert html.endswith("<p>after &amp; done</p>")


def test_query_sample_is_seeded_and_keeps_the_order():
    ids = [f"q{i}" for i in range(100)]
    a = sample_queries(ids, 20, seed=0)
    assert a == sample_queries(ids, 20, seed=0) != sample_queries(ids, 20, seed=1)
    assert len(set(a)) == 20 and a == sorted(a, key=ids.index)
    assert sample_queries(ids[:5], 20, seed=0) == ids[:5]


def test_plots_are_pngs_even_for_empty_inputs():
    for png in (score_histogram([], [], "empty"), score_histogram([0.9, 0.8], [0.7], "x", others=[np.nan, 0.1]),
                filter_drops({}), filter_drops({"r0": {"window": 3, "percent": 0}}),
                false_negative_curve({"labels": [], "judge": None}, None),
                false_negative_curve({"labels": AUDIT["labels"]["buckets"]}, [11, 100])):
        assert png.startswith(PNG)
    assert false_negative_curve({"labels": AUDIT["labels"]["buckets"]}, [11, 100]) == \
        false_negative_curve({"labels": AUDIT["labels"]["buckets"]}, [11, 100])


# ---- rendering --------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no `chromium` on PATH (Debian: apt-get install chromium); .ci/run installs it when it can")
def test_the_report_renders_in_headless_chromium(run_dir, tmp_path):
    from matplotlib.image import imread

    out, _ = run_dir
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert shot.stat().st_size > 10_000
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1])[::7], axis=0)
    assert len(colours) > 50  # text, tables and a chart: not a blank or single-colour page
