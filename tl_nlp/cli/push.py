"""`tl-nlp push`: upload a saved model folder with a model card written from its training record (or write the
folder that would be uploaded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from ..hub import prepare_hub_folder, push_ulmfit_to_hub
from ..recipe.data import RecipeError
from ..recipe.loading import check_model_path
from ..training.training_record import (
    OBJECTIVE_TASKS,
    TRAINING_RECORD_FILE,
    class_objective,
    read_training_record,
)


@dataclass
class PushArguments:
    """Upload a saved ULMFiT model (weights, config, code, tokenizer and a model card written from its training
    record) to the Hugging Face Hub, or write the folder that would be uploaded (`--dry_run_dir`)."""

    model_dir: str = field(metadata={"help": "Folder written by save_pretrained (model and tokenizer)."})
    repo_id: str = field(metadata={"help": "Hub repository, user/name."})
    training_record: str | None = field(
        default=None,
        metadata={
            "help": "JSON or YAML file with the ULMFiTTrainingRecord fields (stages, language, license...); default: "
            f"the {TRAINING_RECORD_FILE} that ULMFiTTrainer.save_model wrote into model_dir."
        },
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    create_repo: bool = field(default=True, metadata={"help": "Create the repository first if it does not exist."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in user's)."})
    commit_message: str = field(default="Upload ULMFiT model with tl_nlp", metadata={"help": "Commit message."})
    dry_run_dir: str | None = field(
        default=None, metadata={"help": "Write the folder that would be uploaded here and upload nothing."}
    )

    def __post_init__(self):
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"repo_id must look like user/name, got {self.repo_id!r}")


def run_push(arguments: PushArguments, api: HfApi | None = None):
    """`tl-nlp push`: loads `arguments.model_dir`, then uploads it (or writes the dry-run folder).

    Returns the upload's `CommitInfo`, or the file list of the dry-run folder.
    """
    import transformers

    model_dir = Path(arguments.model_dir)
    check_model_path(model_dir)
    if not model_dir.is_dir():
        raise RecipeError(f"model folder {model_dir} does not exist")
    record_path = arguments.training_record
    if record_path is None:
        record_path = model_dir / TRAINING_RECORD_FILE
        if not record_path.is_file():
            raise ValueError(
                f"no --training_record given and {model_dir} has no {TRAINING_RECORD_FILE} (ULMFiTTrainer.save_model "
                "writes one); write the stages in a JSON or YAML file (ULMFiTTrainingRecord fields) and pass it "
                "with --training_record"
            )
    record = read_training_record(record_path)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    architectures = config.architectures or []
    objectives = [class_objective(name) for name in architectures]
    objective = next((objective for objective in objectives if objective is not None), None)
    if objective is None:
        raise ValueError(
            f"{model_dir}/config.json: architectures {architectures} is none of a text classifier, a causal or a "
            "masked language model"
        )
    model = getattr(transformers, OBJECTIVE_TASKS[objective][1]).from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    if arguments.dry_run_dir:
        return prepare_hub_folder(model, tokenizer, arguments.dry_run_dir, record, arguments.repo_id)
    return push_ulmfit_to_hub(
        model,
        tokenizer,
        arguments.repo_id,
        record,
        token=arguments.token,
        private=arguments.private,
        create_repo=arguments.create_repo,
        commit_message=arguments.commit_message,
        api=api,
    )
