"""`import tl_nlp` is lazy (no torch, transformers, datasets, pandas or peft), every exported name resolves, and
AWD-LSTM is registered with transformers' Auto classes and `pipeline()` whichever is imported first.

Each case runs in a new Python process: what a module import loads can only be seen from a fresh interpreter."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

import tl_nlp
from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification, train_ulmfit_tokenizer

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "pandas", "peft", "evaluate", "matplotlib")


def run_python(script: str, *args: str) -> dict:
    """Runs `script` in a new interpreter with this worktree's tl_nlp and returns the JSON of its last line."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, env=environment, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_package():
    loaded = run_python(
        f"""
        import json, sys
        import tl_nlp
        print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
        """
    )
    assert loaded == []


def test_every_exported_name_resolves_and_type_checkers_see_the_same_names():
    tree = ast.parse((ROOT / "tl_nlp" / "__init__.py").read_text())
    type_checking = next(node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node))
    seen = {
        (node.module, alias.name) for node in type_checking.body if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }  # fmt: skip
    exported = {(module, name) for module, names in tl_nlp._EXPORTS.items() for name in names}
    assert seen == exported
    assert set(tl_nlp.__all__) == {name for _, name in exported} | {"__version__"}
    for name in tl_nlp.__all__:
        assert getattr(tl_nlp, name) is not None, name
    assert set(tl_nlp.__all__) <= set(dir(tl_nlp))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        tl_nlp.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """An AWD-LSTM classifier folder and a tiny BERT classifier folder."""
    root = tmp_path_factory.mktemp("lazy")
    tokenizer = train_ulmfit_tokenizer(["a good film", "a bad film"] * 4, min_frequency=1)
    torch.manual_seed(0)
    awd_lstm = AWDLSTMForSequenceClassification(
        AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    )
    awd_lstm.save_pretrained(root / "awd_lstm")
    tokenizer.save_pretrained(root / "awd_lstm")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    (root / "vocab.txt").write_text("\n".join(words))
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root / "bert")
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(root / "bert")
    return {"awd_lstm": str(root / "awd_lstm"), "bert": str(root / "bert")}


LOAD_BOTH = """
    import json, sys
    {imports}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    from transformers.pipelines import PIPELINE_REGISTRY
    awd_lstm, bert = sys.argv[1], sys.argv[2]
    model = AutoModelForSequenceClassification.from_pretrained(awd_lstm)
    tokenizer = AutoTokenizer.from_pretrained(awd_lstm)
    pipelines = [pipeline("text-classification", model=folder) for folder in (awd_lstm, bert)]
    modeling_auto = sys.modules["transformers.models.auto.modeling_auto"]
    print(json.dumps({{
        "model": type(model).__name__, "tokenizer": type(tokenizer).__name__,
        "pipelines": [f"{{type(p).__module__}}.{{type(p).__name__}}" for p in pipelines],
        "task_class": PIPELINE_REGISTRY.supported_tasks["text-classification"]["impl"].__name__,
        "hooks_left": [type(finder).__name__ for finder in sys.meta_path if "tl_nlp" in type(finder).__module__],
        "loader": type(modeling_auto.__loader__).__name__, "spec_loader": type(modeling_auto.__spec__.loader).__name__,
        "heavy": [name for name in ("datasets", "pandas", "peft") if name in sys.modules],
        "answers": pipelines[0](["a good film", "a bad film"], batch_size=2, top_k=None),
    }}))
"""


