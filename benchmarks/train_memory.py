"""Peak memory and seconds per step of fine-tuning, per loss x batch x k x max length x precision.

    python benchmarks/train_memory.py                 # runs what is missing, prints the table
    python benchmarks/train_memory.py --table-only    # the table from the stored results

Full SciFact train negatives (``hardneg mine`` defaults: dense MiniLM, window 10:100, percent
0.95, top-7; mined once into ``--work``). Each configuration trains the bundled MiniLM for
``--steps`` optimizer steps in a process of its own, every step on the same batch: the
``batch`` training rows with the longest texts, the batch the memory plan budgets for. Per configuration it records hardneg's estimate of the peak
(:mod:`hardneg.memory`, made before the first step), the measured peak RSS of the process
(``ru_maxrss``), and the median wall time of the steps after the first (which is 2-4x slower:
it also allocates and creates the kernels). A
configuration the plan refuses is recorded with its one-line message. The encoder's throughput
per precision is measured in the same run (``--encode``: 512 SciFact abstracts at 256 tokens).

Results: ``benchmarks/results/train_memory/<cpu>/<config>.json``, one file per configuration,
so an interrupted run resumes, and a table per CPU class grows across sessions.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_memory"
DATA = ROOT.parent / "shared" / "data" / "scifact"
#: (loss, batch, k, max length, precision): what a user would try; the defaults are auto/32/7/256
CONFIGS = [
    ("mnrl", 32, 7, 256, "no"),
    ("auto", 32, 7, 256, "no"),
    ("auto", 32, 7, 256, "bf16"),
    ("cached-mnrl", 64, 7, 256, "bf16"),
    ("mnrl", 32, 3, 256, "no"),
    ("cached-mnrl", 32, 3, 256, "no"),
    ("mnrl", 32, 3, 256, "bf16"),
    ("cached-mnrl", 32, 3, 256, "bf16"),
    ("mnrl", 32, 3, 128, "no"),
    ("mnrl", 32, 3, 128, "bf16"),
]
ENCODE_MODES = ("fp32", "autocast-bf16", "bf16-weights")
DESIGNS = ("varied", "same")


def cpu_slug() -> str:
    from hardneg.precision import machine_info

    info = machine_info()
    name = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"{name}-{'amx' if info['amx_bf16'] else 'noamx'}"


def name_of(cfg) -> str:
    loss, batch, k, length, prec = cfg
    return f"{loss}-b{batch}-k{k}-L{length}-{prec}"


def negatives(work: Path, data: Path) -> Path:
    """SciFact's default-policy negatives, mined once (the embedding cache makes a rerun cheap)."""
    path = work / "mine" / "negatives.jsonl"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "hardneg.cli", "mine", "--data", str(data), "--out", str(work / "mine")],
                       check=True)
    return path


def training_rows(path: Path, k: int, batch: int, steps: int, design: str) -> list[dict]:
    """``same``: the ``batch`` rows with at least ``k`` negatives whose positive + first k negatives
    are longest, repeated ``steps`` times (the no-duplicates sampler then makes every step that same
    batch: clean step times); ``varied``: the ``batch x steps`` longest rows, shuffled into batches
    by the trainer as in a real run (texts of many lengths: the allocator's real peak)."""
    from hardneg.train import read_negatives

    rows, _ = read_negatives(path)
    rows = [r for r in rows if len(r["neg"]) >= k]
    rows.sort(key=lambda r: (-sum(map(len, r["pos"][:1] + r["neg"][:k])), r["query_id"]))
    rows = [{**r, "pos": r["pos"][:1], "pos_ids": r.get("pos_ids", [])[:1]} for r in rows]
    if design == "varied":
        return rows[:batch * steps]
    return [{**r, "query_id": f"{r['query_id']}#{i}"} for i in range(steps) for r in rows[:batch]]


