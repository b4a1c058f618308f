"""The typed reports: what a command writes is what another reads, keys it does not know survive, and a file that
is not a report of the kind asked for is refused in one line naming it."""
import json

import pytest

from edgefashion.reports import BenchReport, ExportReport, ReportError, TrainReport


def _export_dict():
    return {"model": "cnn4", "dataset": "fashion-mnist", "source": "best.pt", "source_kind": "checkpoint",
            "labels": ["a", "b"], "input": [1, 28, 28], "quantize": "int8", "fp32": {"test_accuracy": 0.9},
            "parity": {"images": 8}, "created": "2026-12-01T00:00:00+00:00", "int8": {"test_accuracy": 0.89},
            "a_key_from_a_newer_version": {"x": 1}}


def test_round_trip_keeps_unknown_keys_and_leaves_out_unset_optional_ones(tmp_path):
    d = _export_dict()
    r = ExportReport.from_dict(d)
    assert r.int8 == {"test_accuracy": 0.89} and r.cross_cpu is None and r.extra == {"a_key_from_a_newer_version": {"x": 1}}
    on_disk = json.loads(r.write(tmp_path / "report.json").read_text())
    assert on_disk == {**d, **{k: None for k in ("source_sha256", "opset", "target", "cpu", "onnxruntime", "torch",
                                                  "edgefashion", "latency_runs", "split_sizes", "run")}}
    assert "cross_cpu" not in on_disk  # a check that did not run is absent, not null; nothing is lost
    assert ExportReport.read(tmp_path / "report.json") == r


def test_bad_files_are_refused_in_one_line_naming_them(tmp_path):
    p = tmp_path / "results.json"
    with pytest.raises(ReportError, match=r"results.json: no such file"):
        TrainReport.read(p)
    p.write_text("{not json")
    with pytest.raises(ReportError, match=r"results.json: not readable as JSON"):
        TrainReport.read(p)
    p.write_text(json.dumps(_export_dict()))  # an export's report where a run's results belong
    with pytest.raises(ReportError) as e:
        TrainReport.read(p)
    assert str(e.value).startswith(f"{p}: not a training run's results.json: no data, params") and "\n" not in str(e.value)
    with pytest.raises(ReportError, match="not a JSON object"):
        BenchReport.from_dict([1, 2], "x.json")


def test_a_report_cannot_be_built_without_its_required_fields():
    with pytest.raises(TypeError, match="missing .*schema"):
        BenchReport(created="now", host="h", cpu={}, settings={}, models=[])
