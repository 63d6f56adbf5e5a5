"""Corpus preparation for fairseq: LibriSpeech and SLURP manifests, and an espeak-ng corpus generator.

Scripts (each runs as ``python manifests/<name>.py`` or ``python -m manifests.<name>``):

* :mod:`manifests.librispeech` — ``{subset}.tsv/.ltr/.wrd`` + ``dict.ltr.txt`` from a LibriSpeech folder,
  identical to fairseq's ``wav2vec_manifest.py`` + ``libri_labels.py``;
* :mod:`manifests.slurp` — the same files from a SLURP checkout, labels starting with the intent token;
* :mod:`manifests.synthesize` — small corpora in both source layouts from espeak-ng speech.
* :mod:`manifests.unlabeled` — an unlabeled corpus for pre-training.

Shared by them: :mod:`manifests.common` (errors, audio checks and conversion, labels, dictionaries, skips, summaries),
:mod:`manifests.staging` (all-or-nothing output into ``--dest``), :mod:`manifests.espeak` (espeak-ng speech as
16 kHz FLAC), :mod:`manifests.synth_text` (the sentences and commands spoken).

See ``manifests/README.md``.
"""
