"""Corpus preparation for fairseq: LibriSpeech and SLURP manifests, and an espeak-ng corpus generator.

Scripts (each runs as ``python manifests/<name>.py`` or ``python -m manifests.<name>``):

* :mod:`manifests.librispeech` — ``{subset}.tsv/.ltr/.wrd`` + ``dict.ltr.txt`` from a LibriSpeech folder,
  identical to fairseq's ``wav2vec_manifest.py`` + ``libri_labels.py``;
* :mod:`manifests.slurp` — the same files from a SLURP checkout, labels starting with the intent token;
* :mod:`manifests.synthesize` — small corpora in both source layouts from espeak-ng speech.
* :mod:`manifests.unlabeled` — an unlabeled corpus for pre-training.

Shared by them: :mod:`manifests.common` (``ManifestError``, audio checks and conversion, labels, dictionaries, skips,
summaries, ``--dest``), :mod:`manifests.espeak` (espeak-ng speech as 16 kHz FLAC), :mod:`manifests.synth_text` (the
sentences and commands spoken). Errors, signals and all-or-nothing output into ``--dest`` are the plugin's
(:mod:`fairseq_prune.io.signals`, :mod:`fairseq_prune.io.staging`); importing it imports torch and fairseq, a few
seconds of start-up.

See ``manifests/README.md``.
"""
