"""The converged study's rows (``scripts/study.py --protocol converged``), in the order they run, and the
``fairseq-hydra-train`` options of each.

Protocol (README, "The study at convergence"):

* **dense**: the self-supervised mini wav2vec2 (``assets/pretrained/wav2vec2_mini.pt``) fine-tuned with CTC until
  the dev metric stops improving (``examples/mini/dense_converged.yaml``: reduce-on-plateau, stop after the
  third halving, at most :data:`DENSE_MAX_UPDATES`); its best checkpoint is shipped weights-only in
  ``assets/study/`` and is the teacher of the distilled rows. ``small-dense`` is the same for the small dense
  control (``assets/pretrained/wav2vec2_small.pt``, half the MACs).
* **pruned**: as many updates as the longer of the corpus's two dense runs, at most :data:`PRUNED_MAX_UPDATES`
  (``U``: a run must end inside one 3-hour session), the target warmed up over the first ``U / 3`` (so the final
  architecture trains for at least twice the warm-up), the tri-stage schedule of
  the recipes at the dense run's peak learning rate; ``prune_from`` ``ssl`` prunes while fine-tuning from the
  self-supervised model (the paper), ``dense`` prunes the converged dense model (CoFiPruning's way, lower peak
  learning rate); ``auto`` takes whichever of the two protocol rows scored better on dev.
* **fine-tuned after export** (``finetune``): the exported model of the headline row HJ-Pruning-MAC 0.5 with
  layer-wise distillation (seed 1), shipped weights-only when that row ends, trained further without gates with
  CTC (the dense recipe at :data:`FINETUNE_LR`, stopping after three halvings or :data:`FINETUNE_MAX_UPDATES`).
* distillation ``layers``: output KL (weight 1) + hidden states after layers 2, 4 and 6 (weight 1) from the
  dense teacher; ``output``: the KL alone; ``none``.

Every run validates and saves once per epoch, 160,000-sample batches, one thread; the best checkpoint is chosen
by dev WER among the models within the budget (SLURP: WER with the intent token counted as a word).
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

#: a dense run's cap (it normally stops earlier, by its plateau rule). Raised from 12,000 when the first SLURP
#: references reached that cap after one halving of three; such rows continue from their checkpoint_last.pt
DENSE_MAX_UPDATES = 24000
#: a pruned row's updates at most. With its teacher's forward beside it, an update of a distilled row takes 0.6-0.7 s
#: on one thread with a second run on the other core: 10,000 updates are 100-115 minutes, which leaves a 3-hour
#: session room for the export, the decoding and the dense rows' work. A row pruned from the converged dense
#: model has then trained for the dense run's updates and these; one pruned from the self-supervised model has
#: fewer updates than the dense row (docs/protocols.md, "The study at convergence", says how the two compare)
PRUNED_MAX_UPDATES = 10000
#: fine-tuning an exported model after pruning: at most these updates, reduce-on-plateau from this peak learning
#: rate down to an eighth of it (three halvings, the dense rows' stopping rule)
FINETUNE_MAX_UPDATES = 5000
FINETUNE_LR = 0.0001
MAX_TOKENS = 160000
#: peak learning rate of every run's model weights, and of pruning a converged dense model
LR = 0.0005
LR_FROM_DENSE = 0.0002
#: the distilled Transformer layers (1-based) and the weights of the output and layer-wise terms
DISTILL_LAYERS = (2, 4, 6)
DISTILL_WEIGHTS = {"none": (0.0, 0.0), "output": (1.0, 0.0), "layers": (1.0, 1.0)}
#: method -> (recipe of examples/mini, budget overrides): the README's names
METHODS = {
    "dense": ("dense_converged", []),
    "small-dense": ("dense_converged", []),
    "HJ-Pruning-MAC": ("hj_macs", []),
    "HJ-Pruning-Size": ("hj_size", []),
    "HJ-Pruning-SepSize": ("hj_sep_size", []),
    "CNN-only": ("cnn_only", ["criterion.budget=macs"]),
    "Transformer-only": ("transformer_only", ["criterion.budget=macs"]),
    "gates-only": ("hj_macs", []),
    "HJ-Pruning-latency": ("hj_macs", ["criterion.budget=latency"]),
}
#: the latency table of the mini architecture on the study's machine (eager PyTorch, 1 thread, batch 1, 10 s),
#: relative to the repository: the latency rows' budget, and every pruned row's predicted latency at export
LATENCY_TABLE = "assets/study/latency_mini_eager_1thread.json"
#: how the table was made (run from the repository root, on an idle machine)
LATENCY_TABLE_COMMAND = f"fairseq-prune-profile assets/pretrained/wav2vec2_mini.pt {LATENCY_TABLE} --force --rounds 15"

CORPORA = ("slurp", "librispeech")


def scored_metrics(corpus: str) -> List[str]:
    """What a row of ``corpus`` is scored by on its test set (keys of :data:`experiments.bootstrap.METRICS`):
    WER, and on SLURP also the intent accuracy and the WER of the transcript alone."""
    return ["wer"] + (["intent_accuracy", "transcript_wer"] if corpus == "slurp" else [])


@dataclass(frozen=True)
class Row:
    """One run of the study. ``target``: the MAC ratio (Size: parameter ratio; SepSize: (CNN, Transformer)
    parameter ratios); None for the dense models."""

    corpus: str
    method: str
    seed: int
    target: Optional[Tuple[float, ...]] = None
    distill: str = "none"
    prune_from: str = "ssl"
    #: True: fine-tune, with CTC and no gates, the exported model of the pruned row :attr:`source`
    finetune: bool = False

    @property
    def dense(self) -> bool:
        return self.method in ("dense", "small-dense")

    @property
    def source(self) -> Optional["Row"]:
        """The pruned row whose exported model a fine-tuning row starts from (None for other rows)."""
        if not self.finetune:
            return None
        return Row(self.corpus, self.method, self.seed, self.target, self.distill, self.prune_from)

    @property
    def name(self) -> str:
        parts = [self.corpus, self.method]
        if self.target is not None:
            parts.append("-".join(f"{t:g}" for t in self.target))
        if not self.dense:
            parts += [self.distill, f"from-{self.prune_from}"]
        return "_".join(parts + ["ft"] * self.finetune + [f"s{self.seed}"])

    def resolved(self, prune_from: str) -> "Row":
        return Row(self.corpus, self.method, self.seed, self.target, self.distill, prune_from, self.finetune)


def _pruned(corpus: str, method: str, target, distill: str, seeds=(1,), prune_from: str = "auto") -> List[Row]:
    target = tuple(target) if isinstance(target, (tuple, list)) else (target,)
    return [Row(corpus, method, s, target, distill, prune_from) for s in seeds]


def protocol_rows(corpus: str = "slurp") -> List[Row]:
    """The two rows that choose between pruning while fine-tuning from the self-supervised model and pruning the
    converged dense model (measured on one corpus, used for the rest)."""
    return [Row(corpus, "HJ-Pruning-MAC", 1, (0.5,), "layers", p) for p in ("ssl", "dense")]


def rows() -> List[Row]:
    """Every row, headline rows first."""
    out: List[Row] = [Row(c, "dense", s) for c in CORPORA for s in (1, 2)]
    out += protocol_rows()
    for corpus in CORPORA:
        for target in (0.5, 0.7):
            for distill in ("layers", "none"):
                out += _pruned(corpus, "HJ-Pruning-MAC", target, distill, seeds=(1, 2))
    for corpus in CORPORA:  # the headline pruned model, fine-tuned after export (no gates, CTC)
        out += [Row(corpus, "HJ-Pruning-MAC", 1, (0.5,), "layers", "auto", finetune=True)]
    for corpus in CORPORA:  # beside HJ-Pruning-MAC 0.5: the budget spent by measured time instead of MACs
        out += _pruned(corpus, "HJ-Pruning-latency", 0.5, "layers")
    for corpus in CORPORA:
        for target in (0.4, 0.6, 0.8):
            out += _pruned(corpus, "HJ-Pruning-MAC", target, "layers")
        out += _pruned(corpus, "HJ-Pruning-Size", 0.5, "layers")
        out += _pruned(corpus, "HJ-Pruning-SepSize", (0.5, 0.5), "layers")
        out += _pruned(corpus, "CNN-only", 0.7, "layers")  # the CNN is 32% of the MACs: 0.68 is its floor
        out += _pruned(corpus, "Transformer-only", 0.5, "layers")
        out += [Row(corpus, "small-dense", 1)]
        out += _pruned(corpus, "gates-only", 1.0, "none")
    seen, unique = set(), []
    for r in out:  # the protocol rows are also headline rows once resolved
        if r.name not in seen:
            seen.add(r.name)
            unique.append(r)
    return unique


def target_overrides(row: Row) -> List[str]:
    if row.method == "HJ-Pruning-SepSize":
        return [f"criterion.target_cnn={row.target[0]}", f"criterion.target_transformer={row.target[1]}"]
    return [f"criterion.target={row.target[0]}"]


def overrides(row: Row, updates: int, teacher: Optional[str], latency_table: Optional[str] = None) -> List[str]:
    """fairseq-hydra-train overrides of ``row`` beyond data, start model, updates, seed and save folder.
    ``updates``: the dense rows' cap, or a pruned row's ``U``; ``teacher``: the corpus's dense model (distilled
    rows); ``latency_table``: the latency rows' table."""
    out = [f"dataset.max_tokens={MAX_TOKENS}", "dataset.validate_interval=1", "dataset.validate_interval_updates=0",
           "checkpoint.save_interval=1", "checkpoint.save_interval_updates=0", "common.log_interval=100",
           # epoch checkpoints are written atomically, checkpoint_last.pt is copied from them: a run killed during
           # the copy resumes from the newest epoch checkpoint (experiments.study.set_aside_unreadable)
           "checkpoint.no_epoch_checkpoints=false", "checkpoint.keep_last_epochs=2",
           "checkpoint.best_checkpoint_metric=wer_in_budget", "checkpoint.maximize_best_checkpoint_metric=false"]
    if row.dense:
        return out + [f"optimization.lr=[{LR}]"]
    if row.finetune:  # the dense recipe on the exported model
        return out + [f"optimization.lr=[{FINETUNE_LR}]", f"optimization.stop_min_lr={FINETUNE_LR / 8}",
                      f"lr_scheduler.warmup_init_lr={FINETUNE_LR / 4}", "lr_scheduler.warmup_updates=500"]
    out += METHODS[row.method][1] + target_overrides(row)
    if row.method == "HJ-Pruning-latency":
        if not latency_table:
            raise ValueError(f"{row.name}: a latency row needs the latency table's path")
        out.append(f"criterion.latency_table={latency_table}")
    out += [f"criterion.target_warmup_updates={max(updates // 3, 1)}",
            f"optimizer.groups.default.lr_float={LR_FROM_DENSE if row.prune_from == 'dense' else LR}"]
    return out + distill_overrides(row.distill, teacher)


def distill_overrides(distill: str, teacher: Optional[str]) -> List[str]:
    """The criterion's distillation options of ``distill`` (``none``, ``output``, ``layers``) from ``teacher``:
    the study's and `make demo`'s (protocol ``study``) one definition."""
    kl, layers = DISTILL_WEIGHTS[distill]
    out = []
    if kl or layers:
        out += [f"criterion.distill_teacher={teacher}", f"criterion.distill_weight={kl}"]
    if layers:
        out += [f"criterion.distill_layers=[{','.join(map(str, DISTILL_LAYERS))}]",
                f"criterion.distill_layer_weight={layers}"]
    return out
