"""AWD-LSTM as a transformers model: config, regularisers, heads, state, padding, generation, save/load, hand-off."""

import json
import textwrap

import pytest
import torch
from fresh_process import run_without_tl_nlp
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification, AWDLSTMModel
from tl_nlp.models.awd_lstm.modeling_awd_lstm import EmbeddingDropout, LockedDropout, WeightDropout

VOCAB = 60
DROPOUT_NAMES = ("input_dropout", "hidden_dropout", "embedding_dropout", "weight_dropout", "output_dropout")


def tiny_config(**overrides) -> AWDLSTMConfig:
    values = dict(
        vocab_size=VOCAB, embedding_size=8, hidden_size=12, num_hidden_layers=3, bptt_chunk_length=5, max_len=10
    )
    values.update(overrides)
    return AWDLSTMConfig(**values)


def no_dropout(**overrides) -> AWDLSTMConfig:
    return tiny_config(dropout_multiplier=0.0, **overrides)


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=generator)


# --- configuration -----------------------------------------------------------------------------------------------


def test_defaults_are_the_papers():
    config = AWDLSTMConfig()
    assert (config.embedding_size, config.hidden_size, config.num_hidden_layers) == (400, 1152, 3)
    assert config.tie_word_embeddings
    # Unset dropouts are fastai's for the head (awd_lstm_lm_config / awd_lstm_clas_config).
    assert [config.scaled_dropout(name, "language_model") for name in DROPOUT_NAMES] == [0.25, 0.15, 0.02, 0.2, 0.1]
    assert [config.scaled_dropout(name, "classifier") for name in DROPOUT_NAMES[:4]] == [0.4, 0.3, 0.05, 0.5]
    assert config.dropout_multiplier == 1.0
    assert (config.bptt_chunk_length, config.max_len) == (70, 1440)
    assert config.classifier_hidden_sizes == [50] and config.classifier_dropouts == [0.4, 0.1]
    assert tiny_config(dropout_multiplier=0.5).scaled_dropout("input_dropout", "classifier") == pytest.approx(0.2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", 0),
        ("num_hidden_layers", -1),
        ("vocab_size", 0),
        ("input_dropout", 1.0),
        ("weight_dropout", -0.1),
        ("dropout_multiplier", -1.0),
        ("bptt_chunk_length", 0),
        ("classifier_hidden_sizes", [50, 0]),
        ("classifier_dropouts", [0.1]),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_dropout_multiplier_is_checked_against_every_dropout():
    with pytest.raises(ValueError, match="input_dropout times dropout_multiplier"):
        tiny_config(dropout_multiplier=3.0)
    with pytest.raises(ValueError, match="max_len"):
        tiny_config(bptt_chunk_length=20, max_len=10)


# --- regularisers --------------------------------------------------------------------------------------------------


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    dropout = LockedDropout(0.5).train()
    out = dropout(torch.ones(4, 7, 16))
    assert torch.equal(out, out[:, :1].expand_as(out))  # identical at every time step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # dropped or rescaled by 1 / (1 - p)
    assert torch.equal(dropout.eval()(out), out)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    dropout = EmbeddingDropout(0.5).train()
    ids = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2]])
    out = dropout(ids, torch.ones(1, 8, 5), vocab_size=4)
    for token in (1, 2, 3):
        rows = out[ids == token]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # every occurrence dropped, or none
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(dropout.eval()(ids, torch.ones(1, 8, 5), vocab_size=4), torch.ones(1, 8, 5))


def test_weight_dropout_leaves_the_parameter_alone():
    model = AWDLSTMModel(tiny_config(weight_dropout=0.5, dropout_multiplier=1.0)).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(random_ids(2, 6))
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert isinstance(model.layers[0].weight_hh, nn.Parameter)
    assert model.layers[0].weight_dropout.p == 0.5
    assert torch.equal(WeightDropout(0.5).eval()(before["layers.0.weight_hh"]), before["layers.0.weight_hh"])


