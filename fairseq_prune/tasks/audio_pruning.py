"""``audio_pruning``: fairseq's ``audio_finetuning`` plus intent accuracy in validation and reproducible
training steps.

Same data config and manifests (``{split}.tsv`` + ``{split}.{labels}`` + ``dict.{labels}.txt``). Validation runs
the model in eval mode, i.e. with the gates' deterministic masks, so the validation numbers are those of the
model that export will write. When the references start with an intent token (SLURP manifests, see
:mod:`fairseq_prune.text`), validation also reports ``intent_acc``: the share of utterances whose greedy CTC
hypothesis starts with the reference intent.

Training steps draw wav2vec2's time/channel masks and layerdrop from NumPy's global generator, which fairseq
does not reseed per update (it does reseed torch's, which drives dropout and the gates' samples). This task
seeds NumPy from ``(seed, update, rank)`` for each step, so that a run resumed from ``checkpoint_last.pt``
follows the same trajectory as an uninterrupted one.

The budget of criterion ``ctc_pruning`` is checked against the model when the criterion is built, before
training starts (an unreachable target stops the run before fairseq writes anything into ``save_dir``).

After each optimizer step the gates' ``log_alpha`` are projected back into their range
(``model.gate_log_alpha_limit``), which keeps every gate within reach of the sparsity constraint.

Like fairseq's task copies the ``w2v_args`` the model read from ``model.w2v_path`` into the run's config, this
task copies the per-layer sizes the model adopted from an exported ``w2v_path`` (fine-tuning a pruned model), so
that the run's checkpoints describe the compact model they hold.
"""
from dataclasses import dataclass

import torch.distributed as dist
from fairseq import metrics
from fairseq.data import data_utils
from fairseq.logging.meters import safe_round
from fairseq.tasks import register_task
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask
from ..io.errors import one_line_errors
from ..text import greedy_units, intent_counts, target_words, units_to_words
from ..layer_sizes import LayerSizes
from ..models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning


@dataclass
class AudioPruningConfig(AudioFinetuningConfig):
    pass


def _budget_penalty(meters) -> float:
    """0 for a model within its budget (or without one); otherwise 1000 + 1000 x how far its exported cost
    ratio is over the final target, so that out-of-budget models rank behind every model within it, and the
    closest to the budget first among themselves."""
    if "det_within_budget" not in meters or meters["det_within_budget"].avg >= 0.5:
        return 0.0
    return 1000.0 + 1000.0 * meters["det_over_budget"].avg


class _OutputRecorder:
    """Stands in for the model during a validation step and keeps what its forward returned, so that intent
    accuracy is computed from the same forward pass as the criterion's loss."""

    def __init__(self, model) -> None:
        self._model = model
        self.net_output = None

    def __call__(self, *args, **kwargs):
        self.net_output = self._model(*args, **kwargs)
        return self.net_output

    def __getattr__(self, name):
        return getattr(self._model, name)


@register_task("audio_pruning", dataclass=AudioPruningConfig)
class AudioPruningTask(AudioFinetuningTask):
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        with data_utils.numpy_seed(self.cfg.seed, update_num, rank):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def build_model(self, model_cfg, from_checkpoint=False):
        model = super().build_model(model_cfg, from_checkpoint)  # copies w2v_args back into the run's config
        # so do the per-layer sizes adopted from an exported model.w2v_path: the run's checkpoints must know them
        if isinstance(model, Wav2Vec2CtcPruning):
            LayerSizes.from_cfg(model.cfg).write_cfg(model_cfg)
        self._model = model  # for build_criterion, which fairseq's train.py calls next
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        """fairseq's, then the budget checked against the model built before (fairseq's ``train.py`` builds the
        model first): a target the model cannot reach is refused before training starts, i.e. before fairseq
        could write a ``crash.pt`` or any checkpoint."""
        criterion = super().build_criterion(cfg, from_checkpoint)
        model = getattr(self, "_model", None)
        if model is not None and hasattr(criterion, "check_budget"):
            with one_line_errors():
                criterion.check_budget(model)
        return criterion

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        inner = model
        while hasattr(inner, "module"):
            inner = inner.module
        w2v = getattr(getattr(inner, "w2v_encoder", None), "w2v_model", None)
        if hasattr(w2v, "constrain_gates_"):
            w2v.constrain_gates_()

    def valid_step(self, sample, model, criterion):
        recorder = _OutputRecorder(model)
        loss, sample_size, logging_output = super().valid_step(sample, recorder, criterion)
        if recorder.net_output is not None and "target" in sample:
            correct, total = self._intent_counts(recorder.net_output, sample, model, criterion)
            if total:
                logging_output["_intent_correct"] = correct
                logging_output["_intent_total"] = total
        return loss, sample_size, logging_output

    def _intent_counts(self, net_output, sample, model, criterion):
        lprobs = model.get_normalized_probs(net_output, log_probs=True).transpose(0, 1)  # B x T x V
        padding = net_output.get("padding_mask")
        lengths = (~padding).long().sum(-1) if padding is not None else None
        blank = getattr(criterion, "blank_idx", 0)
        post = getattr(criterion, "post_process", "letter")
        d = self.target_dictionary
        hyps = [units_to_words(d, u, post) for u in greedy_units(lprobs, lengths, blank)]
        refs = [target_words(d, t, post) for t in sample["target"]]
        return intent_counts(zip(hyps, refs))

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        total = sum(log.get("_intent_total", 0) for log in logging_outputs)
        if total > 0:
            correct = sum(log.get("_intent_correct", 0) for log in logging_outputs)
            metrics.log_scalar("_intent_correct", correct)
            metrics.log_scalar("_intent_total", total)
            metrics.log_derived(
                "intent_acc",
                lambda meters: safe_round(
                    meters["_intent_correct"].sum * 100.0 / meters["_intent_total"].sum, 3
                )
                if meters["_intent_total"].sum > 0
                else float("nan"),
            )
        # checkpoint_best among the models that meet the budget: a model outside it (criterion ctc_pruning's
        # det_within_budget = 0) scores WER + penalty and intent accuracy - penalty (_budget_penalty). Without
        # that statistic (a dense run, plain ctc criterion) these equal wer / intent_acc.
        if sum(log.get("w_total", 0) for log in logging_outputs) > 0:
            metrics.log_derived(
                "wer_in_budget",
                lambda meters: safe_round(
                    meters["_w_errors"].sum * 100.0 / meters["_w_total"].sum + _budget_penalty(meters), 3
                )
                if meters["_w_total"].sum > 0
                else float("nan"),
            )
        if total > 0:
            metrics.log_derived(
                "intent_acc_in_budget",
                lambda meters: safe_round(
                    meters["_intent_correct"].sum * 100.0 / meters["_intent_total"].sum - _budget_penalty(meters),
                    3,
                )
                if meters["_intent_total"].sum > 0
                else float("nan"),
            )
