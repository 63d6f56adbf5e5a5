"""One rank of a 2-process CPU (gloo) fairseq-hydra-train run, for tests/test_pruning_training.py.

Runs fairseq's own hydra_train entry point unchanged. The only addition (test instrumentation): whenever fairseq
saves a checkpoint, every rank also writes its own copy of the model and criterion parameters to
``{save_dir}/rank{R}_params.pt``, so the test can compare the ranks (fairseq itself saves on rank 0 only).
"""
import os
import sys

import torch
from fairseq import checkpoint_utils
from fairseq_cli import hydra_train

_save = checkpoint_utils.save_checkpoint


def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
    rank = trainer.cfg.distributed_training.distributed_rank  # cfg is the checkpoint section
    params = {f"model.{k}": v.detach().clone() for k, v in trainer.get_model().state_dict().items()}
    params.update({f"criterion.{k}": v.detach().clone() for k, v in trainer.get_criterion().state_dict().items()})
    os.makedirs(cfg.save_dir, exist_ok=True)
    torch.save(params, os.path.join(cfg.save_dir, f"rank{rank}_params.pt"))
    return _save(cfg, trainer, epoch_itr, val_loss)


checkpoint_utils.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    sys.argv = ["fairseq-hydra-train"] + sys.argv[1:]
    hydra_train.cli_main()
