"""The example scripts, each run end to end in a subprocess with tiny settings on the real data (`tl_nlp.reference_data`):
their saved metrics are consistent, and their saved folders reload and give the logits the script recorded."""

import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from process_groups import run_in_process_group
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
)

import tl_nlp  # noqa: F401  (registers the AWD-LSTM Auto classes used to reload the folders)
from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = find_reference_data(("wikitext-2", "imdb", "sst2"))
pytestmark = pytest.mark.skipif(DATA_DIR is None, reason=NO_REFERENCE_DATA)


def run_example(script: str, output_dir: Path, *flags: str) -> None:
    """Runs `examples/<script>` with `flags` (one thread, offline) and fails with its output if it fails."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "examples" / script), "--data_dir", str(DATA_DIR)]
    command += ["--output_dir", str(output_dir), *flags]
    completed = run_in_process_group(command, timeout=300, env=environment, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def assert_folder_reproduces(folder: Path, recorded_logits: list, label_names=("negative", "positive")):
    torch.manual_seed(0)  # nothing random should matter in eval mode; this only rules it out
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert [model.config.id2label[index] for index in range(model.config.num_labels)] == list(label_names)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from example_utils import probe_logits
    finally:
        sys.path.remove(str(ROOT / "examples"))
    assert np.allclose(probe_logits(model, tokenizer), recorded_logits, atol=1e-5)
    return model, tokenizer


def test_ulmfit_imdb_ensemble(tmp_path):
    run_example(
        "ulmfit_imdb_ensemble.py", tmp_path,
        "--pretrain_max_lines", "300", "--vocab_size", "2000", "--embedding_size", "16", "--hidden_size", "24",
        "--num_hidden_layers", "2", "--lm_batch_size", "4", "--bptt", "20", "--pretrain_epochs", "1",
        "--finetune_reviews", "20", "--train_reviews", "16", "--eval_reviews", "8", "--classifier_epochs", "2",
        "--classifier_batch_size", "8",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "ensemble_metrics.json").read_text())
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert metrics["num_test_reviews"] == 8 and Counter(predictions["labels"]) == {0: 4, 1: 4}  # balanced
    labels = np.asarray(predictions["labels"])
    forward, backward = np.asarray(predictions["forward"]), np.asarray(predictions["backward"])
    # The ensemble is the mean of the two models' probabilities, and each reported metric is what its
    # probabilities give.
    assert np.allclose(np.asarray(predictions["ensemble"]), (forward + backward) / 2, atol=1e-12)
    assert np.allclose(forward.sum(-1), 1) and not np.allclose(forward, backward)
    for name in ("forward", "backward", "ensemble"):
        accuracy = float((np.asarray(predictions[name]).argmax(-1) == labels).mean())
        assert metrics["test"][name]["accuracy"] == pytest.approx(accuracy)
        assert 0 <= metrics["test"][name]["macro_f1"] <= 1
    # One epoch over 300 WikiText lines takes each direction's perplexity well below its start (about 1,000).
    for direction in ("forward", "backward"):
        general = metrics["language_models"][direction]["lm_general"]
        assert general["perplexity_after"] < 0.3 * general["perplexity_before"]
    _, forward_tokenizer = assert_folder_reproduces(
        tmp_path / "forward" / "classifier", metrics["probe_logits"]["forward"]
    )
    _, backward_tokenizer = assert_folder_reproduces(
        tmp_path / "backward" / "classifier", metrics["probe_logits"]["backward"]
    )
    assert (forward_tokenizer.reverse, backward_tokenizer.reverse) == (False, True)
    ids = forward_tokenizer("This movie was GREAT!!!")["input_ids"]
    assert backward_tokenizer("This movie was GREAT!!!")["input_ids"] == ids[::-1]
    for stage in ("lm_general", "lm_imdb"):
        assert (tmp_path / "backward" / stage / "model.safetensors").is_file()


@pytest.fixture
def tiny_bert_folder(tmp_path) -> Path:
    """A 2-layer, 16-wide BERT with a word vocabulary of SST-2 dev's 300 most frequent words, saved like a Hub
    checkpoint without a classification head (as all-MiniLM-L6-v2 is)."""
    sentences = (DATA_DIR / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    counts = Counter(word for line in sentences for word in line.rsplit("\t", 1)[0].lower().split())
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [word for word, _ in counts.most_common(300)]
    folder = tmp_path / "tiny_bert"
    BertTokenizer(vocab={word: index for index, word in enumerate(words)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def test_bert_classifier_gradual_unfreezing(tmp_path, tiny_bert_folder):
    output = tmp_path / "run"
    run_example(
        "bert_classifier_gradual_unfreezing.py", output,
        "--model_name_or_path", str(tiny_bert_folder), "--train_sentences", "64", "--eval_sentences", "40",
        "--max_length", "64", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
    )  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["num_train_sentences"], metrics["num_dev_sentences"]) == (64, 40)
    assert 0 <= metrics["dev"]["eval_accuracy"] <= 1 and 0 <= metrics["dev"]["eval_macro_f1"] <= 1
    assert metrics["layer_groups"] == ["embeddings", "layer 0", "layer 1", "head"]
    # Three unfreezing stages spread evenly over the first 35% of the run.
    assert metrics["unfreeze_at_fractions"] == pytest.approx([0.35 / 3, 0.7 / 3, 0.35])
    model, _ = assert_folder_reproduces(output / "classifier", metrics["probe_logits"])
    # 8 steps, stages from steps 1, 2 and 3: every group trained by the end, down to the embeddings.
    initial = BertModel.from_pretrained(tiny_bert_folder)
    for name, parameter in initial.named_parameters():
        assert not torch.equal(parameter, model.bert.get_parameter(name)), name


def test_gpt2_classifier(tmp_path):
    run_example(
        "gpt2_classifier.py", tmp_path,
        "--vocab_size", "500", "--n_embd", "32", "--n_layer", "2", "--n_head", "2", "--n_positions", "64",
        "--block_size", "32", "--lm_reviews", "40", "--train_reviews", "32", "--eval_reviews", "16",
        "--max_length", "64", "--classifier_epochs", "1",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["num_train_reviews"], metrics["num_test_reviews"]) == (32, 16)
    assert 0 <= metrics["test"]["eval_accuracy"] <= 1 and 0 <= metrics["test"]["eval_macro_f1"] <= 1
    # One epoch of causal-LM training on 40 reviews lowers the held-out perplexity of the new model.
    assert metrics["lm"]["perplexity_after"] < 0.8 * metrics["lm"]["perplexity_before"]
    model, tokenizer = assert_folder_reproduces(tmp_path / "classifier", metrics["probe_logits"])
    assert type(model).__name__ == "GPT2ForSequenceClassification"
    # End-of-text stands in for GPT-2's missing padding token, and the model knows it.
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # The LM stage's folder is a causal LM with the same tokenizer.
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm_imdb")
    assert type(lm).__name__ == "GPT2LMHeadModel" and lm.config.vocab_size == len(tokenizer)
    assert AutoTokenizer.from_pretrained(tmp_path / "lm_imdb").get_vocab() == tokenizer.get_vocab()


@pytest.fixture
def examples_on_path():
    sys.path.insert(0, str(ROOT / "examples"))
    yield
    sys.path.remove(str(ROOT / "examples"))


def test_macro_f1_on_known_counts(examples_on_path):
    from example_utils import classification_metrics

    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.eye(2)[[0, 0, 0, 1, 1, 0]]  # class 0: 3 of 4 found, 1 false alarm; class 1: 1 of 2, 1 false alarm
    metrics = classification_metrics(scores, labels)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((2 * 3 / (4 + 4) + 2 * 1 / (2 + 2)) / 2)  # (0.75 + 0.5) / 2
    # Always predicting one class: F1 0 for the other, so macro-F1 exposes what accuracy hides.
    assert classification_metrics(np.eye(2)[[0] * 6], labels) == pytest.approx(
        {"accuracy": 4 / 6, "macro_f1": (2 * 4 / (6 + 4) + 0) / 2}
    )


@pytest.mark.parametrize(
    "module, class_name, arguments, field",
    [
        ("ulmfit_imdb_ensemble", "EnsembleArguments", dict(train_reviews=401), "--train_reviews"),
        ("ulmfit_imdb_ensemble", "EnsembleArguments", dict(pretrain_corpus="wikitext-3"), "--pretrain_corpus"),
        ("bert_classifier_gradual_unfreezing", "BertExampleArguments", dict(unfreeze_over=1.0), "--unfreeze_over"),
        ("bert_classifier_gradual_unfreezing", "BertExampleArguments", dict(max_length=4), "--max_length"),
        ("gpt2_classifier", "GPT2ExampleArguments", dict(n_embd=30, n_head=4), "--n_embd"),
        ("gpt2_classifier", "GPT2ExampleArguments", dict(lm_epochs=0), "--lm_epochs"),
    ],
)
def test_bad_options_name_the_flag(examples_on_path, module, class_name, arguments, field):
    import importlib

    with pytest.raises(ValueError, match=field):
        getattr(importlib.import_module(module), class_name)(**arguments)


def test_transfer_demo(tmp_path, tiny_bert_folder):
    """`make demo`'s script with a tiny BERT: trains on the protocol's reviews, saves a folder that `pipeline()`
    serves with the answers the script printed, and reports where the checkpoint came from and the time it took."""
    from transformers import pipeline

    run_example(
        "transfer_demo.py", tmp_path, "--model_name_or_path", str(tiny_bert_folder), "--train_reviews", "32",
        "--eval_reviews", "20", "--max_length", "32", "--num_train_epochs", "1", "--bf16", "false",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert metrics["checkpoint"] == {"name": str(tiny_bert_folder), "read_from": str(tiny_bert_folder),
                                     "source": "as given"}  # fmt: skip
    assert 0 <= metrics["metrics"]["eval_accuracy"] <= 1
    assert metrics["seconds"]["wall"] > 0 and metrics["seconds"]["cpu"] > 0
    classify = pipeline("text-classification", model=str(tmp_path / "classifier"), device="cpu")
    # The demo trains on each review's last 32 tokens (--max_length) and reads up to 512 from the end at inference,
    # capped by the tiny BERT's 64 positions; the saved tokenizer carries both, so pipeline() reads the same.
    assert (classify.tokenizer.truncation_side, classify.tokenizer.model_max_length) == ("left", 64)
    for served in metrics["pipeline"]:
        again = classify(served["text"], truncation=True)[0]
        assert again["label"] == served["label"] and again["score"] == pytest.approx(served["score"], abs=1e-5)
