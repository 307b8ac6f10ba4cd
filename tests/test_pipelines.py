"""pipeline() on AWD-LSTM folders: text classification with label names on raw (and long) text, text generation.

The same pipelines in a fresh process where tl_nlp is not importable are tested on the Hub folder in test_hub.py
(one subprocess for both, to keep the suite fast)."""

from pathlib import Path

import pytest
import torch
from transformers import pipeline

from tl_nlp import (
    AWDLSTMConfig,
    AWDLSTMForCausalLM,
    AWDLSTMForSequenceClassification,
    AWDLSTMTextClassificationPipeline,
)
from tl_nlp.data import ULMFiTTokenizerFast, train_ulmfit_tokenizer

CORPUS = [
    "The movie was great and the plot was good.",
    "A bad film, it was really bad!",
    "I liked it. Great acting and a GREAT story.",
    "The story is boring and the acting is bad.",
] * 3
LABELS = {0: "negative", 1: "positive"}
TEXTS = [
    "The movie was great!",
    "bad",
    # Longer than max_len (12) and many BPT3C chunks (5 tokens each).
    "The plot was bad and the acting was boring. " * 6,
    "I liked the story, and the acting was GREAT.",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    tokenizer = train_ulmfit_tokenizer(CORPUS, min_frequency=1)
    sizes = dict(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    torch.manual_seed(0)
    classifier = AWDLSTMForSequenceClassification(
        AWDLSTMConfig(
            **sizes,
            bptt_chunk_length=5,
            max_len=12,
            id2label=LABELS,
            label2id={name: index for index, name in LABELS.items()},
        )
    ).eval()
    language_model = AWDLSTMForCausalLM(AWDLSTMConfig(**sizes)).eval()
    for name, model in (("classifier", classifier), ("lm", language_model)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "classifier", root / "lm"


def test_text_classification_returns_label_names_and_the_models_scores(folders):
    classifier_folder, _ = folders
    classify = pipeline("text-classification", model=classifier_folder)
    assert isinstance(classify.tokenizer, ULMFiTTokenizerFast)
    model, tokenizer = classify.model, classify.tokenizer
    expected = []
    with torch.no_grad():
        for text in TEXTS:
            probabilities = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
            expected.append((LABELS[int(probabilities.argmax())], float(probabilities.max())))
    assert len(tokenizer(TEXTS[2])["input_ids"]) > 3 * model.config.max_len  # a long document, read in chunks
    for batch_size in (1, 3):
        predictions = classify(TEXTS, batch_size=batch_size)
        assert [p["label"] for p in predictions] == [label for label, _ in expected]
        assert [p["score"] for p in predictions] == pytest.approx([score for _, score in expected], abs=1e-5)
    every_label = classify(TEXTS[0], top_k=None)
    assert {p["label"] for p in every_label} == set(LABELS.values())
    assert sum(p["score"] for p in every_label) == pytest.approx(1.0)


def test_text_classification_batches_by_length_and_answers_in_input_order(folders, tmp_path):
    classifier_folder, _ = folders
    classify = pipeline("text-classification", model=classifier_folder)
    assert isinstance(classify, AWDLSTMTextClassificationPipeline)
    # Lengths in shuffled order: long, short, medium, longest, shortest, ...
    texts = [TEXTS[2], "bad", TEXTS[3], TEXTS[2] * 2, "good", TEXTS[0], CORPUS[1]]
    widths = []
    hook = classify.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        batched = classify(texts, batch_size=3, top_k=None)
    finally:
        hook.remove()
    # Three batches, longest texts first: each batch is as wide as its longest text and the widths only go down.
    assert [shape[0] for shape in widths] == [3, 3, 1]
    assert [shape[1] for shape in widths] == sorted((shape[1] for shape in widths), reverse=True)
    one_by_one = [classify(text, top_k=None) for text in texts]
    assert len(batched) == len(texts)
    for answer, expected in zip(batched, one_by_one, strict=True):
        assert [item["label"] for item in answer] == [item["label"] for item in expected]
        assert [item["score"] for item in answer] == pytest.approx([item["score"] for item in expected], abs=1e-6)
    # A saved pipeline is a plain model folder (no custom pipeline code to trust) that loads into the same class.
    classify.save_pretrained(tmp_path)
    assert "custom_pipelines" not in (tmp_path / "config.json").read_text()
    assert not (tmp_path / "pipeline_awd_lstm.py").exists()
    assert isinstance(pipeline("text-classification", model=tmp_path), AWDLSTMTextClassificationPipeline)
    # The default output (top 1) of a list, as the stock pipeline gives it: one dict per text, in input order.
    top_one = classify(texts, batch_size=3)
    assert [answer["label"] for answer in top_one] == [
        max(e, key=lambda item: item["score"])["label"] for e in one_by_one
    ]


def test_text_generation_greedy_equals_generate_and_sampling_follows_its_options(folders):
    _, lm_folder = folders
    generator = pipeline("text-generation", model=lm_folder)
    model, tokenizer = generator.model, generator.tokenizer
    prompts = ["The movie was great and the plot", "A bad"]
    greedy = generator(prompts, max_new_tokens=6, do_sample=False, return_full_text=False, batch_size=2)
    for prompt, result in zip(prompts, greedy, strict=True):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        new_ids = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.size(1) :]
        assert result[0]["generated_text"] == tokenizer.decode(new_ids, skip_special_tokens=True)
    full = generator(prompts[0], max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert full.startswith(prompts[0])
    # The continuation is separated from the prompt as the words inside it are: the full text reads as one text.
    full_ids = model.generate(
        tokenizer(prompts[0], return_tensors="pt")["input_ids"], max_new_tokens=6, do_sample=False
    )
    assert full == prompts[0] + tokenizer.decode(full_ids[0], skip_special_tokens=True)[len(prompts[0]) :]

    def sample(seed: int, **options) -> list[str]:
        torch.manual_seed(seed)
        outputs = generator(prompts[0], max_new_tokens=8, do_sample=True, num_return_sequences=4, **options)
        return [output["generated_text"] for output in outputs]

    assert sample(0, temperature=1.5) == sample(0, temperature=1.5)  # seeded sampling is reproducible
    assert len(set(sample(1, temperature=1.5))) > 1  # and samples differ from each other
    # top_k=1 leaves only the most likely token at each step: sampling becomes greedy decoding.
    greedy_full = generator(prompts[0], max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert set(sample(2, top_k=1)) == {greedy_full}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_text_classification_on_gpu_matches_cpu(folders):
    classifier_folder, _ = folders
    on_cpu = pipeline("text-classification", model=classifier_folder)(TEXTS, batch_size=2)
    on_gpu = pipeline("text-classification", model=classifier_folder, device=0)(TEXTS, batch_size=2)
    assert [p["label"] for p in on_gpu] == [p["label"] for p in on_cpu]
    assert [p["score"] for p in on_gpu] == pytest.approx([p["score"] for p in on_cpu], abs=1e-4)
