"""pipeline("text-classification") on task models: pairs as transformers takes them, similarity read in both orders,
regression scores, multi-label answers above the saved threshold, and a one-line error for a pair model given one
text."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, TextClassificationPipeline, pipeline

from tl_nlp.data.task_encoding import TaskDataCollator, add_task_tokens, encode_task_dataset
from tl_nlp.models.task_models import task_model_from_pretrained
from tl_nlp.task_pipeline import TaskTextClassificationPipeline
from tl_nlp.tasks import TaskSpec

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import save_tiny_gpt2  # noqa: E402
from test_tasks import TEXTS, save_tiny_pair_bert  # noqa: E402

PAIR = {"text": "a man sleeps", "text_pair": "the dog ran"}


def save_task_model(base: Path, family: str, spec: TaskSpec, folder: Path, id2label=None) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(base)
    if family == "decoder":
        tokenizer.pad_token = tokenizer.eos_token
        add_task_tokens(tokenizer)
    torch.manual_seed(0)
    model = task_model_from_pretrained(
        str(base), spec, family, id2label, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline_bases")
    return {"encoder": save_tiny_pair_bert(root / "bert"), "decoder": save_tiny_gpt2(root / "gpt2", TEXTS)}


def classify(folder: Path):
    return pipeline("text-classification", model=str(folder), pipeline_class=TaskTextClassificationPipeline)


def test_similarity_pipeline_reads_both_orders_as_in_training(bases, tmp_path):
    spec = TaskSpec("regression", "sentence1", "sentence2")
    folder = save_task_model(bases["decoder"], "decoder", spec, tmp_path / "sts")
    answer = classify(folder)(PAIR)
    swapped = classify(folder)({"text": PAIR["text_pair"], "text_pair": PAIR["text"]})
    # The model as trained: both orders encoded by the task layer, through the summing head.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = datasets.Dataset.from_dict({"sentence1": [PAIR["text"]], "sentence2": [PAIR["text_pair"]], "label": [1.0]})
    encoded, _, _ = encode_task_dataset(rows, spec, tokenizer, "decoder")
    from tl_nlp.models.task_models import load_task_model

    model, _ = load_task_model(str(folder))
    expected = model.eval()(**TaskDataCollator(tokenizer)([encoded[0]])).logits[0, 0].item()
    assert answer["score"] == pytest.approx(expected, abs=1e-5)  # a score, no sigmoid
    assert swapped["score"] == pytest.approx(expected, abs=1e-5)


def test_bert_pair_pipeline_is_transformers_own(bases, tmp_path):
    spec = TaskSpec("text_pair", "sentence1", "sentence2")
    folder = save_task_model(bases["encoder"], "encoder", spec, tmp_path / "rte", {0: "entailment", 1: "not"})
    ours = classify(folder)(PAIR, top_k=None)
    stock = pipeline("text-classification", model=str(folder), pipeline_class=TextClassificationPipeline)(
        PAIR, top_k=None
    )
    assert ours == stock and {entry["label"] for entry in ours} == {"entailment", "not"}
    with pytest.raises(ValueError, match=r"reads text pairs .*pass \{'text': ..., 'text_pair': ...\}"):
        classify(folder)("a man sleeps")


def test_multi_label_pipeline_answers_every_label_above_the_saved_threshold(bases, tmp_path):
    names = {0: "joy", 1: "anger", 2: "fear"}
    spec = TaskSpec("multi_label", label_column="labels", threshold=0.45)
    folder = save_task_model(bases["decoder"], "decoder", spec, tmp_path / "emotions", names)
    every = classify(folder)("a man sleeps", top_k=None)  # the stock answer: every label's sigmoid
    answer = classify(folder)("a man sleeps")
    assert answer == [[entry for entry in every if entry["score"] >= 0.45]] and len(every) == 3
    assert all(0.0 < entry["score"] < 1.0 for entry in every)
