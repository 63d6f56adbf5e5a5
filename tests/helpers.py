"""Shared test utilities: tiny fairseq-format data and checkpoints built with fairseq's own classes."""
import os
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf, open_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)

#: a 2-layer wav2vec2 small enough for unit tests (conv 32 channels -> 64-dim encoder, 4 heads of 16)
SMALL_W2V = dict(
    encoder_layers=2,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_attention_heads=4,
    conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    conv_pos=16,
    conv_pos_groups=4,
)

LETTERS = list("|ETAONIHSRDLUMWCFGYPBVKXJQZ'")
WORDS = ["HELLO", "WORLD", "CAT", "DOG", "TEST", "GREEN", "TREE", "SEVEN"]


def write_letter_dict(folder: str, extra_symbols: Optional[List[str]] = None) -> str:
    path = os.path.join(folder, "dict.ltr.txt")
    symbols = LETTERS + list(extra_symbols or [])
    with open(path, "w") as f:
        for i, s in enumerate(symbols):
            f.write(f"{s} {1000 - i}\n")
    return path


def words_to_ltr(words: List[str]) -> str:
    return " ".join(" | ".join(" ".join(w) for w in words).split()) + " |"


def write_noise_corpus(folder: str, splits: Dict[str, int], seed: int = 0, intents: Optional[List[str]] = None) -> str:
    """A fairseq manifest folder (``{split}.tsv/.ltr/.wrd`` + ``dict.ltr.txt``) of random-noise audio with random
    word labels (optionally starting with an intent token); enough to run training and decoding code paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_letter_dict(folder, intents)
    for split, n in splits.items():
        with open(os.path.join(folder, f"{split}.tsv"), "w") as tsv, open(
            os.path.join(folder, f"{split}.ltr"), "w"
        ) as ltr, open(os.path.join(folder, f"{split}.wrd"), "w") as wrd:
            tsv.write(os.path.abspath(folder) + "\n")
            for i in range(n):
                length = int(rng.integers(8000, 24000))
                audio = (rng.standard_normal(length) * 0.1).astype("float32")
                name = f"{split}_{i}.flac"
                sf.write(os.path.join(folder, name), audio, 16000)
                words = list(rng.choice(WORDS, 2))
                tsv.write(f"{name}\t{length}\n")
                prefix = []
                if intents:
                    prefix = [intents[i % len(intents)]]
                wrd.write(" ".join(prefix + words) + "\n")
                ltr.write(" ".join(prefix + (["|"] if prefix else []) + [words_to_ltr(words)]) + "\n")
    return folder


def model_name(model_dc) -> str:
    """The fairseq registry name of a model config dataclass instance."""
    import fairseq_prune  # noqa: F401 (registers the model)
    from fairseq.models import MODEL_DATACLASS_REGISTRY

    return next(name for name, dc in MODEL_DATACLASS_REGISTRY.items() if dc is type(model_dc))


def root_cfg(model_dc, data: str, labels: str = "ltr", task: str = "audio_finetuning"):
    """A full FairseqConfig holding ``model_dc`` and an audio_finetuning (or audio_pruning) task (interpolations
    resolve)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig

    from fairseq_prune.tasks.audio_pruning import AudioPruningConfig

    task_dc = AudioPruningConfig if task == "audio_pruning" else AudioFinetuningConfig
    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.task = OmegaConf.structured(task_dc(data=data, labels=labels, normalize=False))
        cfg.task._name = task
        cfg.model = OmegaConf.structured(model_dc)
        cfg.model._name = model_name(model_dc)
        cfg.common.cpu = True
    return cfg


def build(model_dc, data: str, task: str = "audio_finetuning"):
    """Build (task, model) from a model dataclass instance the way fairseq does."""
    from fairseq import tasks

    import fairseq_prune  # noqa: F401 (registers the model)

    cfg = root_cfg(model_dc, data, task=task)
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def build_gated(w2v_path: str, data: str, normalize: bool = False, **fields):
    """wav2vec2_ctc_pruning on ``w2v_path`` (any family), built by the task as fairseq-hydra-train builds it, on the
    manifest folder ``data``; ``normalize``: the task's audio normalisation (HuBERT-large style)."""
    from fairseq import tasks
    from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig

    cfg = root_cfg(Wav2Vec2CtcPruningConfig(w2v_path=w2v_path, feature_grad_mult=1.0, **fields), data)
    cfg.task.normalize = normalize
    return tasks.setup_task(cfg.task).build_model(cfg.model)


