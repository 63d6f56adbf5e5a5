"""``ctc_pruning``: fairseq's CTC loss plus the HJ-Pruning sparsity Lagrangian (Peng et al., ICASSP 2023).

loss = CTC + sum over budget terms of  lambda_1 * (s - t) + lambda_2 * (s - t)^2

where ``s`` is the expected cost ratio of a budget term under the hard concrete gates (from
:mod:`fairseq_prune.cost`), ``t`` its current target (warmed up linearly from 1 to the final target), and the
multipliers lambda_1, lambda_2 are parameters of this criterion trained by gradient *ascent*: their gradient is
reversed, so a minimising optimizer makes them grow while the budget is exceeded. They belong to the ``pruning``
parameter group (as do the gates), which fairseq's ``optimizer: composite`` can give its own learning rate.

The CTC part is fairseq's ``CtcCriterion`` unchanged (normalisation, ``zero_infinity``, ``sentence_avg``,
validation UER/WER). fairseq divides the summed loss by the sample size before the update, so the Lagrangian is
added multiplied by the sample size: after normalisation it weighs exactly as written above.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from fairseq.dataclass import ChoiceEnum
from torch import nn

from ..cost import Cost, cost_breakdown, totals
from ..io.errors import ConfigError, one_line_errors
from ..modules.hard_concrete import LAGRANGIAN_PARAM_GROUP
from .budgets import BUDGETS, Budget, make_budget
from .distillation import CtcTeacher
from .layer_distillation import HiddenStateMaps, hidden_states

BUDGET_NAMES = ChoiceEnum(sorted(BUDGETS))


@dataclass
class CtcPruningCriterionConfig(CtcCriterionConfig):
    budget: BUDGET_NAMES = field(
        default="macs",
        metadata={
            "help": "size: total parameters (HJ-Pruning-Size); sep_size: CNN and Transformer parameters with "
            "separate targets (HJ-Pruning-SepSize); macs: total MACs at reference_seconds (HJ-Pruning-MAC); "
            "latency: the time criterion.latency_table predicts"
        },
    )
    target: float = field(
        default=0.5, metadata={"help": "final cost ratio for budget=size, macs or latency, in (0, 1]"}
    )
    target_cnn: Optional[float] = field(
        default=None, metadata={"help": "budget=sep_size: final ratio of CNN parameters, in (0, 1]"}
    )
    target_transformer: Optional[float] = field(
        default=None, metadata={"help": "budget=sep_size: final ratio of Transformer parameters, in (0, 1]"}
    )
    target_warmup_updates: int = field(
        default=0,
        metadata={"help": "the target goes linearly from 1.0 (nothing pruned) to its final value over these updates"},
    )
    reference_seconds: float = field(
        default=10.0, metadata={"help": "input length at which MACs are counted for budget=macs and in logs"}
    )
    reference_sample_rate: int = field(default=16000, metadata={"help": "sample rate of the reference input"})
    lambda_2_init: float = field(
        default=0.0,
        metadata={
            "help": "value of lambda_2 at the first update (>= 0). A large one makes (s - t)^2 a quadratic penalty "
            "from the start: its pull 2 * lambda_2 * (s - t) follows the gap at once and shrinks as the gap does, "
            "so lambda_1 has less to integrate and overshoots less (the proportional term of a PI controller)"
        },
    )
    latency_table: str = field(
        default="",
        metadata={"help": "budget=latency: the per-device latency table of this architecture (fairseq-prune-profile "
                  "writes it); target is then a ratio of the dense model's predicted time"},
    )
    latency_device: str = field(
        default="",
        metadata={"help": "budget=latency: the device the table must have been made on (its 'device' string); "
                  "empty: whichever it was"},
    )
    distill_teacher: str = field(
        default="",
        metadata={
            "help": "a fine-tuned dense CTC checkpoint (e.g. the dense recipe's checkpoint_best.pt, same dictionary): "
            "while training, the pruned model's frame posteriors are also pulled towards its posteriors on the "
            "same audio (KL divergence); empty: no distillation"
        },
    )
    distill_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the output distillation term: loss = CTC + distill_weight * summed frame KL "
                  "(>= 0)"},
    )
    distill_layers: List[int] = field(
        default_factory=list,
        metadata={"help": "layer-wise distillation (with distill_layer_weight > 0): Transformer layers, 1-based, "
                  "whose outputs are mapped by a linear layer (initialised to the identity, trained, never "
                  "exported) onto the teacher's outputs of the same layers, e.g. [2, 4, 6]"},
    )
    distill_layer_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the layer-wise term: loss += distill_layer_weight * sum over distill_layers "
                  "and frames of (mean L1 distance + 1 - cosine similarity) (>= 0)"},
    )
    budget_tolerance: float = field(
        default=0.01,
        metadata={
            "help": "logged det_within_budget is 1 when the exported model's ratio of every budget term is at "
            "most its final target + this; task audio_pruning's wer_in_budget / intent_acc_in_budget use it so "
            "that checkpoint_best is chosen among models that meet the budget"
        },
    )


class _Ascend(torch.autograd.Function):
    """Identity whose gradient is reversed: parameters behind it are updated by gradient ascent."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def _check_distillation(cfg: CtcPruningCriterionConfig) -> Tuple[float, float]:
    """The output and layer-wise distillation weights; a teacher needs a term to distil with and vice versa."""
    weights = {"distill_weight": cfg.distill_weight, "distill_layer_weight": cfg.distill_layer_weight}
    for name, w in weights.items():
        if w < 0:
            raise ConfigError(f"criterion.{name}={w} must be >= 0")
    if any(w > 0 for w in weights.values()) != bool(cfg.distill_teacher):
        raise ConfigError(f"criterion.distill_weight={cfg.distill_weight}, distill_layer_weight="
                          f"{cfg.distill_layer_weight} and distill_teacher={cfg.distill_teacher!r}: distillation "
                          "needs both (a teacher and a weight > 0)")
    if (cfg.distill_layer_weight > 0) != bool(cfg.distill_layers):
        raise ConfigError(f"criterion.distill_layers={list(cfg.distill_layers)} and distill_layer_weight="
                          f"{cfg.distill_layer_weight}: layer-wise distillation needs both (layers and a weight > 0)")
    return float(cfg.distill_weight), float(cfg.distill_layer_weight)


