"""ULMFiT stage 3: a classifier trained from a (fine-tuned) language model, with the transfer method chosen in
[`ClassifierMethodArguments`] (full fine-tuning with gradual unfreezing, discriminative rates and STLR; LoRA; or a
head on frozen features), evaluated and saved as a folder that `pipeline()` and [`evaluate_classifier`] load."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed

from ..data import encode_labels, tokenize_dataset
from ..feature_extraction import FeatureExtractionClassifier, FeatureHeadArguments
from ..metrics import classification_metrics
from ..training.chance_level import chance_level_loss
from ..training.lora import ULMFiTLoraArguments
from ..training.training_record import ULMFiTStage, chain_record, find_starting_point
from .config import (
    ClassifierMethodArguments,
    HubArguments,
    TaskArguments,
    TrainingLike,
    check_method,
    stage_training_arguments,
)
from .data import DataLike, RecipeError, as_dataset, columns_of, data_description, source_name
from .evaluation import classification_tokenizer, classifier_metrics, set_truncation
from .loading import load_config, load_model, load_tokenizer, model_family, objective_or_none
from .methods import (
    awd_lstm_decoder_bias,
    check_model_for_method,
    classifier_trainer,
    load_feature_head_into_awd_lstm,
    model_to_save,
    parameter_counts,
    wrap_classifier,
)
from .results import PreparedStage, StageResult, print_metrics, save_stage, save_trained_stage, stage_folder
from .task import prepare_task_classifier, resolve_task, train_task_classifier

MethodLike = str | ClassifierMethodArguments


def _method_options(
    method: MethodLike, auxiliary_lm_weight: float, lora: ULMFiTLoraArguments | None, save_adapter: bool
) -> tuple[str, float, ULMFiTLoraArguments | None, bool]:
    """`(method, auxiliary_lm_weight, lora, save_adapter)` from a method name and its keywords, or from
    [`ClassifierMethodArguments`] (which then holds them all)."""
    if isinstance(method, ClassifierMethodArguments):
        if auxiliary_lm_weight or lora is not None or save_adapter:
            raise ValueError("give the method's settings in ClassifierMethodArguments, not also as keywords")
        is_lora = method.method == "lora"
        return (
            method.method,
            method.auxiliary_lm_weight,
            method.lora_arguments() if is_lora else None,
            (is_lora and method.lora_save_adapter),
        )
    return method, auxiliary_lm_weight, lora, save_adapter


def _task_method_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` of a single-text classifier stage as the task stage takes them: the method and its settings unpacked
    from [`ClassifierMethodArguments`], feature extraction's settings turned into its name (which the task stage
    refuses in one line)."""
    method, auxiliary_lm_weight, lora, save_adapter = _method_options(
        kwargs.pop("method", "full"),
        kwargs.pop("auxiliary_lm_weight", 0.0),
        kwargs.pop("lora", None),
        kwargs.pop("save_adapter", False),
    )
    if kwargs.pop("feature_head", None) is not None or kwargs.pop("feature_pooling", "auto") != "auto":
        method = "feature_extraction"
    return {
        **kwargs,
        "method": method,
        "auxiliary_lm_weight": auxiliary_lm_weight,
        "lora": lora,
        "save_adapter": save_adapter,
    }


