"""The model card of a ULMFiT model, written from its training record, and the check that a folder holds what a
Hub user needs to load it.

Every sentence of the card states a fact from the `ULMFiTTrainingRecord` (stages, data, hyperparameters, metrics).
`stage_paragraph`, `evaluation_section` and `format_number` are public so that other cards (LoRA adapters,
`tl_nlp.hub_adapters`) describe stages in the same words.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..models.awd_lstm import AWDLSTMForSequenceClassification, AWDLSTMPreTrainedModel
from ..models.context import context_length
from ..tasks import task_of_config, task_sentence
from .training_record import OBJECTIVE_TASKS, ULMFiTStage, ULMFiTTrainingRecord, model_objective

ULMFIT_BIBTEX = """@inproceedings{howard-ruder-2018-universal,
    title = "Universal Language Model Fine-tuning for Text Classification",
    author = "Howard, Jeremy and Ruder, Sebastian",
    booktitle = "Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics (Volume 1: Long Papers)",
    year = "2018",
    address = "Melbourne, Australia",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/P18-1031",
    doi = "10.18653/v1/P18-1031",
    pages = "328--339",
}"""

AWD_LSTM_BIBTEX = """@inproceedings{merity2018regularizing,
    title = "Regularizing and Optimizing {LSTM} Language Models",
    author = "Merity, Stephen and Keskar, Nitish Shirish and Socher, Richard",
    booktitle = "International Conference on Learning Representations",
    year = "2018",
    url = "https://openreview.net/forum?id=SyyGPP0TZ",
}"""


def format_number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _hidden_layers(sizes: list[int]) -> str:
    if not sizes:
        return "no hidden layer"
    if len(sizes) == 1:
        return f"a hidden layer of {sizes[0]} units"
    return f"hidden layers of {', '.join(map(str, sizes))} units"


def evaluation_section(record: ULMFiTTrainingRecord) -> list[str]:
    """The card's evaluation heading and table (metric, value, dataset, split), or nothing without results."""
    if not record.eval_results:
        return []
    rows = ["| metric | value | dataset | split |", "|---|---|---|---|"]
    for result in record.eval_results:
        rows.append(
            f"| {result.metric_name or result.metric_type} | {format_number(result.metric_value)} | "
            f"`{result.dataset_type}` | {result.dataset_split or '-'} |"
        )
    return ["## Evaluation", "\n".join(rows)]


def unfreezing_sentence(stage: ULMFiTStage, when: str) -> str:
    """The card's sentence on gradual unfreezing: the trainable groups of each stage when the record has them (any
    schedule: fastai's IMDb one unfreezes the rest at once at its last stage, 'partial' can stop short), else the
    plain one-group-per-stage sentence of records made before they were kept."""
    groups, fractions = stage.trainable_groups, stage.unfreeze_at_fractions
    if groups and len(groups) == 1 and not fractions:
        # A run too short for a second unfreezing stage (fewer optimizer steps than stages): nothing was unfrozen.
        total = stage.num_layer_groups
        if total is not None and groups[0] >= total:
            return f"Gradual unfreezing: all {total} layer group{'s' if total > 1 else ''} trained from the start."
        trained = f"{groups[0]} of {total}" if total else str(groups[0])
        return (
            f"Gradual unfreezing: the run was too short for a second stage, so only the top {trained} layer "
            f"group{'s' if groups[0] > 1 else ''} trained and nothing more was unfrozen."
        )
    if not groups or fractions is None or len(groups) != len(fractions) + 1:
        return (
            f"Gradual unfreezing: only the top layer group trained at first, and one more group was unfrozen {when}."
        )
    total = stage.num_layer_groups

    def top(count: int) -> str:
        if total is not None and count == total:
            return f"all {count} groups"
        return "the top group" if count == 1 else f"the top {count} groups"

    steps = [f"{top(count)} from {fraction:.0%}" for count, fraction in zip(groups[1:], fractions, strict=True)]
    sentence = f"Gradual unfreezing: {top(groups[0])} trained at first, then " + ", ".join(steps) + " of the steps."
    if total is not None and groups[-1] < total:
        frozen = total - groups[-1]
        sentence += f" The lowest {frozen} group{'s' if frozen > 1 else ''} stayed frozen (a partial schedule)."
    return sentence


