"""Latency as a budget: fairseq-prune-profile's table, its monotone interpolation, the prediction at the dense and
at gated sizes (differentiable), refusals of a table made for another model or device, and budget=latency in
training."""
import json
import os

import pytest
import torch

from fairseq_prune.cli import profile
from fairseq_prune.latency import LatencyTable, calibrate, floor_sizes, interp1, interp2, monotone
from fairseq_prune.layer_sizes import LayerSizes
from helpers import criterion_and_batch, hydra_train, log_records


@pytest.fixture(scope="module")
def table_path(tmp_path_factory, small_w2v) -> str:
    out = str(tmp_path_factory.mktemp("latency") / "table.json")
    profile.main(profile.get_parser().parse_args([small_w2v, out, "--grid", "3", "--rounds", "1", "--seconds", "1",
                                                  "--device-name", "test-cpu"]))
    return out


@pytest.fixture(scope="module")
def budget_table(tmp_path_factory, table_path) -> str:
    """The measured table's grids with fixed times (a conv layer in proportion to its input x output channels, an
    attention block to its heads, an FFN to its units) and a rest of 5% of the model: the criterion's tests need
    the same reachable targets on every run, which times measured on a loaded machine (Python overhead dominates
    a 1 s input at this size) do not promise."""
    data = json.load(open(table_path))
    for layer in data["conv"]:
        layer["ms"] = [[0.5 * c_in * c_out / 1024 for c_out in layer["c_out"]] for c_in in layer["c_in"]]
    data["attention"]["ms"] = [0.25 * h for h in data["attention"]["sizes"]]
    data["ffn"]["ms"] = [0.004 * u for u in data["ffn"]["sizes"]]
    data["block_scale"] = 1.0
    dense = LayerSizes(**{k: data["architecture"][k] for k in ("conv_channels", "attention_heads", "ffn_units")})
    blocks = float(sum(LatencyTable(data).blocks(dense).values()))
    data.update(rest_ms=0.05 * blocks / 0.95, dense_ms=blocks / 0.95)
    out = str(tmp_path_factory.mktemp("latency") / "budget_table.json")
    json.dump(data, open(out, "w"))
    return out


def test_the_dense_model_is_the_tables_sum(table_path):
    data = json.load(open(table_path))
    table = LatencyTable(data)
    dense = LayerSizes(**{k: data["architecture"][k] for k in ("conv_channels", "attention_heads", "ffn_units")})
    blocks = table.blocks(dense)
    assert len(blocks) == 7 + 2 * 2
    assert float(table.predict(dense)) == pytest.approx(data["dense_ms"], rel=1e-9)
    assert float(sum(blocks.values())) + data["rest_ms"] == pytest.approx(data["dense_ms"], rel=1e-9)
    # calibrated on the dense and the floor model (calibrate's two cases are tested below): never a negative rest
    assert data["rest_ms"] >= 0 and data["block_scale"] > 0 and data["floor_ms"] > 0
    floor = floor_sizes(dense)
    assert floor == LayerSizes((1,) * 7, (0, 0), (0, 0))
    unscaled = LatencyTable({**data, "block_scale": 1.0})
    fit = calibrate(data["dense_ms"], data["floor_ms"], float(sum(unscaled.blocks(dense).values())),
                    float(sum(unscaled.blocks(floor).values())))
    assert fit == pytest.approx({k: data[k] for k in ("block_scale", "rest_ms")})
    # at a grid point the prediction is the (monotone) measurement, times that scale
    first = data["conv"][1]
    assert float(blocks["conv.1"]) == pytest.approx(table.conv[1]["ms"][-1][-1] * data["block_scale"])
    halved = LatencyTable({**data, "block_scale": data["block_scale"] / 2}).blocks(dense)
    assert all(float(halved[k]) == pytest.approx(float(v) / 2) for k, v in blocks.items())
    assert first["c_in"][-1] == first["c_out"][-1] == 32 and data["device"] == "test-cpu"


