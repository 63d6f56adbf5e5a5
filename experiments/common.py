"""What every experiment needs: where the checkout and its shipped models are, the mini wav2vec2's shape, the
progress log and running a command of the project's environment."""
import os
import subprocess
import sys
from typing import Dict, List, Optional

#: the checkout: the experiments run its recipes (examples/) and corpus scripts (manifests/)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

#: the mini wav2vec2 (fairseq Wav2Vec2Config fields) that assets/pretrained and assets/start_model hold, the one
#: definition of its shape (examples/mini/pretraining.yaml writes the same, a test checks it): 6 Transformer layers
#: of 256, 8 heads of 32, FFN 1024, 7 conv layers of 128 channels; 5.31 M parameters, 4.84 GMACs at 10 s, 32% of
#: them in the CNN (wav2vec2-base: 33%), 48 heads in all.
MINI_W2V = dict(
    encoder_layers=6,
    encoder_embed_dim=256,
    encoder_ffn_embed_dim=1024,
    encoder_attention_heads=8,
    conv_feature_layers="[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2",
    conv_pos=64,
    conv_pos_groups=16,
)
#: the study's small dense control: half the mini model's MACs by design (2.42 of 4.84 GMACs at 10 s, 0.500),
#: the same head width, FFN ratio and CNN share (31%): 5 layers of 192, 6 heads of 32, FFN 768, 88 conv channels;
#: 2.52 M parameters. Pre-trained and fine-tuned with the same recipes as the mini model.
SMALL_DENSE_W2V = dict(
    MINI_W2V,
    encoder_layers=5,
    encoder_embed_dim=192,
    encoder_ffn_embed_dim=768,
    encoder_attention_heads=6,
    conv_feature_layers="[(88, 10, 5)] + [(88, 3, 2)] * 4 + [(88, 2, 2)] * 2",
)
#: the shapes scripts/make_pretrained_model.py can pre-train (--shape)
SHAPES = {"mini": MINI_W2V, "small": SMALL_DENSE_W2V}

#: the mini wav2vec2 fine-tuned with CTC (scripts/make_start_model.py) and the dictionary it was fine-tuned with
START_MODEL = os.path.join(REPO, "assets", "start_model", "wav2vec_ctc_mini.pt")
START_DICT = os.path.join(REPO, "assets", "start_model", "dict.ltr.txt")
#: the self-supervised mini wav2vec2 (scripts/make_pretrained_model.py): the paper's start point
PRETRAINED_MODEL = os.path.join(REPO, "assets", "pretrained", "wav2vec2_mini.pt")


def log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def command_env(threads: int = 0, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a command: warnings off, this interpreter's folder first on PATH (its console scripts),
    ``OMP_NUM_THREADS`` when ``threads`` is set (0: torch's default)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(extra or {}))
    env["PATH"] = os.path.dirname(PY) + os.pathsep + env.get("PATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run(cmd: List[str], log_file: str = None, env: Dict[str, str] = None) -> str:
    """Run a command in the checkout; its output goes to ``log_file`` (if given) and is returned. Fails loudly
    with the tail."""
    from .processes import run as run_child  # in a process group of its own: stopped with the program

    p = run_child(cmd, cwd=REPO, env=command_env(extra=env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        with open(log_file, "w") as f:
            f.write(p.stdout)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    return p.stdout
