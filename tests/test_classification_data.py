"""Classification data: sortish and sorted batch orders, labels, tokenization, backward models and ensembles."""

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding

from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification, ULMFiTTrainingArguments
from tl_nlp.data import (
    SortedSampler,
    SortishSampler,
    backward_tokenizer,
    encode_labels,
    ensemble_predict,
    padding_fraction,
    sortish_batches,
    tokenize_dataset,
    train_ulmfit_tokenizer,
)
from tl_nlp.training.classification_trainer import ClassificationTrainer

LENGTHS = np.random.default_rng(0).integers(5, 3000, size=1037)


def test_sortish_batches_cover_every_example_once_longest_first():
    batches = sortish_batches(LENGTHS, batch_size=16, generator=np.random.default_rng(1), chunk_batches=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(LENGTHS)))
    assert LENGTHS[batches[0]].max() == LENGTHS.max()
    # Sorted within chunks: far less padding than random batches of the same size.
    random_batches = np.array_split(np.random.default_rng(2).permutation(len(LENGTHS)), len(batches))
    assert padding_fraction(batches, LENGTHS) < 0.1 < 0.4 < padding_fraction(random_batches, LENGTHS)
    # The batch order is shuffled, not sorted by length.
    maxima = [LENGTHS[batch].max() for batch in batches[1:]]
    assert maxima != sorted(maxima, reverse=True)


def test_sortish_sampler_yields_whole_batches_per_epoch():
    sampler = SortishSampler(LENGTHS, batch_size=16, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(len(LENGTHS)))
    sampler.set_epoch(0)
    assert list(sampler) == first  # deterministic: the same on every DDP process
    sampler.set_epoch(1)
    assert list(sampler) != first
    # The only short batch is the last one, so every run of 16 indices is one sortish batch.
    runs = [first[i : i + 16] for i in range(0, len(first), 16)]
    assert all(len(run) == 16 for run in runs[:-1]) and len(runs[-1]) == len(LENGTHS) % 16
    assert padding_fraction(runs, LENGTHS) < 0.1


def test_sorted_sampler_orders_by_decreasing_length():
    order = list(SortedSampler(LENGTHS))
    assert sorted(order) == list(range(len(LENGTHS)))
    assert all(LENGTHS[a] >= LENGTHS[b] for a, b in zip(order, order[1:], strict=False))


def test_labels_from_strings_and_integers():
    import datasets

    dataset = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]})
    encoded, id2label, label2id = encode_labels(dataset)
    assert encoded["labels"] == [1, 0, 1] and id2label == {0: "neg", 1: "pos"} and label2id == {"neg": 0, "pos": 1}
    encoded, id2label, _ = encode_labels(dataset, label_names=["pos", "neg"])
    assert encoded["labels"] == [0, 1, 0] and id2label == {0: "pos", 1: "neg"}
    integers = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [2, 0]})
    encoded, id2label, _ = encode_labels(integers, label_names=["neg", "neutral", "pos"])
    assert encoded["labels"] == [2, 0] and id2label[2] == "pos"


def test_tokenize_dataset_keeps_long_documents_whole(tmp_path):
    import datasets

    tokenizer = train_ulmfit_tokenizer(["a good film", "a bad film"], min_frequency=1)
    long_review = " ".join(["good film"] * 2500)
    dataset = datasets.Dataset.from_dict({"text": ["a bad film", long_review], "label": [0, 1]})
    tokenized, id2label, label2id = tokenize_dataset(dataset, tokenizer, label_names=["negative", "positive"])
    assert set(tokenized.column_names) == {"input_ids", "attention_mask", "length", "labels"}
    assert tokenized["length"] == [4, 5001] and len(tokenized[1]["input_ids"]) == 5001
    assert id2label == {0: "negative", 1: "positive"}
    # id2label / label2id travel with the model.
    AWDLSTMConfig(vocab_size=len(tokenizer), id2label=id2label, label2id=label2id).save_pretrained(tmp_path)
    reloaded = AWDLSTMConfig.from_pretrained(tmp_path)
    assert reloaded.id2label == id2label and reloaded.label2id == label2id


