"""The tests' shared fixtures: the small wav2vec2 checkpoint and noise corpus here, and the corpus scripts'
espeak-ng corpora (manifest_fixtures) and the fault suites' checkpoints (fault_fixtures), registered as plugins:
every test module gets them by name. The ONNX suites' fixtures (onnx_fixtures) stay with the two modules that
skip without onnxruntime."""
import pytest

from helpers import SMALL_W2V, write_noise_corpus

pytest_plugins = ["manifest_fixtures", "fault_fixtures"]


@pytest.fixture(scope="session")
def small_w2v(tmp_path_factory) -> str:
    """A 2-layer wav2vec2 pre-training checkpoint in fairseq's format (random weights)."""
    from experiments.checkpoints import write_wav2vec2_checkpoint

    path = str(tmp_path_factory.mktemp("w2v") / "small.pt")
    write_wav2vec2_checkpoint(path, SMALL_W2V, seed=0)
    return path


@pytest.fixture(scope="session")
def noise_data(tmp_path_factory) -> str:
    """A manifest folder with train (16) and valid (6) noise utterances and letter labels."""
    return write_noise_corpus(str(tmp_path_factory.mktemp("noise")), {"train": 16, "valid": 6})
