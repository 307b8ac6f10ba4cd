"""The recipe's `tl-nlp` subcommands: `pretrain-lm`, `finetune-lm`, `train-classifier`, `ulmfit`, `evaluate`,
`lr-find`. Their options are the fields of the dataclasses below plus `ULMFiTTrainingArguments` (parsed together by
`HfArgumentParser`; `--config FILE` sets any of them, flags win). Each command changes a few training defaults
(`COMMAND_DEFAULTS`), which a config file or a flag overrides in turn."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training import ULMFiTTrainingArguments
from ..training.lr_finder import LRFinderArguments, find_learning_rate
from .data import RecipeError, TextData
from .methods import ClassifierMethodArguments
from .stages import COMMON_DEFAULTS, STAGE_DEFAULTS, evaluate_classifier

_TEXT_COLUMN = field(default="text", metadata={"help": "Column holding the texts."})


@dataclass
class DataArguments:
    """Where a stage reads its texts."""

    train_file: str = field(
        default=None,
        metadata={"help": "Training texts: a local file (txt/csv/tsv/json/jsonl/parquet) or a Hub dataset."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out texts (file or Hub dataset): perplexity or accuracy/macro-F1."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of a Hub training dataset."})
    validation_split: str = field(default="validation", metadata={"help": "Split of a Hub validation dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub datasets."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (classifier)."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names in id order (integer labels index them)."}
    )
    train_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, JSON row indices of the training set."})
    validation_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, row indices of the held-out set."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Keep at most this many training rows."})
    max_eval_examples: int | None = field(default=None, metadata={"help": "Keep at most this many held-out rows."})

    def __post_init__(self):
        if not self.train_file:
            raise ValueError("train_file is required: a local file or a Hub dataset name")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def train(self) -> TextData:
        return self._data(self.train_file, self.train_split, self.train_rows, self.max_train_examples)

    def validation(self) -> TextData | None:
        if self.validation_file is None:
            return None
        return self._data(self.validation_file, self.validation_split, self.validation_rows, self.max_eval_examples)

    def _data(self, source: str, split: str, rows: str | None, max_examples: int | None) -> TextData:
        return TextData(
            source,
            split=split,
            config_name=self.dataset_config_name,
            text_column=self.text_column,
            label_column=self.label_column,
            rows=rows,
            max_examples=max_examples,
        )


@dataclass
class ModelArguments:
    """The model a stage starts from, or the new AWD-LSTM and tokenizer it builds, and its language-model data."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to start from (AWD-LSTM, BERT- or GPT-style folder or Hub id); pretrain-lm "
            "and ulmfit build a new AWD-LSTM when not given."
        },
    )
    vocab_size: int = field(default=60_000, metadata={"help": "New tokenizer: vocabulary size (>= 10)."})
    tokenizer_type: str = field(default="word", metadata={"help": "New tokenizer: 'word', 'bpe' or 'unigram'."})
    min_frequency: int = field(default=3, metadata={"help": "New tokenizer: occurrences a word needs (>= 1)."})
    embedding_size: int = field(default=400, metadata={"help": "New AWD-LSTM: embedding size (>= 1)."})
    hidden_size: int = field(default=1152, metadata={"help": "New AWD-LSTM: hidden size (>= 1)."})
    num_hidden_layers: int = field(default=3, metadata={"help": "New AWD-LSTM: LSTM layers (>= 1)."})
    backwards: bool = field(
        default=False, metadata={"help": "Read texts in reverse token order (ulmfit: also train backward, ensemble)."}
    )
    lm_objective: str = field(
        default="auto", metadata={"help": "'auto' (from the model type), 'stream', 'masked' or 'causal'."}
    )
    bptt: int = field(default=70, metadata={"help": "AWD-LSTM window length (>= 2)."})
    block_size: int = field(default=128, metadata={"help": "BERT/GPT-style LM block length in tokens (>= 2)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of masked tokens, in (0, 1)."})
    max_length: int = field(default=512, metadata={"help": "Longest transformer classifier input in tokens (>= 1)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own code."})

    def __post_init__(self):
        minimums = {
            "vocab_size": 10,
            "min_frequency": 1,
            "embedding_size": 1,
            "hidden_size": 1,
            "num_hidden_layers": 1,
            "bptt": 2,
            "block_size": 2,
            "max_length": 1,
        }
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        if self.tokenizer_type not in ("word", "bpe", "unigram"):
            raise ValueError(f"tokenizer_type must be 'word', 'bpe' or 'unigram', got {self.tokenizer_type!r}")
        if self.lm_objective not in ("auto", "stream", "masked", "causal"):
            raise ValueError(f"lm_objective must be 'auto', 'stream', 'masked' or 'causal', got {self.lm_objective!r}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")

    def language_model_options(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "tokenizer_type": self.tokenizer_type,
            "min_frequency": self.min_frequency,
            "model_config": {
                "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers,
            },
            "lm_objective": self.lm_objective,
            "bptt": self.bptt,
            "block_size": self.block_size,
            "mlm_probability": self.mlm_probability,
            "trust_remote_code": self.trust_remote_code,
        }


