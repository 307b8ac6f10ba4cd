"""What a stage leaves behind, written one way for every stage: the folder (model, tokenizer, `training_args.json`,
training record, `{split}_results.json` and `all_results.json`), the metrics printed once, and with
`HubArguments.push_to_hub` the folder uploaded with its model card.

A stage owns its folder while it runs ([`stage_folder`]: a second run on it is refused, a used folder needs
`overwrite_output_dir` or `resume_from_checkpoint`), and [`save_stage`] writes the folder atomically: a kill midway
leaves the earlier model or none, never a mix (`tl_nlp.training.output_folders`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from ..data import tokenize_dataset
from ..hub import push_model_folder
from ..training.chance_level import not_learnt_message
from ..training.loss_guard import NonFiniteLossCallback
from ..training.lr_finder import take_lr_finder_suggestion
from ..training.output_folders import (
    COMMIT_FILE,
    OutputFolderLock,
    last_complete_checkpoint,
    prepare_on_main_process,
    save_atomically,
)
from ..training.training_record import ULMFiTTrainingRecord, write_training_record
from .config import HubArguments
from .data import as_dataset, columns_of, source_name


@dataclass
class StageResult:
    """What a stage produced: the folder it saved and its metrics (also in the folder's `all_results.json`)."""

    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


@dataclass
class PreparedStage:
    """A stage ready to train: its trainer (model inside), tokenizer, loss guard and evaluation data, and where its
    recorded settings came from (`{setting: "default" | "set by you"}`). A classifier stage knows the loss of the
    best constant prediction for its training labels (`chance_loss`, `tl_nlp.training.chance_level`): its training
    metrics carry it as `train_chance_level_loss` (`train_classifier`), and a run whose training loss ends there is said not to have learnt."""

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
    settings: dict[str, str] = field(default_factory=dict)
    encode: Any = None
    label_names: list[str] | None = None
    # Task stages (`tl_nlp.recipe.task`): the task, and the raw validation rows its metrics and threshold read.
    task: Any = None
    eval_rows: Any = None
    chance_loss: float | None = None

    def train_classifier(self, checkpoint: str | None, title: str) -> dict[str, Any]:
        """Trains a classifier stage (from `checkpoint` when resuming): at the LR finder's rate when
        `learning_rate_from_lr_find` asks for it (resumed: the rate it found), after printing the layer groups; stops
        on a non-finite loss. Returns and prints (under `title`) its training metrics: `Trainer.train`'s, the parameter
        counts and `train_chance_level_loss` (to read `train_loss` against)."""
        trainer = self.trainer
        is_main = trainer.is_world_process_zero()
        if getattr(trainer.args, "learning_rate_from_lr_find", False):
            take_lr_finder_suggestion(trainer, is_main, checkpoint)
        if is_main:
            print(trainer.layer_group_summary())
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
        self.guard.raise_if_stopped()
        chance = {} if self.chance_loss is None else {"train_chance_level_loss": round(self.chance_loss, 6)}
        metrics = {**train_output.metrics, **self.parameter_counts, **chance}
        if is_main:
            print_metrics(title, metrics)
        return metrics

    def not_learnt(self) -> str | None:
        """One line when the classifier's training loss ended at the chance level (it did not learn), else None."""
        state = self.trainer.state
        unfroze_gradually = bool(getattr(self.trainer.args, "gradual_unfreezing", False))
        return not_learnt_message(
            state.log_history, state.max_steps, self.chance_loss, unfroze_gradually=unfroze_gradually
        )

    def tokenize(self, data: Any) -> Any:
        """Labelled texts (`TextData`, a file or Hub name, or a dataset) read as the saved classifier will read them
        (its `inference_max_length`), e.g. a second held-out set for `trainer.evaluate`."""
        text_column, label_column = columns_of(data)
        dataset, _, _ = tokenize_dataset(
            as_dataset(data), self.encode, text_column, label_column, self.label_names, source=source_name(data)
        )
        return dataset


def flatten_metrics(metrics: dict[str, dict]) -> dict[str, float]:
    """`{split: {name: value}}` as one mapping (the names carry their split prefix already)."""
    return {name: value for values in metrics.values() for name, value in values.items()}


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """Prints a stage's metrics under a title, one per line (transformers' `log_metrics` layout)."""
    print(f"***** {title} *****")
    for name, value in metrics.items():
        print(f"  {name:<28} = {value:.4g}" if isinstance(value, float) else f"  {name:<28} = {value}")


def save_stage(
    output_dir: Path,
    model: PreTrainedModel,
    tokenizer: Any,
    metrics: dict[str, dict],
    record: ULMFiTTrainingRecord | None = None,
    settings: dict[str, str] | None = None,
    training_args: Any = None,
    hub: HubArguments | None = None,
) -> None:
    """Saves a stage folder (call it on the main process only) and uploads it when `hub.push_to_hub`.

    Args:
        output_dir: the stage folder.
        model, tokenizer: what the next stage and `pipeline()` load (safetensors weights).
        metrics: `{split: {name: value}}`, written as transformers writes them: `{split}_results.json` and
            `all_results.json`.
        record: the training record of the model after this stage (the model card's source); the last stage gets
            `settings`.
        settings: where the stage's settings came from (`"default"` or `"set by you"`).
        training_args: the stage's arguments, saved as `training_args.json` (JSON: a folder from elsewhere never
            needs unpickling).
        hub: where to upload the folder, with a model card written from `record`.
    """
    if record is not None and settings:
        stages = [*record.stages[:-1], dataclasses.replace(record.stages[-1], settings=dict(settings))]
        record = dataclasses.replace(record, stages=stages)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if training_args is not None:
            (folder / "training_args.json").write_text(training_args.to_json_string(), encoding="utf-8")
        if record is not None:
            write_training_record(record, folder)
        for split, values in metrics.items():
            (folder / f"{split}_results.json").write_text(json.dumps(values, indent=4) + "\n", encoding="utf-8")
        (folder / "all_results.json").write_text(
            json.dumps(flatten_metrics(metrics), indent=4) + "\n", encoding="utf-8"
        )

    # Written aside and moved in, `config.json` last: a kill midway leaves the earlier model or none.
    save_atomically(output_dir, write)
    if hub is not None and hub.push_to_hub:
        if record is None:
            raise ValueError(f"{output_dir}: no training record to write the model card from; nothing was uploaded")
        repo_id = hub.repo_id(output_dir)
        push_model_folder(
            output_dir, model, tokenizer, record, repo_id, token=hub.hub_token, private=hub.hub_private_repo
        )
        print(f"uploaded {output_dir} to https://huggingface.co/{repo_id}")


def save_trained_stage(
    prepared: PreparedStage, model: PreTrainedModel, metrics: dict[str, dict], hub: HubArguments | None = None
) -> StageResult:
    """[`save_stage`] for a stage trained by a `ULMFiTTrainer` (on the main process; every process waits for it):
    its record and arguments come from the trainer."""
    trainer = prepared.trainer
    if trainer.is_world_process_zero():
        not_learnt = prepared.not_learnt()
        if not_learnt:
            print(f"warning: {prepared.output_dir}: {not_learnt}")
        save_stage(
            prepared.output_dir,
            model,
            prepared.tokenizer,
            metrics,
            record=_with_notes(trainer.training_record(), prepared, trainer.state.global_step, not_learnt),
            settings=prepared.settings,
            training_args=trainer.args,
            hub=hub,
        )
        checkpoints = Path(trainer.args.output_dir)
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()  # Trainer creates it even when it saves no checkpoint
    trainer.accelerator.wait_for_everyone()
    return StageResult(prepared.output_dir, flatten_metrics(metrics))


def _with_notes(record: Any, prepared: PreparedStage, steps: int, not_learnt: str | None) -> Any:
    """The training record, its last stage noting what a reader of the model card must know: that LoRA trained it
    (how many of the parameters trained, and that the adapters are merged), and that it did not learn
    (`not_learnt`). Unchanged when there is neither, or when no step ran (the last stage is then an earlier one)."""
    counts = prepared.parameter_counts
    notes = []
    if prepared.method == "lora" and counts:
        notes.append(
            f"Trained with LoRA: the adapters and the new head, {counts['trainable_parameters']:,} of "
            f"{counts['total_parameters']:,} parameters; the adapters are merged into these weights."
        )
    if not_learnt:
        notes.append(f"Warning: {not_learnt}")
    if record is None or not steps or not notes:
        return record
    last = dataclasses.replace(record.stages[-1], notes=" ".join(notes))
    return dataclasses.replace(record, stages=[*record.stages[:-1], last])


def _option(training_args: Any, name: str, default: Any = None) -> Any:
    if isinstance(training_args, dict):
        return training_args.get(name, default)
    return getattr(training_args, name, default) if training_args is not None else default


def finished_stage(output_dir: Path) -> StageResult | None:
    """The result of a stage that already finished in `output_dir` (its model and `all_results.json` are there)."""
    results = output_dir / "all_results.json"
    if not ((output_dir / COMMIT_FILE).is_file() and results.is_file()):
        return None
    return StageResult(output_dir, json.loads(results.read_text(encoding="utf-8")))


@contextmanager
def stage_folder(output_dir: str | Path, training_args: Any) -> Iterator[str | StageResult | None]:
    """The stage owns `output_dir` for the block (a second run on it is refused, naming this one) and finds out what
    to do with it. Yields the checkpoint to pass to `trainer.train(resume_from_checkpoint=...)`, None to start
    afresh, or, with `resume_from_checkpoint="last"`, no checkpoint left and a finished model in the folder (a
    multi-stage run resumed after this stage ended), that stage's [`StageResult`]: nothing to train again.

    Args:
        output_dir: the stage folder.
        training_args: the stage's training arguments (an object or a dict): `overwrite_output_dir`,
            `resume_from_checkpoint` and `output_dir` (where its checkpoints go: the stage folder or one in it).

    Raises:
        OutputFolderError: the folder is in use by another run, holds an earlier run (without overwrite or resume),
            or the checkpoint to resume from is missing or incomplete.
    """
    output_dir = Path(output_dir)
    overwrite = bool(_option(training_args, "overwrite_output_dir", False))
    resume = _option(training_args, "resume_from_checkpoint")
    checkpoints = Path(_option(training_args, "output_dir") or output_dir / "checkpoints")
    with OutputFolderLock(output_dir):
        if resume in ("last", True) and not overwrite and last_complete_checkpoint(checkpoints) is None:
            finished = finished_stage(output_dir)
            if finished is not None:
                print(f"{output_dir}: this stage already finished (no checkpoint left to resume); kept as it is")
                yield finished
                return
        yield prepare_on_main_process(output_dir, overwrite, resume, checkpoints)