def padded_batch(lengths: List[int], seed: int = 0):
    """Random audio ``(B, max)`` with zero padding and its padding mask (True at padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), generator=g)
    pad = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
        pad[i, n:] = True
    return x, pad


def run_unchecked(cmd: List[str], cwd: str = REPO, timeout: int = 600,
                  env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run a command of the venv (one thread, stdout and stderr captured apart), whatever its exit status."""
    full_env = _env()
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def run(cmd: List[str], cwd: str = REPO, timeout: int = 600, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run a command of the venv, failing the test with its output when it fails."""
    p = run_unchecked(cmd, cwd, timeout, env)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


MINI_RECIPES = os.path.join(REPO, "examples", "mini")


def log_records(text: str, kind: str) -> List[dict]:
    """The JSON records fairseq logged under ``[kind]`` (train_inner, train, valid)."""
    import json

    out = []
    for line in text.splitlines():
        if f"[{kind}][INFO] - {{" in line:
            out.append(json.loads(line.split(" - ", 1)[1]))
    return out


def hydra_train_command(config: str, data: str, w2v: str, save_dir: str, *overrides: str) -> List[str]:
    """``fairseq-hydra-train --user-dir`` on a mini recipe, with a data folder of ``train``/``valid`` subsets."""
    return [
        "fairseq-hydra-train",
        "--config-dir", MINI_RECIPES,
        "--config-name", config,
        f"common.user_dir={REPO}/fairseq_prune",
        f"task.data={data}",
        f"model.w2v_path={w2v}",
        f"checkpoint.save_dir={save_dir}",
        f"hydra.run.dir={save_dir}/hydra",
        "dataset.train_subset=train",
        "dataset.valid_subset=valid",
        "common.log_interval=10",
        *overrides,
    ]


def hydra_train(config: str, data: str, w2v: str, save_dir: str, *overrides: str, timeout: int = 900) -> str:
    """Train with ``fairseq-hydra-train`` on a mini recipe; returns stdout + stderr."""
    p = run(hydra_train_command(config, data, w2v, save_dir, *overrides), timeout=timeout)
    return p.stdout + p.stderr


def _env() -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    return env


def start(cmd: List[str]) -> subprocess.Popen:
    """Start a command of the venv in the background (one thread), output captured."""
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: int = 900) -> str:
    """Wait for a command started with :func:`start`; fail with its output if it failed."""
    out = p.communicate(timeout=timeout)[0]
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(p.args)} failed ({p.returncode}):\n{out[-8000:]}")
    return out


def copy_manifest(src: str, dst: str) -> str:
    """A copy of a manifest folder whose ``.tsv`` files point at the copied audio."""
    import shutil

    shutil.copytree(src, dst)
    for name in os.listdir(dst):
        if name.endswith(".tsv"):
            tsv = os.path.join(dst, name)
            lines = open(tsv).readlines()
            open(tsv, "w").writelines([os.path.abspath(dst) + "\n"] + lines[1:])
    return dst


def save_finetuned(model, cfg, path: str):
    """Nudge ``model``'s weights (a "fine-tuned" model differs from its pre-trained start) and save it with its
    full config ``cfg`` as fairseq's trainer writes a fine-tuned checkpoint; returns the model in eval mode."""
    import torch
    from omegaconf import OmegaConf

    from fairseq_prune.io.checkpoints import save_atomic

    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "optimizer_history": [{"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {}, "num_updates": 10}],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    save_atomic(state, path, force=True)
    return model.eval()


def criterion_and_batch(small_w2v, noise_data, **crit_kw):
    """A gated model (conv channels, heads, FFN units; no time masking) in training mode, a ctc_pruning criterion
    with ``crit_kw`` and a padded batch of 4 training utterances."""
    from fairseq_prune.criterions.ctc_pruning import CtcPruningCriterion, CtcPruningCriterionConfig
    from fairseq_prune.models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruningConfig

    task, model = build(
        Wav2Vec2CtcPruningConfig(w2v_path=small_w2v, feature_grad_mult=1.0, prune_conv_channels=True,
                                 prune_attention_heads=True, prune_ffn_units=True, apply_mask=False),
        noise_data,
    )
    task.load_dataset("train")
    ds = task.dataset("train")
    sample = ds.collater([ds[i] for i in range(4)])
    crit = CtcPruningCriterion(CtcPruningCriterionConfig(sentence_avg=True, **crit_kw), task)
    return model.train(), crit, sample
