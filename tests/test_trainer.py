"""ULMFiTTrainingArguments validation and ULMFiTTrainer: rates per step, AR/TAR on the training gradient only, and a
loss that is a true mean under gradient accumulation."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from ulmfit_tiny_models import (
    classification_dataset,
    language_model_dataset,
    snapshot,
    tiny_awd_lstm_classifier,
    tiny_awd_lstm_lm,
    tiny_bert,
)

from tl_nlp.training import (
    ULMFiTTrainer,
    ULMFiTTrainingArguments,
    model_normalizes_loss_by_num_items,
    staged_stlr_multiplier,
    stlr_multiplier,
)

COMMON = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)


@pytest.mark.parametrize(
    "field, value",
    [
        ("discriminative_lr_decay", 0.0),
        ("stlr_cut_frac", 0.0),
        ("stlr_cut_frac", 1.5),
        ("stlr_ratio", 0.5),
        ("unfreeze_every_n_steps", 0),
        ("unfreeze_at_fractions", [0.3, 0.2]),
        ("unfreeze_at_fractions", [0.0, 0.5]),
        ("ar_alpha", -1.0),
        ("tar_beta", -0.1),
    ],
)
def test_bad_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        ULMFiTTrainingArguments(output_dir=str(tmp_path), **{field: value})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(warmup_steps=10), "warmup_steps"),
        (dict(unfreeze_every_n_steps=5, unfreeze_at_fractions=[0.5]), "at most one"),
        (dict(stlr_per_stage=True, gradual_unfreezing=False), "stlr_per_stage"),
    ],
)
def test_conflicting_arguments_are_explained(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ULMFiTTrainingArguments(output_dir=str(tmp_path), **kwargs)


def test_trainer_needs_ulmfit_arguments(tmp_path):
    with pytest.raises(TypeError, match="ULMFiTTrainingArguments"):
        ULMFiTTrainer(model=tiny_bert(), args=TrainingArguments(output_dir=str(tmp_path), **COMMON))


def test_num_items_in_batch_only_reaches_models_that_divide_by_it(tmp_path):
    # BERT's classifier takes **kwargs but returns a batch mean: transformers' Trainer guesses wrong for it.
    bert = tiny_bert()
    assert Trainer(model=bert, args=TrainingArguments(output_dir=str(tmp_path), **COMMON)).model_accepts_loss_kwargs
    assert not model_normalizes_loss_by_num_items(bert)
    assert model_normalizes_loss_by_num_items(
        GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=8, n_layer=1, n_head=2))
    )
    assert model_normalizes_loss_by_num_items(tiny_awd_lstm_lm())  # declares accepts_loss_kwargs = True
    assert not model_normalizes_loss_by_num_items(tiny_awd_lstm_classifier())


def one_sgd_step(tmp_path, trainer_cls, batch_size, accumulation):
    torch.manual_seed(0)
    model = tiny_bert(dropout=0.0)
    args_cls = ULMFiTTrainingArguments if trainer_cls is ULMFiTTrainer else TrainingArguments
    extra = (
        dict(gradual_unfreezing=False, use_stlr=False, discriminative_lr_decay=1.0)
        if args_cls is not TrainingArguments
        else {}
    )
    args = args_cls(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        max_grad_norm=0.0,
        lr_scheduler_type="constant",
        **extra,
        **COMMON,
    )
    trainer_cls(model=model, args=args, train_dataset=classification_dataset(size=4)).train()
    return snapshot(model)


def test_gradient_accumulation_gives_the_same_step_as_one_big_batch(tmp_path):
    torch.manual_seed(0)
    initial = snapshot(tiny_bert(dropout=0.0))  # the start of every run below
    one_batch = one_sgd_step(tmp_path, ULMFiTTrainer, batch_size=4, accumulation=1)
    accumulated = one_sgd_step(tmp_path, ULMFiTTrainer, batch_size=2, accumulation=2)
    for name, weight in one_batch.items():
        torch.testing.assert_close(accumulated[name], weight, rtol=1e-5, atol=1e-6)
    # The control: transformers' Trainer passes num_items_in_batch to BERT and so skips the division by the
    # accumulation steps, making its SGD step twice as large. (Under DDP the same guess multiplies the loss by the
    # number of processes: tests/test_ddp_techniques.py.)
    plain = one_sgd_step(tmp_path, Trainer, batch_size=2, accumulation=2)
    name = "classifier.weight"
    torch.testing.assert_close(plain[name] - initial[name], 2 * (accumulated[name] - initial[name]))


def awd_lstm_lm_trainer(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        ar_alpha=2.0,
        tar_beta=1.0,
        **COMMON,
    )
    settings.update(overrides)
    return ULMFiTTrainer(
        model=tiny_awd_lstm_lm(),
        args=ULMFiTTrainingArguments(**settings),
        train_dataset=language_model_dataset(),
        eval_dataset=language_model_dataset(seed=1),
    )


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_ar_and_tar_reach_the_gradient_but_not_the_logged_loss(tmp_path):
    trainer = awd_lstm_lm_trainer(tmp_path)
    model = trainer.model
    model.train()
    batch = {key: torch.tensor(language_model_dataset()[:4][key]) for key in ("input_ids", "labels")}

    torch.manual_seed(1)  # the same dropout masks for both forward passes
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    from_trainer = gradients(model)
    model.zero_grad()

    torch.manual_seed(1)
    outputs = model(**batch)
    raw, dropped = outputs.raw_last_hidden_state, outputs.dropped_last_hidden_state
    ar = 2.0 * dropped.pow(2).mean()
    tar = 1.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    assert ar.item() > 0 and tar.item() > 0
    assert loss.item() == outputs.loss.item()  # the value (what gets logged) is the plain cross-entropy
    (outputs.loss + ar + tar).backward()
    by_hand = gradients(model)
    assert from_trainer.keys() == by_hand.keys()
    for name, gradient in by_hand.items():
        torch.testing.assert_close(from_trainer[name], gradient)
    model.zero_grad()

    # Without AR/TAR the gradient differs: the terms above are not vacuous.
    torch.manual_seed(1)
    model(**batch).loss.backward()
    assert not torch.allclose(gradients(model)["awd_lstm.embeddings.weight"], by_hand["awd_lstm.embeddings.weight"])


def test_regularization_is_shared_out_when_the_loss_is_normalized_over_accumulated_batches(tmp_path):
    trainer = awd_lstm_lm_trainer(tmp_path, ar_alpha=2.0, tar_beta=0.0)
    model = trainer.model
    model.train()
    batch = {key: torch.tensor(language_model_dataset()[:4][key]) for key in ("input_ids", "labels")}
    trainer.current_gradient_accumulation_steps = 2
    # The AWD-LSTM LM divides its loss by num_items_in_batch (the count over both accumulated batches), so the
    # per-batch AR term must be halved too: the gradient is that of CE / num_items + AR / 2.
    num_items = torch.tensor(2 * 4 * 11)
    torch.manual_seed(1)
    trainer.compute_loss(model, batch, num_items_in_batch=num_items).backward()
    from_trainer = gradients(model)
    model.zero_grad()
    torch.manual_seed(1)
    outputs = model(**batch, num_items_in_batch=num_items)
    (outputs.loss + 2.0 * outputs.dropped_last_hidden_state.pow(2).mean() / 2).backward()
    for name, gradient in gradients(model).items():
        torch.testing.assert_close(from_trainer[name], gradient)


def test_eval_loss_is_plain_cross_entropy(tmp_path):
    # label_names: the model's forward also takes `shift_labels`, which transformers would otherwise require too.
    trainer = awd_lstm_lm_trainer(tmp_path, label_names=["labels"])
    metrics = trainer.evaluate()
    model = trainer.model.eval()
    data = language_model_dataset(seed=1)
    with torch.no_grad():
        losses = [
            model(
                input_ids=torch.tensor(data[i : i + 8]["input_ids"]), labels=torch.tensor(data[i : i + 8]["labels"])
            ).loss
            for i in range(0, len(data), 8)
        ]
    assert metrics["eval_loss"] == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def logged_rates(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=10,
        learning_rate=0.01,
        logging_steps=1,
        **COMMON,
    )
    settings.update(overrides)
    trainer = ULMFiTTrainer(
        model=tiny_bert(), args=ULMFiTTrainingArguments(**settings), train_dataset=classification_dataset()
    )
    trainer.train()
    return trainer, [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]


def test_logged_rate_follows_stlr_for_the_top_group_and_ratios_hold(tmp_path):
    trainer, rates = logged_rates(tmp_path, unfreeze_every_n_steps=2)
    assert rates == pytest.approx([0.01 * stlr_multiplier(step, 10) for step in range(10)])
    by_group = {group["layer_group"]: group["lr"] for group in trainer.optimizer.param_groups}
    for index in range(3):  # the Transformer family's default decay: 4 groups, the bottom one at the top rate / 4.77
        assert by_group[index + 1] / by_group[index] == pytest.approx((1.25**7) ** (1 / 3))
    assert "frozen" not in trainer.layer_group_summary()  # every group unfrozen by the end (stages at 2, 4, 6)


def peak_rates_by_group(tmp_path, model, **settings) -> list[float]:
    """The optimizer's rate per layer group, bottom to top, as `ULMFiTTrainer` builds it."""
    args = ULMFiTTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, **COMMON, **settings)
    trainer = ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset())
    rates = {group["layer_group"]: group["lr"] for group in trainer.create_optimizer().param_groups}
    return [rates[index] for index in sorted(rates)]