def test_the_calibration_fits_the_dense_and_the_floor_model():
    """Blocks that take 10% more inside the model than alone, and 5 ms that no gate removes: both models exact."""
    fit = calibrate(dense_ms=115.0, floor_ms=5.11, dense_blocks=100.0, floor_blocks=0.1)
    assert fit["block_scale"] == pytest.approx(1.1) and fit["rest_ms"] == pytest.approx(5.0)
    for blocks, measured in ((100.0, 115.0), (0.1, 5.11)):
        assert fit["block_scale"] * blocks + fit["rest_ms"] == pytest.approx(measured)
    # blocks alone that overrun the model: scaled down, the rest still measured
    fit = calibrate(dense_ms=90.0, floor_ms=5.085, dense_blocks=100.0, floor_blocks=0.1)
    assert fit["block_scale"] == pytest.approx(0.85) and fit["rest_ms"] == pytest.approx(5.0)
    # no fit (a floor model timed slower than the dense one, timer noise): the rest by subtraction, dense exact
    fit = calibrate(dense_ms=10.0, floor_ms=12.0, dense_blocks=8.0, floor_blocks=0.5)
    assert fit == pytest.approx({"block_scale": 1.0, "rest_ms": 2.0})
    fit = calibrate(dense_ms=10.0, floor_ms=12.0, dense_blocks=11.0, floor_blocks=0.5)
    assert fit == pytest.approx({"block_scale": 10.0 / 11.0, "rest_ms": 0.0})
    # a floor model whose blocks alone take longer than it (rest < 0): the same rule
    fit = calibrate(dense_ms=10.0, floor_ms=0.4, dense_blocks=8.0, floor_blocks=0.5)
    assert fit["rest_ms"] >= 0 and fit["block_scale"] * 8.0 + fit["rest_ms"] == pytest.approx(10.0)


def test_interpolation_is_monotone_and_differentiable():
    grid, values = [0, 4, 8, 16], monotone([1.0, 3.0, 2.0, 9.0])  # a noisy measurement: 2.0 < 3.0
    assert values == [1.0, 3.0, 3.0, 9.0]
    xs = [interp1(grid, values, x / 4).item() for x in range(0, 65)]
    assert all(a <= b + 1e-12 for a, b in zip(xs, xs[1:]))
    x = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    interp1(grid, values, x).backward()
    assert x.grad.item() == pytest.approx((9.0 - 3.0) / 8)
    rows = monotone([[1.0, 5.0], [0.5, 2.0]])  # non-decreasing along both axes afterwards
    assert rows == [[1.0, 5.0], [1.0, 5.0]]
    r, c = torch.tensor(0.5, requires_grad=True), torch.tensor(0.25, requires_grad=True)
    v = interp2([0, 1], [0, 1], [[0.0, 1.0], [2.0, 3.0]], r, c)
    v.backward()
    assert v.item() == pytest.approx(1.25) and r.grad.item() == pytest.approx(2.0) and c.grad.item() == 1.0


def test_expected_latency_with_open_gates_is_the_dense_one_and_has_a_gradient(small_w2v, noise_data, budget_table):
    model, crit, sample = criterion_and_batch(small_w2v, noise_data, budget="latency", target=0.8,
                                              latency_table=budget_table)
    with torch.no_grad():
        for g in model.w2v_model.gates():
            g.log_alpha.fill_(20.0)  # every gate open: expected counts are the full sizes
    loss, _, log = crit(model, sample)
    assert log["exp_ratio"] == pytest.approx(1.0, abs=1e-6) and log["det_ratio"] == pytest.approx(1.0)
    assert log["exp_latency_ms"] == pytest.approx(json.load(open(budget_table))["dense_ms"], rel=1e-6)
    with torch.no_grad():
        for g in model.w2v_model.gates():
            g.log_alpha.fill_(0.5)  # half open: the ratio falls and the budget term has a gradient
    model.zero_grad()
    loss, _, log = crit(model, sample)
    assert log["exp_ratio"] < 1.0
    loss.backward()
    assert all(g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0 for g in model.w2v_model.gates())


@pytest.mark.parametrize("edit, kw, message", [
    (lambda d: d["architecture"].update(embed_dim=128), {}, "made for another architecture (embed_dim 128 in the "
                                                            "table, 64 in this model)"),
    (lambda d: None, {"latency_device": "another-cpu"}, "made on device 'test-cpu', not 'another-cpu'"),
    (lambda d: d.pop("conv"), {}, "not a fairseq-prune-latency/1 table"),
])
def test_a_table_for_another_model_or_device_is_refused(small_w2v, noise_data, table_path, tmp_path, edit, kw,
                                                        message):
    data = json.load(open(table_path))
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError) as e:
        model, crit, _ = criterion_and_batch(small_w2v, noise_data, budget="latency", target=0.5,
                                             latency_table=str(bad), **kw)
        crit.check_budget(model)
    assert message in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read the latency table"):
        criterion_and_batch(small_w2v, noise_data, budget="latency", target=0.5, latency_table=str(tmp_path / "no"))


