"""fairseq-prune: task-specific structured pruning (HJ-Pruning) of wav2vec2 models, as a fairseq plugin.

torch, torchaudio and fairseq-fixed are not listed in install_requires on purpose: they must be installed in a
particular way (see README, "Installing into your own environment"); pip would otherwise pick builds that do
not fit together.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq-prune",
    version="0.1.0",
    description="HJ-Pruning (Peng et al., ICASSP 2023) of wav2vec2 models as a fairseq user-dir plugin",
    python_requires=">=3.9",
    # experiments/: the demo's, the study's and the benchmarks' runner (it imports manifests/); they run in a checkout
    packages=find_packages(include=["fairseq_prune", "fairseq_prune.*", "experiments", "experiments.*", "manifests"]),
    install_requires=["soundfile", "editdistance", "sentencepiece", "tqdm", "matplotlib"],
    extras_require={"lm": ["flashlight-text"], "onnx": ["onnx", "onnxruntime"]},
    entry_points={
        "console_scripts": [
            "fairseq-prune-export=fairseq_prune.cli.export:cli_main",
            "fairseq-prune-infer=fairseq_prune.cli.infer:cli_main",
            "fairseq-prune-onnx=fairseq_prune.cli.onnx:cli_main",
            "fairseq-prune-profile=fairseq_prune.cli.profile:cli_main",
            "fairseq-prune-latency=fairseq_prune.cli.latency_check:cli_main",
        ]
    },
)