def _decay_sentence(stage: ULMFiTStage) -> str:
    """How much more slowly each lower layer group learned, and, when the record knows the number of groups, the
    bottom group's share of the top rate (the span: what a per-group factor means depends on the depth)."""
    decay = stage.discriminative_lr_decay
    sentence = f"{format_number(decay)} times more slowly than the group above it (discriminative fine-tuning"
    groups = stage.num_layer_groups
    if groups and groups > 1 and decay != 1:
        sentence += f": the bottom of the {groups} groups at the top rate / {decay ** (groups - 1):.3g}"
    return sentence + ")."


def stage_paragraph(stage: ULMFiTStage) -> str:
    """The facts of one stage, as sentences; nothing is said about what the record does not know."""
    what = {
        "language-modeling": "a language model",
        "masked-language-modeling": "a masked language model",
        "classification": "a classifier",
    }[stage.objective]
    data = [f"split `{stage.dataset_split}`"] if stage.dataset_split else []
    if stage.num_examples:
        data.append(f"{stage.num_examples:,} documents")
    if stage.num_tokens:
        data.append(f"{stage.num_tokens:,} tokens")
    sentence = f"Trained as {what} on `{stage.dataset}`" + (f" ({', '.join(data)})" if data else "")
    if stage.num_train_epochs:
        sentence += f" for {format_number(stage.num_train_epochs)} epoch{'s' if stage.num_train_epochs != 1 else ''}"
    if stage.num_train_steps:
        steps = f"{stage.num_train_steps:,} optimizer step{'s' if stage.num_train_steps != 1 else ''}"
        sentence += f" ({steps})" if stage.num_train_epochs else f" for {steps}"
    batch = []
    if stage.per_device_train_batch_size:
        batch.append(f"batches of {stage.per_device_train_batch_size} per device")
    if stage.bptt:
        batch.append(f"windows of {stage.bptt} tokens")
    sentences = [sentence + (f", with {' and '.join(batch)}" if batch else "") + "."]
    if stage.learning_rate:
        rate = f"The top layer group's peak learning rate was {format_number(stage.learning_rate)}"
        if stage.discriminative_lr_decay:
            rate += f"; each lower group learned {_decay_sentence(stage)}"
        else:
            rate += ", shared by all layers."
        sentences.append(rate)
    elif stage.discriminative_lr_decay:
        sentences.append(f"Each lower layer group learned {_decay_sentence(stage)}")
    if stage.use_stlr:
        sentences.append(
            "The learning rate followed a slanted triangular schedule (STLR): a linear rise over the first "
            f"{stage.stlr_cut_frac:.0%} of the steps, then a linear decay to 1/{format_number(stage.stlr_ratio)} of the peak."
        )
    if stage.gradual_unfreezing:
        if stage.unfreeze_every_n_steps:
            n = stage.unfreeze_every_n_steps
            when = "at every step" if n == 1 else f"every {n:,} steps"
        elif stage.unfreeze_at_fractions:
            when = "at " + ", ".join(f"{f:.0%}" for f in stage.unfreeze_at_fractions) + " of the steps"
        else:
            when = "at the start of each epoch"
        sentences.append(unfreezing_sentence(stage, when))
    elif stage.objective == "classification":
        sentences.append("All layers were trained from the first step (no gradual unfreezing).")
    regularisation = []
    if stage.dropout_multiplier is not None:
        regularisation.append(f"dropouts scaled by {format_number(stage.dropout_multiplier)}")
    if stage.weight_decay:
        regularisation.append(f"weight decay {format_number(stage.weight_decay)}")
    if regularisation:
        sentences.append("Regularisation: " + ", ".join(regularisation) + ".")
    if stage.metrics:
        sentences.append(
            "At the end of the stage: " + ", ".join(f"{k} {format_number(v)}" for k, v in stage.metrics.items()) + "."
        )
    if stage.settings:
        sentences.append(
            "Settings: " + ", ".join(f"`{name}` {source}" for name, source in stage.settings.items()) + " (the "
            "recipe's defaults for this stage and model family, or values chosen for this run)."
        )
    if stage.notes:
        sentences.append(stage.notes.strip())
    return " ".join(sentences)