@pytest.mark.parametrize("imports", ["import tl_nlp", "import transformers.pipelines, transformers; import tl_nlp"])
def test_auto_classes_and_pipeline_know_awd_lstm_whichever_is_imported_first(folders, imports):
    report = run_python(LOAD_BOTH.format(imports=imports), folders["awd_lstm"], folders["bert"])
    assert report["model"] == "AWDLSTMForSequenceClassification" and report["tokenizer"] == "ULMFiTTokenizerFast"
    # AWD-LSTM gets the length-batching pipeline; any other model transformers' own class, not a subclass of it.
    assert report["pipelines"] == [
        "tl_nlp.models.awd_lstm.pipeline_awd_lstm.AWDLSTMTextClassificationPipeline",
        "transformers.pipelines.text_classification.TextClassificationPipeline",
    ]
    assert report["task_class"] == "TextClassificationPipelineSelector"
    # The hook is gone once everything is registered, and the modules it saw keep their own loaders.
    assert report["hooks_left"] == [] and report["loader"] == report["spec_loader"] == "SourceFileLoader"
    assert report["heavy"] == []  # registering loads neither datasets, pandas nor peft
    model = AWDLSTMForSequenceClassification.from_pretrained(folders["awd_lstm"]).eval()
    tokenizer = tl_nlp.ULMFiTTokenizerFast.from_pretrained(folders["awd_lstm"])
    with torch.no_grad():
        probabilities = model(**tokenizer(["a good film"], return_tensors="pt")).logits.softmax(-1)[0]
    assert sorted(item["score"] for item in report["answers"][0]) == pytest.approx(sorted(probabilities.tolist()))


def test_a_model_class_read_from_tl_nlp_saves_its_code(tmp_path):
    files = run_python(
        """
        import json, os, sys
        from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM
        AWDLSTMForCausalLM(AWDLSTMConfig(vocab_size=20, embedding_size=4, hidden_size=6)).save_pretrained(sys.argv[1])
        print(json.dumps(sorted(os.listdir(sys.argv[1]))))
        """,
        str(tmp_path / "lm"),
    )
    assert {"configuration_awd_lstm.py", "modeling_awd_lstm.py", "config.json", "model.safetensors"} <= set(files)
    auto_map = json.loads((tmp_path / "lm" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_awd_lstm.AWDLSTMForCausalLM"


def test_without_an_extra_only_its_feature_fails_with_one_line_naming_the_extra():
    report = run_python(
        """
        import json, sys
        sys.modules["peft"] = sys.modules["matplotlib"] = None  # neither is installed
        from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification, LRFinderResult, ULMFiTTrainer
        from tl_nlp import run_ulmfit, train_classifier, ulmfit_lora_model  # the recipe loads without peft

        def error_of(call):
            try:
                call()
            except ImportError as error:
                return str(error)

        model = AWDLSTMForSequenceClassification(AWDLSTMConfig(vocab_size=20, embedding_size=4, hidden_size=6))
        result = LRFinderResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], None, None, False)
        print(json.dumps({"lora": error_of(lambda: ulmfit_lora_model(model)), "plot": error_of(result.plot)}))
        """
    )
    assert report == {
        "lora": "LoRA needs peft, which is not installed: pip install 'tl_nlp[lora]'",
        "plot": "The LR-finder plot needs matplotlib, which is not installed: pip install 'tl_nlp[plot]'",
    }


def test_the_command_line_names_the_missing_extra_in_one_line(tmp_path):
    rows = "\n".join(f"{'a good film' if i % 2 else 'a bad film'},{i % 2}" for i in range(8))
    (tmp_path / "train.csv").write_text("text,label\n" + rows + "\n")
    tokenizer = train_ulmfit_tokenizer(["a good film", "a bad film"] * 4, min_frequency=1)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    tl_nlp.AWDLSTMForCausalLM(config).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    script = "import sys\nsys.modules['peft'] = None\nfrom tl_nlp.cli import main\nsys.exit(main(sys.argv[1:]))"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script, "train-classifier", "--model_name_or_path", str(tmp_path / "lm"),
         "--train_file", str(tmp_path / "train.csv"), "--method", "lora", "--output_dir", str(tmp_path / "out"),
         "--num_train_epochs", "1"],
        capture_output=True, text=True, env=environment, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.strip().splitlines()[-1] == (
        "tl-nlp train-classifier: error: LoRA needs peft, which is not installed: pip install 'tl_nlp[lora]'"
    )
