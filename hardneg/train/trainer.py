"""The run: :func:`train` builds the rows, the student, the loss and the evaluator, runs
sentence-transformers' trainer (its logs into ``train.log``, :func:`trainer_logs`), keeps the best
dev checkpoint and saves the model folder with its card. DDP: every process trains, rank 0 writes."""
from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from hardneg import output
from hardneg.data import Dataset, load_dataset
from hardneg.encode import default_model_path
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.memory import MemoryPlan, plan
from hardneg.precision import machine_info, resolve_train
from hardneg.train.config import (BEST_METRIC, EVAL_NAME, RESULT_FILE, TRAIN_LOG, InBatchPositives, Loss, Positives,
                                  TrainConfig)
from hardneg.train.dataset import (BuildReport, EvalSet, _rows_and_meta, build_eval_set, build_train_dataset,
                                   in_batch_only, pair_rows, read_sidecar, sidecar_path)
from hardneg.train.inbatch import ROW_ID, Collisions, KnownPositives, count_collisions, trained_batches
from hardneg.train.losses import attention_dropout, build_loss, load_student
from hardneg.train.result import TrainResult, _best_eval, _split_log, model_card

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__: list[str] = []  # internal: import from hardneg.train

log = logging.getLogger("hardneg.train")
TRAINER_LOGGER = "hardneg.train.trainer"  # the trainer's own log lines, into train.log


def build_evaluator(evalset: EvalSet, config: TrainConfig):
    """sentence-transformers' InformationRetrievalEvaluator on ``evalset`` (cosine, NDCG@10 primary)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    return InformationRetrievalEvaluator(
        evalset.queries, evalset.corpus, evalset.relevant, name=EVAL_NAME,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10, 100], map_at_k=[100],
        score_functions={"cosine": cos_sim}, main_score_function="cosine", batch_size=config.batch_size,
        query_prompt=config.query_prompt or None, corpus_prompt=config.passage_prompt or None, write_csv=False,
    )



def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cpu_processes() -> bool:
    """Several processes (torchrun sets WORLD_SIZE) and no GPU: DDP over gloo on CPUs, which
    transformers only sets up when told ``use_cpu``."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cuda()


def _precision_flags(mode: str) -> dict[str, bool]:
    """The trainer's precision flags for the resolved ``mode``; bf16 on a CPU needs ``use_cpu``
    (else transformers stops with "Your setup doesn't support bf16/gpu")."""
    cuda = _cuda()
    mode = resolve_train(mode, cuda)
    return {"fp16": mode == "fp16", "bf16": mode == "bf16", "use_cpu": _cpu_processes() or (mode == "bf16" and not cuda)}


def _prompts(columns: Sequence[str], config: TrainConfig) -> dict[str, str] | None:
    if not (config.query_prompt or config.passage_prompt):
        return None
    return {c: config.query_prompt if c in ("anchor", "query") else config.passage_prompt
            for c in columns if c != "label"}