@pytest.mark.parametrize(("layers", "decay"), [(6, 1.25), (12, (1.25**7) ** (1 / 13)), (30, (1.25**7) ** (1 / 31))])
def test_transformer_decay_keeps_the_bottom_group_at_the_same_fraction_of_the_top_rate_at_any_depth(
    tmp_path, layers, decay
):
    """The default measured on all-MiniLM-L6-v2 (6 layers: 1.25 per group) stays exactly that, and deeper models
    get a gentler factor so that their embeddings still train at the top rate / 4.77 (ELECTRA tuned 0.8 per layer
    for 12 layers and 0.9 for 24 for the same reason); 1.25 per group would leave 30 layers' embeddings at / 1,000."""
    rates = peak_rates_by_group(tmp_path, tiny_bert(layers=layers))
    assert len(rates) == layers + 2  # embeddings, the blocks, the head
    assert rates[-1] == pytest.approx(1e-3)
    assert [upper / lower for lower, upper in zip(rates, rates[1:], strict=False)] == pytest.approx(
        [decay] * (layers + 1)
    )
    assert rates[-1] / rates[0] == pytest.approx(1.25**7)


def test_transformer_decay_follows_custom_groups_and_a_decay_given_or_of_another_family_is_kept(tmp_path):
    two_groups = [r"bert\.(embeddings|encoder)\..*", r"(bert\.pooler|classifier)\..*"]
    args = ULMFiTTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, **COMMON)
    trainer = ULMFiTTrainer(
        model=tiny_bert(), args=args, train_dataset=classification_dataset(), custom_layer_groups=two_groups
    )
    assert trainer.args.discriminative_lr_decay == pytest.approx(1.25**7)  # two groups: the whole span in one step
    assert args.discriminative_lr_decay is None  # the caller's arguments are left alone
    assert peak_rates_by_group(tmp_path, tiny_bert(layers=6), discriminative_lr_decay=2.0)[-2:] == pytest.approx(
        [5e-4, 1e-3]
    )
    # AWD-LSTM: the paper's 2.6 per group at any depth.
    rates = peak_rates_by_group(tmp_path, tiny_awd_lstm_classifier())
    assert [upper / lower for lower, upper in zip(rates, rates[1:], strict=False)] == pytest.approx(
        [2.6] * (len(rates) - 1)
    )


