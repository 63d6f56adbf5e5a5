"""The demo's and the study's protocols (see scripts/demo.py) and the pruning runs' schedule options they share."""
from typing import List

from .common import PRETRAINED_MODEL, START_MODEL

#: the demo's and the study's two protocols (see scripts/demo.py); a flag given on the command line wins
PROTOCOLS = {
    # the start model is the self-supervised mini wav2vec2 fine-tuned with CTC on both corpora
    # (scripts/make_start_model.py): the dense baseline and HJ-Pruning-MAC (two targets) both continue from it
    # for the same updates; no distillation (docs/diagnosis.md: it did not help on two seeds)
    "finetuned": dict(start=START_MODEL, prune_from="start", updates=400, lr=0.0002, target=[0.58, 0.78],
                      warmup=200, finetune_updates=0, seeds=[1, 2], distill=0.0),
    "paper": dict(start=PRETRAINED_MODEL, prune_from="start", updates=1500, lr=0.0005, target=[0.55],
                  warmup=300, finetune_updates=0, seeds=[1, 2], distill=0.0),
}


def presets(key: str) -> str:
    """Each protocol's preset of one option, for --help texts: ``finetuned 400, paper 1500``."""
    def show(v):
        return " ".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{name} {show(p[key])}" for name, p in PROTOCOLS.items())


def resolve_protocol(args):
    """Fill the options that the command line left at None from ``args.protocol``'s settings."""
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key, "absent") is None:
            setattr(args, key, value)
    return args


def add_pruning_args(p) -> None:
    """The pruning runs' schedule options that `make demo` and `make study` share."""
    p.add_argument("--warmup", type=int, help="target warm-up updates of the pruning runs (default: the "
                                              "protocol's; without one, the recipe's)")
    p.add_argument("--lagrangian-lr", type=float, default=None,
                   help="learning rate of lambda_1 (dual ascent; default: the mini recipe's, 20); see "
                   "docs/lagrangian.md")
    p.add_argument("--lambda-2-init", type=float, default=None,
                   help="lambda_2 at the first update, a quadratic penalty that damps lambda_1's wind-up (default: "
                   "the mini recipe's, 1000)")


def pruning_overrides(args) -> List[str]:
    """fairseq-hydra-train overrides for the options of :func:`add_pruning_args`."""
    out = [] if args.warmup is None else [f"criterion.target_warmup_updates={args.warmup}"]
    if args.lagrangian_lr is not None:
        out.append(f"optimizer.groups.lagrangian.lr_float={args.lagrangian_lr}")
    if args.lambda_2_init is not None:
        out.append(f"criterion.lambda_2_init={args.lambda_2_init}")
    return out