@pytest.mark.slow
def test_the_latency_budget_holds_its_target_in_training(tmp_path, small_w2v, noise_data, budget_table):
    out = hydra_train("hj_macs", noise_data, small_w2v, str(tmp_path / "run"), "optimization.max_update=1500",
                      "criterion.target_warmup_updates=600", "dataset.max_tokens=80000", "common.log_interval=100",
                      "dataset.validate_interval_updates=1500", "criterion.budget=latency", "criterion.target=0.7",
                      f"criterion.latency_table={budget_table}")
    last = log_records(out, "train_inner")[-1]
    assert float(last["target"]) == pytest.approx(0.7)
    assert float(last["det_ratio"]) <= 0.7 + 0.03, last
    assert float(last["det_latency_ms"]) < float(json.load(open(budget_table))["dense_ms"]) * 0.75


def test_predicted_and_measured_latency_of_an_exported_model(tmp_path, small_w2v, noise_data, table_path):
    """fairseq-prune-latency: an exported model's predicted ratio and its speed-up timed beside the dense model,
    with its MACs ratio, as rows of docs/results/latency.json; the dense model against itself predicts 1."""
    from fairseq_prune.cli import export as export_cli
    from fairseq_prune.cli import latency_check
    from onnx_fixtures import write_gated_checkpoint

    gated = write_gated_checkpoint(str(tmp_path / "gated.pt"), small_w2v, noise_data)
    pruned = str(tmp_path / "pruned.pt")
    export_cli.main(export_cli.get_parser().parse_args([gated, pruned]))
    out = str(tmp_path / "latency.json")
    parser = latency_check.get_parser()
    rows = latency_check.main(parser.parse_args([table_path, small_w2v, pruned, small_w2v, "--rounds", "3",
                                                 "--size", "mini", "--budget", "macs", "--target", "0.5",
                                                 "--json", out, "--breakdown"]))
    assert json.load(open(out))["rows"] == rows
    exported, itself = rows
    assert 0 < exported["predicted_latency_ratio"] < 1 and 0 < exported["macs_ratio"] < 1
    assert exported["measured_speedup"] > 0 and exported["ms"] > 0 and exported["dense_ms"] > 0
    assert exported["measured_latency_ratio"] == pytest.approx(exported["ms"] / exported["dense_ms"], rel=1e-2)
    assert {k: exported[k] for k in ("size", "budget", "target", "backend", "threads", "batch", "device")} == {
        "size": "mini", "budget": "macs", "target": 0.5, "backend": "eager", "threads": 1, "batch": 1,
        "device": "test-cpu"}
    assert itself["predicted_latency_ratio"] == pytest.approx(1.0) and itself["macs_ratio"] == pytest.approx(1.0)
    # --breakdown: every part of both models timed; the parts and "other" add up to the total
    for parts in exported["breakdown_ms"].values():
        assert set(parts) == {*(f"conv.{i}" for i in range(7)), "features: norm + projection", "positional conv",
                              "attention", "ffn (fc1, fc2)", "layer norms", "output", "other", "total"}
        assert all(v > 0 for k, v in parts.items() if k != "other")
    dense_parts = exported["breakdown_ms"]["dense"]
    assert sum(v for k, v in dense_parts.items() if k != "total") == pytest.approx(dense_parts["total"], rel=1e-9)


