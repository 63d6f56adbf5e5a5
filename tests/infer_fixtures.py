"""Files for the decoding tests: a plain fairseq ``wav2vec_ctc`` checkpoint, a tiny word LM and a lexicon, and
readers of the result files fairseq's infer.py writes."""
import json
import os
import re
from typing import Dict, List, Sequence, Tuple

import torch
from omegaconf import OmegaConf

from helpers import WORDS, root_cfg

#: a hand-written bigram LM over the test corpus' words in ARPA format (SEVEN is left out: it is unknown to the
#: LM but in the lexicon)
ARPA = """\\data\\
ngram 1=12
ngram 2=3

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.3
-1.0\t</s>
-1.0\talarm_set\t-0.3
-1.0\tplay_music\t-0.3
-1.0\tHELLO\t-0.3
-1.0\tWORLD\t-0.3
-1.2\tCAT\t-0.3
-1.2\tDOG\t-0.3
-1.0\tTEST\t-0.3
-1.1\tGREEN\t-0.3
-1.1\tTREE\t-0.3

\\2-grams:
-0.2\t<s> alarm_set
-0.2\t<s> play_music
-0.3\tHELLO WORLD

\\end\\
"""


def write_lm_files(folder: str, intents: Sequence[str]) -> Tuple[str, str]:
    """Write ``lm.arpa`` and ``lexicon.txt`` (intent tokens spelled as themselves, words letter by letter, each
    spelling ending with the word boundary ``|``); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    arpa = os.path.join(folder, "lm.arpa")
    lexicon = os.path.join(folder, "lexicon.txt")
    with open(arpa, "w") as f:
        f.write(ARPA)
    with open(lexicon, "w") as f:
        for intent in intents:
            f.write(f"{intent}\t{intent} |\n")
        for word in WORDS:
            f.write(f"{word}\t{' '.join(word)} |\n")
    return arpa, lexicon


def write_plain_ctc_checkpoint(path: str, w2v_path: str, data: str, seed: int = 0) -> str:
    """A fairseq ``wav2vec_ctc`` checkpoint (fairseq's own model class, no fairseq-prune code) on the wav2vec2
    checkpoint ``w2v_path`` with a randomly initialised CTC layer over ``data``'s letter dictionary."""
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig

    return write_ctc_checkpoint(path, Wav2Vec2CtcConfig(w2v_path=w2v_path, mask_prob=0.0, mask_channel_prob=0.0),
                                data, seed)


def write_ctc_checkpoint(path: str, model_dc, data: str, seed: int = 0) -> str:
    """A checkpoint of the CTC model that config ``model_dc`` (e.g. ``Wav2Vec2CtcPruningConfig`` with gates)
    describes, as fine-tuning on ``data`` starts it (``cfg.model.w2v_args`` filled from its ``w2v_path``), with
    a ``ctc`` criterion and an audio_finetuning task."""
    from fairseq import tasks

    cfg = root_cfg(model_dc, data)
    cfg.criterion = OmegaConf.create({"_name": "ctc", "post_process": "letter"})
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)  # fills cfg.model.w2v_args from w2v_path, as fine-tuning does
    state = {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "optimizer_history": [
            {"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam", "lr_scheduler_state": {},
             "num_updates": 0}
        ],
        "extra_state": {},
        "last_optimizer_state": None,
    }
    torch.save(state, path)
    return path


LINE_RE = re.compile(r"^(.*) \(None-(\d+)\)$")


def read_result_file(path: str) -> List[Tuple[int, str]]:
    """``(utterance id, text)`` per line of a hypo/ref file."""
    out = []
    with open(path) as f:
        for line in f:
            m = LINE_RE.match(line.rstrip("\n"))
            assert m, f"{path}: line not in fairseq's format: {line!r}"
            out.append((int(m.group(2)), m.group(1)))
    return out


def read_summary(results: str) -> Dict:
    with open(os.path.join(results, "summary.json")) as f:
        return json.load(f)


def fairseq_wer_file(results: str) -> Tuple[float, int, int]:
    """``(WER, errors, reference words)`` from the ``wer`` file fairseq's infer.py writes."""
    with open(os.path.join(results, "wer")) as f:
        wer = float(f.readline().split()[1])
        errors, words = (int(x) for x in f.readline().split("=")[1].split("/"))
    return wer, errors, words
