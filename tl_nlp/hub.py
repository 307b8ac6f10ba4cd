"""Sharing ULMFiT models on the Hugging Face Hub: the training record, the model card, the folder, the upload.

What a user of the Hub needs is one folder: safetensors weights, a config whose `auto_map` points at the AWD-LSTM
code shipped next to it, the tokenizer files and code, and a model card. The card is written from a
[`ULMFiTTrainingRecord`], what actually happened in training (stages, data, hyperparameters, metrics), so every
sentence in it states a fact about this model.

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

import json
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from .config_files import read_mapping_file
from .models.awd_lstm import AWDLSTMForSequenceClassification, AWDLSTMPreTrainedModel

# "language-modeling" is next-token prediction (AWD-LSTM, GPT-style); "masked-language-modeling" is BERT-style.
OBJECTIVES = ("language-modeling", "masked-language-modeling", "classification")
TRAINING_RECORD_FILE = "ulmfit_training_record.json"
# Per objective: the model's pipeline task, its Auto class and what the card calls it.
OBJECTIVE_TASKS = {
    "language-modeling": ("text-generation", "AutoModelForCausalLM", "language model"),
    "masked-language-modeling": ("fill-mask", "AutoModelForMaskedLM", "masked language model"),
    "classification": ("text-classification", "AutoModelForSequenceClassification", "text classifier"),
}

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


@dataclass
class ULMFiTStage:
    """One ULMFiT training stage as it was run. Field names follow `ULMFiTTrainingArguments`; None means unknown
    or not applicable, and the card leaves it out."""

    name: str = field(metadata={"help": "What the stage was, e.g. 'target-task language model fine-tuning'."})
    objective: str = field(metadata={"help": f"One of {OBJECTIVES}."})
    dataset: str = field(metadata={"help": "Hub id of the data (e.g. 'stanfordnlp/imdb') or a short description."})
    dataset_split: str | None = field(default=None, metadata={"help": "Split(s) trained on, e.g. 'train+unsup'."})
    num_examples: int | None = field(default=None, metadata={"help": "Documents trained on."})
    num_tokens: int | None = field(default=None, metadata={"help": "Tokens trained on (language models)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs over the data."})
    num_train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps run."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of the top layer group."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Batch size per device."})
    bptt: int | None = field(default=None, metadata={"help": "Window length of language-model training."})
    discriminative_lr_decay: float | None = field(
        default=None, metadata={"help": "Each lower layer group's rate is the one above divided by this (2.6)."}
    )
    use_stlr: bool = field(default=False, metadata={"help": "Whether slanted triangular learning rates were used."})
    stlr_cut_frac: float = field(default=0.1, metadata={"help": "Fraction of the steps during which STLR rose."})
    stlr_ratio: float = field(default=32.0, metadata={"help": "Peak rate divided by the lowest STLR rate."})
    gradual_unfreezing: bool = field(
        default=False, metadata={"help": "Whether layer groups were unfrozen one by one."}
    )
    unfreeze_every_n_steps: int | None = field(default=None, metadata={"help": "Steps between unfreezing stages."})
    unfreeze_at_fractions: list[float] | None = field(
        default=None, metadata={"help": "Fractions of the steps at which unfreezing stages began."}
    )
    dropout_multiplier: float | None = field(default=None, metadata={"help": "Scale of every dropout (drop_mult)."})
    weight_decay: float | None = field(default=None, metadata={"help": "Weight decay."})
    metrics: dict[str, float] = field(default_factory=dict, metadata={"help": "Metrics at the end of the stage."})
    notes: str | None = field(default=None, metadata={"help": "Anything else a reader should know, one sentence."})

    def __post_init__(self):
        for name in ("name", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"ULMFiTStage.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"ULMFiTStage.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in (
            "num_examples",
            "num_tokens",
            "num_train_steps",
            "per_device_train_batch_size",
            "bptt",
            "unfreeze_every_n_steps",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ULMFiTStage.{name} must be a positive integer or None, got {value!r}")
        for name in ("num_train_epochs", "learning_rate", "discriminative_lr_decay"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"ULMFiTStage.{name} must be > 0 or None, got {value!r}")
        if not 0 < self.stlr_cut_frac < 1:
            raise ValueError(f"ULMFiTStage.stlr_cut_frac must be in (0, 1), got {self.stlr_cut_frac!r}")
        if not self.stlr_ratio >= 1:
            raise ValueError(f"ULMFiTStage.stlr_ratio must be >= 1, got {self.stlr_ratio!r}")
        fractions = self.unfreeze_at_fractions
        if fractions is not None and not (
            all(0 < f < 1 for f in fractions) and all(a < b for a, b in zip(fractions, fractions[1:], strict=False))
        ):
            raise ValueError(f"ULMFiTStage.unfreeze_at_fractions must increase inside (0, 1), got {fractions!r}")
        for key, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"ULMFiTStage.metrics[{key!r}] must be a number, got {value!r}")

    @classmethod
    def from_training_arguments(cls, args: Any, **values) -> "ULMFiTStage":
        """The stage of a run made with `args` (a `ULMFiTTrainingArguments` or `TrainingArguments`); `values` give
        the rest (name, objective, dataset, metrics...) and override what `args` says."""
        from_args = {}
        for f in fields(cls):
            if hasattr(args, f.name):
                from_args[f.name] = getattr(args, f.name)
        # A decay of 1.0 means every layer group shared one rate: the card then says so.
        if from_args.get("discriminative_lr_decay") == 1.0:
            from_args["discriminative_lr_decay"] = None
        return cls(**{**from_args, **values})


@dataclass
class ULMFiTTrainingRecord:
    """What happened in training, from which [`build_model_card`] writes the card."""

    stages: list[ULMFiTStage] = field(metadata={"help": "The stages in the order they ran (pretraining first)."})
    language: str | list[str] = field(default="en", metadata={"help": "ISO 639-1 code(s) of the text."})
    license: str = field(default="apache-2.0", metadata={"help": "Hub license id of the weights."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id of the model this one started from."})
    eval_results: list[EvalResult] = field(
        default_factory=list, metadata={"help": "Final evaluation results (go into the card's model-index)."}
    )
    limitations: list[str] = field(
        default_factory=list, metadata={"help": "Known limitations beyond those the card derives itself."}
    )

    def __post_init__(self):
        if not self.stages:
            raise ValueError("ULMFiTTrainingRecord.stages must list at least one stage")
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, ULMFiTStage):
                raise ValueError(
                    f"ULMFiTTrainingRecord.stages[{index}] is {type(stage).__name__}, expected ULMFiTStage"
                )
        for index, result in enumerate(self.eval_results):
            if not isinstance(result, EvalResult):
                raise ValueError(
                    f"ULMFiTTrainingRecord.eval_results[{index}] is {type(result).__name__}, expected EvalResult"
                )
        if not isinstance(self.license, str) or not self.license or self.license != self.license.strip().lower():
            raise ValueError(f"ULMFiTTrainingRecord.license must be a lower-case Hub license id, got {self.license!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "ULMFiTTrainingRecord":
        """Builds a record from plain data (a parsed JSON or YAML file), naming any unknown or bad key."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training record key(s) {sorted(unknown)}; expected some of {sorted(known)}")
        values = dict(values)
        stage_fields = {f.name for f in fields(ULMFiTStage)}
        stages = []
        for index, stage in enumerate(values.pop("stages", [])):
            if not isinstance(stage, dict):
                raise ValueError(f"training record stages[{index}] is {type(stage).__name__}, expected a mapping")
            unknown = set(stage) - stage_fields
            if unknown:
                raise ValueError(f"training record stages[{index}] has unknown key(s) {sorted(unknown)}")
            try:
                stages.append(ULMFiTStage(**stage))
            except (TypeError, ValueError) as error:
                raise ValueError(f"training record stages[{index}]: {error}") from error
        results = []
        for index, result in enumerate(values.pop("eval_results", [])):
            try:
                results.append(EvalResult(**result))
            except (TypeError, ValueError) as error:
                raise ValueError(f"training record eval_results[{index}]: {error}") from error
        return cls(stages=stages, eval_results=results, **values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["eval_results"] = [
            {k: v for k, v in vars(result).items() if v is not None} for result in self.eval_results
        ]
        return values


def _number(value: float) -> str:
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
            f"| {result.metric_name or result.metric_type} | {_number(result.metric_value)} | "
            f"`{result.dataset_type}` | {result.dataset_split or '-'} |"
        )
    return ["## Evaluation", "\n".join(rows)]


