"""The machine-speed gauge: a timed fixed workload, its JSON file and command line."""

import json

import pytest
import torch

from espnet2.enh.clipsep.bin import gauge as gauge_cli
from espnet2.enh.clipsep.eval.gauge import GAUGE_WORKLOAD, measure_gauge, read_gauge, write_gauge


def test_measure_reports_a_positive_median_and_restores_threads():
    threads = torch.get_num_threads()
    reading = measure_gauge(repeats=3, warmup=1)
    assert torch.get_num_threads() == threads
    assert reading["workload"] == GAUGE_WORKLOAD and reading["threads"] == 1 and reading["repeats"] == 3
    assert 0 < reading["ms_min"] <= reading["ms"] <= reading["ms_max"]


def test_write_read_and_bad_files(tmp_path):
    assert read_gauge(tmp_path / "absent.json") is None
    reading = measure_gauge(repeats=1, warmup=0)
    write_gauge(tmp_path / "g" / "gauge.json", reading)
    assert read_gauge(tmp_path / "g" / "gauge.json") == reading
    (tmp_path / "bad.json").write_text('{"ms": "fast"}')
    with pytest.raises(ValueError, match=r"bad\.json: not a speed-gauge reading"):
        read_gauge(tmp_path / "bad.json")


def test_command_line_writes_the_reading(tmp_path, capsys):
    assert gauge_cli.main(["--output", str(tmp_path / "gauge.json"), "--repeats", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "gauge.json").read_text()) == printed
    assert gauge_cli.main(["--repeats", "0"]) == 2
