"""What every experiment needs: where the checkout and its shipped models are, the mini wav2vec2's shape, the
progress log and running a command of the project's environment."""
import os
import subprocess
import sys
from typing import Dict, List, Optional

#: the checkout: the experiments run its recipes (examples/) and corpus scripts (manifests/)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

#: the mini wav2vec2 (fairseq Wav2Vec2Config fields): 4 Transformer layers of 256, 4 heads of 64, FFN 1024,
#: 7 conv layers of 128 channels. Like wav2vec2-base, the CNN is a large share of the compute (41% of the MACs
#: at 10 s; base: 33%) and a small share of the parameters (7%; base: 4.5%).
MINI_W2V = dict(
    encoder_layers=4,
    encoder_embed_dim=256,
    encoder_ffn_embed_dim=1024,
    encoder_attention_heads=4,
    conv_feature_layers="[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2",
    conv_pos=64,
    conv_pos_groups=16,
)

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
    p = subprocess.run(cmd, cwd=REPO, env=command_env(extra=env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        with open(log_file, "w") as f:
            f.write(p.stdout)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}")
    return p.stdout