@register_criterion("ctc_pruning", dataclass=CtcPruningCriterionConfig)
class CtcPruningCriterion(CtcCriterion):
    def __init__(self, cfg: CtcPruningCriterionConfig, task) -> None:
        super().__init__(cfg, task)
        self.budget: Budget = make_budget(cfg)
        self.targets = self.budget.targets
        if cfg.target_warmup_updates < 0:
            raise ConfigError(f"criterion.target_warmup_updates={cfg.target_warmup_updates} must be >= 0")
        self.warmup = cfg.target_warmup_updates
        if cfg.budget_tolerance < 0:
            raise ConfigError(f"criterion.budget_tolerance={cfg.budget_tolerance} must be >= 0")
        self.tolerance = cfg.budget_tolerance
        self.reference_samples = int(round(cfg.reference_seconds * cfg.reference_sample_rate))
        n = len(self.budget.terms)
        self.lambda_1 = nn.Parameter(torch.zeros(n))
        if cfg.lambda_2_init < 0:
            raise ConfigError(f"criterion.lambda_2_init={cfg.lambda_2_init} must be >= 0")
        self.lambda_2 = nn.Parameter(torch.full((n,), float(cfg.lambda_2_init)))
        for p in (self.lambda_1, self.lambda_2):
            p.param_group = LAGRANGIAN_PARAM_GROUP
        self._original: Optional[Dict[str, Cost]] = None
        self.distill_weight, self.distill_layer_weight = _check_distillation(cfg)
        self.teacher = CtcTeacher(cfg.distill_teacher, task) if cfg.distill_teacher else None
        self.layer_maps = None
        if self.distill_layer_weight > 0:
            w2v = self.teacher.model.w2v_encoder.w2v_model.cfg
            self.layer_maps = HiddenStateMaps(list(cfg.distill_layers), w2v.encoder_embed_dim, w2v.encoder_layers)

    # ---------------------------------------------------------------------------------------------- budget
    def current_targets(self, num_updates: int) -> List[float]:
        if self.warmup <= 0:
            return list(self.targets)
        frac = min(1.0, num_updates / self.warmup)
        return [1.0 - (1.0 - t) * frac for t in self.targets]

    def _costs(self, shape, counts) -> Dict[str, Cost]:
        return totals(cost_breakdown(shape, self.reference_samples, counts))

    @classmethod
    def build_criterion(cls, cfg: CtcPruningCriterionConfig, task):
        with one_line_errors():
            return super().build_criterion(cfg, task)

    def check_budget(self, model) -> None:
        """Check the budget against what the model can prune, and keep the model's full cost (the ratios'
        denominator). Task ``audio_pruning`` calls this when it builds the criterion, before training starts;
        with another task it runs at the first forward."""
        model = _unwrap(model)
        w2v = model.w2v_model
        groups = set(w2v.gates_by_group())
        if not groups:
            raise ConfigError(
                "criterion ctc_pruning needs a model with gates: set at least one model.prune_* flag "
                "(prune_conv_channels, prune_attention_heads, prune_ffn_units, ...)"
            )
        self.budget.check_groups(groups)
        shape = model.shape()
        self._original = self._costs(shape, None)
        self.budget.setup(shape, self._original)
        minimum = w2v.structure_counts("minimum")
        floor = self.budget.ratios(self._costs(shape, minimum), minimum)
        for name, lowest, target in zip(self.budget.terms, floor, self.targets):
            if target < float(lowest):
                raise ConfigError(
                    f"criterion target {target} for the {name} budget cannot be reached: with the prunable groups "
                    f"{sorted(groups)} the smallest possible ratio is {float(lowest):.3f}"
                )

    # --------------------------------------------------------------------------------------------- forward
    def _ctc(self, model, sample, reduce: bool):
        """fairseq's CTC loss and, when training with a teacher, the distillation terms from the same student
        forward pass (weights applied); returns (ctc, distillation or None, sample_size, logging_output)."""
        if self.teacher is None or not model.training:
            loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
            return loss, None, sample_size, logging_output
        outputs = []  # the student's output that fairseq's CTC loss computes from
        hook = _unwrap(model).register_forward_hook(lambda _module, _args, out: outputs.append(out))
        try:
            loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        finally:
            hook.remove()
        student = outputs[-1]
        teacher = self.teacher.outputs(sample["net_input"])
        distill = loss.new_zeros(())
        if self.distill_weight > 0:
            kl = self.teacher.kl(teacher, student)
            logging_output["distill_loss"] = kl.item()
            distill = distill + self.distill_weight * kl
        if self.layer_maps is not None:
            layers = self.layer_maps(hidden_states(student["layer_results"]), teacher["hidden"],
                                     student.get("padding_mask"))
            logging_output["distill_layer_loss"] = layers.item()
            distill = distill + self.distill_layer_weight * layers
        return loss, distill, sample_size, logging_output

    def forward(self, model, sample, reduce=True, **kwargs):
        ctc, distill, sample_size, logging_output = self._ctc(model, sample, reduce)
        loss = ctc if distill is None else ctc + distill
        inner = _unwrap(model)
        if self._original is None:
            self.check_budget(inner)
        w2v = inner.w2v_model
        shape = inner.shape()
        expected_counts = w2v.structure_counts("expected")
        expected = self._costs(shape, expected_counts)
        ratios = self.budget.ratios(expected, expected_counts)
        targets = self.current_targets(inner.w2v_encoder.num_updates)
        lam1, lam2 = _Ascend.apply(self.lambda_1), _Ascend.apply(self.lambda_2)
        reg = sum(lam1[i] * (s - t) + lam2[i] * (s - t) ** 2 for i, (s, t) in enumerate(zip(ratios, targets)))
        if model.training:
            loss = loss + reg * sample_size

        with torch.no_grad():
            det_counts = w2v.structure_counts("deterministic")
            det = self._costs(shape, det_counts)
            det_ratios = self.budget.ratios(det, det_counts)
            orig = self._original["total"]
            stats = {
                "loss": loss.item(),
                "ctc_loss": ctc.item(),
                "reg_loss": float(reg) * sample_size,
                "_prune_n": 1,
                "exp_params_M": float(expected["total"].params) / 1e6,
                "exp_gmacs": float(expected["total"].macs) / 1e9,
                "exp_params_ratio": float(expected["total"].params) / orig.params,
                "exp_macs_ratio": float(expected["total"].macs) / orig.macs,
                "det_params_ratio": float(det["total"].params) / orig.params,
                "det_macs_ratio": float(det["total"].macs) / orig.macs,
                # how far the exported model is over its final budget (0 when it meets it), and whether it is
                # within the tolerance: the task's checkpoint metrics use both
                "det_over_budget": max(max(float(r) - t, 0.0) for r, t in zip(det_ratios, self.targets)),
                "det_within_budget": float(
                    all(float(r) <= t + self.tolerance for r, t in zip(det_ratios, self.targets))
                ),
            }
            stats.update(self.budget.log_values(expected_counts, det_counts))
            for i, suffix in enumerate(self.budget.log_suffixes):
                stats[f"target{suffix}"] = targets[i]
                stats[f"exp_ratio{suffix}"] = float(ratios[i])
                stats[f"det_ratio{suffix}"] = float(det_ratios[i])
                stats[f"lambda_1{suffix}"] = float(self.lambda_1[i])
                stats[f"lambda_2{suffix}"] = float(self.lambda_2[i])
            for group, gates in w2v.gates_by_group().items():
                stats[f"closed_{group}"] = sum(int((g.deterministic() == 0).sum()) for g in gates)
        logging_output.update(stats)
        return loss, sample_size, logging_output

    # --------------------------------------------------------------------------------------------- logging
    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        n = sum(log.get("_prune_n", 0) for log in logging_outputs)
        if n == 0:
            return
        for key in ("ctc_loss", "reg_loss", "distill_loss", "distill_layer_loss"):
            total = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, total / max(sample_size, 1) / math.log(2), sample_size, round=3)
        keys = sorted({k for log in logging_outputs for k in log})
        per_update = [
            k for k in keys
            if k.startswith(("exp_", "det_", "target", "lambda_", "closed_"))
        ]
        for key in per_update:
            # logging outputs of the batches of one update (and of all workers) are summed: report the mean
            value = sum(log.get(key, 0) for log in logging_outputs) / n
            metrics.log_scalar(key, value, weight=0, round=4)