def prepare_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    training_args: TrainingLike = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    method: MethodLike = "full",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
    config_overrides: dict[str, Any] | None = None,
    truncation_side: str = "right",
    inference_max_length: int | None = None,
) -> PreparedStage:
    """ULMFiT stage 3 before `train()` (see [`train_classifier`]): the classifier, its data and its trainer.

    Args:
        model_name_or_path: the language model's folder or Hub id (a new classification head is initialised).
        train_data: labelled texts ([`TextData`] names the text and label columns; `text`/`label` otherwise).
        output_dir: the folder the stage saves (loads with `pipeline("text-classification", model=output_dir)`).
        eval_data: held-out labelled texts: accuracy and macro-F1 after training.
        label_names: the class names, in id order (integer labels index them; string labels must be among them).
        training_args: `ClassifierTrainingArguments` (an unset learning rate becomes the stage's rate for the model
            family and method: 1e-2 for AWD-LSTM, 2e-4 for transformers, 1e-3 for their LoRA adapters), a dict of
            its fields, or any `ULMFiTTrainingArguments` (used as it is).
        max_length: longest input in tokens, saved as the tokenizer's `model_max_length` so that evaluation reads
            the same length. Transformers: default 512, capped by the context length. AWD-LSTM reads whole
            documents (BPT3C) by default; with `max_length` it reads their first `max_length` tokens (faster).
        truncation_side: which end of a longer input is cut, saved with the tokenizer: `"right"` keeps the
            beginning (transformers' default; fastai's AWD-LSTM classifier cuts nothing, it reads whole documents),
            `"left"` keeps the end. Sun et al. (2019, "How to Fine-Tune BERT for Text Classification") found IMDb
            reviews read from their end slightly better than from their beginning; `make demo` trains on the end
            (BENCHMARKS.md, how its reading was chosen).
        inference_max_length: longest input at evaluation, `predict` and `pipeline()` (saved as the tokenizer's
            `model_max_length`; default `max_length`, capped by the context length). Training on shorter inputs
            than the model reads later costs a fraction of the time: attention and feed-forward work grow with the
            length, and a pretrained Transformer's position embeddings cover the longer inputs already.
        trust_remote_code: allow a Hub checkpoint's own code.
        method: `"full"` or `"lora"`, or [`ClassifierMethodArguments`] holding the method and its settings
            (`"feature_extraction"` has no Trainer: [`train_classifier`] runs it).
        auxiliary_lm_weight: weight of GPT's auxiliary LM loss (0: none); AWD-LSTM and GPT-style models.
        lora: `method="lora"`: rank, scale, dropout (`ULMFiTLoraArguments()` when not given).
        save_adapter: `method="lora"`: also save the adapter in `output_dir/adapter` (the folder holds the merged
            model either way).
        config_overrides: config fields of the classifier that differ from the checkpoint's, e.g.
            `{"dropout_multiplier": 0.5}` (fastai's `drop_mult`) or `{"classifier_hidden_sizes": [50]}`.

    Returns:
        A [`PreparedStage`].
    """
    method, auxiliary_lm_weight, lora, save_adapter = _method_options(method, auxiliary_lm_weight, lora, save_adapter)
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
        method, auxiliary_lm_weight, config, objective_or_none(config, tokenizer), str(model_name_or_path)
    )
    args, settings = stage_training_arguments(
        "classifier", training_args, output_dir, model_family(config), data_description(train_data), method
    )
    training_length = set_truncation(tokenizer, config, max_length, truncation_side, inference_max_length)
    encode = classification_tokenizer(tokenizer, config, training_length)
    inference_encode = classification_tokenizer(tokenizer, config)
    text_column, label_column = columns_of(train_data)
    train, id2label, label2id = tokenize_dataset(
        as_dataset(train_data), encode, text_column, label_column, label_names, source=source_name(train_data)
    )
    evaluation = None
    if eval_data is not None:
        eval_text, eval_label = columns_of(eval_data)
        names = [id2label[index] for index in range(len(id2label))]
        evaluation, _, _ = tokenize_dataset(
            as_dataset(eval_data), inference_encode, eval_text, eval_label, names, source=source_name(eval_data)
        )
    set_seed(args.seed)  # the new head's weights
    model = load_model(
        AutoModelForSequenceClassification,
        model_name_or_path,
        num_labels=len(id2label),
        id2label=id2label,
        label2id=label2id,
        pad_token_id=tokenizer.pad_token_id,
        trust_remote_code=trust_remote_code,
        **(config_overrides or {}),
    )
    lm_bias = awd_lstm_decoder_bias(model_name_or_path) if config.model_type == "awd_lstm" else None
    model = wrap_classifier(model, method, auxiliary_lm_weight, lora, lm_bias)
    counts = parameter_counts(model)
    trainer, guard = classifier_trainer(
        model,
        args,
        train,
        DataCollatorWithPadding(tokenizer),
        classification_metrics(len(id2label)),
        auxiliary_lm_weight,
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
        settings=settings,
        encode=inference_encode,
        label_names=[id2label[index] for index in range(len(id2label))],
        chance_loss=chance_level_loss(
            train["labels"], "single_label_classification", len(id2label), args.label_smoothing_factor
        ),
    )