def _usage_snippet(model: nn.Module, repo_id: str, objective: str, tokenizer) -> str:
    if not isinstance(model, AWDLSTMPreTrainedModel):
        pipeline_tag, auto_class, _ = OBJECTIVE_TASKS[objective]
        call = {
            # transformers' pipeline does not truncate unless asked: the saved tokenizer says how long and from
            # which end the classifier read its texts, and a text past the context length would fail.
            "text-classification": '(["First text to classify.", "Another one."], truncation=True)',
            "text-generation": '("The movie", max_new_tokens=40, do_sample=True, top_k=50)',
            "fill-mask": f'("The movie was {getattr(tokenizer, "mask_token", None) or "[MASK]"}.")',
        }[pipeline_tag]
        tokenizer_options = (
            "truncation=True, " if pipeline_tag == "text-classification" else ""
        ) + 'return_tensors="pt"'
        return f"""```python
from transformers import {auto_class}, AutoTokenizer, pipeline

print(pipeline("{pipeline_tag}", model="{repo_id}"){call})

# Or step by step:
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = {auto_class}.from_pretrained("{repo_id}").eval()
outputs = model(**tokenizer(["A text."], {tokenizer_options}))
```"""
    if isinstance(model, AWDLSTMForSequenceClassification):
        return f"""```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

classifier = pipeline("text-classification", model="{repo_id}", trust_remote_code=True)
print(classifier(["First review to classify.", "Another one, as long as you like."], batch_size=32))
# Many documents? With tl_nlp imported, pipeline() batches them by length and answers in input order; without
# it, pass them sorted by length (and restore the order after): batches of similar lengths keep the LSTM busy.

# Or step by step:
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
logits = model(**tokenizer(["A review."], return_tensors="pt")).logits
```"""
    return f"""```python
from transformers import pipeline

generator = pipeline("text-generation", model="{repo_id}", trust_remote_code=True)
print(generator("The movie", max_new_tokens=40, do_sample=True, top_k=50, temperature=0.8))

# Fine-tune it as a classifier (ULMFiT's last stage) with tl_nlp installed:
# AutoModelForSequenceClassification.from_pretrained("{repo_id}", num_labels=2, trust_remote_code=True)
```"""


def _limitations(model: nn.Module, tokenizer, record: ULMFiTTrainingRecord, objective: str) -> list[str]:
    config = model.config
    is_awd_lstm = isinstance(model, AWDLSTMPreTrainedModel)
    languages = record.language if isinstance(record.language, str) else ", ".join(record.language)
    items = []
    vocabulary = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if type(vocabulary).__name__ == "WordLevel":
        items.append(
            f"It reads text (`{languages}`) as lower-cased words with ULMFiT's markers (`xxmaj`, `xxup`, `xxrep`, "
            f"`xxwrep`); a word outside its {config.vocab_size:,}-word vocabulary becomes `xxunk`."
        )
    if getattr(tokenizer, "reverse", False):
        items.append("It reads text backwards (the tokenizer reverses the ids): pair it with a forward model.")
    if isinstance(model, AWDLSTMForSequenceClassification):
        items.append(
            f"Documents of any length are read in chunks of {config.bptt_chunk_length} tokens with the state "
            f"carried over (BPT3C), but the pooled features cover only the last {config.max_len} tokens: earlier "
            "text reaches the prediction only through the LSTM state."
        )
    elif not is_awd_lstm and (context := context_length(config)):
        items.append(f"It reads at most {context:,} tokens at a time: truncate (or split) longer texts.")
        saved_length = getattr(tokenizer, "model_max_length", None)
        if objective == "classification" and saved_length and saved_length < context:
            kept = "end" if getattr(tokenizer, "truncation_side", "right") == "left" else "beginning"
            items.append(
                f"Its tokenizer, with `truncation=True`, cuts a longer text to {saved_length:,} tokens and keeps its "
                f"{kept}: the reading it was evaluated with."
            )
    if objective == "language-modeling":
        items.append(
            "Generated text imitates the training data, its errors and biases included; it is not checked for "
            "facts and should not be shown to people as true."
        )
    last_data = record.stages[-1].dataset
    items.append(
        f"Its last training stage saw `{last_data}` only: expect weaker results on text from other domains, "
        "and measure before relying on it."
    )
    if is_awd_lstm:
        items.append(
            "The modeling and tokenizer code are in this repository and run on loading (`trust_remote_code=True`) "
            "unless `tl_nlp` is installed; read the `.py` files before trusting them."
        )
    if tokenizer is None:
        items.append("No tokenizer was saved with it: use the tokenizer of the model it started from.")
    return items + list(record.limitations)


