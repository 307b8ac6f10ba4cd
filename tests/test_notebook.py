"""examples/notebooks/ulmfit_quickstart.ipynb, every cell executed with nbclient on tiny settings
(TL_NLP_NOTEBOOK_TINY=1) on the real data (`tl_nlp.reference_data`): the metrics it prints are the saved ones and lie in
[0, 1], the folders it saves load, the LR finder suggests a rate and plots it, the dry-run Hub folder is complete."""

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tl_nlp  # noqa: F401  (registers the AWD-LSTM Auto classes used to reload the folders)
from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebooks" / "ulmfit_quickstart.ipynb"
DATA_DIR = find_reference_data(("wikitext-2", "imdb"))
pytestmark = pytest.mark.skipif(DATA_DIR is None, reason=NO_REFERENCE_DATA)

# Appended to the notebook: the values its cells computed, as one JSON line.
REPORT_CELL = """
import json
print("NOTEBOOK_REPORT", json.dumps({
    "pretrain": pretrained.metrics, "finetune": finetuned.metrics, "classifier": classifier.metrics,
    "test": test_metrics, "valley": lr_result.valley, "steepest": lr_result.steepest,
    "learning_rates": lr_result.learning_rates, "learning_rate": learning_rate,
    "pipeline": pipeline_answers, "output_dir": str(OUTPUT_DIR.resolve()), "tiny": TINY,
    "confusion": interpretation.confusion_matrix().tolist(), "accuracy": float(
        (interpretation.predictions == interpretation.labels).mean()
    ), "mistakes": interpretation.most_confident_mistakes(100)["loss"].tolist(),
}))
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after running every cell in a kernel of this Python (not whichever `python3` is registered)."""
    output_dir = tmp_path_factory.mktemp("quickstart")
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels" / "tl_nlp_test"
    kernels.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps({**spec, "display_name": "tl_nlp test"}))
    environment = {
        "TL_NLP_NOTEBOOK_TINY": "1",
        "TL_NLP_DATA_DIR": str(DATA_DIR),
        "TL_NLP_NOTEBOOK_OUTPUT_DIR": str(output_dir),
        "JUPYTER_PATH": str(kernels.parent.parent),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        client = NotebookClient(
            notebook, kernel_name="tl_nlp_test", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    report_line = next(
        line
        for output in notebook.cells[-1].outputs
        if output.get("name") == "stdout"
        for line in output["text"].splitlines()
        if line.startswith("NOTEBOOK_REPORT ")
    )
    return notebook, json.loads(report_line.removeprefix("NOTEBOOK_REPORT ")), output_dir


def test_the_committed_notebook_has_no_outputs_and_a_settings_cell_first():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells)
    assert "TL_NLP_NOTEBOOK_TINY" in code_cells[0].source and "CLASSIFIER_EPOCHS" in code_cells[0].source
    # A notebook user imports from the package itself, never from its modules.
    sources = "\n".join(cell.source for cell in code_cells)
    assert "from tl_nlp import" in sources
    assert not re.search(r"(from|import) tl_nlp\.", sources)


def test_notebook_runs_on_tiny_settings_and_reports_real_metrics(executed):
    notebook, report, output_dir = executed
    assert report["tiny"] is True and Path(report["output_dir"]) == output_dir.resolve()
    # Stage 1 starts from a new model, so its perplexity falls from about the vocabulary size.
    assert report["pretrain"]["eval_perplexity"] < report["pretrain"]["eval_perplexity_before"]
    assert report["finetune"]["eval_perplexity"] > 1
    for metrics in (report["classifier"], report["test"]):
        assert 0 <= metrics["eval_accuracy"] <= 1 and 0 <= metrics["eval_macro_f1"] <= 1
    # evaluate_classifier on the saved folder scores the same 16 reviews as the Trainer's evaluation after training.
    assert report["test"]["eval_samples"] == 16
    assert report["test"]["eval_accuracy"] == pytest.approx(report["classifier"]["eval_accuracy"])
    assert json.loads((output_dir / "test_metrics.json").read_text()) == pytest.approx(report["test"])
    # The LR finder: positive suggestions inside the swept range, and its plot is shown in the notebook.
    low, high = min(report["learning_rates"]), max(report["learning_rates"])
    for name in ("valley", "steepest"):
        assert isinstance(report[name], float) and low <= report[name] <= high
    assert (output_dir / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    # Shown inline: the LR finder's curve and the confusion matrix, each in its own cell.
    plotted = [
        cell.source for cell in notebook.cells
        if any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))
    ]  # fmt: skip
    assert len(plotted) == 2 and "lr_result.plot(" in plotted[0] and "plot_confusion_matrix()" in plotted[1]
    # The confusion matrix counts the 16 test reviews by actual and predicted label, its diagonal the right ones;
    # the mistakes come surest first.
    confusion = report["confusion"]
    assert sum(map(sum, confusion)) == 16 and sum(confusion[i][i] for i in range(2)) == 16 * report["accuracy"]
    assert report["accuracy"] == pytest.approx(report["test"]["eval_accuracy"])
    assert len(report["mistakes"]) == confusion[0][1] + confusion[1][0]
    assert report["mistakes"] == sorted(report["mistakes"], reverse=True)
    assert report["learning_rate"] == 1e-2  # the settings' rate, not the suggestion
    for answer in report["pipeline"]:
        assert {item["label"] for item in answer} == {"negative", "positive"}
        assert sum(item["score"] for item in answer) == pytest.approx(1, abs=1e-5)


def test_notebook_folders_load_and_the_hub_dry_run_is_complete(executed):
    _, report, output_dir = executed
    for stage in ("lm_pretrained", "lm_finetuned", "classifier"):
        files = {path.name for path in (output_dir / stage).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "all_results.json"} <= files
    model = AutoModelForSequenceClassification.from_pretrained(output_dir / "classifier").eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "classifier")
    assert [model.config.id2label[index] for index in range(2)] == ["negative", "positive"]
    sentence = "A wonderful, moving film with a superb cast. I loved every minute of it."
    probabilities = model(**tokenizer([sentence], return_tensors="pt")).logits.softmax(-1)[0].tolist()
    from_pipeline = {item["label"]: item["score"] for item in report["pipeline"][0]}
    assert probabilities == pytest.approx([from_pipeline["negative"], from_pipeline["positive"]], abs=1e-5)
    hub_files = {path.name for path in (output_dir / "hub_upload").iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= hub_files
    card = (output_dir / "hub_upload" / "README.md").read_text()
    assert "your-name/imdb-ulmfit-awd-lstm" in card or "imdb" in card.lower()
