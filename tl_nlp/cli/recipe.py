"""The recipe's `tl-nlp` commands: `pretrain-lm`, `finetune-lm`, `train-classifier`, `ulmfit`, `evaluate`, `lr-find`.

Each command parses its configuration classes (`tl_nlp.recipe.config`) once with `HfArgumentParser` (`--config FILE`
sets any field, flags win) and hands them to the stage function as they are. The stage defaults live in the stage's
training-arguments class, so a flag you do not give takes the same value as in the Python API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..data import TextDataError
from ..extras import MissingExtraError
from ..model_folders import ModelFolderError
from ..recipe import classifier, language_model
from ..recipe.config import (
    ClassifierMethodArguments,
    ClassifierTrainingArguments,
    DataArguments,
    EvaluateArguments,
    FinetuneTrainingArguments,
    HubArguments,
    LRFindTaskArguments,
    ModelArguments,
    PretrainTrainingArguments,
    TaskArguments,
    UlmfitArguments,
)
from ..recipe.data import RecipeError, TextData
from ..recipe.evaluation import evaluate_classifier
from ..recipe.ulmfit import run_ulmfit
from ..setting_checks import SettingError
from ..training.loss_guard import NonFiniteLossError
from ..training.lr_finder import LRFinderArguments, find_learning_rate
from ..training.output_folders import OutputFolderError
from .io import UsageError, parse_dataclasses


def run_language_model_command(
    data: DataArguments,
    model: ModelArguments,
    training: PretrainTrainingArguments | FinetuneTrainingArguments,
    hub: HubArguments,
) -> None:
    """`pretrain-lm` or `finetune-lm`, as `training`'s class says."""
    if training.stage == "finetune" and model.model_name_or_path is None:
        raise RecipeError("finetune-lm needs --model_name_or_path (the language model to fine-tune)")
    language_model.train_language_model(
        data.train(),
        training.output_dir,
        model_name_or_path=model.model_name_or_path,
        eval_data=data.validation(),
        training_args=training,
        stage=training.stage,
        backwards=model.backwards,
        hub=hub,
        **model.language_model_options(),
    )
    print(f"saved to {training.output_dir}")


def run_classifier_command(
    data: DataArguments,
    task: TaskArguments,
    model: ModelArguments,
    method: ClassifierMethodArguments,
    training: ClassifierTrainingArguments,
    hub: HubArguments,
) -> None:
    if model.model_name_or_path is None:
        raise RecipeError("train-classifier needs --model_name_or_path (the fine-tuned language model)")
    classifier.train_classifier(
        model.model_name_or_path,
        data.train(),
        training.output_dir,
        eval_data=data.validation(),
        label_names=data.class_names,
        training_args=training,
        max_length=model.max_length,
        truncation_side=model.truncation_side,
        inference_max_length=model.inference_max_length,
        trust_remote_code=model.trust_remote_code,
        method=method,
        hub=hub,
        task=task,
    )
    print(f"saved to {training.output_dir}")


