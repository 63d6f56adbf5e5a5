"""The experiments around the plugin: preparing the mini corpora, running a method with fairseq-hydra-train, export
and decoding (through the project's command lines), reading fairseq's logs, timing, tables and plots.

Used by ``scripts/`` (demo, study, start model, pre-trained model) and ``benchmarks/``; it never imports either.
It runs the commands in a checkout (the recipes in ``examples/`` and the corpus scripts in ``manifests/``), so it
is installed editable with the project (``make setup``). torch, fairseq and fairseq_prune are imported where they
are used, so that the scripts' ``--help`` and the pure modules load without them. Modules:

* :mod:`experiments.common`: the repository, the shipped models, the mini wav2vec2, logging and commands
* :mod:`experiments.corpora`: the two synthetic mini corpora and their manifests
* :mod:`experiments.fairseq_log`: reading fairseq's JSON log lines (pure functions)
* :mod:`experiments.protocols`: the demo's and the study's protocols and pruning-schedule options
* :mod:`experiments.runner`: train, export, decode one method (``run_method``)
* :mod:`experiments.checkpoints`: random wav2vec2 pre-training checkpoints, shipping a trained one
* :mod:`experiments.timing`: interleaved CPU timing, speed-ups against a dense model
* :mod:`experiments.report`: result tables and the accuracy-vs-computation plot
"""
