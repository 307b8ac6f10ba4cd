"""Runs examples/notebooks/ulmfit_quickstart.ipynb top to bottom at its default settings (what a practitioner gets
from "Run all") with nbclient, and reports the wall time of each code cell and the metrics the notebook computed.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_notebook.py \
        --output_dir runs/ulmfit_quickstart

The executed notebook (with outputs) is written to `output_dir/ulmfit_quickstart.executed.ipynb` and the figures to
`output_dir/bench_notebook.json`; the committed notebook stays without outputs. The kernel is this Python
(`sys.executable`), whatever `python3` kernel Jupyter has registered.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebooks" / "ulmfit_quickstart.ipynb"

# Appended to the notebook: what its cells computed, as one JSON line.
REPORT_CELL = """
import json
print("NOTEBOOK_REPORT", json.dumps({
    "pretrain": pretrained.metrics, "finetune": finetuned.metrics, "classifier": classifier.metrics,
    "test": test_metrics, "valley": lr_result.valley, "steepest": lr_result.steepest, "learning_rate": learning_rate,
    "pipeline": pipeline_answers, "tiny": TINY,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/ulmfit_quickstart", help="The notebook's OUTPUT_DIR.")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data"), help="The notebook's DATA_DIR.")
    parser.add_argument("--tiny", action="store_true", help="TL_NLP_NOTEBOOK_TINY=1: the test's settings.")
    parser.add_argument("--timeout", type=int, default=3600, help="Seconds one cell may take.")
    options = parser.parse_args()
    output_dir = Path(options.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as jupyter_path:
        kernel = Path(jupyter_path) / "kernels" / "tl_nlp_bench"
        kernel.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (kernel / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python", "display_name": "bench"}))
        os.environ.update(
            TL_NLP_NOTEBOOK_OUTPUT_DIR=str(output_dir),
            TL_NLP_DATA_DIR=str(Path(options.data_dir).resolve()),
            JUPYTER_PATH=jupyter_path,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        if options.tiny:
            os.environ["TL_NLP_NOTEBOOK_TINY"] = "1"
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
        client = NotebookClient(
            notebook,
            kernel_name="tl_nlp_bench",
            timeout=options.timeout,
            record_timing=True,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        start = time.perf_counter()
        client.execute()
        wall = time.perf_counter() - start
    nbformat.write(notebook, output_dir / "ulmfit_quickstart.executed.ipynb")
    report = next(
        json.loads(line.removeprefix("NOTEBOOK_REPORT "))
        for output in notebook.cells[-1].outputs
        if output.get("name") == "stdout"
        for line in output["text"].splitlines()
        if line.startswith("NOTEBOOK_REPORT ")
    )
    cells = []
    for index, cell in enumerate(notebook.cells[:-1]):
        timing = cell.metadata.get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing:
            seconds = _seconds(timing["shell.execute_reply"]) - _seconds(timing["iopub.execute_input"])
            cells.append({"cell": index, "first_line": cell.source.splitlines()[0], "seconds": round(seconds, 1)})
    result = {"wall_seconds": round(wall, 1), "load_average": os.getloadavg(), "cells": cells, "report": report}
    (output_dir / "bench_notebook.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()