def training_args(config: TrainConfig, checkpoint_dir: Path, columns: Sequence[str], with_eval: bool):
    """SentenceTransformerTrainingArguments for ``config`` (eval + best checkpoint only ``with_eval``)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    every = config.eval_steps if config.eval_steps is not None else 0.25
    strategy = "steps" if with_eval else "no"
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr, warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER,
        eval_strategy=strategy, eval_steps=every if with_eval else None, eval_on_start=with_eval,
        save_strategy=strategy, save_steps=every, save_total_limit=1, save_only_model=True,
        load_best_model_at_end=with_eval, metric_for_best_model=BEST_METRIC if with_eval else None,
        greater_is_better=True, logging_steps=config.logging_steps, logging_first_step=True,
        report_to="none", disable_tqdm=not config.show_progress, dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
        prompts=_prompts(columns, config), **_precision_flags(config.mixed_precision),
    )



# ---- the run ----------------------------------------------------------------------------------
def train(
    data: Dataset | str | Path,
    negatives: str | Path | Sequence[Mapping[str, Any]] | None,
    model: "str | Path | SentenceTransformer | None",
    out_dir: str | Path,
    config: TrainConfig | None = None,
    dev_split: str | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    pairs_split: str = "train",
    log_file: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``negatives`` and save the best checkpoint to ``out_dir``.

    ``data`` (a :class:`Dataset` or a BEIR folder) supplies the dev split (``dev_split``,
    else ``dev`` when present) or, without one, the train queries held out for evaluation
    (their rows are removed from training). ``model`` is a local folder, a loaded
    SentenceTransformer (trained in place) or None for the bundled MiniLM. Writes a
    sentence-transformers folder with ``README.md`` (model card) and ``hardneg_train.json``.

    ``negatives`` None, or a ``negatives.jsonl`` left empty by the in-batch-only baseline
    (:func:`in_batch_only`), trains on the (query, positive) pairs of ``pairs_split``
    (:func:`pair_rows`) with in-batch negatives only.

    ``log_file`` (default ``out_dir/train.log``) receives the trainer's own logs: its loss and
    evaluation dicts, its INFO lines and the libraries' warnings. Quiet (the command line without
    ``--verbose``, :mod:`hardneg.output`) they go there only, with no progress bars.
    """
    config = config or TrainConfig()
    data = data if isinstance(data, Dataset) else load_dataset(data)
    if negatives is None or (isinstance(negatives, (str, Path)) and in_batch_only(negatives)):
        file_meta = {}
        if negatives is not None:
            file_meta = read_sidecar(sidecar_path(negatives))
            log.warning(f"{negatives} has no rows: none of its {file_meta.get('rows_in_mined_set')} mined rows "
                        f"had negatives (the in-batch-only baseline); training on the (query, positive) pairs "
                        f"of '{pairs_split}' with in-batch negatives only")
        meta = {**file_meta, "strategy": "in-batch negatives only", "pairs_split": pairs_split, **(meta or {})}
        rows = pair_rows(data, pairs_split)
    else:
        rows, meta = _rows_and_meta(negatives, meta)
    evalset = build_eval_set(data, [r["query_id"] for r in rows], config, dev_split)
    passes = math.ceil(config.epochs) if config.positives is Positives.ONE else None
    train_ds, report = build_train_dataset(
        rows, config.num_negatives, config.loss, short_rows=config.short_rows, meta=meta,
        student_range=config.student_range, exclude_queries=evalset.holdout_ids if evalset else (),
        one_positive=(passes, config.seed) if passes else None,
    )
    known = None if config.loss is Loss.MARGINMSE else KnownPositives.build(train_ds, rows)
    base_name = _model_name(model)
    student = load_student(model)
    native_length, student.max_seq_length = student.max_seq_length, config.max_seq_length
    out_dir = Path(out_dir)
    # positives "one": the dataset holds ceil(epochs) passes already; the trainer runs the share of them asked
    fit_config = replace(config, epochs=config.epochs / passes) if passes else config
    result = _fit(student, train_ds, evalset, fit_config, out_dir, report, meta,
                  Path(log_file) if log_file is not None else out_dir / TRAIN_LOG, known)
    result.config = config.to_dict()
    student.max_seq_length = native_length  # trained at config.max_seq_length, saved at the model's own
    if _main_process():  # DDP: one writer; every process returns once the model is saved
        _save(student, result, out_dir, base_name)
    _barrier()
    return result


def _model_name(model) -> str:
    """How the model card names the starting model."""
    if model is None:
        return default_model_path()
    if isinstance(model, (str, Path)):
        return str(model)
    card = getattr(model, "model_card_data", None)
    return str(getattr(card, "base_model", None) or "a model passed in memory")


def _fit(student, train_ds, evalset: EvalSet | None, config: TrainConfig, out_dir: Path,
         report: BuildReport, meta: Mapping[str, Any], log_file: Path,
         known: KnownPositives | None = None) -> TrainResult:
    """Run the trainer; the student ends up holding the best checkpoint's weights. ``known``: the
    labeled positives the in-batch collisions are counted (and, asked, masked) against."""
    from sentence_transformers import SentenceTransformerTrainer

    if evalset is None and config.holdout_fraction == 0:
        log.info("no dev split and holdout_fraction 0: training without evaluation (the last step is kept)")
    elif evalset is None:
        log.warning("no dev split and too few train queries to hold out: training without evaluation")
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else out_dir / "checkpoints"
    args = training_args(config, checkpoint_dir, train_ds.column_names, evalset is not None)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    memory = _memory_plan(student, train_ds, config, precision)
    masked = config.inbatch_positives is InBatchPositives.MASK
    clock = _StepClock()
    with trainer_logs(log_file) as logged:
        loss = build_loss(student, config, report.num_negatives, args.world_size, memory, known)
        trainer = logged.quiet(SentenceTransformerTrainer(
            model=student, args=args, loss=loss,
            train_dataset=train_ds.add_column(ROW_ID, list(range(len(train_ds)))) if masked else train_ds,
            evaluator=build_evaluator(evalset, config) if evalset else None,
            callbacks=[clock.callback(), *logged.callbacks, *_early_stopping(config, evalset is not None)],
        ))
        start = time.perf_counter()
        with attention_dropout(student, config.attention_dropout):
            trainer.train()
        seconds = time.perf_counter() - start
    losses, evals = _split_log(trainer.state.log_history)
    collisions = _collisions(trainer, train_ds, known, config, loss)
    _barrier()  # DDP: every process has loaded the best checkpoint before it goes
    if not (config.keep_checkpoints or config.checkpoint_dir) and _main_process():  # never delete a named folder
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(
        str(out_dir), config.to_dict(), report, evalset.description if evalset else None, losses, evals,
        _best_eval(evals, trainer.state.best_model_checkpoint), seconds, dict(meta), args.world_size,
        memory.to_dict(), precision, machine_info(), clock.seconds, collisions,
    )


def _early_stopping(config: TrainConfig, with_eval: bool) -> list:
    """transformers' EarlyStoppingCallback for ``config.patience`` (needs the dev evaluation)."""
    if config.patience is None or not with_eval:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=config.patience)]