def run_one(cfg, work: Path, data: Path, steps: int, design: str) -> dict:
    """Train one configuration in this process and return its figures."""
    from hardneg.data import load_dataset
    from hardneg.memory import GB, TooLarge, rss_bytes
    from hardneg.precision import machine_info
    from hardneg.train import TrainConfig, train

    loss, batch, k, length, prec = cfg
    ds = load_dataset(data)
    rows = training_rows(negatives(work, data), k, batch, steps, design)
    config = TrainConfig(loss=loss, batch_size=batch, num_negatives=k, max_seq_length=length, mixed_precision=prec,
                         max_steps=steps, holdout_fraction=0.0, show_progress=False, warmup_ratio=0.0)
    out = {"config": name_of(cfg), "design": design, "loss": loss, "batch": batch, "k": k, "max_length": length, "precision": prec,
           "steps": steps, "machine": machine_info(), "rss_before_gb": round(rss_bytes() / GB, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = train(ds, rows, None, Path(tmp) / "m", config)
        except TooLarge as e:
            return {**out, "refused": str(e), "memory": e.plan.to_dict()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = result.memory["estimate_gb"]
    return {**out, "memory": result.memory, "estimate_gb": est, "peak_gb": round(peak / GB, 3),
            "estimate_over_peak": round(est * GB / peak, 3), "step_seconds": result.step_seconds,
            "step_s": statistics.median(result.step_seconds[1:] or result.step_seconds)}


def encode_speed(n: int = 512) -> dict:
    """Texts per second of each encoder precision on the same abstracts, and the cosine to fp32."""
    import numpy as np

    from hardneg.data import load_dataset
    from hardneg.encode import Encoder, EncoderConfig
    from hardneg.precision import machine_info

    ds = load_dataset(DATA)
    texts = sorted(ds.doc_texts(), key=len, reverse=True)[:n]  # long abstracts: most reach 256 tokens
    out, ref = {"machine": machine_info(), "texts": n, "max_length": 256}, None
    for mode in ENCODE_MODES:
        enc = Encoder(EncoderConfig(precision=mode, passage_max_length=256), cache=None)
        enc.encode_passages(texts[:64])  # warm-up
        start = time.perf_counter()
        vecs = enc.encode_passages(texts)
        seconds = time.perf_counter() - start
        ref = vecs if ref is None else ref
        out[mode] = {"texts_per_s": round(n / seconds, 2), "min_cosine_to_fp32": float((vecs * ref).sum(1).min())}
    return out


def estimate_gb(memory: dict) -> float:
    """The estimate of today's :func:`hardneg.memory.peak_bytes` from a run's stored plan inputs, so
    the table checks the estimator as it is now (the run stored its own in ``estimate_gb``)."""
    from hardneg.memory import GB, peak_bytes

    return peak_bytes(tuple(memory["shape"]), int(memory["baseline_gb"] * GB), memory["longest"],
                      memory["batch_size"], memory["mini_batch_size"], memory["precision"]) / GB


def table(folder: Path) -> str:
    runs = {d: {p.stem: json.loads(p.read_text()) for p in sorted((folder / d).glob("*.json"))} for d in DESIGNS}
    cpu = next((r["machine"] for d in DESIGNS for r in runs[d].values()), {})
    lines = [f"CPU: {cpu.get('cpu')} (AMX-BF16: {cpu.get('amx_bf16')}); SciFact, bundled MiniLM; peak RSS of "
             "training on the longest rows ('varied': shuffled into batches as in a real run; 'same': the "
             "longest batch every step), s / step: median after the first step of 'same'", "",
             "| loss (run as) | batch | k | max len | precision | estimate GB | peak GB varied | estimate / peak "
             "| peak GB same | s / step |", "|---|---|---|---|---|---|---|---|---|---|"]
    for cfg in CONFIGS:
        name = name_of(cfg)
        got = [runs[d].get(name) for d in DESIGNS]
        r = next((x for x in got if x), None)
        if r is None:
            continue
        m, est = r["memory"], estimate_gb(r["memory"])
        ran = m["loss"] + (f", chunk {m['mini_batch_size']}" if m["mini_batch_size"] else "")
        head = (f"| {r['loss']} ({ran}) | {r['batch']} | {r['k']} | {r['max_length']} | {r['precision']} | "
                f"{est:.2f} |")
        if "refused" in r:
            lines.append(f"{head} refused before the first step | - | - | - |")
            continue
        varied, same = got
        cell = lambda x, key, fmt: format(x[key], fmt) if x and key in x else "-"  # noqa: E731
        ratio = f"{est / varied['peak_gb']:.2f}" if varied and "peak_gb" in varied else "-"
        lines.append(f"{head} {cell(varied, 'peak_gb', '.2f')} | {ratio} | {cell(same, 'peak_gb', '.2f')} | "
                     f"{cell(same, 'step_s', '.1f')} |")
    enc = folder / "encode.json"
    if enc.is_file():
        e = json.loads(enc.read_text())
        lines += ["", f"Encoding {e['texts']} abstracts at {e['max_length']} tokens:", "",
                  "| precision | texts / s | vs fp32 | min cosine to fp32 |", "|---|---|---|---|"]
        for mode in ENCODE_MODES:
            lines.append(f"| {mode} | {e[mode]['texts_per_s']:.1f} | "
                         f"{e[mode]['texts_per_s'] / e['fp32']['texts_per_s']:.2f}x | {e[mode]['min_cosine_to_fp32']:.5f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hardneg-bench")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all missing)")
    ap.add_argument("--design", choices=DESIGNS, nargs="*", default=list(DESIGNS),
                    help="varied: the longest rows shuffled into batches (the real peak); same: the longest "
                         "batch at every step (clean step times)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print its JSON
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        cfg = next(c for c in CONFIGS if name_of(c) == args.one)
        print("RESULT " + json.dumps(run_one(cfg, args.work, args.data, args.steps, args.design[0])))
        return
    folder = RESULTS / cpu_slug()
    if not args.table_only:
        folder.mkdir(parents=True, exist_ok=True)
        negatives(args.work, args.data)
        for design, cfg in ((d, c) for d in args.design for c in CONFIGS):
            name, path = name_of(cfg), folder / design / f"{name_of(cfg)}.json"
            if path.is_file() or (args.only and name not in args.only):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"[train_memory] {design} {name} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--work", str(args.work),
                                   "--data", str(args.data), "--steps", str(args.steps), "--design", design],
                                  capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed (exit {proc.returncode})")
            _write(path, json.loads(line[len("RESULT "):]))
        if not (folder / "encode.json").is_file() and not args.only:
            _write(folder / "encode.json", encode_speed())
    print(table(folder))


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