def test_dropouts_act_in_train_mode_only():
    model = AWDLSTMForCausalLM(tiny_config())
    ids = random_ids(2, 9)
    model.train()
    torch.manual_seed(1)
    first = model(ids).logits
    torch.manual_seed(2)
    assert not torch.allclose(first, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    out = model(ids)
    assert torch.equal(out.raw_last_hidden_state, out.dropped_last_hidden_state)


def _dropouts(model) -> list[float]:
    encoder = model.awd_lstm
    values = [encoder.embedding_dropout.p, encoder.input_dropout.p, encoder.layers[0].weight_dropout.p]
    values += [dropout.p for dropout in encoder.hidden_dropouts]
    if isinstance(model, AWDLSTMForCausalLM):
        return values + [model.output_dropout.p]
    return values + [m.p for m in model.classifier.layers if isinstance(m, nn.Dropout)]


def test_dropout_multiplier_scales_every_module_but_the_heads_later_dropouts():
    model = AWDLSTMForSequenceClassification(tiny_config(dropout_multiplier=0.5, classifier_hidden_sizes=[6, 5]))
    # fastai's drop_mult scales output_p (the head's first dropout) but not ps (its later ones).
    assert _dropouts(model) == pytest.approx([0.025, 0.2, 0.25, 0.15, 0.15, 0.2, 0.1, 0.1])
    lm = AWDLSTMForCausalLM(tiny_config(dropout_multiplier=0.5))
    assert _dropouts(lm) == pytest.approx([0.01, 0.125, 0.1, 0.075, 0.075, 0.05])


def test_a_classifier_loaded_from_a_language_model_gets_the_classifiers_dropouts(tmp_path):
    AWDLSTMForCausalLM(tiny_config()).save_pretrained(tmp_path)
    classifier = AWDLSTMForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert _dropouts(classifier) == pytest.approx([0.05, 0.4, 0.5, 0.3, 0.3, 0.4, 0.1])
    explicit = AWDLSTMForCausalLM(tiny_config(input_dropout=0.1))
    assert explicit.awd_lstm.input_dropout.p == 0.1


# --- shapes, outputs, losses ---------------------------------------------------------------------------------------


def test_output_shapes_and_types():
    config = tiny_config()
    ids = random_ids(3, 11)
    encoder_out = AWDLSTMModel(config)(ids, output_hidden_states=True)
    assert encoder_out.last_hidden_state.shape == (3, 11, 8)
    assert len(encoder_out.hidden_states) == 4 and encoder_out.hidden_states[1].shape == (3, 11, 12)
    assert [tuple(h.shape) for h, _ in encoder_out.state] == [(3, 12), (3, 12), (3, 8)]

    lm_out = AWDLSTMForCausalLM(config)(ids, labels=ids)
    assert lm_out.logits.shape == (3, 11, VOCAB) and lm_out.loss.dim() == 0
    assert lm_out.raw_last_hidden_state.shape == lm_out.dropped_last_hidden_state.shape == (3, 11, 8)
    loss, logits, state = AWDLSTMForCausalLM(config)(ids, labels=ids, return_dict=False)[:3]
    assert logits.shape == (3, 11, VOCAB) and len(state) == 3

    clas_out = AWDLSTMForSequenceClassification(tiny_config(num_labels=4))(ids, labels=torch.tensor([0, 3, 1]))
    assert clas_out.logits.shape == (3, 4) and clas_out.loss.dim() == 0


def test_decoder_is_tied_to_the_embeddings():
    model = AWDLSTMForCausalLM(tiny_config())
    assert model.decoder.weight is model.awd_lstm.embeddings.weight
    untied = AWDLSTMForCausalLM(tiny_config(tie_word_embeddings=False))
    assert untied.decoder.weight is not untied.awd_lstm.embeddings.weight


def test_labels_are_shifted_inside_and_shift_labels_are_not():
    model = AWDLSTMForCausalLM(no_dropout()).eval()
    ids = random_ids(2, 10)
    shifted = model(ids, labels=ids)
    aligned = model(ids[:, :-1], shift_labels=ids[:, 1:])
    manual = nn.functional.cross_entropy(shifted.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert shifted.loss.item() == pytest.approx(manual.item(), rel=1e-6)
    assert aligned.loss.item() == pytest.approx(manual.item(), rel=1e-6)
    total = nn.functional.cross_entropy(
        shifted.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum"
    )
    divided = model(ids, labels=ids, num_items_in_batch=torch.tensor(40))
    assert divided.loss.item() == pytest.approx(total.item() / 40, rel=1e-6)


def test_trainer_sees_labels_as_the_only_label_column():
    # Trainer requires every forward argument named like a label to be in a batch before it reports eval_loss.
    from transformers.utils import find_labels

    assert find_labels(AWDLSTMForCausalLM) == ["labels"]
    assert find_labels(AWDLSTMForSequenceClassification) == ["labels"]


def test_multi_label_and_regression_losses():
    ids = random_ids(2, 7)
    multi = AWDLSTMForSequenceClassification(tiny_config(num_labels=3, problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = multi.eval()(ids, labels=targets)
    assert out.loss.item() == pytest.approx(nn.functional.binary_cross_entropy_with_logits(out.logits, targets).item())
    regression = AWDLSTMForSequenceClassification(tiny_config(num_labels=1)).eval()
    values = torch.tensor([0.5, -1.0])
    out = regression(ids, labels=values)
    assert regression.config.problem_type == "regression"
    assert out.loss.item() == pytest.approx(nn.functional.mse_loss(out.logits.squeeze(-1), values).item())


@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_tiny_model_overfits_one_batch(head):
    torch.manual_seed(0)
    ids = random_ids(4, 12, seed=3)
    if head == "lm":
        model = AWDLSTMForCausalLM(no_dropout(embedding_size=16, hidden_size=32))
        batch = dict(input_ids=ids, labels=ids)
    else:
        model = AWDLSTMForSequenceClassification(no_dropout(embedding_size=16, hidden_size=32))
        batch = dict(input_ids=ids, labels=torch.tensor([0, 1, 1, 0]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    first = model(**batch).loss.item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first


# --- state ---------------------------------------------------------------------------------------------------------


def test_carried_state_continues_the_text_exactly():
    model = AWDLSTMForCausalLM(no_dropout()).eval()
    ids = random_ids(2, 12)
    whole = model(ids)
    first = model(ids[:, :5])
    second = model(ids[:, 5:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole.logits)
    for (h, c), (h2, c2) in zip(second.state, whole.state, strict=True):
        torch.testing.assert_close(h, h2)
        torch.testing.assert_close(c, c2)
    zero_state = model.awd_lstm.initial_state(2)
    torch.testing.assert_close(model(ids, state=zero_state).logits, whole.logits)


def test_state_is_returned_even_when_trainer_turns_config_use_cache_off(tmp_path):
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    model.config.use_cache = False  # what transformers' Trainer does to every model it trains
    ids = random_ids(1, 3)
    assert model(ids).state is not None
    assert model(ids, use_cache=False).state is None
    model.save_pretrained(tmp_path)
    loaded = AWDLSTMForCausalLM.from_pretrained(tmp_path).eval()
    lengths = []
    loaded.awd_lstm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].size(1)))
    loaded.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert lengths == [3, 1, 1, 1]  # generation still carries the state


def test_padding_never_reaches_the_state():
    model = AWDLSTMModel(no_dropout()).eval()
    ids = random_ids(2, 8)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    out = model(ids, attention_mask=mask)
    alone = model(ids[1:, :5])
    torch.testing.assert_close(out.last_hidden_state[1, :5], alone.last_hidden_state[0])
    assert torch.equal(out.last_hidden_state[1, 5:], torch.zeros(3, 8))
    for (h, c), (h_alone, c_alone) in zip(out.state, alone.state, strict=True):
        torch.testing.assert_close(h[1], h_alone[0])
        torch.testing.assert_close(c[1], c_alone[0])


# --- classifier: padding invariance and BPT3C ----------------------------------------------------------------------


def _pad(rows: list[torch.Tensor], side: str, pad_id: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def test_classifier_gives_the_same_answer_for_left_right_and_no_padding():
    model = AWDLSTMForSequenceClassification(tiny_config(num_labels=3)).eval()
    # Lengths below, inside and above the BPT3C window (chunk 5, max_len 10) and across chunk boundaries.
    rows = [random_ids(1, n, seed=n)[0] for n in (3, 7, 10, 14, 23)]
    alone = torch.cat([model(r[None]).logits for r in rows])
    for side in ("right", "left"):
        ids, mask = _pad(rows, side)
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, alone, rtol=1e-5, atol=1e-6)
    shuffled = [rows[i] for i in (4, 0, 3, 1, 2)]
    ids, mask = _pad(shuffled, "left")
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, alone[[4, 0, 3, 1, 2]], rtol=1e-5, atol=1e-6)


def test_concat_pooling_reads_last_max_and_mean_of_real_tokens():
    model = AWDLSTMForSequenceClassification(no_dropout(max_len=1440, bptt_chunk_length=70)).eval()
    ids = random_ids(1, 9)
    hidden = model.awd_lstm(ids).last_hidden_state[0]
    expected = torch.cat([hidden[-1], hidden.max(0).values, hidden.mean(0)])
    torch.testing.assert_close(model.pool_document(ids)[0], expected)


def test_bpt3c_pools_only_the_last_max_len_tokens_and_matches_one_pass():
    model = AWDLSTMForSequenceClassification(no_dropout(bptt_chunk_length=5, max_len=10)).eval()
    ids = random_ids(1, 23)
    hidden = model.awd_lstm(ids).last_hidden_state[0]  # reading in chunks with carried state equals one pass
    window = hidden[-10:]
    expected = torch.cat([hidden[-1], window.max(0).values, window.mean(0)])
    torch.testing.assert_close(model.pool_document(ids)[0], expected)


def test_bpt3c_gradients_flow_only_through_the_last_max_len_tokens():
    model = AWDLSTMForSequenceClassification(no_dropout(bptt_chunk_length=5, max_len=10)).train()
    early = torch.arange(10, 30)  # positions 0..19: chunks that end before the last 10 tokens
    late = torch.arange(40, 60)  # positions 20..29 of the two documents: the pooled window
    ids = torch.stack([torch.cat([early, late[:10]]), torch.cat([early.flip(0), late[10:]])])
    model(ids, labels=torch.tensor([1, 0])).loss.backward()
    grad = model.awd_lstm.embeddings.weight.grad
    assert grad[early].abs().sum() == 0
    assert (grad[late].abs().sum(dim=1) > 0).all()


def _gradients_of_first_document(model, documents):
    """Gradients of the first document's logits (eval mode: no dropout, BatchNorm per row) in a right-padded batch."""
    width = max(len(document) for document in documents)
    ids = torch.ones(len(documents), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, document in enumerate(documents):
        ids[row, : len(document)], mask[row, : len(document)] = document, 1
    model.zero_grad(set_to_none=True)
    model(ids, attention_mask=mask).logits[0].sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_bpt3c_gradient_does_not_depend_on_the_other_documents_in_the_batch():
    # The case: a 100-token document with max_len 20 got gradient on its tokens 0-79 next to a 15-token
    # document (the kept window came from the shortest document) and none next to a 100-token one.
    config = no_dropout(vocab_size=400, bptt_chunk_length=20, max_len=20)
    model = AWDLSTMForSequenceClassification(config).eval()
    document = torch.arange(4, 104)
    alone = _gradients_of_first_document(model, [document])
    for neighbour in (torch.arange(104, 119), torch.arange(120, 220), torch.arange(220, 257)):
        together = _gradients_of_first_document(model, [document, neighbour])
        assert alone.keys() == together.keys()
        for name, gradient in alone.items():
            torch.testing.assert_close(together[name], gradient, rtol=1e-5, atol=1e-7, msg=name)
        embedding_grad = together["awd_lstm.embeddings.weight"]
        assert embedding_grad[document[:80]].abs().sum() == 0  # tokens before the last max_len: no gradient
        assert (embedding_grad[document[80:]].abs().sum(dim=1) > 0).all()


def test_bpt3c_detaches_the_state_between_chunks_as_fastai():
    # max_len 10 over chunks of 5: the pooled tokens 10-19 sit in two chunks, and the state between them is
    # detached, so the first of them gets no gradient through the second.
    model = AWDLSTMForSequenceClassification(no_dropout(vocab_size=100, bptt_chunk_length=5, max_len=10)).eval()
    ids = torch.arange(4, 24)[None]
    hidden = model.read_document(ids)[1]
    assert hidden.shape == (1, 10, 8)
    grad = torch.autograd.grad(hidden[0, 5:].sum(), model.awd_lstm.embeddings.weight)[0]
    assert grad[ids[0, 10:15]].abs().sum() == 0 and (grad[ids[0, 15:]].abs().sum(dim=1) > 0).all()


def test_bpt3c_window_is_right_aligned_with_zeros_before_short_documents():
    model = AWDLSTMForSequenceClassification(no_dropout(bptt_chunk_length=5, max_len=10)).eval()
    ids = random_ids(2, 12)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    hidden = model.read_document(ids, mask)[1]
    assert hidden.shape == (2, 10, 8)
    torch.testing.assert_close(hidden[0], model.awd_lstm(ids[:1]).last_hidden_state[0, 2:])
    torch.testing.assert_close(hidden[1, 3:], model.awd_lstm(ids[1:, :7]).last_hidden_state[0])
    assert torch.equal(hidden[1, :3], torch.zeros(3, 8))


def test_weight_dropout_drops_hidden_to_hidden_connections_only():
    # Taking weight dropout out of the layer (or moving it to the input weights) must fail here.
    config = tiny_config(
        dropout_multiplier=1.0,
        input_dropout=0.0,
        hidden_dropout=0.0,
        embedding_dropout=0.0,
        output_dropout=0.0,
        weight_dropout=0.5,
    )
    model = AWDLSTMModel(config)
    ids = random_ids(3, 8)
    reference = model.eval()(ids).last_hidden_state
    model.train()
    torch.manual_seed(0)
    first = model(ids).last_hidden_state
    torch.manual_seed(1)
    second = model(ids).last_hidden_state
    # The first step reads a zero state: the hidden-to-hidden matrix plays no part, so neither does its dropout.
    torch.testing.assert_close(first[:, 0], reference[:, 0])
    torch.testing.assert_close(second[:, 0], reference[:, 0])
    # Later steps read the dropped matrix: a fresh mask per forward pass, and different from no dropout at all.
    assert not torch.allclose(first[:, 1:], second[:, 1:])
    assert not torch.allclose(first[:, 1:], reference[:, 1:])
    # One mask per forward pass, shared by every time step and row: the layer equals nn.LSTM run with the masked
    # matrix that the same random draw gives.
    layer = model.layers[0]
    torch.manual_seed(2)
    dropped = layer.weight_dropout(layer.weight_hh)
    lstm = nn.LSTM(layer.input_size, layer.hidden_size, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(layer.weight_ih), lstm.weight_hh_l0.copy_(dropped)
        lstm.bias_ih_l0.copy_(layer.bias_ih), lstm.bias_hh_l0.copy_(layer.bias_hh)
    embedded = model.embeddings(ids)
    torch.manual_seed(2)
    ours = layer(embedded)[0]
    torch.testing.assert_close(ours, lstm(embedded)[0])
    assert (dropped == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)


def test_long_documents_run_in_chunks():
    model = AWDLSTMForSequenceClassification(tiny_config(bptt_chunk_length=70, max_len=1440)).train()
    ids = random_ids(2, 3000)
    out = model(ids, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)


# --- generation ----------------------------------------------------------------------------------------------------


def test_generate_with_carried_state_equals_rereading_the_prefix():
    torch.manual_seed(0)
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    prompt = random_ids(2, 4)
    lengths = []
    hook = model.awd_lstm.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(args[0].size(1)), with_kwargs=True
    )
    cached = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=1)
    assert lengths == [4] + [1] * 7  # the prefix is read once, then one token per step
    lengths.clear()
    reread = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=1, use_cache=False)
    assert lengths == list(range(4, 12))
    hook.remove()
    assert torch.equal(cached, reread)
    assert cached.shape == (2, 12) and torch.equal(cached[:, :4], prompt)


def test_generate_with_left_padded_prompts_matches_single_prompts():
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    prompts = [random_ids(1, 5, seed=1)[0], random_ids(1, 2, seed=2)[0]]
    ids, mask = _pad(prompts, "left")
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=1)
    for i, prompt in enumerate(prompts):
        single = model.generate(prompt[None], max_new_tokens=6, do_sample=False, pad_token_id=1)
        assert torch.equal(batched[i, -6:], single[0, -6:])


def test_generate_samples():
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    torch.manual_seed(0)
    out = model.generate(random_ids(1, 3), max_new_tokens=5, do_sample=True, top_k=10, temperature=0.8, pad_token_id=1)
    assert out.shape == (1, 8) and int(out.max()) < VOCAB


# --- save, load, remote code, hand-off -----------------------------------------------------------------------------


def test_save_and_load_round_trip_with_safetensors(tmp_path):
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert "awd_lstm.embeddings.weight" in keys and "decoder.weight" not in keys  # tied weight stored once
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, AWDLSTMForCausalLM)
    assert loaded.decoder.weight is loaded.awd_lstm.embeddings.weight
    ids = random_ids(2, 9)
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), AWDLSTMConfig)


