"""benchmarks/gpu_awd_lstm.py, the one-call GPU benchmark, run end to end on CPU with tiny sizes: both parts write
their figures into the one JSON file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data

ROOT = Path(__file__).resolve().parents[1]
DATA = find_reference_data(("wikitext-2", "imdb"))  # the sample-efficiency part pretrains on WikiText-2


@pytest.mark.slow
@pytest.mark.skipif(DATA is None, reason=NO_REFERENCE_DATA)
def test_gpu_script_writes_throughput_and_sample_efficiency_to_one_json(tmp_path):
    output = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_awd_lstm.py"), "--device", "cpu", "--tiny",
               "--rounds", "1", "--steps", "2", "--warmup", "1", "--batch_size", "4", "--data_dir", str(DATA),
               "--output", str(output), "--runs_dir", str(tmp_path / "runs"), "--budget_s", "1200"]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, timeout=1500)
    report = json.loads(output.read_text())
    speeds, runs = report["throughput"]["tokens_per_s_median"], report["throughput"]["runs"]
    assert speeds["tl_nlp/float32"] > 0 and speeds["plain/float32"] > 0
    assert report["throughput"]["ratios"]["tl_nlp/plain float32"] == pytest.approx(
        speeds["tl_nlp/float32"] / speeds["plain/float32"]
    )
    # bf16 LSTMs need bf16 hardware on a CPU (oneDNN refuses them elsewhere): a speed, or the error, in the JSON.
    for key in ("tl_nlp/bfloat16", "plain/bfloat16"):
        assert all(("tokens_per_s" in run) != ("error" in run) for run in runs[key]), runs[key]
    part2 = report["sample_efficiency"]
    assert part2["status"] == "finished", part2["status"]
    classifiers = part2["results"]["classifiers"]
    kinds = {(run["classifier"], run["labels"]) for run in classifiers}
    assert {("ulmfit", 100), ("scratch", 100)} <= kinds
    for run in classifiers:
        assert 0 <= run["test_accuracy"] <= 1