def _stage_paragraph(stage: ULMFiTStage) -> str:
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
        sentence += f" for {_number(stage.num_train_epochs)} epoch{'s' if stage.num_train_epochs != 1 else ''}"
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
        rate = f"The top layer group's peak learning rate was {_number(stage.learning_rate)}"
        if stage.discriminative_lr_decay:
            rate += (
                f"; each lower group learned {_number(stage.discriminative_lr_decay)} times more slowly than the "
                "group above it (discriminative fine-tuning)."
            )
        else:
            rate += ", shared by all layers."
        sentences.append(rate)
    elif stage.discriminative_lr_decay:
        sentences.append(
            f"Each lower layer group learned {_number(stage.discriminative_lr_decay)} times more slowly than the "
            "group above it (discriminative fine-tuning)."
        )
    if stage.use_stlr:
        sentences.append(
            "The learning rate followed a slanted triangular schedule (STLR): a linear rise over the first "
            f"{stage.stlr_cut_frac:.0%} of the steps, then a linear decay to 1/{_number(stage.stlr_ratio)} of the peak."
        )
    if stage.gradual_unfreezing:
        if stage.unfreeze_every_n_steps:
            n = stage.unfreeze_every_n_steps
            when = "at every step" if n == 1 else f"every {n:,} steps"
        elif stage.unfreeze_at_fractions:
            when = "at " + ", ".join(f"{f:.0%}" for f in stage.unfreeze_at_fractions) + " of the steps"
        else:
            when = "at the start of each epoch"
        sentences.append(
            f"Gradual unfreezing: only the top layer group trained at first, and one more group was unfrozen {when}."
        )
    elif stage.objective == "classification":
        sentences.append("All layers were trained from the first step (no gradual unfreezing).")
    regularisation = []
    if stage.dropout_multiplier is not None:
        regularisation.append(f"dropouts scaled by {_number(stage.dropout_multiplier)}")
    if stage.weight_decay:
        regularisation.append(f"weight decay {_number(stage.weight_decay)}")
    if regularisation:
        sentences.append("Regularisation: " + ", ".join(regularisation) + ".")
    if stage.metrics:
        sentences.append(
            "At the end of the stage: " + ", ".join(f"{k} {_number(v)}" for k, v in stage.metrics.items()) + "."
        )
    if stage.notes:
        sentences.append(stage.notes.strip())
    return " ".join(sentences)


