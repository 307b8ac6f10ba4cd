"""Sharing LoRA adapters on the Hub like full models: the adapter folder, its model card, the upload.

The folder is what `PeftModel.save_pretrained` writes (`adapter_config.json`, `adapter_model.safetensors`), plus
the tokenizer and a model card written from a `ULMFiTTrainingRecord` (the same record and stage sentences as
`tl_nlp.training.model_card` uses for full models), so it loads with `PeftModel.from_pretrained(base_model, repo_id)`.

Example:

```python
>>> from tl_nlp.hub import ULMFiTStage, ULMFiTTrainingRecord
>>> from tl_nlp.hub_adapters import prepare_adapter_folder
>>> record = ULMFiTTrainingRecord(stages=[ULMFiTStage(name="LoRA fine-tuning", objective="classification",
...                                                   dataset="stanfordnlp/imdb")], base_model="me/imdb-lm")
>>> prepare_adapter_folder(peft_model, tokenizer, "imdb-lora", record, repo_id="me/imdb-lora")  # doctest: +SKIP
```
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from .training.model_card import evaluation_section, format_number, stage_paragraph
from .training.training_record import ULMFiTTrainingRecord, write_training_record

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def build_adapter_card(model: PeftModel, record: ULMFiTTrainingRecord, repo_id: str) -> ModelCard:
    """The model card of a LoRA adapter: what it adapts, its size, how it was trained, how to load it.

    Args:
        model (`PeftModel`): the trained adapter on its base model.
        record (`ULMFiTTrainingRecord`): what happened in training; `record.base_model` names the base model on
            the Hub (the adapter config's `base_model_name_or_path` when not set).
        repo_id (`str`): the Hub repository of the adapter.

    Returns:
        `huggingface_hub.ModelCard` with `library_name: peft` and the base model in its metadata.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"build_adapter_card describes a PEFT adapter, got {type(model).__name__}")
    config = model.peft_config[model.active_adapter]
    base_model = record.base_model or config.base_model_name_or_path
    base_class = type(model.get_base_model()).__name__
    is_classifier = "SequenceClassification" in base_class
    pipeline_tag = "text-classification" if is_classifier else "text-generation"
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        language=record.language,
        license=record.license,
        library_name="peft",
        pipeline_tag=pipeline_tag,
        tags=["lora", "peft", "ulmfit", "tl_nlp", pipeline_tag],
        datasets=list(dict.fromkeys(s.dataset for s in record.stages if " " not in s.dataset)) or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=list(record.eval_results) or None,
    )
    trainable, total = model.get_nb_trainable_parameters()
    targets = sorted(config.target_modules or []) + sorted(getattr(config, "target_parameters", None) or [])
    summary = (
        f"`{model_name}` is a LoRA adapter (rank {config.r}, alpha {format_number(config.lora_alpha)}) for a "
        f"`{base_class}`{f' ([`{base_model}`](https://huggingface.co/{base_model}))' if base_model else ''}. "
        f"It adapts {', '.join(f'`{t}`' for t in targets)}"
        + (
            f" and trains {', '.join(f'`{m}`' for m in config.modules_to_save)} in full"
            if config.modules_to_save
            else ""
        )
        + f": {trainable:,} trainable parameters, {trainable / total:.2%} of the {total:,} of the adapted model."
    )
    sections = [f"# {model_name}", summary, "## Training"]
    sections += [
        f"### Stage {i}: {stage.name}\n\n{stage_paragraph(stage)}" for i, stage in enumerate(record.stages, 1)
    ]
    sections += evaluation_section(record)
    auto_class = "AutoModelForSequenceClassification" if is_classifier else "AutoModelForCausalLM"
    sections += [
        "## How to use",
        f"""```python
from peft import PeftModel
from transformers import {auto_class}

base = {auto_class}.from_pretrained("{base_model or "BASE_MODEL"}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{repo_id}")
merged = model.merge_and_unload()  # a plain model with the same outputs, no adapter overhead
```""",
    ]
    if record.limitations:
        sections += ["## Limitations", "\n".join(f"- {item}" for item in record.limitations)]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


def prepare_adapter_folder(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase | None,
    output_dir: str | Path,
    record: ULMFiTTrainingRecord,
    repo_id: str,
) -> list[str]:
    """Write the adapter, its tokenizer, card (README.md) and training record to `output_dir`.

    Args:
        model (`PeftModel`): the trained adapter.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): saved next to the adapter when given.
        output_dir (`str | Path`): where to write.
        record (`ULMFiTTrainingRecord`): what happened in training.
        repo_id (`str`): the Hub repository, for the card.

    Returns:
        The sorted names of the files in the folder.
    """
    card = build_adapter_card(model, record, repo_id)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    card.save(output_dir / "README.md")
    write_training_record(record, output_dir)
    files = sorted(path.name for path in output_dir.iterdir() if path.is_file())
    missing = [name for name in ADAPTER_FILES if name not in files]
    if missing:
        raise RuntimeError(f"{output_dir} lacks {missing} after PeftModel.save_pretrained.")
    return files


def push_adapter_to_hub(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase | None,
    repo_id: str,
    record: ULMFiTTrainingRecord,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload LoRA adapter with tl_nlp",
    api: HfApi | None = None,
):
    """Upload a LoRA adapter with its card and tokenizer to the Hub (see `prepare_adapter_folder`).

    Args:
        model, tokenizer, record: as for `prepare_adapter_folder`.
        repo_id (`str`): `user/name` of the repository (created if missing).
        token (`str`, *optional*): Hub token (default: the logged-in user's).
        private (`bool`, *optional*): visibility of a repository created here.
        commit_message (`str`): message of the upload commit.
        api (`HfApi`, *optional*): the client to use (default: a new one with `token`).

    Returns:
        The `CommitInfo` of the upload.
    """
    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="tl_nlp_adapter_") as folder:
        prepare_adapter_folder(model, tokenizer, folder, record, repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message)
