"""The ULMFiT recipe as functions: pretrain a language model, fine-tune it on target text, train a classifier from
it, evaluate, predict. Each training stage saves a standard Hugging Face folder (model, tokenizer, config,
`training_args.json`, `train_results.json` / `eval_results.json` / `all_results.json`) that the next stage and
`pipeline()` load, prints the metrics that matter and returns them.

Any `model_name_or_path` works: an AWD-LSTM folder (language-model stages read carried-state streams with
[`LanguageModelTrainer`]), a BERT-style checkpoint (masked-LM fine-tuning on packed blocks) or a GPT-style one
(causal-LM fine-tuning on packed blocks), as a local folder or a Hub id.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    set_seed,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from ..data import (
    backward_tokenizer,
    encode_labels,
    ensemble_predict,
    language_model_data,
    tokenize_dataset,
    tokenize_for_language_model,
    train_ulmfit_tokenizer,
)
from ..feature_extraction import FeatureExtractionClassifier, FeatureHeadArguments
from ..hub import write_training_record
from ..metrics import Accuracy, MacroF1, classification_metrics
from ..models.awd_lstm import AWDLSTMConfig, AWDLSTMForCausalLM
from ..training import ClassificationTrainer, LanguageModelTrainer, ULMFiTTrainingArguments, stream_perplexity
from ..training.auxiliary_lm import AuxiliaryLMTrainer
from ..training.lora import ULMFiTLoraArguments
from ..training.loss_guard import NonFiniteLossCallback
from .data import RecipeError, TextData, as_dataset, columns_of
from .methods import (
    awd_lstm_decoder_bias,
    check_method,
    check_model_for_method,
    load_feature_head_into_awd_lstm,
    model_to_save,
    parameter_counts,
    wrap_classifier,
)

DataLike = TextData | datasets.Dataset | str
TrainingLike = ULMFiTTrainingArguments | dict[str, Any] | None

# What each stage changes from ULMFiTTrainingArguments' defaults when it builds the arguments itself (AWD-LSTM rates
# of the demo; transformer checkpoints get TRANSFORMER_LEARNING_RATE unless a rate is given).
COMMON_DEFAULTS: dict[str, Any] = {
    "report_to": [],
    "save_strategy": "no",
    "logging_steps": 20,
    "weight_decay": 0.01,
    "dataloader_num_workers": 0,
    "disable_tqdm": False,
    # Pinning means nothing without an accelerator (and torch warns).
    "dataloader_pin_memory": torch.cuda.is_available(),
}
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    # Stage 1 trains every layer at one rate; stage 2 (ULMFiT's LM fine-tuning) uses discriminative rates and STLR.
    "pretrain": {"learning_rate": 3e-3, "discriminative_lr_decay": 1.0, "gradual_unfreezing": False},
    "finetune": {"learning_rate": 2e-3, "gradual_unfreezing": False},
    "classifier": {
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64,
        "num_train_epochs": 4,
    },
}
TRANSFORMER_LEARNING_RATE = {"pretrain": 1e-4, "finetune": 5e-5, "classifier": 5e-5}


@dataclass
class StageResult:
    """What a stage produced: the folder it saved and its metrics (also in the folder's `all_results.json`)."""

    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


@dataclass
class PreparedStage:
    """A stage ready to train: its trainer (model inside), tokenizer, loss guard and evaluation data."""

    stage: str
    output_dir: Path
    trainer: Any
    tokenizer: Any
    guard: NonFiniteLossCallback
    eval_dataset: Any = None
    objective: str = "classifier"
    method: str = "full"
    save_adapter: bool = False
    parameter_counts: dict[str, int] = field(default_factory=dict)


def _flatten(metrics: dict[str, dict]) -> dict[str, float]:
    return {name: value for values in metrics.values() for name, value in values.items()}


# ---- models, tokenizers, arguments -------------------------------------------------------------------------------


def language_model_objective(config, tokenizer, requested: str = "auto") -> str:
    """`"stream"` (AWD-LSTM), `"masked"` (BERT-style) or `"causal"` (GPT-style) for a checkpoint's config."""
    if requested != "auto":
        if requested not in ("stream", "masked", "causal"):
            raise RecipeError(f'lm_objective must be "auto", "stream", "masked" or "causal", got {requested!r}')
        return requested
    if config.model_type == "awd_lstm":
        return "stream"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and tokenizer.mask_token is not None:
        return "masked"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise RecipeError(
        f"model type {config.model_type!r} has neither a masked-LM nor a causal-LM head in transformers; "
        "use an AWD-LSTM, BERT-style or GPT-style checkpoint"
    )


def load_config(model_name_or_path: str, trust_remote_code: bool = False):
    """The checkpoint's config, with errors that say what is wrong with the path or the name."""
    local = Path(model_name_or_path)
    if local.exists() and not (local / "config.json").is_file():
        raise RecipeError(f"{model_name_or_path} is not a saved model folder (no config.json in it)")
    if not local.exists() and str(model_name_or_path).startswith((".", "/", "~")):
        raise RecipeError(f"model folder {model_name_or_path} does not exist")
    try:
        return AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise RecipeError(f"cannot load model {model_name_or_path!r}: {str(error).splitlines()[0]}") from error


def load_tokenizer(model_name_or_path: str, backwards: bool = False, trust_remote_code: bool = False):
    """The checkpoint's tokenizer (turned into a backward one with `backwards=True`), with a pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"cannot load the tokenizer of {model_name_or_path!r}: {str(error).splitlines()[0]}"
        ) from error
    if backwards and not getattr(tokenizer, "reverse", False):
        tokenizer = backward_tokenizer(tokenizer)
    if tokenizer.pad_token is None:
        # GPT-style tokenizers have no pad token; padding with end-of-text is the usual choice (masked out anyway).
        if tokenizer.eos_token is None:
            raise RecipeError(f"the tokenizer of {model_name_or_path} has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_arguments(
    stage: str, output_dir: Path, training_args: TrainingLike, transformer: bool = False
) -> ULMFiTTrainingArguments:
    """The stage's `ULMFiTTrainingArguments`: `training_args` itself, or the stage defaults updated by a dict.

    Checkpoints go to `output_dir/checkpoints` unless the dict names an `output_dir`.
    """
    if isinstance(training_args, ULMFiTTrainingArguments):
        return training_args
    values = {**COMMON_DEFAULTS, **STAGE_DEFAULTS[stage], "output_dir": str(output_dir / "checkpoints")}
    if transformer:
        values["learning_rate"] = TRANSFORMER_LEARNING_RATE[stage]
    values.update(training_args or {})
    return ULMFiTTrainingArguments(**values)


def _save_stage(trainer, model: PreTrainedModel, tokenizer, output_dir: Path, metrics: dict[str, dict]) -> None:
    """Saves the model (safetensors), tokenizer, `training_args.json` and the metrics files from the main process."""
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        # JSON, not Trainer's pickled training_args.bin: a folder from elsewhere never needs unpickling.
        (output_dir / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
        # The stages so far (this one appended to the record of the folder the model came from): the model card's
        # source when the folder is pushed (`tl-nlp push`, `push_ulmfit_to_hub`).
        record = trainer.training_record()
        if record is not None:
            write_training_record(record, output_dir)
        saving_trainer = copy.copy(trainer)
        saving_trainer.args = copy.copy(trainer.args)
        saving_trainer.args.output_dir = str(output_dir)
        for split, values in metrics.items():
            # transformers' convention: {split}_results.json, and all of them merged in all_results.json.
            saving_trainer.save_metrics(split, values)
        checkpoints = Path(trainer.args.output_dir)
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()  # Trainer creates it even when it saves no checkpoint
    trainer.accelerator.wait_for_everyone()


def _print_metrics(trainer, title: str, metrics: dict[str, float]) -> None:
    if trainer.is_world_process_zero():
        _print_values(title, metrics)


def _print_values(title: str, metrics: dict[str, float]) -> None:
    print(f"***** {title} *****")
    for name, value in metrics.items():
        print(f"  {name:<28} = {value:.4g}" if isinstance(value, float) else f"  {name:<28} = {value}")


# ---- language-model stages -------------------------------------------------------------------------------------


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
        training_args: `ULMFiTTrainingArguments`, or a dict of fields that update the stage defaults
            (`STAGE_DEFAULTS[stage]`); the streams' batch size is `per_device_train_batch_size`.
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
    train_text_column, _ = columns_of(train_data)
    eval_text_column, _ = columns_of(eval_data)
    train_texts, eval_texts = as_dataset(train_data), as_dataset(eval_data)
    if model_name_or_path is None:
        objective = "stream"
        args = training_arguments(stage, output_dir, training_args)
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
        config = load_config(model_name_or_path, trust_remote_code)
        tokenizer = load_tokenizer(model_name_or_path, backwards, trust_remote_code)
        objective = language_model_objective(config, tokenizer, lm_objective)
        args = training_arguments(stage, output_dir, training_args, transformer=objective != "stream")
        model_class = AutoModelForMaskedLM if objective == "masked" else AutoModelForCausalLM
        model = model_class.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    block_size = min(block_size, context) if context else block_size

    def lm_dataset(texts: datasets.Dataset, column: str, shuffle: bool):
        tokenized = tokenize_for_language_model(texts, tokenizer, text_column=column, skip_empty=True)
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

    train_dataset, collator = lm_dataset(train_texts, train_text_column, shuffle=True)
    eval_dataset = lm_dataset(eval_texts, eval_text_column, shuffle=False)[0] if eval_texts is not None else None
    if args.process_index == 0:
        counts = [f"{_num_tokens(train_dataset, block_size):,} training tokens"]
        if eval_dataset is not None:
            counts.append(f"{_num_tokens(eval_dataset, block_size):,} validation tokens")
        print(f"  {stage}: {', '.join(counts)} ({objective} language modelling)")
    guard = NonFiniteLossCallback()
    trainer = LanguageModelTrainer(
        model=model, args=args, train_dataset=train_dataset, data_collator=collator, callbacks=[guard]
    )
    return PreparedStage(stage, output_dir, trainer, tokenizer, guard, eval_dataset, objective)


def train_language_model(train_data: DataLike, output_dir: str | Path, **kwargs: Any) -> StageResult:
    """Trains a language model on `train_data` and saves it with its tokenizer in `output_dir`.

    Args:
        train_data, output_dir, kwargs: as for [`prepare_language_model`].

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
    prepared = prepare_language_model(train_data, output_dir, **kwargs)
    trainer, model, eval_dataset = prepared.trainer, prepared.trainer.model, prepared.eval_dataset

    def perplexity() -> float:
        if prepared.objective == "stream":
            return stream_perplexity(model, eval_dataset)
        return math.exp(trainer.evaluate(eval_dataset)["eval_loss"])

    metrics: dict[str, dict] = {}
    before = perplexity() if eval_dataset is not None else None
    train_output = trainer.train()
    prepared.guard.raise_if_stopped()
    metrics["train"] = dict(train_output.metrics)
    _print_metrics(trainer, f"{prepared.stage}: train", metrics["train"])
    if eval_dataset is not None:
        metrics["eval"] = {"eval_perplexity_before": before, "eval_perplexity": perplexity()}
        trainer.log({"eval_perplexity": metrics["eval"]["eval_perplexity"]})  # into the stage's training record
        _print_metrics(trainer, f"{prepared.stage}: validation perplexity", metrics["eval"])
    _save_stage(trainer, model, prepared.tokenizer, prepared.output_dir, metrics)
    return StageResult(prepared.output_dir, _flatten(metrics))


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


# ---- classification ------------------------------------------------------------------------------------------------


def _classification_tokenizer(tokenizer, config, max_length: int):
    """AWD-LSTM reads documents of any length (BPT3C); transformers are cut at their context length."""
    if config.model_type == "awd_lstm":
        return tokenizer
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or max_length
    return functools.partial(tokenizer, truncation=True, max_length=min(max_length, context))


def prepare_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    training_args: TrainingLike = None,
    max_length: int = 512,
    trust_remote_code: bool = False,
    method: str = "full",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
) -> PreparedStage:
    """ULMFiT stage 3 before `train()` (see [`train_classifier`]): a classifier on top of a (fine-tuned) language model, trained with gradual unfreezing,
    discriminative learning rates and STLR (the `ULMFiTTrainingArguments` defaults), and evaluated.

    Args:
        model_name_or_path: the language model's folder or Hub id (a new classification head is initialised).
        train_data: labelled texts ([`TextData`] names the text and label columns; `text`/`label` otherwise).
        output_dir: the folder the stage saves (loads with `pipeline("text-classification", model=output_dir)`).
        eval_data: held-out labelled texts: accuracy and macro-F1 after training.
        label_names: the class names, in id order (integer labels index them; string labels must be among them).
        training_args: `ULMFiTTrainingArguments`, or a dict updating `STAGE_DEFAULTS["classifier"]`.
        max_length: longest input of a transformer classifier in tokens (AWD-LSTM reads whole documents).
        trust_remote_code: allow a Hub checkpoint's own code.
        method: `"full"` or `"lora"` (see `tl_nlp.recipe.methods`; `"feature_extraction"` has no Trainer:
            [`train_classifier`] runs it).
        auxiliary_lm_weight: weight of GPT's auxiliary LM loss (0: none); AWD-LSTM and GPT-style models.
        lora: `method="lora"`: rank, scale, dropout (`ULMFiTLoraArguments()` when not given).
        save_adapter: `method="lora"`: also save the adapter in `output_dir/adapter` (the folder holds the merged
            model either way).

    Returns:
        A [`PreparedStage`].
    """
    check_method(method, auxiliary_lm_weight, lora)
    if save_adapter and method != "lora":
        raise ValueError(f"save_adapter saves a LoRA adapter, but method is {method!r}: use method='lora' or drop it")
    if method == "feature_extraction":
        raise RecipeError(
            "prepare_classifier trains with a Trainer: method 'feature_extraction' runs in train_classifier"
        )
    output_dir = Path(output_dir)
    config = load_config(model_name_or_path, trust_remote_code)
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    check_model_for_method(
        method, auxiliary_lm_weight, config, _objective_or_none(config, tokenizer), str(model_name_or_path)
    )
    args = training_arguments("classifier", output_dir, training_args, transformer=config.model_type != "awd_lstm")
    encode = _classification_tokenizer(tokenizer, config, max_length)
    text_column, label_column = columns_of(train_data)
    train, id2label, label2id = tokenize_dataset(
        as_dataset(train_data), encode, text_column, label_column, label_names, source=_name(train_data)
    )
    evaluation = None
    if eval_data is not None:
        eval_text, eval_label = columns_of(eval_data)
        names = [id2label[index] for index in range(len(id2label))]
        evaluation, _, _ = tokenize_dataset(
            as_dataset(eval_data), encode, eval_text, eval_label, names, source=_name(eval_data)
        )
    set_seed(args.seed)  # the new head's weights
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path,
        num_labels=len(id2label),
        id2label=id2label,
        label2id=label2id,
        pad_token_id=tokenizer.pad_token_id,
        trust_remote_code=trust_remote_code,
    )
    lm_bias = awd_lstm_decoder_bias(model_name_or_path) if config.model_type == "awd_lstm" else None
    model = wrap_classifier(model, method, auxiliary_lm_weight, lora, lm_bias)
    counts = parameter_counts(model)
    guard = NonFiniteLossCallback()
    trainer = (AuxiliaryLMTrainer if auxiliary_lm_weight > 0 else ClassificationTrainer)(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics(len(id2label)),
        callbacks=[guard],
    )
    return PreparedStage(
        "classifier",
        output_dir,
        trainer,
        tokenizer,
        guard,
        evaluation,
        method=method,
        save_adapter=save_adapter,
        parameter_counts=counts,
    )


