"""Language-model streams (order, coverage, epochs, variable BPTT) and the trainer that carries the state."""

import math

import datasets
import numpy as np
import pytest
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, ULMFiTTrainingArguments
from tl_nlp.data import LanguageModelStreams, language_model_data, pack_into_blocks
from tl_nlp.data.lm_data import IGNORE_INDEX
from tl_nlp.training.lm_trainer import LanguageModelTrainer, WindowLearningRateCallback, stream_perplexity

# Every token value is unique (and small, for a tiny vocabulary), so a token's place in the stream can be found back.
_LENGTHS = [7, 30, 3, 18, 25, 11, 40, 9]
DOCUMENTS = [list(range(10 + sum(_LENGTHS[:d]), 10 + sum(_LENGTHS[: d + 1]))) for d in range(len(_LENGTHS))]


def epoch_stream(streams: LanguageModelStreams) -> np.ndarray:
    return streams._epoch_stream()


def read_rows(streams: LanguageModelStreams) -> tuple[np.ndarray, np.ndarray, list]:
    """Every batch of one epoch glued back along time: `(inputs, targets)` rows and the batches' flags."""
    batches = list(streams)
    inputs = np.concatenate([batch["input_ids"].numpy() for batch in batches], axis=1)
    targets = np.concatenate([batch["shift_labels"].numpy() for batch in batches], axis=1)
    return inputs, targets, [(batch["reset_state"], batch["lr_scale"]) for batch in batches]


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_every_target_read_once_in_stream_order(variable_bptt):
    streams = LanguageModelStreams(DOCUMENTS, batch_size=3, bptt=4, variable_bptt=variable_bptt, seed=1)
    for epoch in range(2):
        streams.set_epoch(epoch)
        stream = epoch_stream(streams)
        inputs, targets, flags = read_rows(streams)
        assert len(flags) == len(streams)
        assert flags[0][0] is True and not any(reset for reset, _ in flags[1:])
        # Row k continues the text exactly: it is the k-th contiguous slice of the stream, targets shifted by one.
        real = targets != IGNORE_INDEX
        assert np.array_equal(targets[real], stream[1:])
        assert np.array_equal(inputs.reshape(-1)[: len(stream) - 1], stream[:-1])
        assert np.all(inputs[~real] == 1)  # the tail of the last row is padding
        assert sum(real.sum(axis=1)) == sum(map(len, DOCUMENTS)) - 1


def test_documents_shuffled_per_epoch_deterministically():
    streams = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=5, seed=3)
    first = epoch_stream(streams)
    streams.set_epoch(1)
    second = epoch_stream(streams)
    assert not np.array_equal(first, second) and sorted(first) == sorted(second)
    again = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=5, seed=3)
    again.set_epoch(1)
    assert np.array_equal(epoch_stream(again), second)
    # Documents stay whole: each one appears as a contiguous run.
    starts = [int(np.flatnonzero(second == document[0])[0]) for document in DOCUMENTS]
    for start, document in zip(starts, DOCUMENTS, strict=True):
        assert second[start : start + len(document)].tolist() == document
    unshuffled = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=5, shuffle=False)
    assert epoch_stream(unshuffled).tolist() == [token for document in DOCUMENTS for token in document]


def test_processes_split_streams_and_cover_the_epoch_once():
    per_process = [
        LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=3, variable_bptt=True, process_index=p, num_processes=2)
        for p in range(2)
    ]
    for streams in per_process:
        streams.set_epoch(4)
    assert per_process[0].window_bounds() == per_process[1].window_bounds()
    targets = [read_rows(streams)[1] for streams in per_process]
    assert all(t.shape == targets[0].shape for t in targets)
    every_row = np.concatenate(targets, axis=0)  # rank 0's rows, then rank 1's: the global row order
    real = every_row[every_row != IGNORE_INDEX]
    assert np.array_equal(real, epoch_stream(per_process[0])[1:])