def test_classification_trainer_uses_sortish_and_sorted_samplers(tmp_path):
    import datasets

    tokenizer = train_ulmfit_tokenizer(["one two three four five six"], min_frequency=1)
    texts = [" ".join(["one"] * n) for n in LENGTHS[:64] // 100 + 1]
    dataset, _, _ = tokenize_dataset(datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 32}), tokenizer)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_hidden_layers=1)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        gradual_unfreezing=False,
    )
    trainer = ClassificationTrainer(
        model=AWDLSTMForSequenceClassification(config),
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    assert isinstance(trainer._get_train_sampler(), SortishSampler)
    assert isinstance(trainer._get_eval_sampler(dataset), SortedSampler)
    batches = list(trainer.get_train_dataloader())
    lengths = np.array(dataset["length"])
    assert sum(len(batch["input_ids"]) for batch in batches) == 64
    assert batches[0]["input_ids"].shape[1] == lengths.max()


def test_classification_trainer_predict_returns_rows_in_dataset_order(tmp_path):
    import datasets

    tokenizer = train_ulmfit_tokenizer(["one two three four five six"], min_frequency=1)
    words = ["one", "two", "three", "four", "five", "six"]
    texts = [" ".join(words[(i + j) % 6] for j in range(n)) for i, n in enumerate([3, 11, 1, 7, 20, 5, 2, 13, 9, 4])]
    labels = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0]
    dataset, _, _ = tokenize_dataset(datasets.Dataset.from_dict({"text": texts, "label": labels}), tokenizer)
    assert list(SortedSampler(dataset["length"])) != list(range(len(texts)))  # evaluation order is not row order
    torch.manual_seed(0)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_hidden_layers=1)
    model = AWDLSTMForSequenceClassification(config).eval()
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True
    )
    trainer = ClassificationTrainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
    output = trainer.predict(dataset)
    with torch.no_grad():
        one_by_one = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in dataset["input_ids"]])
    np.testing.assert_allclose(output.predictions, one_by_one.numpy(), rtol=1e-5, atol=1e-6)
    assert output.label_ids.tolist() == labels
    # The loss computed on the sorted batches is the mean over the rows predicted one by one.
    assert output.metrics["test_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(one_by_one, torch.tensor(labels)).item(), rel=1e-5
    )


def test_backward_classifier_reads_reversed_ids_and_ensemble_averages():
    texts = ["The film was GREAT!!!", "A dull, dull film.", "I liked it"]
    forward_tokenizer = train_ulmfit_tokenizer(texts, min_frequency=1)
    backward = backward_tokenizer(forward_tokenizer)
    assert backward("The film")["input_ids"] == forward_tokenizer("The film")["input_ids"][::-1]
    torch.manual_seed(0)
    config = AWDLSTMConfig(
        vocab_size=len(forward_tokenizer), embedding_size=8, hidden_size=8, num_hidden_layers=1, num_labels=2
    )
    forward_model = AWDLSTMForSequenceClassification(config).eval()
    backward_model = AWDLSTMForSequenceClassification(config).eval()
    probabilities = ensemble_predict([(forward_model, forward_tokenizer), (backward_model, backward)], texts, 2)
    with torch.no_grad():
        for row, text in enumerate(texts):
            forward_ids = torch.tensor([forward_tokenizer(text)["input_ids"]])
            expected = (
                forward_model(forward_ids).logits.softmax(-1) + backward_model(forward_ids.flip(1)).logits.softmax(-1)
            ) / 2
            assert probabilities[row] == pytest.approx(expected[0].numpy(), abs=1e-5)


def test_sortish_sampler_never_makes_a_batch_of_one_and_rotates_who_sits_out():
    sampler = SortishSampler(list(range(1, 18)), batch_size=16, seed=0)
    assert len(sampler) == 16
    left_out = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == 16 and len(set(order)) == 16
        left_out |= set(range(17)) - set(order)
    assert len(left_out) > 1  # not always the shortest example of the chunk


def test_classifier_with_17_rows_and_batch_16_trains_through_every_epoch(tmp_path):
    import datasets

    tokenizer = train_ulmfit_tokenizer(["one two three four five six"], min_frequency=1)
    texts = [" ".join(["one", "two"] * (n % 5 + 1)) for n in range(17)]
    dataset, _, _ = tokenize_dataset(datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 8 + [0]}), tokenizer)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_hidden_layers=1)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-3,
    )
    trainer = ClassificationTrainer(
        model=AWDLSTMForSequenceClassification(config),
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()  # failed at the end of epoch 1 with a training batch of one
    assert trainer.state.global_step == 3