def test_lm_to_classifier_hand_off_copies_the_encoder(tmp_path):
    lm = AWDLSTMForCausalLM(tiny_config())
    lm.save_pretrained(tmp_path)
    classifier = AWDLSTMForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert classifier.config.num_labels == 2
    lm_weights = lm.awd_lstm.state_dict()
    for name, tensor in classifier.awd_lstm.state_dict().items():
        assert torch.equal(tensor, lm_weights[name]), name
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert isinstance(auto, AWDLSTMForSequenceClassification) and auto.classifier.layers[-1].out_features == 3
    assert isinstance(AutoModel.from_pretrained(tmp_path), AWDLSTMModel)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
    lm_dir, clas_dir, ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, trust_remote_code=True).eval()
    clas = AutoModelForSequenceClassification.from_pretrained(clas_dir, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained(lm_dir, trust_remote_code=True).eval()
    config = AutoConfig.from_pretrained(lm_dir, trust_remote_code=True)
    with torch.no_grad():
        print(json.dumps({
            "lm_class": type(lm).__name__, "lm_module": type(lm).__module__, "config_class": type(config).__name__,
            "lm": lm(ids).logits.tolist(), "clas": clas(ids).logits.tolist(),
            "encoder": encoder(ids).last_hidden_state.tolist(),
        }))
    """
)


def test_saved_folder_loads_with_remote_code_where_tl_nlp_is_absent(tmp_path):
    lm = AWDLSTMForCausalLM(tiny_config()).eval()
    clas = AWDLSTMForSequenceClassification(tiny_config(num_labels=3)).eval()
    lm.save_pretrained(tmp_path / "lm")
    clas.save_pretrained(tmp_path / "clas")
    for folder in ("lm", "clas"):
        assert (tmp_path / folder / "modeling_awd_lstm.py").exists()
        assert (tmp_path / folder / "configuration_awd_lstm.py").exists()
        auto_map = json.loads((tmp_path / folder / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {
            "AutoConfig",
            "AutoModel",
            "AutoModelForCausalLM",
            "AutoModelForSequenceClassification",
        }
    ids = random_ids(2, 13)
    args = [str(tmp_path / "lm"), str(tmp_path / "clas"), json.dumps(ids.tolist())]
    remote = run_without_tl_nlp(REMOTE_CODE_SCRIPT, args, tmp_path)
    assert remote["lm_class"] == "AWDLSTMForCausalLM" and "tl_nlp" not in remote["lm_module"]
    assert remote["config_class"] == "AWDLSTMConfig"
    with torch.no_grad():
        assert torch.equal(torch.tensor(remote["lm"]), lm(ids).logits)
        assert torch.equal(torch.tensor(remote["clas"]), clas(ids).logits)
        assert torch.equal(torch.tensor(remote["encoder"]), lm.awd_lstm(ids).last_hidden_state)


# --- bad input -----------------------------------------------------------------------------------------------------


def test_token_ids_outside_the_vocabulary_are_named():
    model = AWDLSTMForCausalLM(tiny_config())
    ids = random_ids(2, 6)
    ids[1, 4] = VOCAB
    with pytest.raises(ValueError, match=rf"token id {VOCAB} at input_ids\[1, 4\] is outside the vocabulary"):
        model(ids)
    ids[1, 4] = -3
    with pytest.raises(ValueError, match=r"token id -3 at input_ids\[1, 4\]"):
        AWDLSTMForSequenceClassification(tiny_config())(ids)


def test_other_bad_inputs_get_clear_errors():
    model = AWDLSTMForSequenceClassification(tiny_config(num_labels=2))
    ids = random_ids(2, 6)
    with pytest.raises(ValueError, match="row 1 of the batch has no real token"):
        model(ids, attention_mask=torch.tensor([[1] * 6, [0] * 6]))
    with pytest.raises(ValueError, match="label 2 in row 1 is outside 0..1"):
        model(ids, labels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, seq_len\)"):
        model(ids[0])
    with pytest.raises(ValueError, match="training batch of one document"):
        model.train()(ids[:1], labels=torch.tensor([1]))
    encoder = AWDLSTMModel(tiny_config())
    with pytest.raises(ValueError, match="state has 1 layers, the model has 3"):
        encoder(ids, state=encoder.initial_state(2)[:1])


# --- compatibility -------------------------------------------------------------------------------------------------


def test_torch_compile_traces_the_model():
    model = AWDLSTMForCausalLM(tiny_config()).eval()
    ids = random_ids(2, 7)
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(ids).logits, model(ids).logits)
    model.train()
    compiled(ids, labels=ids).loss.backward()
    assert model.awd_lstm.layers[0].weight_hh.grad is not None


def test_ddp_wraps_the_model_and_every_parameter_gets_a_gradient(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = AWDLSTMForCausalLM(tiny_config())
        ddp = nn.parallel.DistributedDataParallel(model)
        ids = random_ids(2, 7)
        ddp(input_ids=ids, labels=ids).loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()