def train_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    hub: HubArguments | None = None,
    **kwargs: Any,
) -> StageResult:
    """ULMFiT stage 3: a classifier on top of a (fine-tuned) language model, trained with gradual unfreezing,
    discriminative learning rates and STLR (the `ClassifierTrainingArguments` defaults), evaluated and saved.

    `method` picks the transfer method with everything else unchanged: `"full"`, `"lora"` (the folder holds the
    merged model) or `"feature_extraction"` (AWD-LSTM: frozen encoder, head trained on cached concat-pooled
    features, written into the classifier's head; it refuses the options it cannot use). Every method saves a
    folder that [`evaluate_classifier`], [`predict`] and `pipeline()` load.

    Args:
        model_name_or_path, train_data, output_dir, kwargs: as for [`prepare_classifier`].
        hub: upload the saved folder with its model card (`HubArguments(push_to_hub=True, ...)`).
        task: [`TaskArguments`]: the task and its columns. Without it the task is inferred from the data; pairs,
            regression, multi-label and multiple choice go to `tl_nlp.recipe.task.train_task_classifier`.
        feature_head: `method="feature_extraction"`: the head and its training (`FeatureHeadArguments()` when not
            given; its seed is the training seed); in `ClassifierMethodArguments` as its `feature_head_*` fields.
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
    task = kwargs.pop("task", None)
    # Pairs, regression, multi-label and multiple choice train in their own stage (inferred from the data when
    # `task` does not say; it refuses feature extraction in one line); a single text with one class goes on here.
    spec, _, _ = resolve_task(train_data, task)
    if spec.task != "single_text":
        options = _task_method_options(kwargs)
        return train_task_classifier(model_name_or_path, train_data, output_dir, hub=hub, task=task, **options)
    feature_head = kwargs.pop("feature_head", None)
    feature_pooling = kwargs.pop("feature_pooling", "auto")
    method = kwargs.get("method", "full")
    if isinstance(method, ClassifierMethodArguments) and method.method == "feature_extraction":
        kwargs["method"] = "feature_extraction"
        seed = getattr(kwargs.get("training_args"), "seed", 42)
        feature_head, feature_pooling = method.feature_head_arguments(seed), method.feature_pooling
    if kwargs.get("method", "full") == "feature_extraction" or feature_head is not None:
        check_method(
            kwargs.get("method", "full"), kwargs.get("auxiliary_lm_weight", 0.0), kwargs.get("lora"), feature_head
        )
        return _train_feature_extraction_classifier(
            model_name_or_path, train_data, output_dir, feature_head, feature_pooling, hub=hub, **kwargs
        )
    with stage_folder(output_dir, kwargs.get("training_args")) as checkpoint:
        if isinstance(checkpoint, StageResult):
            return checkpoint
        prepared = prepare_classifier(model_name_or_path, train_data, output_dir, **kwargs)
        trainer = prepared.trainer
        is_main = trainer.is_world_process_zero()
        metrics: dict[str, dict] = {
            "train": prepared.train_classifier(checkpoint, f"classifier ({prepared.method}): train")
        }
        if prepared.eval_dataset is not None:
            metrics["eval"] = trainer.evaluate(prepared.eval_dataset)
            if is_main:
                print_metrics(f"classifier: {len(prepared.eval_dataset)} held-out texts", metrics["eval"])
        model = model_to_save(trainer.model, prepared.output_dir, prepared.save_adapter, is_main)
        return save_trained_stage(prepared, model, metrics, hub)


def prepare_classifier_stage(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    task: TaskArguments | None = None,
    **kwargs: Any,
) -> PreparedStage:
    """The classifier stage before `train()` for the task of `train_data` (`task`, or inferred from the data): the
    model and trainer [`train_classifier`] would train, e.g. for a learning-rate sweep. A single text with one class
    goes to [`prepare_classifier`], every other task to `tl_nlp.recipe.task.prepare_task_classifier`; `kwargs` as
    for [`prepare_classifier`]."""
    spec, _, _ = resolve_task(train_data, task)
    if spec.task == "single_text":
        return prepare_classifier(model_name_or_path, train_data, output_dir, **kwargs)
    return prepare_task_classifier(
        model_name_or_path, train_data, output_dir, task=task, **_task_method_options(kwargs)
    )


def _train_feature_extraction_classifier(
    model_name_or_path: str,
    train_data: DataLike,
    output_dir: str | Path,
    feature_head: FeatureHeadArguments | None,
    feature_pooling: str,
    eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    training_args: TrainingLike = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    method: str = "feature_extraction",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
    hub: HubArguments | None = None,
    truncation_side: str = "right",
    inference_max_length: int | None = None,
) -> StageResult:
    """`train_classifier(method="feature_extraction")`: features of the frozen AWD-LSTM encoder computed once, a
    head trained on them and written into the classifier's head; evaluated, saved like every stage."""
    output_dir = Path(output_dir)
    with stage_folder(output_dir, training_args) as checkpoint:
        if isinstance(checkpoint, StageResult):
            return checkpoint
        config = load_config(model_name_or_path, trust_remote_code)
        tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
        check_model_for_method(
            method, auxiliary_lm_weight, config, objective_or_none(config, tokenizer), str(model_name_or_path)
        )
        args, settings = stage_training_arguments(
            "classifier", training_args, output_dir, model_family(config), data_description(train_data)
        )
        # The backbone stays frozen and the head trains with feature_head's settings: anything else would be ignored.
        refused = [name for name, source in settings.items() if source == "set by you"]
        refused += [
            name
            for name, value in (
                ("lora", lora),
                ("save_adapter", save_adapter),
                ("max_length", max_length),
                ("truncation_side", truncation_side != "right"),
                ("inference_max_length", inference_max_length),
            )
            if value
        ]
        if refused:
            raise RecipeError(
                f"method 'feature_extraction' cannot use {', '.join(refused)}: the backbone stays frozen and the head "
                "trains with the feature_head settings (feature_head_epochs, feature_head_learning_rate...); drop them"
            )
        head_arguments = feature_head if feature_head is not None else FeatureHeadArguments(seed=args.seed)
        text_column, label_column = columns_of(train_data)
        train, id2label, label2id = encode_labels(
            as_dataset(train_data), label_column, label_names, source_name(train_data)
        )
        head_hidden = [head_arguments.hidden_size] if head_arguments.hidden_size else []
        model = load_model(
            AutoModelForSequenceClassification,
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
        if args.process_index != 0:
            return StageResult(output_dir, {})
        print_metrics("classifier (feature_extraction): train", metrics["train"])
        if eval_data is not None:
            classifiers = [(model, classification_tokenizer(tokenizer, config))]
            metrics["eval"] = classifier_metrics(classifiers, eval_data, batch_size=args.per_device_eval_batch_size)
            print_metrics(f"classifier: {metrics['eval']['eval_samples']} held-out texts", metrics["eval"])
        stage = ULMFiTStage(
            name="classifier head on frozen features",
            objective="classification",
            dataset=args.dataset_name or "unnamed data",
            num_examples=len(train),
            num_train_epochs=head_arguments.num_epochs,
            learning_rate=head_arguments.learning_rate,
            metrics={name.removeprefix("eval_"): value for name, value in metrics.get("eval", {}).items()},
            notes=f"The language model stayed frozen: only the head trained, on {extractor.pooling} features "
            "computed once (feature extraction).",
        )
        record = chain_record(find_starting_point(model), stage, language=args.language)
        save_stage(output_dir, model, tokenizer, metrics, record=record, hub=hub)
        settings_file = {
            "method": "feature_extraction",
            "pooling": extractor.pooling,
            **dataclasses.asdict(head_arguments),
        }
        (output_dir / "feature_extraction.json").write_text(
            json.dumps(settings_file, indent=2) + "\n", encoding="utf-8"
        )
        return StageResult(output_dir, {name: value for values in metrics.values() for name, value in values.items()})
