"""The fault suites' checkpoints (test_faults_*; registered as a plugin in conftest): a noise corpus of six test
utterances, a plain fairseq CTC checkpoint and a gated wav2vec2_ctc_pruning one on it, and the gated one exported.
Module-scoped, as each suite had them: a suite that edits a file gets its own copy."""
import pytest

from helpers import write_noise_corpus
from infer_fixtures import write_ctc_checkpoint, write_plain_ctc_checkpoint

GATES = dict(prune_conv_channels=True, prune_attention_heads=True, prune_ffn_units=True)
NO_MASKING = dict(mask_prob=0.0, mask_channel_prob=0.0, feature_grad_mult=1.0)
#: utterances of the ``corpus`` fixture's test subset
TEST_UTTERANCES = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_noise_corpus(str(tmp_path_factory.mktemp("corpus")), {"test": TEST_UTTERANCES})


@pytest.fixture(scope="module")
def plain_ctc(tmp_path_factory, small_w2v, corpus) -> str:
    """fairseq's own wav2vec2 CTC model (no gates) on ``corpus``."""
    return write_plain_ctc_checkpoint(str(tmp_path_factory.mktemp("plain") / "plain_ctc.pt"), small_w2v, corpus)


@pytest.fixture(scope="module")
def gated(tmp_path_factory, small_w2v, corpus) -> str:
    """A wav2vec2_ctc_pruning checkpoint with gates, as written outside fairseq's trainer (no task_state), its task
    on ``corpus`` (whose dictionary export stores)."""
    from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig

    path = str(tmp_path_factory.mktemp("gated") / "gated.pt")
    return write_ctc_checkpoint(path, Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, **GATES, **NO_MASKING), corpus)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, gated) -> str:
    from fairseq_prune.cli import export as export_cli

    out = str(tmp_path_factory.mktemp("exported") / "exported.pt")
    export_cli.cli_main([gated, out])
    return out