def _objective_or_none(config, tokenizer) -> str:
    """The checkpoint's language-model objective for error messages and checks (`"none"` without an LM head)."""
    try:
        return language_model_objective(config, tokenizer)
    except RecipeError:
        return "none"


def train_classifier(
    model_name_or_path: str, train_data: DataLike, output_dir: str | Path, **kwargs: Any
) -> StageResult:
    """ULMFiT stage 3: a classifier on top of a (fine-tuned) language model, trained with gradual unfreezing,
    discriminative learning rates and STLR (the `ULMFiTTrainingArguments` defaults), evaluated and saved.

    `method` picks the transfer method with everything else unchanged: `"full"`, `"lora"` (the folder holds the
    merged model) or `"feature_extraction"` (AWD-LSTM: frozen encoder, head trained on cached concat-pooled
    features, written into the classifier's head; the Trainer options other than `seed` and
    `per_device_eval_batch_size` do not apply). Every method saves a folder that [`evaluate_classifier`],
    [`predict`] and `pipeline()` load.

    Args:
        model_name_or_path, train_data, output_dir, kwargs: as for [`prepare_classifier`].
        feature_head: `method="feature_extraction"`: the head and its training (`FeatureHeadArguments()` when not
            given; its seed is the training seed).
        feature_pooling: `method="feature_extraction"`: see `extract_features` (`"auto"`).

    Returns:
        A [`StageResult`] with `train_loss`, `train_runtime`, `trainable_parameters`, `total_parameters`, and with
        `eval_data` `eval_accuracy`, `eval_macro_f1`.

    Example:

    ```python
    >>> result = train_classifier("runs/lm_imdb", TextData("imdb/train.parquet", max_examples=400), "runs/clas",
    ...                           eval_data=TextData("imdb/test.parquet", max_examples=1000),
    ...                           label_names=["negative", "positive"])  # doctest: +SKIP
    >>> result.metrics["eval_accuracy"]  # doctest: +SKIP
    ```
    """
    feature_head = kwargs.pop("feature_head", None)
    feature_pooling = kwargs.pop("feature_pooling", "auto")
    if kwargs.get("method", "full") == "feature_extraction" or feature_head is not None:
        check_method(
            kwargs.get("method", "full"), kwargs.get("auxiliary_lm_weight", 0.0), kwargs.get("lora"), feature_head
        )
        return _train_feature_extraction_classifier(
            model_name_or_path, train_data, output_dir, feature_head, feature_pooling, **kwargs
        )
    prepared = prepare_classifier(model_name_or_path, train_data, output_dir, **kwargs)
    trainer = prepared.trainer
    if trainer.is_world_process_zero():
        print(trainer.layer_group_summary())
    train_output = trainer.train()
    prepared.guard.raise_if_stopped()
    metrics: dict[str, dict] = {"train": {**train_output.metrics, **prepared.parameter_counts}}
    _print_metrics(trainer, f"classifier ({prepared.method}): train", metrics["train"])
    if prepared.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate(prepared.eval_dataset)
        _print_metrics(trainer, f"classifier: {len(prepared.eval_dataset)} held-out texts", metrics["eval"])
    model = model_to_save(trainer.model, prepared.output_dir, prepared.save_adapter, trainer.is_world_process_zero())
    _save_stage(trainer, model, prepared.tokenizer, prepared.output_dir, metrics)
    return StageResult(prepared.output_dir, _flatten(metrics))