def test_the_export_report_predicts_and_measures_latency(tmp_path, small_w2v, noise_data, table_path, capsys):
    """fairseq-prune-export --latency-table: the report's predicted ratio is fairseq-prune-latency's for the same
    model; --measure-latency adds the measured one; a table of another architecture, or --measure-latency alone,
    is refused before anything is written."""
    from experiments.checkpoints import write_wav2vec2_checkpoint
    from fairseq_prune.cli import export as export_cli
    from fairseq_prune.cli import latency_check
    from helpers import SMALL_W2V
    from onnx_fixtures import write_gated_checkpoint

    gated = write_gated_checkpoint(str(tmp_path / "gated.pt"), small_w2v, noise_data)
    pruned = str(tmp_path / "pruned.pt")
    parse = export_cli.get_parser().parse_args
    summary = export_cli.main(parse([gated, pruned, "--latency-table", table_path, "--measure-latency"]))
    out = capsys.readouterr().out
    latency = summary["latency"]
    row = latency_check.main(latency_check.get_parser().parse_args([table_path, small_w2v, pruned, "--rounds", "2"]))[0]
    assert latency["predicted_latency_ratio"] == pytest.approx(row["predicted_latency_ratio"], abs=1e-4)
    assert 0 < latency["predicted_latency_ratio"] < 1 and latency["device"] == "test-cpu"
    assert latency["measured_speedup"] > 0 and latency["ms"] > 0 and latency["dense_ms"] > 0
    assert f"= {latency['predicted_latency_ratio']:.3f} of dense (eager, 1 thread(s), batch 1, 1 s" in out
    assert "latency measured:" in out
    assert torch.load(pruned, weights_only=False)["pruning_summary"]["latency"] == latency
    # predicted only: no timing, no measured keys
    only = export_cli.main(parse([gated, pruned, "--force", "--latency-table", table_path]))["latency"]
    assert "measured_speedup" not in only and only["predicted_ms"] == latency["predicted_ms"]

    other = str(tmp_path / "other.pt")
    write_wav2vec2_checkpoint(other, {**SMALL_W2V, "encoder_ffn_embed_dim": 48}, seed=0)
    other_table = str(tmp_path / "other.json")
    profile.main(profile.get_parser().parse_args([other, other_table, "--grid", "2", "--rounds", "1", "--seconds",
                                                  "1"]))
    fresh = str(tmp_path / "fresh.pt")
    with pytest.raises(ValueError, match="made for another architecture"):
        export_cli.main(parse([gated, fresh, "--latency-table", other_table]))
    with pytest.raises(ValueError, match="--measure-latency needs --latency-table"):
        export_cli.main(parse([gated, fresh, "--measure-latency"]))
    assert not os.path.exists(fresh)


def test_the_latency_check_refuses_a_table_of_another_architecture(tmp_path, table_path):
    from experiments.checkpoints import write_wav2vec2_checkpoint
    from fairseq_prune.cli import latency_check
    from fairseq_prune.io.errors import ConfigError
    from helpers import SMALL_W2V

    other = str(tmp_path / "other.pt")
    write_wav2vec2_checkpoint(other, {**SMALL_W2V, "encoder_ffn_embed_dim": 48}, seed=0)
    with pytest.raises(ConfigError, match="made for another architecture"):
        latency_check.main(latency_check.get_parser().parse_args([table_path, other, other]))


def test_an_onnxruntime_table_and_its_check(tmp_path, small_w2v, noise_data):
    """--backend onnxruntime: every block and the model traced to ONNX and timed by onnxruntime; the table holds
    the dense model as its sum, says its backend and onnxruntime's version, and fairseq-prune-latency times the
    exported model with onnxruntime too."""
    pytest.importorskip("onnxruntime")
    from fairseq_prune.cli import export as export_cli
    from fairseq_prune.cli import latency_check
    from onnx_fixtures import write_gated_checkpoint

    out = str(tmp_path / "ort.json")
    table = profile.main(profile.get_parser().parse_args([small_w2v, out, "--backend", "onnxruntime", "--grid", "2",
                                                          "--rounds", "1", "--seconds", "1"]))
    assert table["backend"] == "onnxruntime" and "onnxruntime" in table["versions"]
    dense = LayerSizes(**{k: table["architecture"][k] for k in ("conv_channels", "attention_heads", "ffn_units")})
    assert float(LatencyTable(table).predict(dense)) == pytest.approx(table["dense_ms"], rel=1e-9)
    gated = write_gated_checkpoint(str(tmp_path / "gated.pt"), small_w2v, noise_data)
    pruned = str(tmp_path / "pruned.pt")
    export_cli.main(export_cli.get_parser().parse_args([gated, pruned]))
    rows = latency_check.main(latency_check.get_parser().parse_args([out, small_w2v, pruned, "--rounds", "2",
                                                                     "--breakdown"]))
    assert rows[0]["backend"] == "onnxruntime" and rows[0]["ms"] > 0 and 0 < rows[0]["predicted_latency_ratio"] < 1
    assert "breakdown_ms" not in rows[0]  # module hooks time PyTorch only
