"""A GPT-2-style classifier on IMDb, the ULMFiT way: the language model is first fine-tuned on the task's unlabelled
reviews (causal LM on packed blocks), then `GPT2ForSequenceClassification` is trained from it on labelled reviews
with discriminative learning rates, STLR and gradual unfreezing (`tl_nlp.ULMFiTTrainer`); accuracy and macro-F1 on
held-out test reviews.

Offline there is no GPT-2 checkpoint, so by default (`--model_name_or_path ""`) a small GPT-2 is built from a config
and a byte-level BPE tokenizer (GPT-2's kind) is trained on the reviews; its "fine-tuning" on the reviews is then its
only pretraining. Online, `--model_name_or_path gpt2` (or any GPT-style folder or Hub id: `distilgpt2`,
`openai-community/gpt2-medium`, ...) starts from the real checkpoint and its tokenizer.

GPT-2 has no padding token: the end-of-text token stands in for it (as is usual), and the model is told so
(`config.pad_token_id`), because `GPT2ForSequenceClassification` classifies from the last token that is not padding.
In the language-model stage the blocks are full (no padding at all), so end-of-text tokens between reviews stay
targets the model learns to predict.

Saved under `--output_dir`: `lm_imdb/` (the fine-tuned causal LM with its tokenizer), `classifier/` (the classifier
with its tokenizer and label names), both standard Hugging Face folders, and `metrics.json` (test accuracy and
macro-F1, LM perplexities, seconds, the arguments).

Single process, CPU defaults (a 4-layer, 128-wide GPT-2, 1,000 unlabelled and 1,000 labelled reviews; they show the
mechanics in a few CPU minutes, but a model this small and this briefly trained stays near chance: BENCHMARKS.md):

    python examples/gpt2_classifier.py --data_dir ../shared/data --output_dir runs/gpt2_imdb

Two CPU processes (gloo), or a GPU from the real GPT-2:

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml \
        examples/gpt2_classifier.py --output_dir runs/gpt2_imdb_ddp
    accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/gpt2_classifier.py \
        --model_name_or_path gpt2 --output_dir runs/gpt2_imdb_gpu --lm_reviews 0 --train_reviews 10000 \
        --eval_reviews 0 --max_length 512 --lm_learning_rate 1e-4 --classifier_learning_rate 1e-4

With `--data_dir ""` IMDb comes from the Hub (`stanfordnlp/imdb`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from example_utils import (
    check_positive,
    imdb_subsets,
    probe_logits,
    save_json,
    say,
    start_processes,
    tokenize_classification,
    trainer_metrics,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

from tl_nlp import ClassificationTrainer, ULMFiTTrainer, ULMFiTTrainingArguments, layer_group_summary, layer_groups
from tl_nlp.data import pack_into_blocks, tokenize_for_language_model

END_OF_TEXT = "<|endoftext|>"


@dataclass
class GPT2ExampleArguments:
    model_name_or_path: str = field(
        default="",
        metadata={
            "help": "GPT-style causal LM to start from (folder or Hub id, e.g. gpt2); empty: build a small GPT-2 from "
            "a config and train a byte-level BPE tokenizer on the reviews."
        },
    )
    data_dir: str = field(
        default="../shared/data", metadata={"help": "Folder with imdb/ (offline copy); empty to read the Hub dataset."}
    )
    output_dir: str = field(default="runs/gpt2_imdb", metadata={"help": "Where the two folders and metrics go."})
    vocab_size: int = field(default=8_000, metadata={"help": "BPE vocabulary size of a new tokenizer (>= 300)."})
    n_embd: int = field(default=128, metadata={"help": "Width of a new GPT-2 (divisible by n_head)."})
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks of a new GPT-2."})
    n_head: int = field(default=4, metadata={"help": "Attention heads of a new GPT-2."})
    n_positions: int = field(
        default=512, metadata={"help": "Context length of a new GPT-2 (>= block_size, max_length)."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per language-model block (>= 2)."})
    lm_reviews: int = field(
        default=1_000, metadata={"help": "Unlabelled IMDb reviews for the LM stage (0: all 50,000)."}
    )
    lm_epochs: float = field(default=1.0, metadata={"help": "Epochs over those reviews (> 0)."})
    lm_learning_rate: float = field(
        default=1e-3, metadata={"help": "LM stage peak rate of the top layer group (> 0)."}
    )
    lm_discriminative_lr_decay: float = field(
        default=0.0,
        metadata={
            "help": "LM stage rate decay per layer group (> 0); 0 picks 1.0 for a new model (every layer still has "
            "to learn) and ULMFiT's 2.6 for a pretrained one."
        },
    )
    lm_batch_size: int = field(default=16, metadata={"help": "LM blocks per batch and process."})
    train_reviews: int = field(
        default=1_000, metadata={"help": "Labelled training reviews, balanced (0: all 25,000)."}
    )
    eval_reviews: int = field(
        default=1_000, metadata={"help": "Held-out IMDb test reviews to evaluate on, balanced (0: all 25,000)."}
    )
    max_length: int = field(default=256, metadata={"help": "Classifier input length in tokens; reviews are cut."})
    classifier_epochs: float = field(default=2.0, metadata={"help": "Classifier epochs (> 0)."})
    classifier_learning_rate: float = field(default=1e-3, metadata={"help": "Classifier top-group peak rate (> 0)."})
    discriminative_lr_decay: float = field(
        default=2.6, metadata={"help": "Classifier rate decay per layer group, top down (> 0; 1 turns it off)."}
    )
    unfreeze_over: float = field(
        default=0.35, metadata={"help": "Fraction of the classifier run over which groups are unfrozen, in (0, 1)."}
    )
    classifier_batch_size: int = field(default=16, metadata={"help": "Classifier batch size per process."})
    seed: int = field(default=42, metadata={"help": "Random seed (initialisation, subsets, data order)."})

    def __post_init__(self):
        check_positive(self, ["n_layer", "n_head", "lm_batch_size", "classifier_batch_size"])
        check_positive(self, ["vocab_size"], minimum=300)
        check_positive(self, ["block_size", "max_length"], minimum=2)
        check_positive(self, ["lm_reviews", "train_reviews", "eval_reviews", "lm_discriminative_lr_decay"], minimum=0)
        for name in ("lm_epochs", "lm_learning_rate", "classifier_epochs", "classifier_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if not self.discriminative_lr_decay > 0:
            raise ValueError(f"--discriminative_lr_decay must be > 0, got {self.discriminative_lr_decay}.")
        if self.n_embd < 1 or self.n_embd % self.n_head:
            raise ValueError(f"--n_embd must be a positive multiple of --n_head={self.n_head}, got {self.n_embd}.")
        if not 0 < self.unfreeze_over < 1:
            raise ValueError(f"--unfreeze_over must be in (0, 1), got {self.unfreeze_over}.")
        for name in ("train_reviews", "eval_reviews"):
            if getattr(self, name) % 2:
                raise ValueError(f"--{name} must be even (half of each label), got {getattr(self, name)}.")


def train_byte_level_tokenizer(texts, vocab_size: int) -> GPT2TokenizerFast:
    """A GPT-2-style tokenizer (byte-level BPE, `<|endoftext|>` as its only special token) learnt from `texts`."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable: no unknown tokens
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return GPT2TokenizerFast(
        tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT
    )


