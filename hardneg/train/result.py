"""What a run produced (:class:`TrainResult`) and the model card written beside the model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hardneg.train.config import BEST_METRIC, CARD_METRICS, CARD_SKIP, EVAL_NAME, RESULT_FILE, TRAIN_LOG
from hardneg.train.dataset import BuildReport
from hardneg.train.inbatch import Collisions

__all__: list[str] = []  # internal: import from hardneg.train


@dataclass
class TrainResult:
    """What a run produced: the model folder, the loss curve, the evaluations and the data report.

    ``losses`` is ``[(step, loss), ...]``; ``evals`` is one dict per evaluation (``step``
    plus metric names such as ``ndcg@10``), the step-0 one being the starting model;
    ``best`` is the evaluation whose checkpoint was kept (None without evaluation).
    ``inbatch``: how often an anchor met its own labeled positives among its in-batch
    candidates, over the batches trained on (``rate``, ``mean``; ``masked`` under
    ``inbatch_positives = "mask"``); None for marginmse.
    """

    model_dir: str
    config: dict[str, Any]
    data: BuildReport
    eval_set: str | None
    losses: list[tuple[int, float]]
    evals: list[dict[str, float]]
    best: dict[str, float] | None
    train_seconds: float
    negatives_meta: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1  # training processes (DDP); the global batch is batch_size x world_size
    memory: dict[str, Any] = field(default_factory=dict)  # hardneg.memory.plan: loss run, chunk, estimate
    precision: str = "no"  # the trainer's resolved mixed precision: no | bf16 | fp16
    machine: dict[str, Any] = field(default_factory=dict)  # hardneg.precision.machine_info()
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step
    inbatch: Collisions | None = None  # in-batch false negatives (hardneg.train.inbatch)

    @property
    def loss(self) -> str:
        """The loss that ran (``auto`` resolved)."""
        return self.memory.get("loss") or self.config["loss"]

    @property
    def before(self) -> dict[str, float] | None:
        """The evaluation of the starting model (step 0), if any."""
        return next((e for e in self.evals if e["step"] == 0), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["losses"] = [list(x) for x in self.losses]
        out["inbatch"] = self.inbatch.to_dict() if self.inbatch else None
        return out

    def summary(self, out: str | Path) -> list[str]:
        """What `hardneg train` prints: data, memory and precision, dev NDCG@10, loss, the files."""
        lines = [self.data.summary(), f"{self.memory['summary']}; precision {self.precision} on "
                 f"{self.machine['cpu']} (AMX-BF16: {'yes' if self.machine['amx_bf16'] else 'no'})"]
        if self.inbatch:
            lines.append(self.inbatch.summary())
        if self.evals:
            start, best = self.before, self.best or self.evals[-1]
            lines.append(f"dev NDCG@10 ({self.eval_set}): start {start['ndcg@10']:.4f} -> kept step "
                         f"{best['step']} {best['ndcg@10']:.4f}")
        if self.losses:
            (s0, l0), (s1, l1) = self.losses[0], self.losses[-1]
            lines.append(f"loss {l0:.4f} (step {s0}) -> {l1:.4f} (step {s1})")
        return lines + [f"trained in {self.train_seconds:.1f}s; wrote {out} (model card README.md, "
                        f"hardneg_train.json, the trainer's log {TRAIN_LOG})"]


def _split_log(history: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[int, float]], list[dict[str, float]]]:
    """Trainer log history -> (step, training loss) pairs and evaluations with short metric names."""
    prefix = f"eval_{EVAL_NAME}_cosine_"
    losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    evals = [{"step": int(h["step"]), **{k[len(prefix):]: float(v) for k, v in h.items() if k.startswith(prefix)}}
             for h in history if BEST_METRIC in h]
    return losses, evals


def _best_eval(evals: list[dict[str, float]], best_checkpoint: str | None) -> dict[str, float] | None:
    """The evaluation at the kept checkpoint (``checkpoint-<step>``)."""
    if not best_checkpoint:
        return None
    step = int(Path(best_checkpoint).name.rsplit("-", 1)[-1])
    return next((e for e in evals if e["step"] == step), None)


def model_card(result: TrainResult, base_model: str, saved_max_length: int) -> str:
    """Markdown model card: data, negatives policy, loss, hyper-parameters, evaluation figures."""
    cfg, rep = result.config, result.data
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, sentence-similarity, hardneg, hard-negatives]", "---", "",
             f"# Retriever fine-tuned with hardneg ({result.loss})", "",
             f"Base model: `{base_model}`. Loss: **{result.loss}** ({_loss_words(result.loss)}).", "",
             "## Data and negatives", "", f"- Training data: {rep.summary()}."]
    lines += [f"- Negatives {k}: `{json.dumps(v, sort_keys=True)}`" for k, v in sorted(result.negatives_meta.items())]
    if result.inbatch:
        lines.append(f"- In-batch {result.inbatch.summary().removeprefix('in-batch ')}.")
    if rep.teacher:
        lines.append(f"- MarginMSE teacher: `{rep.teacher}`, scores in {_fmt_range(rep.teacher_range)} mapped onto "
                     f"student cosines {_fmt_range(cfg['student_range'])}.")
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in cfg.items() if k not in CARD_SKIP]
    lines += ["", f"Trained at max sequence length {cfg['max_seq_length']}; saved with max length {saved_max_length}.",
              f"Precision: {result.precision} on {result.machine.get('cpu', 'an unknown CPU')}."]
    lines += ["", "## Evaluation during training", "",
              f"Cosine retrieval at max length {cfg['max_seq_length']} on "
              f"{result.eval_set or 'nothing (no dev split, too few queries to hold out)'}. A corpus subset "
              "gives higher figures than the full corpus: compare these rows with each other only."]
    lines += _eval_table(result)
    lines += ["", f"Training time: {result.train_seconds:.1f} s. Saved by `hardneg.train`; "
              f"full log in `{RESULT_FILE}`."]
    return "\n".join(lines) + "\n"


def _fmt_range(r) -> str:
    return "n/a" if r is None else f"[{r[0]:.4g}, {r[1]:.4g}]"


def _loss_words(loss: str) -> str:
    return {"mnrl": "InfoNCE over in-batch and mined negatives",
            "cached-mnrl": "InfoNCE with GradCache, large batches in small memory",
            "gist": "InfoNCE with a guide model masking in-batch false negatives",
            "marginmse": "distillation of teacher score margins"}[loss]


def _eval_table(result: TrainResult) -> list[str]:
    if not result.evals:
        return []
    metrics = [m for m in CARD_METRICS if m in result.evals[0]]
    best_step = result.best["step"] if result.best else None
    lines = ["", "| step | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for e in result.evals:
        mark = " (kept)" if e["step"] == best_step else " (start)" if e["step"] == 0 else ""
        lines.append(f"| {e['step']}{mark} | " + " | ".join(f"{e[m]:.4f}" for m in metrics) + " |")
    return lines

