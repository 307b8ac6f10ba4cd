"""What a stage leaves behind, written one way for every stage: the folder (model, tokenizer, `training_args.json`,
training record, `{split}_results.json` and `all_results.json`), the metrics printed once, and with
`HubArguments.push_to_hub` the folder uploaded with its model card."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from ..data import tokenize_dataset
from ..hub import push_model_folder
from ..training.loss_guard import NonFiniteLossCallback
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
    recorded settings came from (`{setting: "default" | "set by you"}`)."""

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

    def tokenize(self, data: Any) -> Any:
        """Labelled texts (`TextData`, a file or Hub name, or a dataset) read as this classifier stage reads its own
        training data, e.g. a second held-out set for `trainer.evaluate`."""
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
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if training_args is not None:
        (output_dir / "training_args.json").write_text(training_args.to_json_string(), encoding="utf-8")
    if record is not None and settings:
        stages = [*record.stages[:-1], dataclasses.replace(record.stages[-1], settings=dict(settings))]
        record = dataclasses.replace(record, stages=stages)
    if record is not None:
        write_training_record(record, output_dir)
    for split, values in metrics.items():
        (output_dir / f"{split}_results.json").write_text(json.dumps(values, indent=4) + "\n", encoding="utf-8")
    (output_dir / "all_results.json").write_text(
        json.dumps(flatten_metrics(metrics), indent=4) + "\n", encoding="utf-8"
    )
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
        save_stage(
            prepared.output_dir,
            model,
            prepared.tokenizer,
            metrics,
            record=trainer.training_record(),
            settings=prepared.settings,
            training_args=trainer.args,
            hub=hub,
        )
        checkpoints = Path(trainer.args.output_dir)
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()  # Trainer creates it even when it saves no checkpoint
    trainer.accelerator.wait_for_everyone()
    return StageResult(prepared.output_dir, flatten_metrics(metrics))
