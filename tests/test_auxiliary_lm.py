"""The auxiliary LM objective: loss = classification + lambda * LM on a shared backbone, both parts logged."""

import pytest
import torch
from torch.nn import functional as F
from transformers import GPT2Config, GPT2ForSequenceClassification
from ulmfit_tiny_models import VOCAB, classification_dataset, snapshot, tiny_awd_lstm_classifier

from tl_nlp import AuxiliaryLMTrainer, ClassifierWithAuxiliaryLM, ULMFiTTrainingArguments, layer_groups


def tiny_gpt2_classifier() -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def args(tmp_path, **kwargs) -> ULMFiTTrainingArguments:
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=4, logging_steps=1,
        unfreeze_every_n_steps=1, unfreezing_schedule="partial", report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    return ULMFiTTrainingArguments(**{**values, **kwargs})


def test_gpt2_loss_is_classification_plus_lambda_lm_on_the_shared_transformer():
    torch.manual_seed(0)
    classifier = tiny_gpt2_classifier().eval()
    model = ClassifierWithAuxiliaryLM(classifier, auxiliary_lm_weight=0.3)
    input_ids = torch.randint(1, VOCAB, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 7:] = 0
    input_ids[2, 7:] = 0
    labels = torch.tensor([0, 1, 1])
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    assert out.loss.item() == pytest.approx(out.classification_loss.item() + 0.3 * out.lm_loss.item(), abs=1e-6)
    plain = classifier(input_ids, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(out.logits, plain.logits)
    torch.testing.assert_close(out.classification_loss, plain.loss)
    # The LM head is GPT-2's: the transformer's last hidden states times the (tied) token embeddings, real tokens only.
    hidden = classifier.transformer(input_ids, attention_mask=attention_mask).last_hidden_state
    logits = hidden[:, :-1] @ classifier.transformer.wte.weight.T
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    torch.testing.assert_close(out.lm_loss, expected)
    assert not any(name.startswith("lm_head") for name, _ in model.named_parameters())  # nothing new for GPT-2


def test_awd_lstm_lm_term_reads_the_classifier_encoder_through_the_tied_decoder():
    torch.manual_seed(0)
    classifier = tiny_awd_lstm_classifier().eval()
    bias = torch.randn(VOCAB)
    model = ClassifierWithAuxiliaryLM(classifier, auxiliary_lm_weight=0.5, lm_bias=bias)
    input_ids = torch.randint(4, VOCAB, (3, 12))
    out = model(input_ids, labels=torch.tensor([0, 1, 0]))
    hidden = classifier.awd_lstm(input_ids).last_hidden_state
    logits = hidden[:, :-1] @ classifier.awd_lstm.embeddings.weight.T + bias
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.lm_loss, expected)
    assert out.loss.item() == pytest.approx(out.classification_loss.item() + 0.5 * out.lm_loss.item(), abs=1e-6)
    # Layer groups: the classifier's, with the LM bias in the head; the tied decoder is the embedding matrix.
    groups = layer_groups(model)
    assert [group.name for group in groups] == ["embeddings", "layer 0", "layer 1", "layer 2", "head"]
    assert groups[-1].parameter_names[-1] == "lm_head.bias"
    assert model(input_ids).lm_loss is None  # no labels, no LM pass (prediction)


@pytest.mark.parametrize("factory", [tiny_awd_lstm_classifier, tiny_gpt2_classifier])
def test_trainer_logs_both_parts_and_lambda_zero_is_plain_training(tmp_path, factory):
    data = classification_dataset(size=16)
    torch.manual_seed(0)
    auxiliary = ClassifierWithAuxiliaryLM(factory(), auxiliary_lm_weight=0.5)
    trainer = AuxiliaryLMTrainer(model=auxiliary, args=args(tmp_path / "aux"), train_dataset=data, eval_dataset=data)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4
    for entry in logs:  # one batch per log: the logged loss is exactly the two logged parts combined
        assert entry["loss"] == pytest.approx(entry["classification_loss"] + 0.5 * entry["lm_loss"], rel=1e-4)
        assert entry["lm_loss"] > 0.5 * torch.log(torch.tensor(float(VOCAB))).item()  # an untrained LM
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(
        metrics["eval_classification_loss"] + 0.5 * metrics["eval_lm_loss"], rel=1e-4
    )

    torch.manual_seed(0)
    plain_model = factory()
    torch.manual_seed(0)
    zero = ClassifierWithAuxiliaryLM(factory(), auxiliary_lm_weight=0.0)
    AuxiliaryLMTrainer(model=zero, args=args(tmp_path / "zero"), train_dataset=data).train()
    from tl_nlp import ClassificationTrainer

    ClassificationTrainer(model=plain_model, args=args(tmp_path / "plain"), train_dataset=data).train()
    plain_weights, zero_weights = snapshot(plain_model), snapshot(zero.classifier)
    assert plain_weights.keys() == zero_weights.keys()
    for name in plain_weights:
        torch.testing.assert_close(zero_weights[name], plain_weights[name], atol=0, rtol=0, msg=name)


def test_bad_weight_and_bias_are_refused():
    with pytest.raises(ValueError, match="auxiliary_lm_weight must be >= 0"):
        ClassifierWithAuxiliaryLM(tiny_gpt2_classifier(), auxiliary_lm_weight=-1.0)
    with pytest.raises(ValueError, match="lm_bias has shape"):
        ClassifierWithAuxiliaryLM(tiny_awd_lstm_classifier(), lm_bias=torch.zeros(3))