def training_arguments(args: GPT2ExampleArguments, name: str, **values) -> ULMFiTTrainingArguments:
    return ULMFiTTrainingArguments(
        output_dir=str(Path(args.output_dir) / "checkpoints" / name),
        seed=args.seed,
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=20,
        report_to=[],
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning means nothing on CPU (and torch warns)
        **values,
    )


def language_model_blocks(texts: datasets.Dataset, tokenizer, block_size: int) -> datasets.Dataset:
    """Reviews joined with end-of-text between them and cut into full blocks, each its own labels (the model
    shifts them). Not `DataCollatorForLanguageModeling`: it would hide every end-of-text target, since that token
    also serves as padding."""
    texts = texts.map(lambda batch: {"text": [text + tokenizer.eos_token for text in batch["text"]]}, batched=True)
    tokenized = tokenize_for_language_model(texts, tokenizer, source="IMDb unlabelled reviews")
    blocks = pack_into_blocks(tokenized, block_size)
    return blocks.map(lambda batch: {"labels": batch["input_ids"]}, batched=True)


def main() -> None:
    (args,) = HfArgumentParser(GPT2ExampleArguments).parse_args_into_dataclasses()
    # Starts the process group under `accelerate launch` before anything else touches torch.distributed.
    state = start_processes()
    if not state.is_main_process:
        datasets.disable_progress_bars()
    set_seed(args.seed)
    output = Path(args.output_dir)
    seconds = {}
    say(f"== {state.num_processes} process(es) on {state.device}; everything is saved under {output}")
    if os.path.sep in args.model_name_or_path and not Path(args.model_name_or_path).is_dir():
        raise SystemExit(f"--model_name_or_path {args.model_name_or_path}: no such folder.")

    say("== data: IMDb")
    # The protocol's 1,000 labelled reviews (a subset of its 10,000) when they are enough.
    labelled_rows = "train_1k" if args.train_reviews <= 1_000 else "train_10k"
    with state.main_process_first():  # the main process fills the datasets cache, the others read it
        corpora = imdb_subsets(
            args.data_dir,
            args.seed,
            {
                "lm_train": ("unsup", "lm_train", args.lm_reviews, False),
                "lm_valid": ("unsup", "lm_valid", min(200, args.lm_reviews or 200), False),
                "train": ("train", labelled_rows, args.train_reviews, True),
                "test": ("test", "test_5k", args.eval_reviews, True),
            },
        )
    for name, dataset in corpora.items():
        say(f"  {name}: {len(dataset):,} reviews")

    start = time.perf_counter()
    if args.model_name_or_path:
        say(f"== model: {args.model_name_or_path}")
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
        context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    else:
        say(f"== tokenizer: byte-level BPE, {args.vocab_size:,} tokens, learnt from the LM reviews")
        tokenizer = train_byte_level_tokenizer(corpora["lm_train"]["text"], args.vocab_size)
        say(f"  e.g. {tokenizer.tokenize('This movie was GREAT!!!')}")
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
            n_positions=args.n_positions,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
        context = args.n_positions
        say(f"== model: a new GPT-2, {args.n_layer} layers x {args.n_embd}, {model.num_parameters():,} parameters")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no padding token; see the module docstring
    model.config.pad_token_id = tokenizer.pad_token_id
    for name in ("block_size", "max_length"):
        if context is not None and getattr(args, name) > context:
            raise ValueError(f"--{name}={getattr(args, name)} exceeds the model's context of {context} tokens.")
    seconds["tokenizer_and_model"] = time.perf_counter() - start

    say("== stage 1: causal-LM fine-tuning on the unlabelled reviews")
    start = time.perf_counter()
    with state.main_process_first():
        lm_train = language_model_blocks(corpora["lm_train"], tokenizer, args.block_size)
        lm_valid = language_model_blocks(corpora["lm_valid"], tokenizer, args.block_size)
    say(f"  {len(lm_train):,} training blocks, {len(lm_valid):,} validation blocks of {args.block_size} tokens")
    lm_decay = args.lm_discriminative_lr_decay or (2.6 if args.model_name_or_path else 1.0)
    lm_trainer = ULMFiTTrainer(
        model=model,
        args=training_arguments(
            args,
            "lm",
            num_train_epochs=args.lm_epochs,
            learning_rate=args.lm_learning_rate,
            discriminative_lr_decay=lm_decay,
            gradual_unfreezing=False,
            per_device_train_batch_size=args.lm_batch_size,
            per_device_eval_batch_size=args.lm_batch_size,
        ),
        train_dataset=lm_train,
        eval_dataset=lm_valid,
        data_collator=default_data_collator,
    )
    perplexity_before = math.exp(lm_trainer.evaluate()["eval_loss"])
    lm_trainer.train()
    perplexity_after = math.exp(lm_trainer.evaluate()["eval_loss"])
    lm_folder = output / "lm_imdb"
    lm_trainer.save_model(str(lm_folder))
    if state.is_main_process:
        tokenizer.save_pretrained(lm_folder)
    state.wait_for_everyone()  # stage 2 reads the folder on every process
    seconds["lm"] = time.perf_counter() - start
    say(f"  validation perplexity {perplexity_before:.1f} -> {perplexity_after:.1f}; saved to {lm_folder}")

    say(f"== stage 2: classifier on {len(corpora['train']):,} labelled reviews")
    start = time.perf_counter()
    with state.main_process_first():
        train, id2label, label2id = tokenize_classification(
            corpora["train"], tokenizer, "text", args.max_length, "train"
        )
        test, _, _ = tokenize_classification(corpora["test"], tokenizer, "text", args.max_length, "test")
    classifier = AutoModelForSequenceClassification.from_pretrained(
        lm_folder, num_labels=len(id2label), id2label=id2label, label2id=label2id
    )
    num_groups = len(layer_groups(classifier))
    # Stage k (one more group trainable) begins at k / (groups - 1) of `unfreeze_over`; every group trains after.
    fractions = [args.unfreeze_over * stage / (num_groups - 1) for stage in range(1, num_groups)]
    trainer = ClassificationTrainer(
        model=classifier,
        args=training_arguments(
            args,
            "classifier",
            num_train_epochs=args.classifier_epochs,
            learning_rate=args.classifier_learning_rate,
            discriminative_lr_decay=args.discriminative_lr_decay,
            unfreeze_at_fractions=fractions,
            per_device_train_batch_size=args.classifier_batch_size,
            per_device_eval_batch_size=2 * args.classifier_batch_size,
        ),
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=trainer_metrics,
    )
    say(layer_group_summary(classifier, num_trainable_groups=1))  # as the first step sees them
    say("  one more group unfrozen at " + ", ".join(f"{fraction:.0%}" for fraction in fractions) + " of the steps")
    trainer.train()
    seconds["classifier"] = time.perf_counter() - start

    say(f"== evaluation on {len(test):,} held-out IMDb test reviews")
    start = time.perf_counter()
    metrics = trainer.evaluate()
    seconds["evaluate"] = time.perf_counter() - start
    say(f"  accuracy {metrics['eval_accuracy']:.4f}, macro-F1 {metrics['eval_macro_f1']:.4f}")
    folder = output / "classifier"
    trainer.save_model(str(folder))
    if state.is_main_process:
        tokenizer.save_pretrained(folder)
    save_json(
        output / "metrics.json",
        {
            "test": metrics,
            "num_test_reviews": len(test),
            "num_train_reviews": len(train),
            "lm": {
                "perplexity_before": perplexity_before,
                "perplexity_after": perplexity_after,
                "train_blocks": len(lm_train),
                "block_size": args.block_size,
            },
            "seconds": seconds,
            # What the saved classifier answers on two sentences: reloading the folder must give the same logits.
            "probe_logits": probe_logits(classifier, tokenizer),
            "arguments": asdict(args),
        },
    )
    say(f"== saved to {lm_folder} and {folder}; metrics in {output / 'metrics.json'}")
    state.destroy_process_group()  # gloo can abort at exit otherwise


if __name__ == "__main__":
    main()