def test_variable_bptt_windows_follow_awd_lstm_rule():
    documents = [list(range(5000))]
    streams = LanguageModelStreams(documents, batch_size=2, bptt=70, variable_bptt=True)
    lengths = np.diff([0] + [end for _, end in streams.window_bounds()])
    assert lengths.sum() == streams.row_length and len(lengths) == len(streams) == math.ceil(2500 / 70)
    assert lengths.min() >= 4 and 60 < lengths.mean() < 75
    fixed = LanguageModelStreams(documents, batch_size=2, bptt=70)
    assert [lr for _, lr in read_rows(fixed)[2][:-1]] == [1.0] * (len(fixed) - 1)
    scales = [lr for _, lr in read_rows(streams)[2]]
    assert scales == pytest.approx(list(lengths / 70))


def test_from_dataset_reads_arrow_buffers():
    dataset = datasets.Dataset.from_dict({"input_ids": DOCUMENTS}).select([3, 1, 0, 2, 4, 5, 6, 7])
    from_arrow = LanguageModelStreams.from_dataset(dataset, batch_size=2, bptt=4, shuffle=False)
    reordered = [DOCUMENTS[i] for i in [3, 1, 0, 2, 4, 5, 6, 7]]
    assert np.array_equal(epoch_stream(from_arrow), np.concatenate(reordered))


def tiny_lm(vocab_size: int = 160) -> AWDLSTMForCausalLM:
    torch.manual_seed(0)
    config = AWDLSTMConfig(
        vocab_size=vocab_size, embedding_size=8, hidden_size=12, num_hidden_layers=2, dropout_multiplier=0.0
    )
    return AWDLSTMForCausalLM(config)


def lm_args(tmp_path, **overrides) -> ULMFiTTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        gradual_unfreezing=False,
        discriminative_lr_decay=1.0,
        dataloader_pin_memory=False,
        learning_rate=1e-2,
        ar_alpha=0.0,
        tar_beta=0.0,
    )
    return ULMFiTTrainingArguments(**{**defaults, **overrides})