def model_objective(model: nn.Module) -> str | None:
    """The training objective a model's class is built for, one of `OBJECTIVES`, or None when it is none of them.

    AWD-LSTM classifiers are `"classification"` and the other AWD-LSTM models `"language-modeling"`; other models
    are looked up by class name in transformers' Auto mappings (sequence classification, then masked LM, then causal
    LM, the order that settles the few classes listed twice).

    Args:
        model: the model, possibly wrapped by peft (its base model is looked at).
    """
    if hasattr(model, "get_base_model"):  # a peft model
        model = model.get_base_model()
    if isinstance(model, AWDLSTMForSequenceClassification):
        return "classification"
    if isinstance(model, AWDLSTMPreTrainedModel):
        return "language-modeling"
    return _class_objective(type(model).__name__)


def _class_objective(name: str) -> str | None:
    if name in set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values()) or name.endswith(
        "ForSequenceClassification"
    ):
        return "classification"
    if name in set(MODEL_FOR_MASKED_LM_MAPPING_NAMES.values()) or name.endswith("ForMaskedLM"):
        return "masked-language-modeling"
    if name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith("ForCausalLM"):
        return "language-modeling"
    return None


def _usage_snippet(model: nn.Module, repo_id: str, objective: str, tokenizer) -> str:
    if not isinstance(model, AWDLSTMPreTrainedModel):
        pipeline_tag, auto_class, _ = OBJECTIVE_TASKS[objective]
        call = {
            "text-classification": '(["First text to classify.", "Another one."])',
            "text-generation": '("The movie", max_new_tokens=40, do_sample=True, top_k=50)',
            "fill-mask": f'("The movie was {getattr(tokenizer, "mask_token", None) or "[MASK]"}.")',
        }[pipeline_tag]
        return f"""```python
from transformers import {auto_class}, AutoTokenizer, pipeline

print(pipeline("{pipeline_tag}", model="{repo_id}"){call})

# Or step by step:
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = {auto_class}.from_pretrained("{repo_id}").eval()
outputs = model(**tokenizer(["A text."], return_tensors="pt"))
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
    elif not is_awd_lstm and getattr(config, "max_position_embeddings", None):
        items.append(
            f"It reads at most {config.max_position_embeddings:,} tokens at a time: truncate (or split) longer texts."
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
    if is_classifier:
        labels = ", ".join(f"`{config.id2label[i]}`" for i in range(config.num_labels))
        if is_awd_lstm:
            summary += (
                f" It predicts {labels} from [last, max, mean] pooled LSTM outputs through a head with "
                f"{_hidden_layers(config.classifier_hidden_sizes)}."
            )
        else:
            summary += f" It predicts {labels}."
    if record.base_model:
        summary += f" It starts from [`{record.base_model}`](https://huggingface.co/{record.base_model})."

    stage_sections = "\n\n".join(
        f"### Stage {index}: {stage.name}\n\n{_stage_paragraph(stage)}" for index, stage in enumerate(record.stages, 1)
    )
    table = [
        "| stage | data | epochs | peak LR | LR decay per group | STLR | gradual unfreezing |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, stage in enumerate(record.stages, 1):
        table.append(
            f"| {index} | `{stage.dataset}` | {_number(stage.num_train_epochs) if stage.num_train_epochs else '-'} "
            f"| {_number(stage.learning_rate) if stage.learning_rate else '-'} "
            f"| {'÷' + _number(stage.discriminative_lr_decay) if stage.discriminative_lr_decay else 'none'} "
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


def write_training_record(record: ULMFiTTrainingRecord, folder: str | Path) -> Path:
    """Writes `record` as `ulmfit_training_record.json` into `folder` (created if needed) and returns the file.

    Args:
        record: what happened in training.
        folder: a model folder.
    """
    path = Path(folder) / TRAINING_RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return path


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
    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="tl_nlp_hub_") as folder:
        prepare_hub_folder(model, tokenizer, folder, record, repo_id)
        if create_repo:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=commit_message)


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


def read_training_record(path: str | Path) -> ULMFiTTrainingRecord:
    """Reads a [`ULMFiTTrainingRecord`] from a JSON or YAML file, naming the file in any error."""
    path = Path(path)
    values = read_mapping_file(path, "training record")
    try:
        return ULMFiTTrainingRecord.from_dict(values)
    except ValueError as error:
        raise ValueError(f"training record {path}: {error}") from error


def run_push(arguments: PushArguments, api: HfApi | None = None):
    """`tl-nlp push`: loads `arguments.model_dir`, then uploads it (or writes the dry-run folder).

    Returns the upload's `CommitInfo`, or the file list of the dry-run folder.
    """
    import transformers

    model_dir = Path(arguments.model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} is not a saved model folder (no config.json in it)")
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
    objectives = [_class_objective(name) for name in architectures]
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


__all__ = [
    "PushArguments",
    "ULMFiTStage",
    "ULMFiTTrainingRecord",
    "build_model_card",
    "check_hub_folder",
    "model_objective",
    "prepare_hub_folder",
    "push_ulmfit_to_hub",
    "read_training_record",
    "run_push",
    "write_training_record",
]
