"""experiments.fairseq_log on real ``fairseq-hydra-train`` output (tests/data: excerpts of two runs of the mini
recipes on noise, 20 updates; hj_sep_size validates on a subset named ``dev-clean``, hj_macs on ``valid``)."""
import os

import pytest

from experiments.fairseq_log import last_records, parse_record, progress, progress_line, records

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def lines(name: str):
    with open(os.path.join(DATA, name)) as f:
        return f.read().splitlines(keepends=True)


SEP_SIZE = lines("hydra_train_hj_sep_size.log")
MACS = lines("hydra_train_hj_macs.log")


def test_parse_record_reads_json_lines_only():
    tags = [parsed[0] for parsed in map(parse_record, SEP_SIZE) if parsed is not None]
    assert tags == ["train", "train_inner", "train", "train_inner", "dev-clean", "train", "train_inner", "train",
                    "train_inner", "dev-clean", "train"]
    config = next(line for line in SEP_SIZE if "[fairseq_cli.train][INFO] - {'_name'" in line)
    assert parse_record(config) is None  # the configuration, printed as a Python dict
    assert parse_record("[2026-12-03 16:35:03,959][fairseq_cli.train][INFO] - done training in 1.7 seconds") is None
    assert parse_record('[2026-12-03 16:35:03][train_inner][INFO] - {"epoch": 1, "loss": ') is None  # cut short
    tag, record = parse_record(next(line for line in SEP_SIZE if "[dev-clean]" in line))
    assert tag == "dev-clean" and record["dev-clean_num_updates"] == "10" and record["dev-clean_wer"] == "100"


def test_records_by_tag():
    inner = records(SEP_SIZE, "train_inner")
    assert [r["num_updates"] for r in inner] == ["5", "10", "15", "20"]
    valid = records(SEP_SIZE, "dev-clean")
    assert [(r["dev-clean_num_updates"], r["dev-clean_wer"]) for r in valid] == [("10", "100"), ("20", "100")]
    assert records(SEP_SIZE, "valid") == []
    assert [r["valid_num_updates"] for r in records(MACS, "valid")] == ["10", "20"]


def test_last_records():
    last = last_records(MACS)
    assert last["train"]["num_updates"] == "20" and last["train"]["loss"] == "452.752"
    assert last["valid"]["valid_num_updates"] == "20" and last["valid"]["valid_loss"] == "75.745"
    assert last_records(SEP_SIZE) == {"train": records(SEP_SIZE, "train_inner")[-1], "valid": None}


def test_progress_strips_the_subset_prefix_and_skips_epoch_summaries():
    kinds = [progress(parse_record(line)[1]) for line in SEP_SIZE if parse_record(line)]
    assert [k[0] if k else None for k in kinds] == [None, "train", None, "train", "valid", None, "train", None,
                                                     "train", "valid", None]
    kind, values = kinds[4]
    assert values["num_updates"] == "10" and values["wer"] == "100" and values["target_cnn"] == "0.55"
    assert not any(k.startswith("dev-clean") for k in values)
    assert progress({"epoch": 1, "loss": "1.0"}) is None


@pytest.mark.parametrize("log, expected", [
    (SEP_SIZE, [
        ("train", "update 5/20, ctc 200.402, E[budget]_cnn 0.9797, budget_cnn 1, target_cnn 0.8, "
                  "E[budget]_transformer 0.9915, budget_transformer 1, target_transformer 0.8, MACs 1"),
        ("train", "update 10/20, ctc 111.415, E[budget]_cnn 0.974, budget_cnn 1, target_cnn 0.55, "
                  "E[budget]_transformer 0.9875, budget_transformer 1, target_transformer 0.55, MACs 1"),
        ("valid", "update 10/20, ctc 63.218, WER 100, E[budget]_cnn 0.9725, budget_cnn 1, target_cnn 0.55, "
                  "E[budget]_transformer 0.9864, budget_transformer 1, target_transformer 0.55, MACs 1"),
    ]),
    (MACS, [
        ("train", "update 5/20, ctc 200.376, E[budget] 0.9852, budget 1, target 0.8, MACs 1"),
        ("train", "update 10/20, ctc 111.038, E[budget] 0.9803, budget 1, target 0.55, MACs 1"),
        ("valid", "update 10/20, ctc 63.194, WER 100, E[budget] 0.979, budget 1, target 0.55, MACs 1"),
    ]),
])
def test_progress_lines(log, expected):
    """What a run prints per log interval: the CTC loss in place of the total, the budget terms (two with
    sep_size), WER at validation."""
    found = [p for p in (progress_line(line, 20) for line in log) if p is not None]
    assert found[:3] == expected
    assert len(found) == 6 and found[-1][0] == "valid"


def test_progress_line_of_a_dense_run():
    """fairseq's own wav2vec_ctc + ctc: no CTC loss apart from the total, no budget."""
    line = ('[2026-12-03 16:32:15,996][train_inner][INFO] - {"epoch": 1, "update": 0.105, "loss": "286.972", '
            '"ntokens": "305.12", "nsentences": "7.34", "nll_loss": "6.903", "wps": "479.2", "ups": "1.57", '
            '"wpb": "305.1", "bsz": "7.3", "num_updates": "50", "lr": "6.6875e-05", "gnorm": "732.904", '
            '"train_wall": "33", "wall": "35"}\n')
    assert progress_line(line, 3000) == ("train", "update 50/3000, loss 286.972")
    slurp = ('[2026-12-03 17:00:00,000][devel][INFO] - {"epoch": 2, "devel_loss": "50.1", "devel_wer": "30.5", '
             '"devel_intent_acc": "81.2", "devel_num_updates": "400"}')
    assert progress_line(slurp, 800) == ("valid", "update 400/800, loss 50.1, WER 30.5, intent 81.2")
