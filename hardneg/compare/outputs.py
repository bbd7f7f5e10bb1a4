"""What a comparison writes beside its units: ``table.md``, ``compare.json``, ``trap.json``,
``recommended.toml``, ``plots/quality_vs_compute.png`` and ``report.html`` (every file atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from hardneg.compare.strategies import STRATEGIES
from hardneg.compare.table import format_table
from hardneg.compare.trap import format_trap
from hardneg.files import atomic_path, atomic_write_json, atomic_write_text
from hardneg.loop import RunConfig
from hardneg.loop.hybrid import hybrid_name
from hardneg.recipe import dump_recipe
from hardneg.report.htmlpage import esc, img, markdown, page
from hardneg.report.plots import quality_vs_compute

__all__: list[str] = []  # internal: import from hardneg.compare


def recommended_recipe(config: RunConfig, table: Mapping[str, Any]) -> str | None:
    """The recipe with the best row's policy (None when that row is no hardneg recipe), headed by why."""
    best = STRATEGIES[table["best"]]
    if best.recipe is None:
        return None
    header = (f"# hardneg compare: row '{best.name}' ({best.doc}) had the best dev NDCG@10 "
              f"({table['best_dev_ndcg@10']:.4f}) of the rows a recipe reproduces; chosen on dev, not on test.\n")
    untrained = [r for r in table["rows"] if not STRATEGIES[r["row"]].trains
                 and r["dev ndcg@10"] > table["best_dev_ndcg@10"]]
    for r in untrained:
        header += f"# WARNING: the untrained row '{r['row']}' beat it on dev ({r['dev ndcg@10']:.4f}).\n"
    return header + dump_recipe(best.recipe(config))


def write_outputs(out: Path, config: RunConfig, table: Mapping[str, Any], trap: Mapping[str, Any],
                  skipped: Mapping[str, str]) -> dict[str, Path]:
    """Write the table, the trap, the recommended recipe, the figure and the report; return their paths."""
    text = format_table(table)
    if skipped:
        text += "\n\nSkipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
    files = {"table": out / "table.md", "json": out / "compare.json", "trap": out / "trap.json",
             "report": out / "report.html", "plot": out / "plots" / "quality_vs_compute.png"}
    atomic_write_text(files["table"], text + "\n")
    atomic_write_json(files["json"], {"table": table, "skipped": dict(skipped)})
    atomic_write_json(files["trap"], trap)
    recipe = recommended_recipe(config, table)
    if recipe is not None:
        files["recommended"] = out / "recommended.toml"
        atomic_write_text(files["recommended"], recipe)
    points = {r["row"]: (r["mine s"] + r["train s"], r["ndcg@10"], r["ndcg@10_sd"]) for r in table["rows"]}
    hybrids = {r["row"]: r["hybrid ndcg@10"] for r in table["rows"] if r.get("hybrid ndcg@10") is not None}
    if "base" in hybrids:  # the free hybrid: one more line to beat
        points[hybrid_name("base")] = (0.0, hybrids.pop("base"), 0.0)
    png = quality_vs_compute(points, hybrids=hybrids)
    with atomic_path(files["plot"]) as tmp:
        tmp.write_bytes(png)
    rows = "".join(f"<li><b>{esc(n)}</b>: {esc(s.doc)}</li>" for n, s in STRATEGIES.items())
    sections = [("table", "Table", markdown(text)), ("compute", "Quality against compute", img(png, "quality")),
                ("trap", "The trap (no training)", markdown(format_trap(trap))),
                ("rows", "The strategies", f"<ul>{rows}</ul>")]
    atomic_write_text(files["report"], page("hardneg compare", sections))
    return files