class RecordingTrainer(LanguageModelTrainer):
    """Records, for every training window, its inputs and whether it started from a zero state."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            started_from_zero = inputs["reset_state"] or self.carried_state[True] is None
            self.seen.append((inputs["input_ids"].clone(), started_from_zero))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def test_trainer_reads_streams_in_order_and_resets_each_epoch(tmp_path):
    streams = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=6, seed=5)
    trainer = RecordingTrainer(model=tiny_lm(), args=lm_args(tmp_path, num_train_epochs=2), train_dataset=streams)
    trainer.seen = []
    trainer.train()
    per_epoch = len(streams)
    assert len(trainer.seen) == 2 * per_epoch
    for epoch in range(2):
        windows = trainer.seen[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert [zero for _, zero in windows] == [True] + [False] * (per_epoch - 1)
        streams.set_epoch(epoch)
        expected_inputs, _, _ = read_rows(streams)
        assert np.array_equal(torch.cat([ids for ids, _ in windows], dim=1).numpy(), expected_inputs)


def test_evaluation_carries_state_and_is_deterministic(tmp_path):
    valid = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=5, shuffle=False)
    model = tiny_lm().eval()
    trainer = LanguageModelTrainer(model=model, args=lm_args(tmp_path), eval_dataset=valid)
    metrics = trainer.evaluate()
    first, second = metrics["eval_loss"], trainer.evaluate()["eval_loss"]
    assert first == second
    # The same windows read by hand with the state carried: the loss is the mean over every target token, not the
    # mean of the per-window means (the last window is shorter and the stream's padded tail has no targets).
    losses, counts, state = [], [], None
    with torch.no_grad():
        for batch in valid:
            out = model(input_ids=batch["input_ids"], shift_labels=batch["shift_labels"], state=state, use_cache=True)
            losses.append(out.loss.item())
            counts.append(int((batch["shift_labels"] != -100).sum()))
            state = out.state
    assert first == pytest.approx(np.average(losses, weights=counts), rel=1e-6)
    assert first != pytest.approx(np.mean(losses), rel=1e-6)
    # The same number as the token-weighted perplexity over the whole stream, with the carried state.
    carried = stream_perplexity(model, valid)
    assert metrics["eval_perplexity"] == pytest.approx(carried, rel=1e-6)
    assert carried != pytest.approx(stream_perplexity(model, valid, carry_state=False))
    assert carried == stream_perplexity(model, valid)


def test_window_learning_rate_callback_scales_then_restores():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [parameter], "lr": 0.1}, {"params": [], "lr": 0.2}])
    holder = type("Holder", (), {"window_lr_scales": [0.5, 1.0]})()
    callback = WindowLearningRateCallback(holder)
    callback.on_pre_optimizer_step(None, None, None, optimizer=optimizer)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.075, 0.15])
    callback.on_optimizer_step(None, None, None, optimizer=optimizer)
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.2]
    assert holder.window_lr_scales == []


def test_packed_blocks_and_masked_lm_through_the_same_api(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(30)]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", mask_token="[MASK]")
    documents = datasets.Dataset.from_dict({"input_ids": [list(range(3, 3 + n)) for n in (10, 7, 12)]})
    blocks = pack_into_blocks(documents, block_size=8)
    flat = [token for ids in documents["input_ids"] for token in ids]
    assert list(blocks["input_ids"]) == [flat[0:8], flat[8:16], flat[16:24]]
    train, collator = language_model_data(documents, tokenizer, "masked", block_size=8)
    assert isinstance(collator, DataCollatorForLanguageModeling) and collator.mlm
    batch = collator([train[0], train[1]])
    assert batch["input_ids"].shape == (2, 8) and ((batch["labels"] == -100) | (batch["labels"] >= 3)).all()
    train, collator = language_model_data(documents, tokenizer, "causal", block_size=8)
    assert not collator.mlm and len(train) == 3
    streams, collator = language_model_data(documents, tokenizer, "stream", batch_size=2, bptt=4)
    assert isinstance(streams, LanguageModelStreams) and collator is None


def test_dataloader_never_replays_the_stream_in_several_workers():
    streams = LanguageModelStreams(DOCUMENTS, batch_size=2, bptt=6, seed=2)
    loader = streams.dataloader(num_workers=3)
    loader.set_epoch(1)
    batches = list(loader)
    assert loader.num_workers == 1 and len(batches) == len(streams)
    assert np.array_equal(np.concatenate([b["input_ids"].numpy() for b in batches], axis=1), read_rows(streams)[0])


def test_masked_and_causal_lm_train_through_the_same_trainer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    words = ["[PAD]", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(30)]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", mask_token="[MASK]")
    documents = datasets.Dataset.from_dict(
        {"input_ids": [[3 + (i * 7 + j) % 30 for j in range(40)] for i in range(8)]}
    )
    tiny = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    models_by_style = {
        "masked": BertForMaskedLM(BertConfig(vocab_size=len(words), intermediate_size=32, **tiny)),
        "causal": GPT2LMHeadModel(
            GPT2Config(vocab_size=len(words), n_embd=16, n_layer=2, n_head=2, n_positions=16, pad_token_id=0)
        ),
    }
    for style, model in models_by_style.items():
        train, collator = language_model_data(documents, tokenizer, style, block_size=16)
        args = lm_args(tmp_path / style, max_steps=2, per_device_train_batch_size=4)
        trainer = LanguageModelTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=train, data_collator=collator
        )
        assert trainer.label_names == ["labels"]
        before = [p.detach().clone() for p in model.parameters()]
        result = trainer.train()
        assert math.isfinite(result.training_loss) and trainer.state.global_step == 2
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        assert math.isfinite(trainer.evaluate()["eval_loss"])
