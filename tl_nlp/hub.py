"""Sharing ULMFiT models on the Hugging Face Hub: the folder a Hub user needs, and the upload.

What a user of the Hub needs is one folder: safetensors weights, a config whose `auto_map` points at the AWD-LSTM
code shipped next to it, the tokenizer files and code, and a model card (`tl_nlp.training.model_card`) written from
the training record (`tl_nlp.training.training_record`), so every sentence in it states a fact about this model.

Example:

```python
>>> from tl_nlp.hub import ULMFiTStage, ULMFiTTrainingRecord, prepare_hub_folder
>>> record = ULMFiTTrainingRecord(
...     stages=[ULMFiTStage(name="classifier fine-tuning", objective="classification", dataset="stanfordnlp/imdb",
...                         num_train_epochs=4, learning_rate=1e-2, discriminative_lr_decay=2.6, use_stlr=True,
...                         gradual_unfreezing=True, metrics={"accuracy": 0.94})],
...     language="en")
>>> prepare_hub_folder(model, tokenizer, "imdb-classifier", record, repo_id="me/imdb-ulmfit")  # doctest: +SKIP
```
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from torch import nn
from transformers import PreTrainedTokenizerBase

# The record and card names are re-exported: `tl_nlp.hub` is where users have always found them.
from .training.model_card import build_model_card, check_hub_folder
from .training.training_record import (
    TRAINING_RECORD_FILE,
    ULMFiTStage,
    ULMFiTTrainingRecord,
    model_objective,
    read_training_record,
    write_training_record,
)


def prepare_hub_folder(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    record: ULMFiTTrainingRecord,
    repo_id: str,
) -> list[str]:
    """Writes the folder that [`push_ulmfit_to_hub`] uploads, and checks it is complete.

    Args:
        model: the trained model (AWD-LSTM, or any model [`build_model_card`] describes).
        tokenizer: its tokenizer (its files and, for `ULMFiTTokenizerFast`, its code are written too).
        output_dir: where to write; existing files of the same names are replaced.
        record: what happened in training, for the model card (README.md) and `ulmfit_training_record.json`.
        repo_id: the Hub repository, for the card.

    Returns:
        The sorted names of the files in the folder.
    """
    card = build_model_card(model, tokenizer, record, repo_id)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    card.save(output_dir / "README.md")
    write_training_record(record, output_dir)
    return check_hub_folder(output_dir, model)


def push_ulmfit_to_hub(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    repo_id: str,
    record: ULMFiTTrainingRecord,
    token: str | None = None,
    private: bool | None = None,
    create_repo: bool = True,
    commit_message: str = "Upload ULMFiT model with tl_nlp",
    api: HfApi | None = None,
):
    """Uploads a ULMFiT model to the Hub: weights, config with `auto_map`, code, tokenizer and model card.

    Args:
        model, tokenizer, record: as for [`prepare_hub_folder`].
        repo_id: `user/name` of the Hub repository.
        token: Hub token (default: the logged-in user's).
        private: visibility of a repository created here.
        create_repo: create the repository first if it does not exist.
        commit_message: message of the upload commit.
        api: the `HfApi` to use (default: a new one with `token`).

    Returns:
        The `CommitInfo` of the upload.
    """
    with tempfile.TemporaryDirectory(prefix="tl_nlp_hub_") as folder:
        prepare_hub_folder(model, tokenizer, folder, record, repo_id)
        return upload_folder(folder, repo_id, token, private, create_repo, commit_message, api)


# A stage folder's Trainer checkpoints are not part of the model a Hub user loads.
CHECKPOINT_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "checkpoints/**"]


def push_model_folder(
    folder: str | Path,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    record: ULMFiTTrainingRecord,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    create_repo: bool = True,
    commit_message: str = "Upload ULMFiT model with tl_nlp",
    api: HfApi | None = None,
):
    """Uploads a saved model folder (a recipe stage's, or `save_pretrained`'s) with a model card written from
    `record` into its `README.md`; Trainer checkpoints in it stay local.

    Args:
        folder: the saved folder (weights, config, tokenizer).
        model, tokenizer: what is saved there (the card describes them).
        record: what happened in training (see [`build_model_card`]).
        repo_id, token, private, create_repo, commit_message, api: as for [`push_ulmfit_to_hub`].

    Returns:
        The `CommitInfo` of the upload.
    """
    folder = Path(folder)
    build_model_card(model, tokenizer, record, repo_id).save(folder / "README.md")
    write_training_record(record, folder)
    check_hub_folder(folder, model, with_tokenizer=tokenizer is not None)
    return upload_folder(folder, repo_id, token, private, create_repo, commit_message, api)


def upload_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    create_repo: bool = True,
    commit_message: str = "Upload ULMFiT model with tl_nlp",
    api: HfApi | None = None,
):
    """Creates the repository if asked and uploads `folder` as it is (without Trainer checkpoints)."""
    api = api if api is not None else HfApi(token=token)
    if create_repo:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=CHECKPOINT_PATTERNS,
    )


__all__ = [
    "ULMFiTStage",
    "ULMFiTTrainingRecord",
    "build_model_card",
    "check_hub_folder",
    "model_objective",
    "prepare_hub_folder",
    "push_model_folder",
    "push_ulmfit_to_hub",
    "read_training_record",
    "upload_folder",
    "write_training_record",
    "TRAINING_RECORD_FILE",
]