def _train_feature_extraction_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    feature_head: FeatureHeadArguments | None,
    feature_pooling: str,
    eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    training_args: TrainingLike = None,
    max_length: int = 512,
    trust_remote_code: bool = False,
    method: str = "feature_extraction",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
) -> StageResult:
    """`train_classifier(method="feature_extraction")`: features of the frozen AWD-LSTM encoder computed once, a
    head trained on them and written into the classifier's head; saved, evaluated from the saved folder."""
    output_dir = Path(output_dir)
    config = load_config(model_name_or_path, trust_remote_code)
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    check_model_for_method(
        method, auxiliary_lm_weight, config, _objective_or_none(config, tokenizer), str(model_name_or_path)
    )
    args = training_arguments("classifier", output_dir, training_args)
    if args.gradual_unfreezing or args.discriminative_lr_decay != 1.0:
        print(
            "  feature_extraction: the backbone stays frozen, so gradual unfreezing, discriminative rates and the "
            "other Trainer options are ignored (the head trains with feature_head's settings)"
        )
    head_arguments = feature_head if feature_head is not None else FeatureHeadArguments(seed=args.seed)
    text_column, label_column = columns_of(train_data)
    train, id2label, label2id = encode_labels(as_dataset(train_data), label_column, label_names, _name(train_data))
    head_hidden = [head_arguments.hidden_size] if head_arguments.hidden_size else []
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path,
        num_labels=len(id2label),
        id2label=id2label,
        label2id=label2id,
        pad_token_id=tokenizer.pad_token_id,
        classifier_hidden_sizes=head_hidden,
        classifier_dropouts=[head_arguments.dropout] * (len(head_hidden) + 1),
        trust_remote_code=trust_remote_code,
    ).eval()
    names = [id2label[index] for index in range(len(id2label))]
    extractor = FeatureExtractionClassifier(
        model, tokenizer, names, feature_pooling, head_arguments, batch_size=args.per_device_eval_batch_size
    )
    start = time.perf_counter()
    features = extractor.features(train[text_column])
    extraction_seconds = time.perf_counter() - start
    history = extractor.fit_features(features, train["labels"])
    load_feature_head_into_awd_lstm(model, extractor.head)
    head_parameters = sum(parameter.numel() for parameter in extractor.head.parameters())
    metrics: dict[str, dict] = {
        "train": {
            "train_loss": history[-1],
            "train_runtime": time.perf_counter() - start,
            "feature_extraction_runtime": extraction_seconds,
            "train_samples": len(train),
            "trainable_parameters": head_parameters,
            "total_parameters": sum(parameter.numel() for parameter in model.parameters()),
        }
    }
    _print_values("classifier (feature_extraction): train", metrics["train"])
    if args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        settings = {"method": "feature_extraction", "pooling": extractor.pooling, **dataclasses.asdict(head_arguments)}
        (output_dir / "feature_extraction.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if eval_data is not None:
            metrics["eval"] = evaluate_classifier(
                str(output_dir), eval_data, batch_size=args.per_device_eval_batch_size
            )
            _print_values(f"classifier: {metrics['eval']['eval_samples']} held-out texts", metrics["eval"])
        for split, values in metrics.items():
            (output_dir / f"{split}_results.json").write_text(json.dumps(values, indent=4) + "\n", encoding="utf-8")
        (output_dir / "all_results.json").write_text(json.dumps(_flatten(metrics), indent=4) + "\n", encoding="utf-8")
    return StageResult(output_dir, _flatten(metrics))


def _name(data: DataLike) -> str:
    return data.source if isinstance(data, TextData) else data if isinstance(data, str) else "dataset"


def _load_classifiers(model_name_or_path: str | Sequence[str], trust_remote_code: bool, device: str | None):
    paths = [model_name_or_path] if isinstance(model_name_or_path, str | Path) else list(model_name_or_path)
    if not paths:
        raise RecipeError("no classifier given")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifiers = []
    for path in paths:
        config = load_config(str(path), trust_remote_code)
        tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        classifiers.append((model.to(device).eval(), _classification_tokenizer(tokenizer, config, 512)))
    return classifiers


def predict_probabilities(
    model_name_or_path: str | Sequence[str],
    texts: Sequence[str],
    batch_size: int = 32,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[np.ndarray, dict[int, str]]:
    """Class probabilities of `texts` (`(len(texts), num_labels)`) and the labels, from one classifier folder or
    the mean over several (a forward + backward ensemble: each reads the texts with its own tokenizer)."""
    classifiers = _load_classifiers(model_name_or_path, trust_remote_code, device)
    probabilities = ensemble_predict(classifiers, list(texts), batch_size=batch_size)
    id2label = {int(index): name for index, name in classifiers[0][0].config.id2label.items()}
    return probabilities, id2label


def predict(
    model_name_or_path: str | Sequence[str],
    texts: Sequence[str],
    batch_size: int = 32,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """Labels and probabilities for `texts`, from a classifier folder or an ensemble of them.

    Returns:
        One `{"text", "label", "score", "scores": {label: probability}}` per text, in input order.

    Example:

    ```python
    >>> predict(["runs/demo/classifier", "runs/demo/backward/classifier"], ["A wonderful film."])  # doctest: +SKIP
    [{'text': 'A wonderful film.', 'label': 'positive', 'score': 0.93, 'scores': {...}}]
    ```
    """
    probabilities, id2label = predict_probabilities(model_name_or_path, texts, batch_size, device, trust_remote_code)
    results = []
    for text, row in zip(texts, probabilities, strict=True):
        best = int(row.argmax())
        scores = {id2label[index]: float(value) for index, value in enumerate(row)}
        results.append({"text": text, "label": id2label[best], "score": float(row[best]), "scores": scores})
    return results


def evaluate_classifier(
    model_name_or_path: str | Sequence[str],
    data: DataLike,
    batch_size: int = 32,
    output_file: str | Path | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Accuracy and macro-F1 of a classifier (or the mean-probability ensemble of several) on labelled texts.

    Args:
        model_name_or_path: a classifier folder or Hub id, or several (forward + backward).
        data: labelled texts; labels are ids or names of the classifier's `id2label`.
        output_file: also write the metrics there as JSON (e.g. `eval_results.json`).

    Returns:
        `{"eval_accuracy", "eval_macro_f1", "eval_samples"}`.
    """
    probabilities_and_labels = None
    text_column, label_column = columns_of(data)
    dataset = as_dataset(data)
    if text_column not in dataset.column_names:
        raise RecipeError(f"{_name(data)}: no text column {text_column!r}; the columns are {dataset.column_names}")
    classifiers = _load_classifiers(model_name_or_path, trust_remote_code, device)
    id2label = {int(index): name for index, name in classifiers[0][0].config.id2label.items()}
    names = [id2label[index] for index in range(len(id2label))]
    dataset, _, _ = encode_labels(dataset, label_column, names, source=_name(data))
    probabilities_and_labels = ensemble_predict(classifiers, dataset[text_column], batch_size=batch_size)
    predicted = probabilities_and_labels.argmax(-1)
    references = np.asarray(dataset["labels"])
    metrics = {
        "eval_accuracy": Accuracy().compute(predictions=predicted, references=references)["accuracy"],
        "eval_macro_f1": MacroF1().compute(predictions=predicted, references=references, labels=range(len(names)))[
            "macro_f1"
        ],
        "eval_samples": len(references),
    }
    if output_file is not None:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
