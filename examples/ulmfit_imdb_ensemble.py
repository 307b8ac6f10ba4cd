"""ULMFiT on IMDb in both directions: a forward and a backward AWD-LSTM, each taken through the three stages, and
their ensemble (ULMFiT, section 3.3 "BiLM": the paper averages the predictions of a forward and a backward model).

For each direction (the backward one reads every text reversed at the token level, through
`tl_nlp.backward_tokenizer`, so the same data code, trainers and `pipeline()` serve both):
1. a general-domain language model on WikiText-2;
2. that model fine-tuned on unlabelled IMDb reviews (discriminative learning rates, STLR);
3. a classifier from the fine-tuned encoder, trained on labelled reviews (gradual unfreezing, discriminative rates,
   STLR).
Then held-out test reviews are classified by each model and by their ensemble (`tl_nlp.ensemble_predict`, the mean
of the two models' probabilities); accuracy and macro-F1 of all three are printed and saved.

Saved under `--output_dir`: `forward/{lm_general,lm_imdb,classifier}` and the same under `backward/` (standard
Hugging Face folders: safetensors weights, config, tokenizer; the backward tokenizer is saved with `reverse: true`),
`ensemble_metrics.json` (metrics, perplexities, seconds per stage, the arguments) and `predictions.json` (each model's
probabilities on the test reviews).

Single process, CPU defaults (a small model, short training: they show the mechanics, but accuracy stays near chance
at these sizes, see BENCHMARKS.md; `--pretrain_epochs 0.4 --finetune_reviews 2000 --classifier_epochs 6` is the demo's
scale):

    python examples/ulmfit_imdb_ensemble.py --data_dir ../shared/data --output_dir runs/imdb_ensemble

Two CPU processes (gloo), or a GPU:

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml \
        examples/ulmfit_imdb_ensemble.py --output_dir runs/imdb_ensemble_ddp
    accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/ulmfit_imdb_ensemble.py \
        --output_dir runs/imdb_ensemble_gpu --lm_batch_size 64 --classifier_batch_size 32

Paper-size settings (a GPU; the paper pretrains on WikiText-103, which `--pretrain_corpus wikitext-103` reads from
`DATA_DIR/wikitext-103/{train,valid}.txt` or, without a local copy, from the Hub): `--pretrain_corpus wikitext-103
--vocab_size 60000 --embedding_size 400 --hidden_size 1152 --pretrain_epochs 15 --finetune_reviews 0
--finetune_epochs 10 --train_reviews 0 --eval_reviews 0 --classifier_epochs 14 --lm_batch_size 64` (0 reviews means
a whole split: IMDb's 50,000 unlabelled reviews, 25,000 training and 25,000 test reviews). With `--data_dir ""` all
data come from the Hub (`Salesforce/wikitext`, `stanfordnlp/imdb`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import PartialState
from example_utils import (
    SENTIMENT_LABELS,
    check_positive,
    classification_metrics,
    imdb_subsets,
    probe_logits,
    save_json,
    say,
    start_processes,
)
from transformers import DataCollatorWithPadding, HfArgumentParser, set_seed

from tl_nlp import (
    AWDLSTMConfig,
    AWDLSTMForCausalLM,
    AWDLSTMForSequenceClassification,
    ClassificationTrainer,
    LanguageModelStreams,
    LanguageModelTrainer,
    ULMFiTTokenizerFast,
    ULMFiTTrainingArguments,
    backward_tokenizer,
    ensemble_predict,
    layer_group_summary,
    load_text_dataset,
    stream_perplexity,
    tokenize_dataset,
    tokenize_for_language_model,
    train_ulmfit_tokenizer,
)


@dataclass
class EnsembleArguments:
    data_dir: str = field(
        default="../shared/data",
        metadata={"help": "Folder with the WikiText and imdb/ offline copies; empty to read the Hub datasets."},
    )
    output_dir: str = field(
        default="runs/imdb_ensemble", metadata={"help": "Where the six model folders and the metrics are saved."}
    )
    pretrain_corpus: str = field(
        default="wikitext-2",
        metadata={"help": "General-domain corpus: wikitext-2 or wikitext-103 (DATA_DIR/<name>/ or the Hub)."},
    )
    pretrain_max_lines: int = field(
        default=0, metadata={"help": "Read only the first N lines of each WikiText split (0: all); for quick tries."}
    )
    vocab_size: int = field(
        default=12_000, metadata={"help": "Word vocabulary size, special tokens included (>= 20)."}
    )
    embedding_size: int = field(default=200, metadata={"help": "AWD-LSTM embedding size (the paper: 400)."})
    hidden_size: int = field(default=400, metadata={"help": "AWD-LSTM hidden size (the paper: 1152)."})
    num_hidden_layers: int = field(default=3, metadata={"help": "LSTM layers (the paper: 3)."})
    bptt: int = field(default=70, metadata={"help": "Language-model window length (the paper: 70)."})
    lm_batch_size: int = field(default=32, metadata={"help": "Parallel streams per process in LM training."})
    pretrain_epochs: float = field(
        default=0.1, metadata={"help": "Epochs over the general-domain corpus in stage 1 (> 0)."}
    )
    pretrain_learning_rate: float = field(default=3e-3, metadata={"help": "Stage 1 learning rate (> 0)."})
    finetune_reviews: int = field(
        default=1_000, metadata={"help": "Unlabelled IMDb reviews for stage 2 (0: all 50,000)."}
    )
    finetune_epochs: float = field(default=1.0, metadata={"help": "Epochs over those reviews in stage 2 (> 0)."})
    finetune_learning_rate: float = field(
        default=2e-3, metadata={"help": "Stage 2 top-layer learning rate (discriminative: lower layers / 2.6 each)."}
    )
    train_reviews: int = field(
        default=400, metadata={"help": "Labelled training reviews for the classifiers, balanced (0: all 25,000)."}
    )
    eval_reviews: int = field(
        default=500, metadata={"help": "Held-out IMDb test reviews to evaluate on, balanced (0: all 25,000)."}
    )
    classifier_epochs: int = field(
        default=4, metadata={"help": "Classifier epochs: one more layer group unfrozen at each (then all train)."}
    )
    classifier_learning_rate: float = field(default=1e-2, metadata={"help": "Classifier top-layer learning rate."})
    classifier_batch_size: int = field(default=16, metadata={"help": "Classifier batch size per process."})
    seed: int = field(default=42, metadata={"help": "Random seed (model initialisation, data order, subsets)."})

    def __post_init__(self):
        check_positive(
            self,
            ["embedding_size", "hidden_size", "num_hidden_layers", "bptt", "lm_batch_size"]
            + ["classifier_epochs", "classifier_batch_size"],
        )
        check_positive(self, ["vocab_size"], minimum=20)
        check_positive(self, ["pretrain_max_lines", "finetune_reviews", "train_reviews", "eval_reviews"], minimum=0)
        for name in ("pretrain_epochs", "pretrain_learning_rate", "finetune_epochs", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if not self.classifier_learning_rate > 0:
            raise ValueError(f"--classifier_learning_rate must be > 0, got {self.classifier_learning_rate}.")
        if self.pretrain_corpus not in ("wikitext-2", "wikitext-103"):
            raise ValueError(f"--pretrain_corpus must be wikitext-2 or wikitext-103, got {self.pretrain_corpus!r}.")
        for name in ("train_reviews", "eval_reviews"):
            if getattr(self, name) % 2:
                raise ValueError(f"--{name} must be even (half of each label), got {getattr(self, name)}.")


def load_corpora(args: EnsembleArguments) -> dict[str, datasets.Dataset]:
    """WikiText (train, valid) and the IMDb subsets, from `data_dir` or from the Hub."""
    folder = Path(args.data_dir) / args.pretrain_corpus if args.data_dir else None
    if folder is not None and (folder / "train.txt").is_file():
        wiki = {split: load_text_dataset(str(folder / f"{split}.txt")) for split in ("train", "valid")}
    else:
        say(f"  no local {args.pretrain_corpus}: reading Salesforce/wikitext from the Hub")
        name = f"{args.pretrain_corpus}-v1"
        wiki = {
            "train": load_text_dataset("Salesforce/wikitext", split="train", name=name),
            "valid": load_text_dataset("Salesforce/wikitext", split="validation", name=name),
        }
    if args.pretrain_max_lines:
        wiki = {split: data.select(range(min(len(data), args.pretrain_max_lines))) for split, data in wiki.items()}
    imdb = imdb_subsets(
        args.data_dir,
        args.seed,
        {
            "imdb_lm": ("unsup", "lm_train", args.finetune_reviews, False),
            "imdb_lm_valid": ("unsup", "lm_valid", min(500, args.finetune_reviews or 500), False),
            # The protocol's 1,000 labelled reviews (a subset of its 10,000) when they are enough.
            "imdb_train": (
                "train",
                "train_1k" if args.train_reviews <= 1_000 else "train_10k",
                args.train_reviews,
                True,
            ),
            "imdb_test": ("test", "test_5k", args.eval_reviews, True),
        },
    )
    return {"wiki_train": wiki["train"], "wiki_valid": wiki["valid"], **imdb}


def lm_streams(dataset, tokenizer, args: EnsembleArguments, validation: bool) -> LanguageModelStreams:
    """Carried-state streams over `dataset` read through `tokenizer` (forward or backward). Validation streams are
    read whole by every process (no sharding), so the perplexity is the same everywhere."""
    tokenized = tokenize_for_language_model(dataset, tokenizer, skip_empty=True)  # WikiText has blank lines
    placement = dict(process_index=0, num_processes=1) if validation else {}
    return LanguageModelStreams.from_dataset(
        tokenized,
        batch_size=args.lm_batch_size,
        bptt=args.bptt,
        shuffle=not validation,
        seed=args.seed,
        pad_token_id=tokenizer.pad_token_id,
        **placement,
    )


def training_arguments(args: EnsembleArguments, name: str, **overrides) -> ULMFiTTrainingArguments:
    values = dict(
        output_dir=str(Path(args.output_dir) / "checkpoints" / name),
        seed=args.seed,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning means nothing on CPU (and torch warns)
        weight_decay=0.01,
    )
    values.update(overrides)
    return ULMFiTTrainingArguments(**values)


def language_model_stage(model, tokenizer, train_texts, valid_texts, args, folder: Path, **training) -> dict:
    """Trains `model` on `train_texts` as carried-state streams, saves it with `tokenizer` in `folder`, and returns
    the validation perplexity before and after."""
    state = PartialState()
    train = lm_streams(train_texts, tokenizer, args, validation=False)
    valid = lm_streams(valid_texts, tokenizer, args, validation=True)
    say(f"  {train.num_tokens:,} training tokens, {valid.num_tokens:,} validation tokens")
    before = stream_perplexity(model, valid)
    trainer = LanguageModelTrainer(
        model=model,
        args=training_arguments(args, f"{folder.parent.name}_{folder.name}", gradual_unfreezing=False, **training),
        train_dataset=train,
    )
    trainer.train()
    after = stream_perplexity(model, valid)
    trainer.save_model(str(folder))
    if state.is_main_process:
        tokenizer.save_pretrained(folder)
    state.wait_for_everyone()  # the next stage reads the folder on every process
    return {"perplexity_before": before, "perplexity_after": after}


def one_direction(direction: str, tokenizer: ULMFiTTokenizerFast, corpora: dict, args: EnsembleArguments) -> dict:
    """The three ULMFiT stages for one reading direction; returns the trained classifier, its folder and metrics."""
    state = PartialState()
    root = Path(args.output_dir) / direction
    seconds, record = {}, {}
    set_seed(args.seed)

    say(f"== {direction}, stage 1: general-domain language model on {args.pretrain_corpus}")
    start = time.perf_counter()
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer),
        embedding_size=args.embedding_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = AWDLSTMForCausalLM(config)
    say(f"  {sum(p.numel() for p in model.parameters()):,} parameters")
    # Stage 1 trains every layer at one rate; stage 2 (ULMFiT's LM fine-tuning) uses discriminative rates and STLR.
    record["lm_general"] = language_model_stage(
        model,
        tokenizer,
        corpora["wiki_train"],
        corpora["wiki_valid"],
        args,
        root / "lm_general",
        num_train_epochs=args.pretrain_epochs,
        learning_rate=args.pretrain_learning_rate,
        discriminative_lr_decay=1.0,
    )
    seconds["lm_general"] = time.perf_counter() - start
    say(
        f"  validation perplexity {record['lm_general']['perplexity_before']:.0f} -> "
        f"{record['lm_general']['perplexity_after']:.1f}; saved to {root / 'lm_general'}"
    )

    say(f"== {direction}, stage 2: fine-tune the language model on {len(corpora['imdb_lm']):,} IMDb reviews")
    start = time.perf_counter()
    record["lm_imdb"] = language_model_stage(
        model,
        tokenizer,
        corpora["imdb_lm"],
        corpora["imdb_lm_valid"],
        args,
        root / "lm_imdb",
        num_train_epochs=args.finetune_epochs,
        learning_rate=args.finetune_learning_rate,
    )
    seconds["lm_imdb"] = time.perf_counter() - start
    say(
        f"  IMDb validation perplexity {record['lm_imdb']['perplexity_before']:.1f} -> "
        f"{record['lm_imdb']['perplexity_after']:.1f}; saved to {root / 'lm_imdb'}"
    )

    say(f"== {direction}, stage 3: classifier on {len(corpora['imdb_train'])} labelled reviews")
    start = time.perf_counter()
    train, id2label, label2id = tokenize_dataset(corpora["imdb_train"], tokenizer, label_names=SENTIMENT_LABELS)
    classifier = AWDLSTMForSequenceClassification.from_pretrained(
        root / "lm_imdb", num_labels=len(SENTIMENT_LABELS), id2label=id2label, label2id=label2id
    )
    trainer = ClassificationTrainer(
        model=classifier,
        args=training_arguments(
            args,
            f"{direction}_classifier",
            num_train_epochs=args.classifier_epochs,
            learning_rate=args.classifier_learning_rate,
            per_device_train_batch_size=args.classifier_batch_size,
            eval_strategy="no",
        ),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    say(layer_group_summary(classifier, num_trainable_groups=1))  # as the first epoch sees them
    say("  one more group unfrozen at each epoch")
    trainer.train()
    seconds["classifier"] = time.perf_counter() - start
    folder = root / "classifier"
    trainer.save_model(str(folder))
    if state.is_main_process:
        tokenizer.save_pretrained(folder)
    state.wait_for_everyone()
    say(f"  saved to {folder}")
    return {"model": classifier, "tokenizer": tokenizer, "folder": folder, "record": record, "seconds": seconds}


def main() -> None:
    (args,) = HfArgumentParser(EnsembleArguments).parse_args_into_dataclasses()
    # Starts the process group under `accelerate launch`, before anything reads the rank (the LM streams do).
    state = start_processes()
    if not state.is_main_process:
        datasets.disable_progress_bars()
    set_seed(args.seed)
    output = Path(args.output_dir)
    say(f"== {state.num_processes} process(es) on {state.device}; everything is saved under {output}")

    say("== data")
    with state.main_process_first():  # the main process fills the datasets cache, the others read it
        corpora = load_corpora(args)
    for name, dataset in corpora.items():
        say(f"  {name}: {len(dataset):,} rows")

    say("== tokenizer: ULMFiT rules + word vocabulary from the general corpus and the IMDb reviews of stage 2")
    start = time.perf_counter()
    forward = train_ulmfit_tokenizer(
        (text for name in ("wiki_train", "imdb_lm") for text in corpora[name]["text"]), vocab_size=args.vocab_size
    )
    backward = backward_tokenizer(forward)
    tokenizer_seconds = time.perf_counter() - start
    example = "This movie was GREAT!!!"
    say(f"  {len(forward):,} tokens; forward reads {forward.convert_ids_to_tokens(forward(example)['input_ids'])}")
    say(f"  backward reads {backward.convert_ids_to_tokens(backward(example)['input_ids'])}")

    results = {
        direction: one_direction(direction, direction_tokenizer, corpora, args)
        for direction, direction_tokenizer in (("forward", forward), ("backward", backward))
    }

    say(f"== evaluation on {len(corpora['imdb_test']):,} held-out IMDb test reviews")
    texts, labels = corpora["imdb_test"]["text"], np.asarray(corpora["imdb_test"]["label"])
    pairs = {direction: (result["model"], result["tokenizer"]) for direction, result in results.items()}
    probabilities = {direction: ensemble_predict([pair], texts) for direction, pair in pairs.items()}
    probabilities["ensemble"] = ensemble_predict(list(pairs.values()), texts)
    metrics = {name: classification_metrics(values, labels) for name, values in probabilities.items()}
    for name, values in metrics.items():
        say(f"  {name:>8s}: accuracy {values['accuracy']:.4f}, macro-F1 {values['macro_f1']:.4f}")

    save_json(
        output / "ensemble_metrics.json",
        {
            "test": metrics,
            "num_test_reviews": len(texts),
            "language_models": {direction: result["record"] for direction, result in results.items()},
            "seconds": {
                "tokenizer": tokenizer_seconds,
                **{direction: result["seconds"] for direction, result in results.items()},
            },
            "folders": {direction: str(result["folder"]) for direction, result in results.items()},
            # What each saved classifier answers on two sentences: reloading the folder must give the same logits.
            "probe_logits": {
                direction: probe_logits(result["model"], result["tokenizer"]) for direction, result in results.items()
            },
            "arguments": asdict(args),
        },
    )
    save_json(
        output / "predictions.json",
        {"labels": labels.tolist(), **{name: values.tolist() for name, values in probabilities.items()}},
    )
    say(f"== metrics in {output / 'ensemble_metrics.json'}, probabilities in {output / 'predictions.json'}")
    state.destroy_process_group()  # gloo can abort at exit otherwise


if __name__ == "__main__":
    main()