def _collisions(trainer, train_ds, known: KnownPositives | None, config: TrainConfig, loss) -> Collisions | None:
    """Anchors that met their own labeled positives in the batches trained on (the sampler
    replayed), and how many the masked loss excluded; None without an in-batch softmax (marginmse)."""
    if known is None:
        return None
    world = trainer.args.world_size
    pools = world if world > 1 and config.gather_across_devices else 1  # DDP: processes' batches gathered
    n_batches = trainer.state.global_step * trainer.args.gradient_accumulation_steps * world
    masked = getattr(loss.similarity_fct, "masked", None)
    return count_collisions(known, trained_batches(trainer, train_ds, n_batches, pools),
                            config.inbatch_positives.value, _summed(masked))


@dataclass
class TrainerLogs:
    """What :func:`trainer_logs` gives a trainer: ``callbacks`` to pass it, :meth:`quiet` to apply."""

    callbacks: list

    def quiet(self, trainer):
        """Without ``--verbose``: no progress bar and no log dicts on the terminal (the log file has
        the dicts). Returns ``trainer``."""
        if self.callbacks and not output.verbose():
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
        return trainer


@contextmanager
def trainer_logs(log_file: str | Path) -> Iterator[TrainerLogs]:
    """A trainer's logs into ``log_file`` (the main process's; DDP replicas print as they do).

    Create the trainer and train inside the block. Its callback writes each log dict to the file
    and, quiet (:mod:`hardneg.output`), updates the status line (step i of n); quiet, the
    libraries' loggers write only to the file and sentence-transformers' "Computing widget
    examples" bar, which has no switch, is disabled.
    """
    if not _main_process():
        yield TrainerLogs([])
        return
    trainer_log = logging.getLogger(TRAINER_LOGGER)
    with output.library_logs_to(log_file, trainer_log), _no_widget_bar():
        yield TrainerLogs([_log_callback(trainer_log)])


def _log_callback(trainer_log: logging.Logger):
    """The trainer callback of :func:`trainer_logs`: log dicts to the file, steps to the status line."""
    from transformers import TrainerCallback

    class TrainerLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            output.status(f"training: step 0/{state.max_steps}")

        def on_step_end(self, args, state, control, **kwargs):
            output.status(f"training: step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not output.verbose() and args.disable_tqdm:
                logs.pop("total_flos", None)  # what the PrinterCallback it replaces did to the trainer's history
            trainer_log.info("step %d: %s", state.global_step, json.dumps(logs, default=str))

    return TrainerLog()


@contextmanager
def _no_widget_bar() -> Iterator[None]:
    """Quiet: sentence-transformers' model-card widget examples computed without their tqdm bar
    (still computed: they draw from ``random``, and the run must stay the same run)."""
    try:
        from sentence_transformers.base import model_card
    except ImportError:  # another layout: its bar shows
        model_card = None
    if output.verbose() or model_card is None or not hasattr(model_card, "tqdm"):
        yield
        return
    bar = model_card.tqdm
    model_card.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        model_card.tqdm = bar


class _StepClock:
    """Wall time of each optimizer step (evaluations and checkpoints excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.seconds.append(round(time.perf_counter() - clock._start, 4))

        return StepClock()


def _memory_plan(student, train_ds, config: TrainConfig, precision: str) -> MemoryPlan:
    """:func:`hardneg.memory.plan` for this run (refuses one that would not fit), logged in one line."""
    memory = plan(student, {c: train_ds[c] for c in train_ds.column_names}, loss=config.loss.value,
                  batch_size=config.batch_size, max_length=config.max_seq_length, precision=precision,
                  mini_batch_size=config.mini_batch_size, memory_gb=config.memory_gb,
                  guide=config.loss is Loss.GIST)
    info = machine_info()
    log.info(f"{memory.summary()}; precision {precision} on {info['cpu']} "
                f"(AMX-BF16: {'yes' if info['amx_bf16'] else 'no'})")
    return memory


def _process_group():
    """``torch.distributed`` while a process group runs (``torchrun`` / ``accelerate launch``), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _main_process() -> bool:
    """True outside DDP and on rank 0: the process that writes the shared outputs."""
    group = _process_group()
    return group is None or group.get_rank() == 0


def _summed(count: int | None) -> int | None:
    """``count`` summed over the DDP processes (each masks its own anchors); as is outside DDP."""
    group = _process_group()
    if group is None or count is None:
        return count
    import torch

    total = torch.tensor([count], device="cuda" if _cuda() else "cpu")
    group.all_reduce(total)
    return int(total.item())


def _barrier() -> None:
    group = _process_group()
    if group is not None:
        group.barrier()


def _save(student, result: TrainResult, out_dir: Path, base_name: str) -> None:
    """The model folder without sentence-transformers' own card, then ours and the JSON log."""
    student.save(str(out_dir), create_model_card=False)
    atomic_write_text(out_dir / "README.md", model_card(result, base_name, student.max_seq_length))
    atomic_write_json(out_dir / RESULT_FILE, result.to_dict())

