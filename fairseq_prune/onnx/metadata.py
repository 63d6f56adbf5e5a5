"""What ``fairseq-prune-onnx`` stores in an ONNX model's ``metadata_props`` so that decoding needs nothing else.

Keys (all values are strings; lists and configs are JSON):

==========================  ========================================================================================
``fairseq_prune.format``    ``1`` (marks a file written by fairseq-prune-onnx)
``model``                   fairseq model name of the source checkpoint (``wav2vec2_ctc_pruning``, ``wav2vec_ctc``)
``source``                  the checkpoint it was exported from (absolute path)
``output``                  ``log_probs`` or ``logits``: what the first output holds, ``(batch, frames, vocab)``
``padding_mask_input``      ``true`` when the graph takes ``padding_mask`` ``(batch, samples)``, True at padding
``dictionary``              the output units in index order (fairseq's ``Dictionary.symbols``, specials included)
``blank_index``             the CTC blank's index (``<ctc_blank>`` if present, else ``<s>``), as fairseq's decoders
``silence_index``           the word boundary's index (``<sep>``, else ``|``, else ``</s>``)
``post_process``            fairseq's units -> words rule (``letter``, ``sentencepiece``, ...)
``labels``                  the label extension the model was trained on (``ltr``, ...)
``intents``                 intent tokens (SLURP-style labels start with one), ``[]`` when there are none
``sample_rate``             the audio rate the model expects (16000)
``normalize``               ``true`` when each utterance must be normalised to zero mean, unit variance first
``fairseq_task``            the checkpoint's task config (fairseq-prune-infer reads manifests with it)
``conv_layers``             ``[channels, kernel, stride]`` of each convolution of the feature extractor: the model's
                            receptive field, the shortest audio it decodes (optional: older files lack it)
==========================  ========================================================================================
"""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

from fairseq.data import Dictionary

from ..io.errors import PluginError
from ..text import blank_index, is_intent, silence_index

FORMAT_KEY = "fairseq_prune.format"
FORMAT_VERSION = "1"


class OnnxModelError(PluginError):
    """A file that is not a model written by fairseq-prune-onnx, or inconsistent inputs to one (names the file)."""


def dictionary_from_symbols(symbols: List[str], where: str) -> Dictionary:
    """The fairseq ``Dictionary`` with exactly these symbols (as ``Dictionary.load`` builds it from a
    ``dict.*.txt``: the four specials first, then the file's symbols)."""
    d = Dictionary()
    for s in symbols[d.nspecial:]:
        d.add_symbol(s)
    if d.symbols != list(symbols):
        raise OnnxModelError(f"{where}: the stored dictionary is not a fairseq dictionary (specials or duplicates)")
    return d


def read_intents(dict_file: str, dictionary: Dictionary) -> List[str]:
    """The intent inventory: ``intents.json`` next to the dictionary (``manifests/slurp.py`` writes it) if there
    is one, else the dictionary's symbols that are intent tokens (``scenario_action``)."""
    inventory = os.path.join(os.path.dirname(os.path.abspath(dict_file)), "intents.json")
    if not os.path.isfile(inventory):
        return [s for s in dictionary.symbols if is_intent(s)]
    try:
        with open(inventory, encoding="utf-8") as f:
            intents = [str(i) for i in json.load(f)["intents"]]
    except (ValueError, KeyError, TypeError) as e:
        raise OnnxModelError(f"{inventory}: not an intent inventory with an 'intents' list ({e})") from e
    missing = [i for i in intents if i not in dictionary.indices]
    if missing:
        raise OnnxModelError(f"{inventory}: intents not in {dict_file}: {' '.join(missing[:5])}")
    return intents


@dataclass
class OnnxMetadata:
    """The metadata of a fairseq-prune ONNX model (see the module docstring for the keys)."""

    model: str
    source: str
    log_probs: bool
    padding_mask_input: bool
    symbols: List[str]
    post_process: str = "letter"
    labels: str = "ltr"
    intents: List[str] = field(default_factory=list)
    sample_rate: int = 16000
    normalize: bool = False
    fairseq_task: Dict[str, Any] = field(default_factory=dict)
    conv_layers: List[List[int]] = field(default_factory=list)

    def dictionary(self) -> Dictionary:
        return dictionary_from_symbols(self.symbols, self.source)

    @property
    def blank_index(self) -> int:
        return blank_index(self.dictionary())

    def to_props(self) -> Dict[str, str]:
        d = self.dictionary()
        return {
            FORMAT_KEY: FORMAT_VERSION,
            "model": self.model,
            "source": self.source,
            "output": "log_probs" if self.log_probs else "logits",
            "padding_mask_input": str(self.padding_mask_input).lower(),
            "dictionary": json.dumps(self.symbols, ensure_ascii=False),
            "blank_index": str(blank_index(d)),
            "silence_index": str(silence_index(d)),
            "post_process": self.post_process,
            "labels": self.labels,
            "intents": json.dumps(self.intents, ensure_ascii=False),
            "sample_rate": str(self.sample_rate),
            "normalize": str(self.normalize).lower(),
            "fairseq_task": json.dumps(self.fairseq_task),
            "conv_layers": json.dumps(self.conv_layers),
        }


def read_metadata(props: Mapping[str, str], path: str) -> OnnxMetadata:
    """:class:`OnnxMetadata` from an ONNX model's ``metadata_props`` (``path`` names the file in errors)."""
    if props.get(FORMAT_KEY) != FORMAT_VERSION:
        raise OnnxModelError(f"{path}: not an ONNX model written by fairseq-prune-onnx (no {FORMAT_KEY} metadata)")
    try:
        meta = OnnxMetadata(
            model=props["model"],
            source=props["source"],
            log_probs=props["output"] == "log_probs",
            padding_mask_input=props["padding_mask_input"] == "true",
            symbols=json.loads(props["dictionary"]),
            post_process=props["post_process"],
            labels=props["labels"],
            intents=json.loads(props["intents"]),
            sample_rate=int(props["sample_rate"]),
            normalize=props["normalize"] == "true",
            fairseq_task=json.loads(props["fairseq_task"]),
            conv_layers=json.loads(props.get("conv_layers", "[]")),
        )
    except (KeyError, ValueError) as e:
        raise OnnxModelError(f"{path}: incomplete fairseq-prune metadata ({type(e).__name__}: {e})") from e
    meta.dictionary()  # fails early on an inconsistent dictionary
    return meta