@dataclass
class UlmfitArguments:
    """The data and per-stage settings of the whole recipe (the classifier's data are --train_file and
    --validation_file; the other training options are shared by the three stages)."""

    pretrain_file: str | None = field(
        default=None, metadata={"help": "Stage 1 general-domain texts (file or Hub dataset); skipped with a model."}
    )
    pretrain_validation_file: str | None = field(default=None, metadata={"help": "Stage 1 validation texts."})
    pretrain_split: str = field(default="train", metadata={"help": "Split of a Hub stage-1 dataset."})
    pretrain_validation_split: str = field(default="validation", metadata={"help": "Its validation split."})
    pretrain_dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration."})
    max_pretrain_examples: int | None = field(
        default=None, metadata={"help": "At most this many stage-1 texts (lines), in training and validation."}
    )
    finetune_file: str | None = field(
        default=None, metadata={"help": "Stage 2 target-domain texts (unlabelled); stage 2 is skipped without."}
    )
    finetune_validation_file: str | None = field(default=None, metadata={"help": "Stage 2 validation texts."})
    finetune_split: str = field(default="train", metadata={"help": "Split of a Hub stage-2 dataset."})
    finetune_rows: str | None = field(default=None, metadata={"help": "FILE:KEY, row indices of stage 2's texts."})
    finetune_validation_rows: str | None = field(default=None, metadata={"help": "FILE:KEY for its validation."})
    max_finetune_examples: int | None = field(default=None, metadata={"help": "At most this many stage-2 texts."})
    pretrain_epochs: float = field(default=1.0, metadata={"help": "Stage 1 epochs (> 0)."})
    pretrain_learning_rate: float = field(default=3e-3, metadata={"help": "Stage 1 learning rate (> 0)."})
    finetune_epochs: float = field(default=1.0, metadata={"help": "Stage 2 epochs (> 0)."})
    finetune_learning_rate: float = field(default=2e-3, metadata={"help": "Stage 2 top learning rate (> 0)."})
    lm_batch_size: int = field(default=32, metadata={"help": "Stages 1-2 batch size (AWD-LSTM streams) (>= 1)."})

    def __post_init__(self):
        for name in ("pretrain_epochs", "pretrain_learning_rate", "finetune_epochs", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lm_batch_size < 1:
            raise ValueError(f"lm_batch_size must be >= 1, got {self.lm_batch_size}")
        for name in ("max_pretrain_examples", "max_finetune_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class EvaluateArguments:
    """Accuracy and macro-F1 of a classifier (or a forward + backward ensemble) on labelled texts."""

    model_name_or_path: list[str] = field(
        default=None, metadata={"help": "Classifier folder(s) or Hub id(s); several are ensembled (mean probability)."}
    )
    test_file: str = field(default=None, metadata={"help": "Labelled texts: a local file or a Hub dataset."})
    split: str = field(default="test", metadata={"help": "Split of a Hub dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (ids or names)."})
    rows: str | None = field(default=None, metadata={"help": "FILE:KEY, JSON row indices to evaluate on."})
    max_examples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many rows."})
    batch_size: int = field(default=32, metadata={"help": "Texts per forward pass (>= 1)."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the metrics there as JSON."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub checkpoint's own code."})

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is required: one classifier folder, or several for an ensemble")
        if not self.test_file:
            raise ValueError("test_file is required: a local file or a Hub dataset name")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class LRFindTaskArguments:
    """Which stage's model and data the learning-rate range test sweeps."""

    task: str = field(
        default="classifier", metadata={"help": "'classifier', 'finetune' (language model) or 'pretrain'."}
    )

    def __post_init__(self):
        if self.task not in ("classifier", "finetune", "pretrain"):
            raise ValueError(f"task must be 'classifier', 'finetune' or 'pretrain', got {self.task!r}")


# Training defaults each command changes (ULMFiTTrainingArguments' own otherwise); a config file or a flag wins.
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain-lm": {**COMMON_DEFAULTS, **STAGE_DEFAULTS["pretrain"], "output_dir": "runs/lm_pretrained"},
    "finetune-lm": {**COMMON_DEFAULTS, **STAGE_DEFAULTS["finetune"], "output_dir": "runs/lm_finetuned"},
    "train-classifier": {**COMMON_DEFAULTS, **STAGE_DEFAULTS["classifier"], "output_dir": "runs/classifier"},
    "ulmfit": {**COMMON_DEFAULTS, **STAGE_DEFAULTS["classifier"], "output_dir": "runs/ulmfit"},
    "lr-find": {**COMMON_DEFAULTS, **STAGE_DEFAULTS["classifier"], "output_dir": "runs/lr_find"},
}


def _stage_training_args(training: ULMFiTTrainingArguments, checkpoints: Path, **changes: Any) -> dict[str, Any]:
    """The training arguments of one stage as a dict (fields as parsed, then `changes`), checkpoints in `checkpoints`."""
    values = {
        name: getattr(training, name)
        for name in ULMFiTTrainingArguments.__dataclass_fields__
        if ULMFiTTrainingArguments.__dataclass_fields__[name].init
    }
    values.update(output_dir=str(checkpoints), **changes)
    return values


def run_language_model_command(
    stage: str, data: DataArguments, model: ModelArguments, training: ULMFiTTrainingArguments
) -> None:
    from .stages import train_language_model

    if stage == "finetune" and model.model_name_or_path is None:
        raise RecipeError("finetune-lm needs --model_name_or_path (the language model to fine-tune)")
    output_dir = Path(training.output_dir)
    train_language_model(
        data.train(),
        output_dir,
        model_name_or_path=model.model_name_or_path,
        eval_data=data.validation(),
        training_args=_stage_training_args(training, output_dir / "checkpoints"),
        stage=stage,
        backwards=model.backwards,
        **model.language_model_options(),
    )
    print(f"saved to {output_dir}")


def run_classifier_command(
    data: DataArguments, model: ModelArguments, method: ClassifierMethodArguments, training: ULMFiTTrainingArguments
) -> None:
    from .stages import train_classifier

    if model.model_name_or_path is None:
        raise RecipeError("train-classifier needs --model_name_or_path (the fine-tuned language model)")
    output_dir = Path(training.output_dir)
    train_classifier(
        model.model_name_or_path,
        data.train(),
        output_dir,
        eval_data=data.validation(),
        label_names=data.class_names,
        training_args=_stage_training_args(training, output_dir / "checkpoints"),
        max_length=model.max_length,
        trust_remote_code=model.trust_remote_code,
        **method.classifier_options(training.seed),
    )
    print(f"saved to {output_dir}")


def run_ulmfit_command(
    recipe: UlmfitArguments,
    data: DataArguments,
    model: ModelArguments,
    method: ClassifierMethodArguments,
    training: ULMFiTTrainingArguments,
) -> None:
    from .ulmfit import run_ulmfit

    root = Path(training.output_dir)
    if model.model_name_or_path is None and recipe.pretrain_file is None:
        raise RecipeError("ulmfit needs --pretrain_file (texts for a new language model) or --model_name_or_path")

    def texts(source, split, rows=None, max_examples=None, config_name=None):
        if source is None:
            return None
        return TextData(
            source,
            split=split,
            config_name=config_name,
            text_column=data.text_column,
            rows=rows,
            max_examples=max_examples,
        )

    language_model = {"per_device_train_batch_size": recipe.lm_batch_size, "gradual_unfreezing": False}
    results = run_ulmfit(
        data.train(),
        root,
        pretrain_data=texts(
            recipe.pretrain_file,
            recipe.pretrain_split,
            max_examples=recipe.max_pretrain_examples,
            config_name=recipe.pretrain_dataset_config_name,
        ),
        pretrain_eval_data=texts(
            recipe.pretrain_validation_file,
            recipe.pretrain_validation_split,
            max_examples=recipe.max_pretrain_examples,
            config_name=recipe.pretrain_dataset_config_name,
        ),
        finetune_data=texts(
            recipe.finetune_file, recipe.finetune_split, recipe.finetune_rows, recipe.max_finetune_examples
        ),
        finetune_eval_data=texts(
            recipe.finetune_validation_file, recipe.finetune_split, recipe.finetune_validation_rows
        ),
        eval_data=data.validation(),
        pretrained_model=model.model_name_or_path,
        label_names=data.class_names,
        pretrain_args=_stage_training_args(
            training,
            root / "checkpoints" / "pretrain",
            num_train_epochs=recipe.pretrain_epochs,
            learning_rate=recipe.pretrain_learning_rate,
            discriminative_lr_decay=1.0,
            **language_model,
        ),
        finetune_args=_stage_training_args(
            training,
            root / "checkpoints" / "finetune",
            num_train_epochs=recipe.finetune_epochs,
            learning_rate=recipe.finetune_learning_rate,
            **language_model,
        ),
        classifier_args=_stage_training_args(training, root / "checkpoints" / "classifier"),
        backwards=model.backwards,
        **method.classifier_options(training.seed),
        **model.language_model_options(),
    )
    summary = {name: result if isinstance(result, dict) else result.metrics for name, result in results.items()}
    if training.process_index != 0:
        return
    (root / "recipe_results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"saved the stages under {root}; metrics of every stage in {root / 'recipe_results.json'}")


def run_evaluate_command(arguments: EvaluateArguments) -> None:
    data = TextData(
        arguments.test_file,
        split=arguments.split,
        config_name=arguments.dataset_config_name,
        text_column=arguments.text_column,
        label_column=arguments.label_column,
        rows=arguments.rows,
        max_examples=arguments.max_examples,
    )
    paths = arguments.model_name_or_path
    metrics = evaluate_classifier(
        paths if len(paths) > 1 else paths[0],
        data,
        batch_size=arguments.batch_size,
        output_file=arguments.output_file,
        trust_remote_code=arguments.trust_remote_code,
    )
    print(json.dumps(metrics))


def run_lr_find_command(
    task: LRFindTaskArguments,
    finder: LRFinderArguments,
    data: DataArguments,
    model: ModelArguments,
    training: ULMFiTTrainingArguments,
) -> None:
    from .stages import prepare_classifier, prepare_language_model

    output_dir = Path(training.output_dir)
    if task.task == "classifier":
        if model.model_name_or_path is None:
            raise RecipeError("lr-find --task classifier needs --model_name_or_path")
        prepared = prepare_classifier(
            model.model_name_or_path,
            data.train(),
            output_dir,
            label_names=data.class_names,
            training_args=_stage_training_args(training, output_dir),
            max_length=model.max_length,
            trust_remote_code=model.trust_remote_code,
        )
    else:
        prepared = prepare_language_model(
            data.train(),
            output_dir,
            model_name_or_path=model.model_name_or_path,
            training_args=_stage_training_args(training, output_dir),
            stage=task.task,
            backwards=model.backwards,
            **model.language_model_options(),
        )
    if finder.plot_file is None:
        finder.plot_file = str(output_dir / "lr_find.png")
    result = find_learning_rate(prepared.trainer, finder)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "lr_find.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")

    def rate(value: float | None) -> str:
        return (
            "none (the curve is too short: more num_steps, or a lower start_lr)" if value is None else f"{value:.2e}"
        )

    sys.stdout.write(
        f"suggested learning rates (top layer group): valley {rate(result.valley)}, steepest {rate(result.steepest)}\n"
        f"{len(result.losses)} steps{' (stopped early: the loss diverged)' if result.stopped_early else ''}; "
        f"plot: {finder.plot_file}; curve: {output_dir / 'lr_find.json'}\n"
    )
