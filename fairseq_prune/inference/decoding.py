"""CTC decoders: greedy (Viterbi, best path) decoding into fairseq's word strings, used in training and by
``fairseq-prune-infer``, and the lexicon beam search with a KenLM language model (torchaudio's ``ctc_decoder``).

A decoder takes ``(B, T, V)`` emissions and ``(B,)`` valid frames and returns one :class:`Hypothesis` per
utterance.
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from ..text import blank_index, greedy_units, silence_index
from .inputs import InferenceError, check_file


@dataclass
class Hypothesis:
    """One decoded utterance: unit indices, and the words when the decoder produces words (beam search)."""

    tokens: List[int]
    words: Optional[List[str]] = None


#: a decoder: ``(B, T, V)`` emissions and ``(B,)`` valid frames -> one hypothesis per utterance
Decoder = Callable[[torch.Tensor, torch.Tensor], List[Hypothesis]]


class ViterbiDecoder:
    """Greedy (best path) CTC decoding of each utterance's valid frames."""

    name = "viterbi"

    def __init__(self, dictionary) -> None:
        self.blank = blank_index(dictionary)

    def __call__(self, emissions: torch.Tensor, lengths: torch.Tensor) -> List[Hypothesis]:
        return [Hypothesis(u) for u in greedy_units(emissions, lengths, self.blank)]


@dataclass
class BeamOptions:
    """Options of the lexicon beam search with a KenLM language model (defaults: those of fairseq's infer.py)."""

    kenlm_model: str
    lexicon: str
    beam: int = 5
    beam_threshold: float = 50.0
    beam_size_token: Optional[int] = None
    lm_weight: float = 2.0
    word_score: float = -1.0
    unk_weight: float = -math.inf
    sil_weight: float = 0.0


#: torchaudio ``ctc_decoder`` parameter -> the :class:`BeamOptions` field that sets it (fairseq's name)
CTC_DECODER_PARAMS = {
    "lexicon": "lexicon",
    "lm": "kenlm_model",
    "beam_size": "beam",
    "beam_size_token": "beam_size_token",
    "beam_threshold": "beam_threshold",
    "lm_weight": "lm_weight",
    "word_score": "word_score",
    "unk_score": "unk_weight",
    "sil_score": "sil_weight",
}


def import_ctc_decoder() -> Callable:
    """torchaudio's ``ctc_decoder`` factory, or an :class:`InferenceError` saying how to install what it needs."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401  (torchaudio's CTC decoder is built on it)
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as e:
        raise InferenceError(
            "beam-search decoding (--kenlm-model/--lexicon) needs the flashlight-text package, which is not "
            "installed: pip install 'fairseq-prune[lm]' (or pip install flashlight-text)"
        ) from e
    return ctc_decoder


def check_lexicon(path: str, dictionary) -> None:
    """Every spelling token of the lexicon must be a unit of the model's dictionary (flashlight would otherwise
    fail without naming the word)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise InferenceError(f"{path}:{lineno}: lexicon line needs a word and its spelling: {line.strip()!r}")
            for token in parts[1:]:
                if token not in dictionary.indices:
                    raise InferenceError(
                        f"{path}:{lineno}: spelling of {parts[0]!r} uses {token!r}, which is not in the model's "
                        "dictionary"
                    )


class KenLMBeamDecoder:
    """Lexicon-constrained CTC beam search with a KenLM (binary or ARPA) word LM: torchaudio's ``ctc_decoder``.

    Emissions are log-softmax normalised. (fairseq's KenLM decoder feeds raw logits; the two differ per frame by
    a constant shared by all hypotheses, so the search is the same.) Like fairseq's, the search runs over all
    frames of the padded batch when the blank is index 0: ``get_logits`` has set the padded frames to index 0, so
    they cannot change the words, and the unit strings (which can end in one more ``|``) match fairseq's. With
    another blank index the search stops at each utterance's last valid frame.
    """

    name = "kenlm"

    def __init__(self, dictionary, options: BeamOptions) -> None:
        ctc_decoder = import_ctc_decoder()
        check_file(options.kenlm_model, "--kenlm-model")
        check_file(options.lexicon, "--lexicon")
        check_lexicon(options.lexicon, dictionary)
        tokens = [dictionary[i] for i in range(len(dictionary))]
        self.all_frames = blank_index(dictionary) == 0
        try:
            search = {param: getattr(options, name) for param, name in CTC_DECODER_PARAMS.items()}
            self.decoder = ctc_decoder(
                tokens=tokens,
                nbest=1,
                blank_token=tokens[blank_index(dictionary)],
                sil_token=tokens[silence_index(dictionary)],
                unk_word=dictionary.unk_word,
                **search,
            )
        except Exception as e:  # flashlight/KenLM report unreadable files as plain RuntimeErrors
            raise InferenceError(
                f"cannot build the beam-search decoder from {options.kenlm_model} and {options.lexicon} "
                f"({type(e).__name__}: {e})"
            ) from e

    def __call__(self, emissions: torch.Tensor, lengths: torch.Tensor) -> List[Hypothesis]:
        lprobs = torch.log_softmax(emissions.float(), dim=-1).cpu().contiguous()
        results = self.decoder(lprobs, None if self.all_frames else lengths.cpu().to(torch.int32))
        out = []
        for nbest in results:
            if not nbest:
                out.append(Hypothesis([], []))
                continue
            out.append(Hypothesis(nbest[0].tokens.tolist(), list(nbest[0].words)))
        return out
