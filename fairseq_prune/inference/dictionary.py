"""The manifest's dictionary against the model's, for every kind of checkpoint (:func:`check_dictionary`): a
dictionary of the right size with symbols in another order decodes without any error, only wrongly, and one of
another size fails deep in fairseq's loader.

* an exported model stores its dictionary (``target_dictionary``): the manifest's must hold the same symbols in
  the same order, or decoding is refused;
* a checkpoint of fairseq's trainer stores one in its ``task_state``: fairseq decodes with that one whatever the
  manifest's says, so a manifest dictionary that differs is named in a warning;
* a checkpoint that stores none (fairseq's ``wav2vec_ctc`` written by other tools, gated checkpoints written
  outside fairseq's trainer): the model's output layer must have as many units as the dictionary (refused
  otherwise), and the dictionary is compared with the training run's ``dict.{labels}.txt`` where that is found
  (:mod:`fairseq_prune.io.dictionaries`); a warning when it differs, or when nothing can prove the order.
"""
import itertools
import logging
import os
from typing import Any, Dict, List

from ..io.dictionaries import find_dictionary_file, looked_in, stored_symbols
from .inputs import InferenceError

logger = logging.getLogger(__name__)
_PROJ_WEIGHT = "w2v_encoder.proj.weight"


def _symbol(symbols: List[str], i: int) -> str:
    return repr(symbols[i]) if i < len(symbols) else "missing"


def first_difference(a: List[str], b: List[str]) -> int:
    """The first unit at which two symbol lists differ (they must differ)."""
    return next(i for i, (x, y) in enumerate(itertools.zip_longest(a, b)) if x != y)


def read_symbols(dict_file: str) -> List[str]:
    """The symbols (specials first) of a fairseq ``dict.*.txt``; an :class:`InferenceError` for another file."""
    from fairseq.data import Dictionary

    try:
        return list(Dictionary.load(dict_file).symbols)
    except (ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise InferenceError(f"{dict_file}: not a fairseq dictionary ({e})") from e


def check_dictionary(checkpoint: str, state: Dict[str, Any], dict_file: str) -> None:
    """Check ``dict_file`` against checkpoint ``state`` as the module's docstring says."""
    given = read_symbols(dict_file)
    exported = state.get("target_dictionary", None)
    if exported:
        model = list(exported["symbols"])
        if given != model:
            i = first_difference(given, model)
            raise InferenceError(
                f"{dict_file} is not the dictionary {checkpoint} was exported with ({exported.get('file')}): unit "
                f"{i} is {_symbol(given, i)} in {dict_file} but {_symbol(model, i)} in the model's; decode with the "
                "model's dictionary"
            )
        return
    trained = stored_symbols(state)
    if trained:
        if given != trained[0]:
            i = first_difference(given, trained[0])
            logger.warning("%s differs from the dictionary %s stores (%s; unit %d is %s here but %s there): "
                           "decoding with the stored one, as fairseq does", dict_file, checkpoint, trained[1], i,
                           _symbol(given, i), _symbol(trained[0], i))
        return
    check_output_size(checkpoint, state, dict_file, given)
    compare_with_training_dictionary(checkpoint, state, dict_file, given)


def check_output_size(checkpoint: str, state: Dict[str, Any], dict_file: str, given: List[str]) -> None:
    """The CTC output layer of the checkpoint must have one unit per symbol of ``dict_file``."""
    weight = (state.get("model", None) or {}).get(_PROJ_WEIGHT, None)
    if weight is not None and weight.shape[0] != len(given):
        raise InferenceError(
            f"{checkpoint}: the model does not fit {dict_file} (not the dictionary it was trained with?): size "
            f"mismatch: its CTC output layer has {weight.shape[0]} units, the dictionary {len(given)} symbols "
            "(specials included)"
        )


def compare_with_training_dictionary(checkpoint: str, state: Dict[str, Any], dict_file: str,
                                     given: List[str]) -> None:
    """A warning when ``dict_file`` differs from the training run's dictionary, or when that is not found (then
    only the size was checked, not the order of the symbols)."""
    labels = os.path.basename(dict_file)[len("dict."):-len(".txt")]
    found, candidates = find_dictionary_file(checkpoint, state, labels)
    if found is None:
        logger.warning("%s stores no dictionary and its training run's is not found (%s): %s has as many symbols as "
                       "the model has outputs, but nothing can prove their order", checkpoint, looked_in(candidates),
                       dict_file)
        return
    if os.path.samefile(found, dict_file):
        return
    try:
        trained = read_symbols(found)
    except InferenceError as e:
        logger.warning("%s; the order of %s's symbols is not checked", e, dict_file)
        return
    if trained != given:
        i = first_difference(given, trained)
        logger.warning("%s differs from %s, the dictionary of the run that trained %s (unit %d is %s here but %s "
                       "there): the hypotheses are wrong unless the model was trained with %s", dict_file, found,
                       checkpoint, i, _symbol(given, i), _symbol(trained, i), dict_file)
