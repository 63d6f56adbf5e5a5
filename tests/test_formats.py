"""Checkpoints made before the package moved into stages still work (issue #26: checkpoint formats unchanged): the
start model shipped on 2026-12-04 (a fairseq wav2vec_ctc checkpoint) is read by fairseq's own loader and by the
plugin's, starts a gated model whose gates-open output is fairseq's, and that model exports exactly."""
import os
import shutil

import torch
from fairseq import checkpoint_utils

from fairseq_prune.export.prune import prune
from fairseq_prune.io.checkpoints import load_w2v_source, read_checkpoint
from helpers import REPO, build_gated, padded_batch, write_noise_corpus

SHIPPED = os.path.join(REPO, "assets", "start_model", "wav2vec_ctc_mini.pt")
ALL_GATES = dict(prune_conv_channels=True, prune_attention_heads=True, prune_attention_layers=True,
                 prune_ffn_units=True, prune_ffn_layers=True)


def test_the_start_model_shipped_before_the_move_loads_starts_pruning_and_exports(tmp_path):
    data = write_noise_corpus(str(tmp_path / "data"), {"train": 2, "valid": 2})
    shutil.copyfile(os.path.join(os.path.dirname(SHIPPED), "dict.ltr.txt"), os.path.join(data, "dict.ltr.txt"))
    assert read_checkpoint(SHIPPED)["cfg"].model._name == "wav2vec_ctc"
    assert load_w2v_source(SHIPPED).proj_state is not None  # the output layer comes along

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([SHIPPED], arg_overrides={"data": data})
    ref = models[0].eval()
    ours = build_gated(SHIPPED, data, **ALL_GATES).eval()
    x, pad = padded_batch([16000, 9000])
    with torch.no_grad():
        a = ref.get_logits(ref(source=x, padding_mask=pad))
        b = ours.get_logits(ours(source=x, padding_mask=pad))
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b)) and not finite.all()
        assert (a[finite] - b[finite]).abs().max().item() <= 1e-5
        compact = prune(ours, ours.cfg).model.eval()
        c = compact.get_logits(compact(source=x, padding_mask=pad))
    assert (c[finite] - b[finite]).abs().max().item() <= 1e-4