def test_stlr_restarts_at_each_unfreezing_stage(tmp_path):
    _, rates = logged_rates(
        tmp_path, max_steps=20, unfreeze_every_n_steps=10, stlr_per_stage=True, unfreezing_schedule="partial"
    )
    assert rates == pytest.approx([0.01 * staged_stlr_multiplier(step, 20, [10]) for step in range(20)])
    # Each 10-step stage rises from the floor at its first step to the peak at its cut (one step later).
    assert rates[0] == rates[10] == pytest.approx(0.01 / 32)
    assert rates[1] == rates[11] == pytest.approx(0.01)


def test_without_stlr_the_usual_scheduler_applies(tmp_path):
    _, rates = logged_rates(tmp_path, use_stlr=False, lr_scheduler_type="linear", gradual_unfreezing=False)
    assert rates == pytest.approx([0.01 * (10 - step) / 10 for step in range(10)])


def test_arguments_parse_from_the_command_line():
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(ULMFiTTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--unfreeze_at_fractions", "0.1", "0.2", "--discriminative_lr_decay", "2.0"]
    )
    assert args.unfreeze_at_fractions == [0.1, 0.2] and args.discriminative_lr_decay == 2.0
    assert args.restore_callback_states_from_checkpoint  # a default we change


def test_public_names_are_exported_from_the_package():
    import tl_nlp
    import tl_nlp.training as training

    for name in (
        "GradualUnfreezingCallback", "LayerGroup", "ULMFiTTrainer", "ULMFiTTrainingArguments",
        "discriminative_param_groups", "get_stlr_schedule", "layer_group_summary", "layer_groups", "stlr_multiplier",
    ):  # fmt: skip
        assert getattr(tl_nlp, name) is getattr(training, name) and name in tl_nlp.__all__
