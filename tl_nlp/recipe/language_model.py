"""The language-model stages of the recipe: ULMFiT stage 1 (a general-domain language model, by default a new
AWD-LSTM with its own tokenizer) and stage 2 (a language model fine-tuned on target-domain text).

Any `model_name_or_path` works: an AWD-LSTM folder (carried-state streams read by [`LanguageModelTrainer`]), a
BERT-style checkpoint (masked-LM fine-tuning on packed blocks) or a GPT-style one (causal-LM fine-tuning on packed
blocks), as a local folder or a Hub id. Each stage saves a standard Hugging Face folder (see `results`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, set_seed

from ..data import backward_tokenizer, language_model_data, tokenize_for_language_model, train_ulmfit_tokenizer
from ..models.awd_lstm import AWDLSTMConfig, AWDLSTMForCausalLM
from ..models.context import context_length
from ..training import LanguageModelTrainer
from ..training.loss_guard import NonFiniteLossCallback
from .config import HubArguments, TrainingLike, stage_training_arguments
from .data import DataLike, RecipeError, as_dataset, columns_of, data_description, source_name
from .loading import language_model_objective, load_config, load_model, load_tokenizer, model_family
from .results import PreparedStage, StageResult, print_metrics, save_trained_stage, stage_folder


def prepare_language_model(
    train_data: DataLike,
    output_dir: str | Path,
    model_name_or_path: str | None = None,
    eval_data: DataLike | None = None,
    training_args: TrainingLike = None,
    stage: str = "finetune",
    tokenizer: Any = None,
    tokenizer_texts: Iterable[str] | None = None,
    model_config: AWDLSTMConfig | dict[str, Any] | None = None,
    vocab_size: int = 60_000,
    tokenizer_type: str = "word",
    min_frequency: int = 3,
    backwards: bool = False,
    lm_objective: str = "auto",
    bptt: int = 70,
    block_size: int = 128,
    mlm_probability: float = 0.15,
    trust_remote_code: bool = False,
) -> PreparedStage:
    """Everything a language-model stage needs before `train()`: the model (loaded, or a new AWD-LSTM with a new
    tokenizer), its data and its trainer. [`train_language_model`] trains it; `find_learning_rate` can sweep it.

    Args:
        train_data: the training texts ([`TextData`], a file or Hub name, or a `datasets.Dataset` with `text`).
        output_dir: the folder the stage saves.
        model_name_or_path: the checkpoint to start from (folder or Hub id); `None` builds a new AWD-LSTM from
            `model_config` with a ULMFiT tokenizer trained on `tokenizer_texts` (default: the training texts).
        eval_data: validation texts; their perplexity is measured before and after training.
        training_args: the stage's `PretrainTrainingArguments` / `FinetuneTrainingArguments` (an unset learning
            rate becomes the stage's rate for the model family), a dict of their fields, or any
            `ULMFiTTrainingArguments` (used as it is); the streams' batch size is `per_device_train_batch_size`.
        stage: `"pretrain"` (one learning rate for every layer) or `"finetune"` (discriminative rates), for defaults.
        tokenizer: a tokenizer (or its folder) for a new model instead of training one.
        tokenizer_texts: texts to train the new tokenizer on.
        model_config: the new AWD-LSTM's `AWDLSTMConfig` or its fields (vocabulary and special ids are filled in).
        vocab_size, tokenizer_type, min_frequency: the new tokenizer's (see `train_ulmfit_tokenizer`).
        backwards: train a backward model (every text read in reverse token order; ULMFiT tokenizers only).
        lm_objective: `"auto"` (from the checkpoint's type), `"stream"`, `"masked"` or `"causal"`.
        bptt: window length of AWD-LSTM streams.
        block_size: tokens per packed block for BERT/GPT-style models (capped by their context length).
        mlm_probability: share of masked tokens for masked-LM fine-tuning.
        trust_remote_code: allow a Hub checkpoint's own code.

    Returns:
        A [`PreparedStage`].
    """
    if stage not in ("pretrain", "finetune"):
        raise RecipeError(f'stage must be "pretrain" or "finetune", got {stage!r}')
    output_dir = Path(output_dir)
    dataset_name = data_description(train_data)
    train_text_column, _ = columns_of(train_data)
    eval_text_column, _ = columns_of(eval_data)
    train_texts, eval_texts = as_dataset(train_data), as_dataset(eval_data)
    if model_name_or_path is None:
        objective = "stream"
        args, settings = stage_training_arguments(stage, training_args, output_dir, "awd_lstm", dataset_name)
        model, tokenizer = _new_awd_lstm(
            train_texts[train_text_column] if tokenizer_texts is None else tokenizer_texts,
            tokenizer,
            model_config,
            vocab_size,
            tokenizer_type,
            min_frequency,
            backwards,
            seed=args.seed,
        )
    else:
        config = load_config(model_name_or_path, trust_remote_code, not_kind="classifier")
        tokenizer = load_tokenizer(model_name_or_path, backwards, trust_remote_code)
        objective = language_model_objective(config, tokenizer, lm_objective)
        args, settings = stage_training_arguments(stage, training_args, output_dir, model_family(config), dataset_name)
        model_class = AutoModelForMaskedLM if objective == "masked" else AutoModelForCausalLM
        model = load_model(model_class, model_name_or_path, trust_remote_code=trust_remote_code)
    context = context_length(model.config)
    block_size = min(block_size, context) if context else block_size

    def lm_dataset(texts: datasets.Dataset, column: str, shuffle: bool, source: DataLike):
        tokenized = tokenize_for_language_model(texts, tokenizer, text_column=column, skip_empty=True)
        if len(tokenized) == 0:
            raise RecipeError(f"{source_name(source)}: no text left once empty lines are skipped")
        try:
            return lm_data(tokenized, shuffle)
        except ValueError as error:  # too few tokens for the streams or blocks: say which data and what to change
            raise RecipeError(f"{source_name(source)}: {str(error).splitlines()[0]}") from None

    def lm_data(tokenized: datasets.Dataset, shuffle: bool):
        return language_model_data(
            tokenized,
            tokenizer,
            objective,
            batch_size=args.per_device_train_batch_size,
            bptt=bptt,
            block_size=block_size,
            mlm_probability=mlm_probability,
            **({"shuffle": shuffle, "seed": args.seed} if objective == "stream" else {}),
        )

    train_dataset, collator = lm_dataset(train_texts, train_text_column, True, train_data)
    eval_dataset = lm_dataset(eval_texts, eval_text_column, False, eval_data)[0] if eval_texts is not None else None
    if args.process_index == 0:
        counts = [f"{_num_tokens(train_dataset, block_size):,} training tokens"]
        if eval_dataset is not None:
            counts.append(f"{_num_tokens(eval_dataset, block_size):,} validation tokens")
        print(f"  {stage}: {', '.join(counts)} ({objective} language modelling)")
    guard = NonFiniteLossCallback()
    trainer = LanguageModelTrainer(
        model=model, args=args, train_dataset=train_dataset, data_collator=collator, callbacks=[guard]
    )
    return PreparedStage(stage, output_dir, trainer, tokenizer, guard, eval_dataset, objective, settings=settings)


def train_language_model(
    train_data: DataLike, output_dir: str | Path, hub: HubArguments | None = None, **kwargs: Any
) -> StageResult:
    """Trains a language model on `train_data` and saves it with its tokenizer in `output_dir`.

    Args:
        train_data, output_dir, kwargs: as for [`prepare_language_model`].
        hub: upload the saved folder with its model card (`HubArguments(push_to_hub=True, ...)`).

    Returns:
        A [`StageResult`]; its metrics hold `train_loss`, `train_runtime`, and with `eval_data`
        `eval_perplexity_before` and `eval_perplexity`.

    Example:

    ```python
    >>> lm = train_language_model("../shared/data/wikitext-2/train.txt", "runs/lm", stage="pretrain",
    ...                           eval_data="../shared/data/wikitext-2/valid.txt",
    ...                           training_args={"num_train_epochs": 1})  # doctest: +SKIP
    >>> lm.metrics["eval_perplexity"]  # doctest: +SKIP
    ```
    """
    with stage_folder(output_dir, kwargs.get("training_args")) as checkpoint:
        if isinstance(checkpoint, StageResult):
            return checkpoint
        prepared = prepare_language_model(train_data, output_dir, **kwargs)
        trainer, model, eval_dataset = prepared.trainer, prepared.trainer.model, prepared.eval_dataset

        def perplexity() -> float:
            # The trainer's evaluation sums the loss and the target tokens over every process: under DDP each process
            # reads its own rows of the streams (or its share of the blocks) and every token counts once. On one
            # process it is `stream_perplexity` (carried state, reset at the start).
            return math.exp(trainer.evaluate(eval_dataset)["eval_loss"])

        metrics: dict[str, dict] = {}
        before = perplexity() if eval_dataset is not None else None
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
        prepared.guard.raise_if_stopped()
        metrics["train"] = dict(train_output.metrics)
        if trainer.is_world_process_zero():
            print_metrics(f"{prepared.stage}: train", metrics["train"])
        if eval_dataset is not None:
            metrics["eval"] = {"eval_perplexity_before": before, "eval_perplexity": perplexity()}
            trainer.log({"eval_perplexity": metrics["eval"]["eval_perplexity"]})  # into the stage's training record
            if trainer.is_world_process_zero():
                print_metrics(f"{prepared.stage}: validation perplexity", metrics["eval"])
        return save_trained_stage(prepared, model, metrics, hub)


def _num_tokens(dataset, block_size: int) -> int:
    """Tokens in AWD-LSTM streams (which count them) or in packed blocks."""
    streamed = getattr(dataset, "num_tokens", None)
    return streamed if streamed is not None else len(dataset) * block_size


def _new_awd_lstm(texts, tokenizer, model_config, vocab_size, tokenizer_type, min_frequency, backwards, seed):
    if tokenizer is None:
        tokenizer = train_ulmfit_tokenizer(
            texts, model_type=tokenizer_type, vocab_size=vocab_size, min_frequency=min_frequency, reverse=backwards
        )
    elif isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer), backwards)
    elif backwards and not getattr(tokenizer, "reverse", False):
        tokenizer = backward_tokenizer(tokenizer)
    values = model_config.to_dict() if isinstance(model_config, AWDLSTMConfig) else dict(model_config or {})
    values.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    for name in ("model_type", "transformers_version", "architectures", "auto_map"):
        values.pop(name, None)
    set_seed(seed)  # the new model's weights depend on the seed only
    return AWDLSTMForCausalLM(AWDLSTMConfig(**values)), tokenizer


def pretrain_language_model(train_data: DataLike, output_dir: str | Path, **kwargs: Any) -> StageResult:
    """ULMFiT stage 1, a general-domain language model: [`train_language_model`] with `stage="pretrain"` (one
    learning rate for every layer; a new AWD-LSTM and tokenizer unless `model_name_or_path` is given)."""
    return train_language_model(train_data, output_dir, stage="pretrain", **kwargs)


def finetune_language_model(
    model_name_or_path: str, train_data: DataLike, output_dir: str | Path, **kwargs: Any
) -> StageResult:
    """ULMFiT stage 2, the language model fine-tuned on target-domain text (discriminative rates and STLR):
    [`train_language_model`] with `stage="finetune"`. AWD-LSTM reads carried-state streams, BERT-style models
    are fine-tuned as masked LMs and GPT-style ones as causal LMs on packed blocks."""
    return train_language_model(
        train_data, output_dir, model_name_or_path=model_name_or_path, stage="finetune", **kwargs
    )
