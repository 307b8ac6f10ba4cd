"""Predictions against labels: the confusion matrix (checked against scikit-learn's, the reference fastai's
`ClassificationInterpretation` follows), the most confused pairs and most confident mistakes, show_results on a
saved classifier folder, and the plot."""

import json
import subprocess

import numpy as np
import pytest
import torch
from test_convert_fastai import NO_FASTAI, fastai_python

from tl_nlp import (
    AWDLSTMConfig,
    AWDLSTMForSequenceClassification,
    ClassificationInterpretation,
    TextData,
    ULMFiTTokenizerFast,
    show_results,
    train_ulmfit_tokenizer,
)

NAMES = ["negative", "neutral", "positive"]


def known_interpretation() -> ClassificationInterpretation:
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    probabilities = [
        [0.9, 0.05, 0.05],  # right
        [0.2, 0.1, 0.7],  # negative taken for positive, sure of it (loss -log 0.2)
        [0.4, 0.5, 0.1],  # negative taken for neutral (loss -log 0.4)
        [0.1, 0.8, 0.1],  # right
        [0.3, 0.3, 0.4],  # neutral taken for positive (loss -log 0.3)
        [0.05, 0.05, 0.9],  # right
        [0.6, 0.3, 0.1],  # positive taken for negative (loss -log 0.1)
        [0.1, 0.1, 0.8],  # right
    ]
    return ClassificationInterpretation([f"text {i}" for i in range(8)], labels, probabilities, NAMES)


def test_confusion_matrix_most_confused_and_most_confident_mistakes():
    interpretation = known_interpretation()
    assert interpretation.confusion_matrix().tolist() == [[1, 1, 1], [0, 1, 1], [1, 0, 2]]
    assert interpretation.most_confused() == [
        ("negative", "neutral", 1), ("negative", "positive", 1), ("neutral", "positive", 1),
        ("positive", "negative", 1),
    ]  # fmt: skip
    assert interpretation.most_confused(min_count=2) == []
    mistakes = interpretation.most_confident_mistakes(3)
    assert list(mistakes.index) == [6, 1, 4]  # losses -log 0.1 > -log 0.2 > -log 0.3
    assert mistakes.loc[6].to_dict() == pytest.approx(
        {"text": "text 6", "actual": "positive", "predicted": "negative", "probability": 0.6, "loss": -np.log(0.1)}
    )
    results = interpretation.show_results(2)
    assert results[["actual", "predicted"]].values.tolist() == [["negative", "negative"], ["negative", "positive"]]
    assert repr(interpretation) == (
        "ClassificationInterpretation(8 texts, labels ['negative', 'neutral', 'positive'], accuracy 0.5000, "
        "4 mistakes)"
    )
    with pytest.raises(ValueError, match="row 1 has label 3, outside 0..2"):
        ClassificationInterpretation(["a", "b"], [0, 3], [[1, 0, 0], [1, 0, 0]], NAMES)
    with pytest.raises(ValueError, match=r"shape \(texts, 3 labels\)"):
        ClassificationInterpretation(["a"], [0], [[1, 0]], NAMES)


def test_confusion_matrix_equals_scikit_learns():
    python = fastai_python()
    if python is None:
        pytest.skip(f"scikit-learn is read from the fastai reference environment; {NO_FASTAI}")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    probabilities = rng.dirichlet(np.ones(4), 300)
    ours = ClassificationInterpretation(["x"] * 300, labels, probabilities, list("abcd")).confusion_matrix()
    script = (
        "import json, sys; from sklearn.metrics import confusion_matrix; y, p = json.loads(sys.argv[1]); "
        "print(json.dumps(confusion_matrix(y, p, labels=[0, 1, 2, 3]).tolist()))"
    )
    arguments = json.dumps([labels.tolist(), probabilities.argmax(-1).tolist()])
    completed = subprocess.run([python, "-c", script, arguments], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert ours.tolist() == json.loads(completed.stdout)


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interpretation") / "classifier"
    texts = ["a good film", "a bad film", "good acting", "bad acting", "a film"]
    tokenizer = train_ulmfit_tokenizer(texts * 2, min_frequency=1)
    torch.manual_seed(0)
    labels = {0: "negative", 1: "positive"}
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2,
                           id2label=labels, label2id={v: k for k, v in labels.items()})  # fmt: skip
    AWDLSTMForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder.parent / "reviews.csv").write_text(
        "review,sentiment\n" + "\n".join(f"{t},{s}" for t, s in zip(texts, ["positive", "negative"] * 2 + ["negative"], strict=True))
    )  # fmt: skip
    return folder


def test_from_folder_and_show_results_run_the_saved_classifier(classifier_folder):
    data = TextData(str(classifier_folder.parent / "reviews.csv"), text_column="review", label_column="sentiment")
    interpretation = ClassificationInterpretation.from_folder(classifier_folder, data)
    model = AWDLSTMForSequenceClassification.from_pretrained(classifier_folder).eval()
    tokenizer = ULMFiTTokenizerFast.from_pretrained(classifier_folder)
    with torch.no_grad():
        for text, row in zip(interpretation.texts, interpretation.probabilities, strict=True):
            expected = model(**tokenizer([text], return_tensors="pt")).logits.softmax(-1)[0]
            assert row == pytest.approx(expected.tolist(), abs=1e-6)
    assert interpretation.labels.tolist() == [1, 0, 1, 0, 0] and list(interpretation.label_names) == NAMES[::2]
    shown = show_results(classifier_folder, data, count=3)
    assert shown["text"].tolist() == ["a good film", "a bad film", "good acting"]
    assert shown["actual"].tolist() == ["positive", "negative", "positive"]
    assert shown.equals(interpretation.show_results(3))


def test_plot_confusion_matrix_draws_the_counts_and_keeps_the_backend():
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        axes = known_interpretation().plot_confusion_matrix()
        assert matplotlib.get_backend() == "svg"
        assert [text.get_text() for text in axes.texts] == ["1", "1", "1", "0", "1", "1", "1", "0", "2"]
        assert [label.get_text() for label in axes.get_xticklabels()] == NAMES
        shares = known_interpretation().plot_confusion_matrix(normalize=True, axes=plt.subplots()[1])
        assert [text.get_text() for text in shares.texts][:3] == ["0.33", "0.33", "0.33"]
    finally:
        plt.close("all")
        matplotlib.use(backend)
