"""Feature extraction: pooled features of a frozen backbone, a head trained on the cached features."""

import pytest
import torch
from transformers import BertConfig, BertModel

from tl_nlp import (
    AWDLSTMConfig,
    AWDLSTMForCausalLM,
    AWDLSTMForSequenceClassification,
    FeatureExtractionClassifier,
    FeatureHeadArguments,
    extract_features,
)
from tl_nlp.data import train_ulmfit_tokenizer

POSITIVE = ["great film , loved it", "a great great story", "loved the actors , great", "great fun"]
NEGATIVE = ["awful film , hated it", "an awful awful plot", "hated the actors , awful", "awful and dull"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_ulmfit_tokenizer(POSITIVE + NEGATIVE, min_frequency=1)


def awd_lstm_config(tokenizer) -> AWDLSTMConfig:
    return AWDLSTMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2, bptt_chunk_length=3
    )


def test_awd_lstm_concat_pooling_is_the_classifiers_whatever_the_batching(tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = AWDLSTMForCausalLM(awd_lstm_config(tokenizer)).eval()
    lm.save_pretrained(tmp_path)
    classifier = AWDLSTMForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    texts = POSITIVE + NEGATIVE
    features = extract_features(lm, tokenizer, texts, batch_size=3)
    assert features.shape == (8, 3 * 8)  # [last, max, mean] of the 8-wide last layer
    for index, text in enumerate(texts):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        torch.testing.assert_close(features[index], classifier.pool_document(ids)[0].detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        extract_features(classifier, tokenizer, texts, batch_size=8), features, atol=1e-6, rtol=0
    )


def test_bert_mean_and_cls_pooling_over_real_tokens(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = BertModel(config).eval()
    texts = ["great fun", "a great great story , loved it"]
    mean = extract_features(model, tokenizer, texts, pooling="mean")
    cls = extract_features(model, tokenizer, texts, pooling="cls")
    for index, text in enumerate(texts):
        hidden = model(torch.tensor([tokenizer(text)["input_ids"]])).last_hidden_state[0].detach()
        torch.testing.assert_close(mean[index], hidden.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(cls[index], hidden[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'concat' is AWD-LSTM's pooling"):
        extract_features(model, tokenizer, texts, pooling="concat")


def test_head_learns_from_cached_features_and_the_backbone_never_moves(tokenizer):
    torch.manual_seed(0)
    model = AWDLSTMForSequenceClassification(awd_lstm_config(tokenizer))
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    head = FeatureHeadArguments(num_epochs=60, learning_rate=0.05, batch_size=4)
    classifier = FeatureExtractionClassifier(model, tokenizer, ["negative", "positive"], head_arguments=head)
    texts, labels = POSITIVE + NEGATIVE, [1] * 4 + [0] * 4
    features = classifier.features(texts)
    history = classifier.fit_features(features, labels)
    assert history[-1] < 0.1 < history[0]  # linearly separable features: the logistic regression fits them
    predictions = classifier(texts)
    assert [p["label"] for p in predictions] == ["positive"] * 4 + ["negative"] * 4
    assert all(sum(p["scores"].values()) == pytest.approx(1.0) for p in predictions)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # frozen: not a bit moved (BatchNorm stats included)
    assert not any(p.requires_grad for p in model.parameters())

    again = FeatureExtractionClassifier(model, tokenizer, ["negative", "positive"], head_arguments=head)
    assert again.fit_features(features, labels) == history  # same seed, same head
    mlp = FeatureExtractionClassifier(
        model, tokenizer, ["negative", "positive"], head_arguments=FeatureHeadArguments(hidden_size=5, num_epochs=3)
    )
    mlp.fit_features(features, labels)
    assert [layer.out_features for layer in mlp.head if isinstance(layer, torch.nn.Linear)] == [5, 2]


def test_errors_name_the_field(tokenizer):
    with pytest.raises(ValueError, match="hidden_size must be >= 0"):
        FeatureHeadArguments(hidden_size=-1)
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        FeatureHeadArguments(num_epochs=0)
    model = AWDLSTMForSequenceClassification(awd_lstm_config(tokenizer))
    classifier = FeatureExtractionClassifier(model, tokenizer, ["negative", "positive"])
    with pytest.raises(ValueError, match="not trained yet"):
        classifier(["great"])
    with pytest.raises(ValueError, match="label 2 in row 1 is outside 0..1"):
        classifier.fit_features(torch.zeros(2, 24), [0, 2])