def run_ulmfit_command(
    recipe: UlmfitArguments,
    data: DataArguments,
    task: TaskArguments,
    model: ModelArguments,
    method: ClassifierMethodArguments,
    training: ClassifierTrainingArguments,
    hub: HubArguments,
) -> None:
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
        # Stages 1-2 share the general options (seed, precision...) and take their own stage defaults; each names
        # its own data in its training record.
        pretrain_args=PretrainTrainingArguments.from_shared(
            training,
            output_dir=str(root / "checkpoints" / "pretrain"),
            learning_rate=recipe.pretrain_learning_rate,
            num_train_epochs=recipe.pretrain_epochs,
            per_device_train_batch_size=recipe.lm_batch_size,
            dataset_name=recipe.pretrain_dataset_name,
        ),
        finetune_args=FinetuneTrainingArguments.from_shared(
            training,
            output_dir=str(root / "checkpoints" / "finetune"),
            learning_rate=recipe.finetune_learning_rate,
            num_train_epochs=recipe.finetune_epochs,
            per_device_train_batch_size=recipe.lm_batch_size,
            dataset_name=recipe.finetune_dataset_name,
        ),
        classifier_args=training,
        backwards=model.backwards,
        method=method,
        hub=hub,
        task=task,
        max_length=model.max_length,
        truncation_side=model.truncation_side,
        inference_max_length=model.inference_max_length,
        **model.language_model_options(),
    )
    summary = {name: result if isinstance(result, dict) else result.metrics for name, result in results.items()}
    if training.process_index != 0:
        return
    (root / "recipe_results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"saved the stages under {root}; metrics of every stage in {root / 'recipe_results.json'}")


def run_evaluate_command(arguments: EvaluateArguments) -> None:
    paths = arguments.model_name_or_path
    metrics = evaluate_classifier(
        paths if len(paths) > 1 else paths[0],
        arguments.data(),
        batch_size=arguments.batch_size,
        output_file=arguments.output_file,
        trust_remote_code=arguments.trust_remote_code,
        max_length=arguments.max_length,
        confusion_matrix_file=arguments.confusion_matrix_file,
    )
    print(json.dumps(metrics))


def run_lr_find_command(
    task: LRFindTaskArguments,
    finder: LRFinderArguments,
    data: DataArguments,
    model: ModelArguments,
    method: ClassifierMethodArguments,
    training: ClassifierTrainingArguments,
) -> None:
    output_dir = Path(training.output_dir)
    if task.task != "classifier" and method.method != "full":
        raise RecipeError(f"--method {method.method} is for lr-find --task classifier; {task.task} trains every layer")
    if method.method == "feature_extraction":
        raise RecipeError(
            "lr-find sweeps a model that a Trainer trains; --method feature_extraction fits its head with its own "
            "settings (--feature_head_learning_rate): sweep --method full or lora"
        )
    if task.task == "classifier":
        if model.model_name_or_path is None:
            raise RecipeError("lr-find --task classifier needs --model_name_or_path")
        # The model train-classifier trains: a task beyond one text and one label (--classifier_task and its
        # columns, or inferred from the data) sweeps its task model (lr-find's --task names the stage).
        prepared = classifier.prepare_classifier_stage(
            model.model_name_or_path,
            data.train(),
            output_dir,
            task=task.classifier_task_arguments(),
            label_names=data.class_names,
            training_args=training,
            max_length=model.max_length,
            truncation_side=model.truncation_side,
            inference_max_length=model.inference_max_length,
            trust_remote_code=model.trust_remote_code,
            method=method,
        )
    else:
        arguments_class = PretrainTrainingArguments if task.task == "pretrain" else FinetuneTrainingArguments
        prepared = language_model.prepare_language_model(
            data.train(),
            output_dir,
            model_name_or_path=model.model_name_or_path,
            training_args=arguments_class.from_shared(training, output_dir=str(output_dir)),
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


# Per command: its configuration classes (parsed together, in this order), its handler, its default output folder.
RECIPE_COMMANDS: dict[str, tuple[tuple[type, ...], Callable[..., None], str | None]] = {
    "pretrain-lm": (
        (DataArguments, ModelArguments, PretrainTrainingArguments, HubArguments),
        run_language_model_command,
        "runs/lm_pretrained",
    ),
    "finetune-lm": (
        (DataArguments, ModelArguments, FinetuneTrainingArguments, HubArguments),
        run_language_model_command,
        "runs/lm_finetuned",
    ),
    "train-classifier": (
        (
            DataArguments,
            TaskArguments,
            ModelArguments,
            ClassifierMethodArguments,
            ClassifierTrainingArguments,
            HubArguments,
        ),
        run_classifier_command,
        "runs/classifier",
    ),
    "ulmfit": (
        (
            UlmfitArguments,
            DataArguments,
            TaskArguments,
            ModelArguments,
            ClassifierMethodArguments,
            ClassifierTrainingArguments,
            HubArguments,
        ),
        run_ulmfit_command,
        "runs/ulmfit",
    ),
    "lr-find": (
        (
            LRFindTaskArguments,
            LRFinderArguments,
            DataArguments,
            ModelArguments,
            ClassifierMethodArguments,
            ClassifierTrainingArguments,
        ),
        run_lr_find_command,
        "runs/lr_find",
    ),
    "evaluate": ((EvaluateArguments,), run_evaluate_command, None),
}


def parse_recipe_command(name: str, argv: Sequence[str], prog: str | None = None) -> tuple:
    """The configuration objects of recipe command `name`, parsed from `argv` (flags and `--config FILE`), in the
    order its handler takes them."""
    classes, _, output_dir = RECIPE_COMMANDS[name]
    defaults = {"output_dir": output_dir} if output_dir else None
    return parse_dataclasses(classes, argv, prog or f"tl-nlp {name}", defaults=defaults)


def recipe_command(name: str) -> Callable[[Sequence[str], str], int]:
    """The `tl-nlp NAME` entry of a recipe command: parsed, run, user errors as one line."""

    def command(argv: Sequence[str], prog: str) -> int:
        arguments = parse_recipe_command(name, argv, prog)
        try:
            RECIPE_COMMANDS[name][1](*arguments)
        except (
            RecipeError,
            TextDataError,
            OutputFolderError,
            ModelFolderError,
            SettingError,
            MissingExtraError,
        ) as error:
            raise UsageError(str(error)) from error
        except NonFiniteLossError as error:
            sys.stderr.write(f"{prog}: stopped: {error}\n")
            return 1
        finally:
            _end_distributed()
        return 0

    return command


def _end_distributed() -> None:
    # Under `accelerate launch`, gloo can abort at interpreter exit unless the process group is closed first.
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
