"""Start-up cost of `import tl_nlp` and `tl-nlp --help`, side by side with transformers' own.

Each command runs in a fresh interpreter (wall time and peak memory of that process, read from `wait4`), the
commands interleaved round after round so that the machine's load hits them alike; medians are reported, and each
figure also "beyond Python's start" (minus the median of `python -c pass`).

    .venv/bin/python benchmarks/bench_startup.py --rounds 7
    # also the package as it was before (a tree of tl_nlp/ from another commit, e.g. `git archive`):
    git archive 77edd00 tl_nlp | tar -x -C /tmp/tl_nlp_before
    .venv/bin/python benchmarks/bench_startup.py --rounds 7 --before /tmp/tl_nlp_before

Results: a table on standard output, every measurement in `--output` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

LOAD = "{imports}\nfrom transformers import AutoModelForSequenceClassification\n" + (
    "AutoModelForSequenceClassification.from_pretrained('{folder}')"
)
# name -> (command, PYTHONPATH of the tl_nlp it runs: "here", "before" or None)
COMMANDS = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "import transformers": ([sys.executable, "-c", "import transformers"], None),
    "import tl_nlp": ([sys.executable, "-c", "import tl_nlp"], "here"),
    "import tl_nlp (before)": ([sys.executable, "-c", "import tl_nlp"], "before"),
    "transformers --help": ([str(BIN / "transformers"), "--help"], None),
    "tl-nlp --help": ([sys.executable, "-m", "tl_nlp.cli", "--help"], "here"),
    "tl-nlp --help (before)": ([sys.executable, "-m", "tl_nlp.cli", "--help"], "before"),
    "tl-nlp train-classifier --help": ([sys.executable, "-m", "tl_nlp.cli", "train-classifier", "--help"], "here"),
    # Importing transformers' Auto classes after tl_nlp registers AWD-LSTM there, which loads transformers'
    # modeling_utils (as loading any model does): the pair below, then loading a tiny model of each kind.
    "from transformers import AutoModel...": (
        [sys.executable, "-c", "from transformers import AutoModelForSequenceClassification"],
        None,
    ),
    "import tl_nlp; from transformers import AutoModel...": (
        [sys.executable, "-c", "import tl_nlp; from transformers import AutoModelForSequenceClassification"],
        "here",
    ),
    "AutoModel....from_pretrained(BERT folder)": (
        [sys.executable, "-c", LOAD.format(imports="", folder="bert")],
        None,
    ),
    "import tl_nlp; AutoModel....from_pretrained(AWD-LSTM folder)": (
        [sys.executable, "-c", LOAD.format(imports="import tl_nlp", folder="awd_lstm")],
        "here",
    ),
}


TINY_FOLDERS = """
import sys
from pathlib import Path
import torch
from transformers import BertConfig, BertForSequenceClassification
from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification
folder = Path(sys.argv[1])
torch.manual_seed(0)
bert = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
BertForSequenceClassification(bert).save_pretrained(folder / "bert")
awd_lstm = AWDLSTMConfig(vocab_size=100, embedding_size=8, hidden_size=12, num_hidden_layers=2)
AWDLSTMForSequenceClassification(awd_lstm).save_pretrained(folder / "awd_lstm")
"""


def save_tiny_folders(folder: Path) -> None:
    """`folder/bert` and `folder/awd_lstm`: tiny classifiers, so that loading them costs the imports, not weights.
    Written by a child process: this one stays small, as each measured child starts as a copy of it."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", TINY_FOLDERS, str(folder)], check=True, env=environment,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def run_once(command: list[str], pythonpath: str | None, folder: Path) -> tuple[float, float, int]:
    """Wall seconds, peak resident MB and lines of standard output of one run, in `folder` (so that the
    repository's own tl_nlp/ is not on the path unless PYTHONPATH says so)."""
    environment = {**os.environ, "PYTHONPATH": pythonpath or "", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=folder)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024, output.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, help="Folder holding an older tl_nlp/ to compare with.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    arguments = parser.parse_args()
    paths = {"here": str(ROOT), "before": str(arguments.before) if arguments.before else None, None: None}
    commands = {name: spec for name, spec in COMMANDS.items() if spec[1] != "before" or arguments.before}
    if not (BIN / "transformers").exists():
        commands.pop("transformers --help")
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as folder:
        save_tiny_folders(Path(folder))
        for _ in range(arguments.rounds):
            for name, (command, tree) in commands.items():
                runs[name].append(run_once(command, paths[tree], Path(folder)))
    python_start = statistics.median(seconds for seconds, _, _ in runs["python -c pass"])
    rows = []
    print(f"{'command':56s} {'median s':>9s} {'beyond python s':>16s} {'peak MB':>8s} {'output lines':>13s}")
    for name, measured in runs.items():
        seconds = statistics.median(value for value, _, _ in measured)
        memory = statistics.median(value for _, value, _ in measured)
        row = {
            "command": name,
            "median_seconds": seconds,
            "beyond_python_seconds": seconds - python_start,
            "peak_mb": memory,
            "output_lines": measured[0][2],
            "seconds": [value for value, _, _ in measured],
        }
        rows.append(row)
        print(f"{name:56s} {seconds:9.3f} {seconds - python_start:16.3f} {memory:8.0f} {measured[0][2]:13d}")
    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.1f}")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps({"rounds": arguments.rounds, "load": load, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
