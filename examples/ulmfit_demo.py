"""ULMFiT end to end on real data, small enough for a laptop CPU: the README's main command (`make demo`).

1. A general-domain AWD-LSTM language model trained on WikiText-2.
2. That language model fine-tuned on unlabelled IMDb reviews (discriminative learning rates, STLR).
3. A classifier built from the fine-tuned encoder, trained on a few hundred labelled reviews with gradual
   unfreezing, discriminative learning rates and STLR, then evaluated on held-out reviews.
Each stage is one call of the recipe API (`tl_nlp.recipe`) and saves a standard Hugging Face folder under
`--output_dir`; the last one is used through `pipeline("text-classification")`. The same recipe from the shell:
`tl-nlp ulmfit --config examples/configs/ulmfit_awd_lstm_cpu_demo.yaml`.

Single process (what `make demo` runs):

    python examples/ulmfit_demo.py --data_dir ../shared/data --output_dir runs/demo_awd_lstm

Two CPU processes, or several GPUs:

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml examples/ulmfit_demo.py
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/ulmfit_demo.py --data_dir ""

With `--data_dir ""` (or a folder without the files) the data come from the Hub (`Salesforce/wikitext`,
`stanfordnlp/imdb`), for users who are online.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from safetensors import safe_open
from transformers import HfArgumentParser, pipeline, set_seed

from tl_nlp import load_text_dataset, train_ulmfit_tokenizer
from tl_nlp.recipe import finetune_language_model, pretrain_language_model, train_classifier


@dataclass
class DemoArguments:
    data_dir: str = field(
        default="../shared/data",
        metadata={"help": "Folder with wikitext-2/ and imdb/ (offline copies); empty to read the Hub datasets."},
    )
    output_dir: str = field(
        default="runs/demo_awd_lstm", metadata={"help": "Where the three stages save their folders."}
    )
    vocab_size: int = field(default=12_000, metadata={"help": "Word vocabulary size, special tokens included."})
    embedding_size: int = field(default=200, metadata={"help": "AWD-LSTM embedding size (the paper: 400)."})
    hidden_size: int = field(default=400, metadata={"help": "AWD-LSTM hidden size (the paper: 1152)."})
    num_hidden_layers: int = field(default=3, metadata={"help": "LSTM layers."})
    bptt: int = field(default=70, metadata={"help": "Language-model window length."})
    lm_batch_size: int = field(default=32, metadata={"help": "Parallel streams in language-model training."})
    pretrain_epochs: float = field(default=0.4, metadata={"help": "Epochs over WikiText-2 in stage 1."})
    finetune_reviews: int = field(default=2_000, metadata={"help": "Unlabelled IMDb reviews for stage 2."})
    finetune_epochs: float = field(default=1.0, metadata={"help": "Epochs over those reviews in stage 2."})
    train_reviews: int = field(default=400, metadata={"help": "Labelled reviews for the classifier (balanced)."})
    eval_reviews: int = field(default=1_000, metadata={"help": "Held-out test reviews to evaluate on (balanced)."})
    classifier_epochs: int = field(
        default=6, metadata={"help": "Classifier epochs: one more layer group unfrozen at each (then all train)."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed."})

    def __post_init__(self):
        for name in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "bptt",
            "lm_batch_size",
            "finetune_reviews",
            "train_reviews",
            "eval_reviews",
            "classifier_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


def load_corpora(args: DemoArguments) -> dict[str, datasets.Dataset]:
    """WikiText-2 (train, valid) and the IMDb rows of the small protocol, from `data_dir` or from the Hub."""
    root = Path(args.data_dir) if args.data_dir else None
    if root is not None and (root / "wikitext-2" / "train.txt").is_file():
        wiki = {split: load_text_dataset(str(root / "wikitext-2" / f"{split}.txt")) for split in ("train", "valid")}
        imdb = {
            split: load_text_dataset(str(root / "imdb" / f"{split}.parquet")) for split in ("train", "test", "unsup")
        }
        protocol = json.loads((root / "imdb" / "small_protocol.json").read_text())
    else:
        print("  no local copies: reading Salesforce/wikitext and stanfordnlp/imdb from the Hub")
        wiki = {
            "train": load_text_dataset("Salesforce/wikitext", split="train", name="wikitext-2-v1"),
            "valid": load_text_dataset("Salesforce/wikitext", split="validation", name="wikitext-2-v1"),
        }
        imdb = {split: load_text_dataset("stanfordnlp/imdb", split=split) for split in ("train", "test", "unsup")}
        protocol = None
    rng = random.Random(args.seed)

    def rows(split: str, key: str, count: int, balanced: bool) -> datasets.Dataset:
        if protocol:
            indices = protocol[key]["rows"]  # the fixed rows of the small protocol (see imdb/small_protocol.json)
        else:
            indices = rng.sample(range(len(imdb[split])), min(len(imdb[split]), 4 * count))
        subset = imdb[split].select(indices)
        if not balanced:
            return subset.select(range(min(count, len(subset))))
        per_label = {0: [], 1: []}
        for index, label in enumerate(subset["label"]):
            if len(per_label[label]) < count // 2:
                per_label[label].append(index)
        chosen = per_label[0] + per_label[1]
        rng.shuffle(chosen)
        return subset.select(chosen)

    return {
        "wiki_train": wiki["train"],
        "wiki_valid": wiki["valid"],
        "imdb_lm": rows("unsup", "lm_train", args.finetune_reviews, balanced=False),
        "imdb_lm_valid": rows("unsup", "lm_valid", 500, balanced=False),
        "imdb_train": rows("train", "train_1k", args.train_reviews, balanced=True),
        "imdb_test": rows("test", "test_5k", args.eval_reviews, balanced=True),
    }


def training_arguments(args: DemoArguments, stage: str, **values) -> dict:
    """The stage's training options (the recipe's stage defaults fill in the rest: no checkpoints, tqdm bars). A
    demo run replaces the folders of the previous one (`overwrite_output_dir`)."""
    return dict(
        output_dir=str(Path(args.output_dir) / "checkpoints" / stage),
        seed=args.seed,
        overwrite_output_dir=True,
        **values,
    )


def parameter_count(folder: Path) -> int:
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    set_seed(args.seed)
    output = Path(args.output_dir)
    timings = {}

    print("== data")
    corpora = load_corpora(args)
    for name, dataset in corpora.items():
        print(f"  {name}: {len(dataset):,} rows")

    print("== tokenizer: ULMFiT rules + word vocabulary from WikiText-2 and the IMDb reviews of stage 2")
    start = time.perf_counter()
    tokenizer = train_ulmfit_tokenizer(
        (text for name in ("wiki_train", "imdb_lm") for text in corpora[name]["text"]), vocab_size=args.vocab_size
    )
    timings["tokenizer"] = time.perf_counter() - start
    print(f"  {len(tokenizer):,} tokens; e.g. {tokenizer.tokenize('This movie was GREAT!!!')}")

    print("== stage 1: general-domain language model on WikiText-2")
    start = time.perf_counter()
    # Stage 1 trains every layer at one rate (the recipe's pretrain defaults); stage 2 (ULMFiT's LM fine-tuning)
    # uses discriminative rates and STLR. The learning rates are the recipe's stage defaults for AWD-LSTM (3e-3,
    # 2e-3, 1e-2: tl_nlp.recipe.config).
    stage1 = pretrain_language_model(
        corpora["wiki_train"],
        output / "lm_wikitext2",
        eval_data=corpora["wiki_valid"],
        tokenizer=tokenizer,
        model_config=dict(
            embedding_size=args.embedding_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers
        ),
        bptt=args.bptt,
        training_args=training_arguments(
            args,
            "lm_wikitext2",
            num_train_epochs=args.pretrain_epochs,
            dataset_name="Salesforce/wikitext",  # the local copies are these datasets, in their Hub schemas
            dataset_split="train (wikitext-2-v1)",
            per_device_train_batch_size=args.lm_batch_size,
        ),
    )
    timings["pretrain"] = time.perf_counter() - start
    print(f"  {parameter_count(stage1.output_dir):,} parameters")
    print(
        f"  WikiText-2 validation perplexity: {stage1['eval_perplexity_before']:.0f} before training, "
        f"{stage1['eval_perplexity']:.1f} after; saved to {stage1.output_dir}"
    )

    print("== stage 2: fine-tune the language model on IMDb reviews")
    start = time.perf_counter()
    stage2 = finetune_language_model(
        str(stage1.output_dir),
        corpora["imdb_lm"],
        output / "lm_imdb",
        eval_data=corpora["imdb_lm_valid"],
        bptt=args.bptt,
        training_args=training_arguments(
            args,
            "lm_imdb",
            num_train_epochs=args.finetune_epochs,
            dataset_name="stanfordnlp/imdb",
            dataset_split="unsupervised",
            per_device_train_batch_size=args.lm_batch_size,
        ),
    )
    timings["finetune"] = time.perf_counter() - start
    print(
        f"  IMDb validation perplexity: {stage2['eval_perplexity_before']:.1f} with the WikiText-2 model, "
        f"{stage2['eval_perplexity']:.1f} after fine-tuning; saved to {stage2.output_dir}"
    )

    print(f"== stage 3: classifier from the fine-tuned encoder, {len(corpora['imdb_train'])} labelled reviews")
    start = time.perf_counter()
    # IMDb labels are 0 (negative) and 1 (positive); the names travel with the model's config.
    stage3 = train_classifier(
        str(stage2.output_dir),
        corpora["imdb_train"],
        output / "classifier",
        eval_data=corpora["imdb_test"],
        label_names=["negative", "positive"],
        training_args=training_arguments(
            args,
            "classifier",
            num_train_epochs=args.classifier_epochs,
            dataset_name="stanfordnlp/imdb",
            dataset_split="train",
        ),
    )
    timings["classifier"] = time.perf_counter() - start
    # Under `accelerate launch` every process trained; one writes the summary and runs the pipeline.
    main_process = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    metrics = {name: value for name, value in stage3.metrics.items() if name.startswith("eval_")}
    print(
        f"  accuracy on {len(corpora['imdb_test'])} held-out IMDb test reviews: {metrics['eval_accuracy']:.3f} "
        f"(macro-F1 {metrics['eval_macro_f1']:.3f})"
    )
    if main_process:
        (stage3.output_dir / "demo_metrics.json").write_text(
            json.dumps({"eval": metrics, "seconds": timings, "arguments": asdict(args)}, indent=2)
        )
        print(f"  saved to {stage3.output_dir}")

        print("== pipeline('text-classification') on the saved folder")
        classify = pipeline("text-classification", model=str(stage3.output_dir), device="cpu")
        for text in (
            "One of the best films I have seen in years, moving and funny.",
            "A dull, badly acted mess; I wanted my two hours back.",
        ):
            prediction = classify(text)[0]
            print(f"  {prediction['label']:>8s} {prediction['score']:.2f}  {text}")
        print("== seconds per stage: " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # under accelerate launch: gloo can abort at exit otherwise
    if math.isnan(metrics["eval_loss"]):
        raise SystemExit("the classifier's loss is NaN")


if __name__ == "__main__":
    main()