def build_model_card(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    record: ULMFiTTrainingRecord,
    repo_id: str,
) -> ModelCard:
    """Writes the model card of a ULMFiT model from what happened in training.

    Args:
        model: the trained model: an AWD-LSTM (classifier or language model), or any transformers text classifier,
            causal or masked language model (BERT, GPT-2, Llama... fine-tuned with `ULMFiTTrainer`).
        tokenizer: its tokenizer (None if none was saved with the model: the card then says so).
        record: the stages, data, hyperparameters and results of training.
        repo_id: the Hub repository the card will live in (used in the metadata and the usage snippet).

    Returns:
        A `huggingface_hub.ModelCard` whose metadata has license, language, datasets, tags, pipeline tag, base
        model and a model-index with `record.eval_results`.
    """
    objective = model_objective(model)
    if objective is None:
        raise TypeError(
            "build_model_card writes cards for text classifiers and causal or masked language models, got "
            f"{type(model).__name__}"
        )
    if hasattr(model, "get_base_model"):  # a peft model: describe the model it wraps
        model = model.get_base_model()
    config = model.config
    is_awd_lstm = isinstance(model, AWDLSTMPreTrainedModel)
    is_classifier = objective == "classification"
    pipeline_tag, _, kind = OBJECTIVE_TASKS[objective]
    model_name = repo_id.split("/")[-1]
    datasets = list(dict.fromkeys(s.dataset for s in record.stages if " " not in s.dataset))
    card_data = ModelCardData(
        language=record.language,
        license=record.license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=(
            ["ulmfit", "awd-lstm", "tl_nlp", "custom_code", pipeline_tag]
            if is_awd_lstm
            else ["ulmfit", "tl_nlp", config.model_type, pipeline_tag]
        ),
        datasets=datasets or None,
        base_model=record.base_model,
        model_name=model_name,
        eval_results=list(record.eval_results) or None,
    )

    stages = f"{len(record.stages)} stage{'s' if len(record.stages) > 1 else ''}"
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    if is_awd_lstm:
        summary = (
            f"`{model_name}` is an AWD-LSTM {kind} (Merity et al., 2018) trained with ULMFiT (Howard & Ruder, 2018) "
            f"in {stages}. It has {num_parameters:,} parameters: a {config.vocab_size:,}-token vocabulary, "
            f"{config.embedding_size}-dimensional embeddings and {config.num_hidden_layers} LSTM layers of "
            f"{config.hidden_size} units (the last one of {config.embedding_size})."
        )
    else:
        summary = (
            f"`{model_name}` is a {kind} (`{type(model).__name__}`, architecture `{config.model_type}`) trained "
            f"with ULMFiT's fine-tuning techniques (Howard & Ruder, 2018) in {stages}. It has {num_parameters:,} "
            "parameters."
        )
    if is_classifier and task_of_config(config) is None:
        labels = ", ".join(f"`{config.id2label[i]}`" for i in range(config.num_labels))
        if is_awd_lstm:
            summary += (
                f" It predicts {labels} from [last, max, mean] pooled LSTM outputs through a head with "
                f"{_hidden_layers(config.classifier_hidden_sizes)}."
            )
        else:
            summary += f" It predicts {labels}."
    task = task_of_config(config)
    if task is not None and task.task != "single_text":
        summary += f" {task_sentence(task)}"
    if record.base_model:
        summary += f" It starts from [`{record.base_model}`](https://huggingface.co/{record.base_model})."

    stage_sections = "\n\n".join(
        f"### Stage {index}: {stage.name}\n\n{stage_paragraph(stage)}" for index, stage in enumerate(record.stages, 1)
    )
    table = [
        "| stage | data | epochs | peak LR | LR decay per group | STLR | gradual unfreezing |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, stage in enumerate(record.stages, 1):
        table.append(
            f"| {index} | `{stage.dataset}` | {format_number(stage.num_train_epochs) if stage.num_train_epochs else '-'} "
            f"| {format_number(stage.learning_rate) if stage.learning_rate else '-'} "
            f"| {'÷' + format_number(stage.discriminative_lr_decay) if stage.discriminative_lr_decay else 'none'} "
            f"| {'yes' if stage.use_stlr else 'no'} | {'yes' if stage.gradual_unfreezing else 'no'} |"
        )
    sections = [
        f"# {model_name}",
        summary,
        "## Training",
        "\n".join(table),
        stage_sections,
    ]
    sections += evaluation_section(record)
    if is_awd_lstm:
        how_to_load = (
            "The AWD-LSTM and ULMFiT tokenizer code ship with the weights, so `transformers` alone loads the model "
            "(with `trust_remote_code=True`; with `tl_nlp` installed the local code is used)."
        )
        citation = ["ULMFiT (the training method) and AWD-LSTM (the architecture):", ULMFIT_BIBTEX, AWD_LSTM_BIBTEX]
    else:
        how_to_load = "`transformers` alone loads it (no custom code)."
        citation = ["ULMFiT (the training method):", ULMFIT_BIBTEX]
    sections += [
        "## How to use",
        how_to_load,
        _usage_snippet(model, repo_id, objective, tokenizer),
        "## Limitations",
        "\n".join(f"- {item}" for item in _limitations(model, tokenizer, record, objective)),
        "## Citation",
        citation[0],
        "```bibtex\n" + "\n\n".join(citation[1:]) + "\n```",
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)


# Files every ULMFiT folder must have for `from_pretrained(..., trust_remote_code=True)` and `pipeline()`.
MODEL_FILES = ("config.json", "model.safetensors", "configuration_awd_lstm.py", "modeling_awd_lstm.py")
# Any other model's weights: one safetensors file, or the index of sharded ones.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def check_hub_folder(folder: str | Path, model: nn.Module, with_tokenizer: bool = True) -> list[str]:
    """Checks that a folder holds what a Hub user needs to load `model` and returns its sorted file names.

    AWD-LSTM folders need the modeling code, an `auto_map` entry for the model's Auto class and, when the tokenizer
    has an `auto_map`, the tokenizer code; every folder needs `config.json`, safetensors weights and `README.md`,
    and `tokenizer_config.json` when `with_tokenizer`.

    Args:
        folder: the folder to check.
        model: the model saved in it.
        with_tokenizer: whether a tokenizer was saved with it.

    Raises:
        RuntimeError: naming the missing files or `auto_map` entry.
    """
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    is_awd_lstm = isinstance(model, AWDLSTMPreTrainedModel)
    needed = list(MODEL_FILES) if is_awd_lstm else ["config.json"]
    needed += ["README.md"] + (["tokenizer_config.json"] if with_tokenizer else [])
    if with_tokenizer and (folder / "tokenizer_config.json").is_file():
        tokenizer_auto_map = json.loads((folder / "tokenizer_config.json").read_text()).get("auto_map", {})
        for class_path in tokenizer_auto_map.get("AutoTokenizer", []):
            if class_path:
                needed.append(class_path.split(".")[0] + ".py")
    missing = [name for name in needed if name not in files]
    if not is_awd_lstm and not set(WEIGHT_FILES) & set(files):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise RuntimeError(
            f"{folder} lacks {missing} after saving: was tl_nlp imported (it registers the Auto classes whose "
            "code save_pretrained ships), and were the weights saved as safetensors?"
        )
    if is_awd_lstm:
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
        wanted = OBJECTIVE_TASKS[model_objective(model)][1]
        if wanted not in auto_map:
            raise RuntimeError(f"{folder}/config.json has no auto_map entry for {wanted}: {auto_map}")
    return files
