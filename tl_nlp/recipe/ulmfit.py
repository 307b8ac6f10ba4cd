"""The three ULMFiT stages in one call, forward and (optionally) backward with their ensemble."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..feature_extraction import FeatureHeadArguments
from ..training.lora import ULMFiTLoraArguments
from .classifier import MethodLike, train_classifier
from .config import ClassifierMethodArguments, HubArguments, TaskArguments, TrainingLike, check_method
from .data import DataLike, RecipeError, as_dataset, columns_of
from .evaluation import evaluate_classifier
from .language_model import finetune_language_model, pretrain_language_model
from .loading import load_tokenizer
from .results import StageResult


def run_ulmfit(
    train_data: DataLike,
    output_dir: str | Path,
    pretrain_data: DataLike | None = None,
    finetune_data: DataLike | None = None,
    eval_data: DataLike | None = None,
    pretrained_model: str | None = None,
    pretrain_eval_data: DataLike | None = None,
    finetune_eval_data: DataLike | None = None,
    label_names: Sequence[str] | None = None,
    pretrain_args: TrainingLike = None,
    finetune_args: TrainingLike = None,
    classifier_args: TrainingLike = None,
    backwards: bool = False,
    method: MethodLike = "full",
    auxiliary_lm_weight: float = 0.0,
    lora: ULMFiTLoraArguments | None = None,
    save_adapter: bool = False,
    feature_head: FeatureHeadArguments | None = None,
    feature_pooling: str = "auto",
    hub: HubArguments | None = None,
    task: TaskArguments | None = None,
    max_length: int | None = None,
    truncation_side: str = "right",
    inference_max_length: int | None = None,
    **language_model_options: Any,
) -> dict[str, StageResult | dict[str, float]]:
    """ULMFiT end to end: (1) a general-domain language model, (2) fine-tuned on target-domain text, (3) a
    classifier trained from it and evaluated. Folders: `output_dir/{lm_pretrained, lm_finetuned, classifier}`.

    Args:
        train_data: labelled texts for the classifier.
        output_dir: where the stages save their folders.
        pretrain_data: general-domain texts for stage 1 (a new AWD-LSTM whose tokenizer learns its vocabulary from
            these and `finetune_data`); not needed with `pretrained_model`.
        finetune_data: target-domain texts for stage 2 (unlabelled reviews); stage 2 is skipped without them.
        eval_data: held-out labelled texts: the classifier's accuracy and macro-F1.
        pretrained_model: start from this language model (AWD-LSTM, BERT- or GPT-style folder or Hub id) instead of
            stage 1.
        pretrain_eval_data, finetune_eval_data: validation texts of stages 1 and 2 (perplexity before and after).
        label_names: the class names, in id order.
        pretrain_args, finetune_args, classifier_args: each stage's training arguments
            (`PretrainTrainingArguments`, `FinetuneTrainingArguments`, `ClassifierTrainingArguments`, or a dict of
            their fields; see `tl_nlp.recipe.config`). Each stage's training record names its own data unless its
            arguments set `dataset_name`.
        backwards: also run the recipe on reversed texts (`output_dir/backward/...`, ULMFiT tokenizers only) and
            evaluate the forward + backward ensemble (mean of the probabilities) on `eval_data`.
        method, auxiliary_lm_weight, lora, save_adapter, feature_head, feature_pooling: the classifier stage's
            transfer method and its settings (see [`train_classifier`]; `method` may be a
            `ClassifierMethodArguments` holding them all).
        hub: upload the (forward) classifier's folder with its model card, which describes all its stages.
        task: the classifier stage's task and its columns ([`TaskArguments`]; inferred from `train_data` when not
            given): pairs, regression, multi-label and multiple choice as well as single texts.
        max_length, truncation_side, inference_max_length: how the classifier stage reads a text (see
            [`prepare_classifier`]).
        language_model_options: further [`train_language_model`] arguments for stages 1-2 (`model_config`,
            `vocab_size`, `bptt`, `block_size`, ...).

    Returns:
        `{"pretrain"?, "finetune"?, "classifier"}` [`StageResult`]s, and with `backwards` the same under
        `"backward_*"` keys plus `"ensemble"` metrics.
    """
    if isinstance(method, ClassifierMethodArguments):
        method_options: dict[str, Any] = {"method": method}
    else:
        check_method(method, auxiliary_lm_weight, lora, feature_head)
        method_options = {"method": method, "auxiliary_lm_weight": auxiliary_lm_weight}
        if method == "lora":
            method_options.update(lora=lora, save_adapter=save_adapter)
        if method == "feature_extraction":
            method_options.update(feature_head=feature_head, feature_pooling=feature_pooling)
    if pretrained_model is None and pretrain_data is None:
        raise RecipeError("give pretrain_data (texts for a new language model) or pretrained_model (a checkpoint)")
    results: dict[str, Any] = {}
    for direction in ("forward", "backward") if backwards else ("forward",):
        prefix = "" if direction == "forward" else "backward_"
        root = Path(output_dir) / ("" if direction == "forward" else "backward")
        is_backward = direction == "backward"
        model = pretrained_model
        if model is None:
            tokenizer = None
            if is_backward:  # the same vocabulary, read the other way
                tokenizer = load_tokenizer(str(results["pretrain"].output_dir), backwards=True)
            tokenizer_texts = _texts(pretrain_data, finetune_data)
            results[prefix + "pretrain"] = pretrain_language_model(
                pretrain_data,
                root / "lm_pretrained",
                eval_data=pretrain_eval_data,
                training_args=pretrain_args,
                tokenizer=tokenizer,
                tokenizer_texts=tokenizer_texts,
                backwards=is_backward,
                **language_model_options,
            )
            model = str(results[prefix + "pretrain"].output_dir)
        if finetune_data is not None:
            results[prefix + "finetune"] = finetune_language_model(
                model,
                finetune_data,
                root / "lm_finetuned",
                eval_data=finetune_eval_data,
                training_args=finetune_args,
                backwards=is_backward,
                **{k: v for k, v in language_model_options.items() if k not in _NEW_MODEL_OPTIONS},
            )
            model = str(results[prefix + "finetune"].output_dir)
        results[prefix + "classifier"] = train_classifier(
            model,
            train_data,
            root / "classifier",
            eval_data=eval_data,
            label_names=label_names,
            training_args=classifier_args,
            hub=None if is_backward else hub,
            task=task,
            **method_options,
            **_reading_options(max_length, truncation_side, inference_max_length),
        )
    if backwards and eval_data is not None:
        results["ensemble"] = evaluate_classifier(
            [str(results["classifier"].output_dir), str(results["backward_classifier"].output_dir)], eval_data
        )
        print(f"forward + backward ensemble: {results['ensemble']}")
    return results


def _reading_options(max_length: int | None, truncation_side: str, inference_max_length: int | None) -> dict:
    """The classifier stage's reading options that differ from its defaults (feature extraction refuses any)."""
    options: dict[str, Any] = {}
    if max_length is not None:
        options["max_length"] = max_length
    if truncation_side != "right":
        options["truncation_side"] = truncation_side
    if inference_max_length is not None:
        options["inference_max_length"] = inference_max_length
    return options


# Options that only make sense when stage 1 builds a new model.
_NEW_MODEL_OPTIONS = ("model_config", "vocab_size", "tokenizer_type", "min_frequency", "tokenizer", "tokenizer_texts")


def _texts(*sources: DataLike | None):
    """The texts of every source in turn (for the tokenizer's vocabulary)."""
    columns = []
    for source in sources:
        if source is not None:
            dataset = as_dataset(source)
            columns.append(dataset[columns_of(source)[0]])
    return itertools.chain.from_iterable(columns)
