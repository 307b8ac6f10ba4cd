"""ULMFiT's sample efficiency on IMDb: classifiers from a fine-tuned LM against the same classifier from scratch.

A protocol around the recipe: stages 1 and 2 are `tl_nlp.recipe.train_language_model` with the recipe's stage
arguments (`PretrainTrainingArguments`, `FinetuneTrainingArguments`, their default rates), and every classifier is
`tl_nlp.recipe.prepare_classifier` with `ClassifierTrainingArguments`; this script adds only the data protocol, the
grids, the fastai comparison and the report.

The paper's headline (Howard & Ruder 2018, figure 3): with ULMFiT, 100 labelled examples match training from scratch
on 10 to 100 times more. The protocol here, on the fixed rows of `../shared/data/imdb/small_protocol.json`:

1. A general-domain AWD-LSTM language model trained on WikiText-2 (train split), with a word vocabulary learnt
   from WikiText-2 and the LM-fine-tuning reviews.
2. That LM fine-tuned on unlabelled IMDb reviews (`lm_train` rows of unsup; discriminative rates, STLR).
   Stages 1 and 2 run once and are cached under `--output_dir` (delete the folders to retrain); either can be
   copied in from an earlier run (`--language_models_from`, `--stage1_from`).
3. For each number of labels (100, 1,000, 10,000: the first 50 of each class of `train_1k` in protocol order,
   `train_1k`, `train_10k`), two classifiers of the same architecture, on the same labels, with the same epochs,
   batch size and no gradient clipping (as fastai's `fit_one_cycle`):
   - `ulmfit`: encoder from stage 2, gradual unfreezing, discriminative rates (decay 2.6), one STLR triangle per
     unfreezing stage (`stlr_per_stage`, as fastai's one cycle per stage);
   - `scratch`: random initialisation, every layer trained from the first step at one rate, one STLR triangle.
   Each classifier gets its own small grid of peak rate x dropout multiplier (`--ulmfit_learning_rates` x
   `--ulmfit_dropout_multipliers`, `--scratch_learning_rates` x `--scratch_dropout_multipliers`) at `--grid_labels`
   labels, chosen on `clas_valid` accuracy (never on test); the other sizes reuse each choice.
   Both are evaluated on `test_5k` (balanced, 5,000 test reviews; the `gpu` preset uses all 25,000) and on
   `clas_valid` (500 held-out training reviews). Reviews are cut to their first `max_tokens` tokens (preset).
4. With `--fastai_python`, the same classifiers with fastai 2.8's own API (`benchmarks/sample_efficiency_fastai.py`
   run in that venv as a subprocess): the same token ids, the same stage-2 encoder weights for `ulmfit`, the same
   epochs, batch size, peak rates, unfreezing points and dropouts, fastai's `fit_one_cycle` per unfreezing stage.
   fastai's LM stages are not run: both implementations start from our stage-2 LM.
5. Diagnostic ablation, `--ulmfit_without`: the ULMFiT classifier with gradual unfreezing and/or discriminative rates
   taken out (results named `ulmfit_without_<technique>`, out of the plot). Without both it trains exactly like
   `scratch` from the stage-2 weights (named `lm_init`): what the LM's weights alone are worth.

Everything (accuracy, wall time and tokens/s of each stage) goes to `<output_dir>/results.json`, rewritten after
every run, and the plot of accuracy against labels to `<output_dir>/sample_efficiency.png`.

    .venv/bin/python benchmarks/bench_sample_efficiency.py --preset tiny    # smoke check, a few minutes
    .venv/bin/python benchmarks/bench_sample_efficiency.py --preset cpu --fastai_python .fastai-venv/bin/python \
        --language_models_from runs/demo_awd_lstm   # reuse `make demo-awd-lstm`'s LM stages (same sizes); omit to train them here
    .venv/bin/python benchmarks/bench_sample_efficiency.py --preset cpu --stage1_from runs/demo_awd_lstm/lm_wikitext2 \
        --finetune_reviews 6000 --finetune_learning_rate 5e-3 --output_dir runs/se_cpu_lm6k   # a stronger stage 2
    python benchmarks/bench_sample_efficiency.py --preset gpu --fastai_python PATH   # full sizes, on a GPU
"""

from __future__ import annotations

import filecmp
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import HfArgumentParser, set_seed

from tl_nlp import (
    AWDLSTMConfig,
    AWDLSTMForCausalLM,
    ClassificationTrainer,
    LanguageModelStreams,
    ULMFiTTokenizerFast,
    load_text_dataset,
    stream_perplexity,
    tokenize_dataset,
    tokenize_for_language_model,
    train_ulmfit_tokenizer,
)
from tl_nlp.models.awd_lstm.configuration_awd_lstm import FASTAI_DROPOUTS
from tl_nlp.recipe import (
    ClassifierTrainingArguments,
    FinetuneTrainingArguments,
    PretrainTrainingArguments,
    prepare_classifier,
    train_language_model,
)
from tl_nlp.recipe.evaluation import classification_tokenizer
from tl_nlp.training.training_record import TRAINING_RECORD_FILE

FASTAI_WORKER = Path(__file__).with_name("sample_efficiency_fastai.py")
ABLATIONS = ("gradual_unfreezing", "discriminative_lr")  # what --ulmfit_without can take out
LABEL_NAMES = ["negative", "positive"]

# Every size of a run. `cpu` is sized for 2 CPU cores shared with other jobs (its run took 45 minutes as 4 processes,
# BENCHMARKS.md): the LM stages of `examples/ulmfit_demo.py` (same sizes, data and rates, so its folders can seed the
# cache with --language_models_from) and the first 256 tokens of each review; `gpu` is the paper's model size with
# whole reviews and the full test set.
PRESETS: dict[str, dict] = {
    # Seconds: checks that the whole protocol runs (tests/test_gpu_awd_lstm.py), measures nothing.
    "smoke": dict(
        vocab_size=300,
        embedding_size=16,
        hidden_size=24,
        num_hidden_layers=3,
        pretrain_epochs=0.002,
        finetune_reviews=40,
        finetune_epochs=1.0,
        label_counts=[100],
        classifier_epochs=[1],
        max_tokens=32,
        test_reviews=64,
        batch_size=32,
    ),
    "tiny": dict(
        vocab_size=4_000,
        embedding_size=64,
        hidden_size=128,
        num_hidden_layers=3,
        pretrain_epochs=0.02,
        finetune_reviews=300,
        finetune_epochs=1.0,
        label_counts=[100, 1_000],
        classifier_epochs=[4, 2],
        max_tokens=64,
        test_reviews=500,
        batch_size=32,
    ),
    "cpu": dict(
        vocab_size=12_000,
        embedding_size=200,
        hidden_size=400,
        num_hidden_layers=3,
        pretrain_epochs=0.4,
        finetune_reviews=2_000,
        finetune_epochs=1.0,
        label_counts=[100, 1_000, 10_000],
        classifier_epochs=[20, 4, 1],
        max_tokens=256,
        test_reviews=5_000,
        batch_size=32,
    ),
    # What fits one call of benchmarks/gpu_awd_lstm.py (about 6 minutes of an H100 after the throughput runs): the
    # paper's model sizes, shorter LM stages than `gpu`, first 512 tokens, the protocol's test_5k.
    "gpu_short": dict(
        vocab_size=30_000,
        embedding_size=400,
        hidden_size=1152,
        num_hidden_layers=3,
        pretrain_epochs=4.0,
        finetune_reviews=8_000,
        finetune_epochs=3.0,
        label_counts=[100, 1_000, 10_000],
        classifier_epochs=[20, 8, 3],
        max_tokens=512,
        test_reviews=5_000,
        batch_size=64,
    ),
    "gpu": dict(
        vocab_size=60_000,
        embedding_size=400,
        hidden_size=1152,
        num_hidden_layers=3,
        pretrain_epochs=15.0,
        finetune_reviews=8_000,
        finetune_epochs=10.0,
        label_counts=[100, 1_000, 10_000],
        classifier_epochs=[40, 15, 6],
        max_tokens=0,
        test_reviews=25_000,
        batch_size=64,
    ),
}


@dataclass
class SampleEfficiencyArguments:
    preset: str = field(default="cpu", metadata={"help": f"Sizes of the run: one of {sorted(PRESETS)}."})
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with wikitext-2/ and imdb/."})
    output_dir: str = field(
        default="",
        metadata={"help": "Where the LMs, results.json and the plot go (default runs/sample_efficiency/PRESET)."},
    )
    fastai_python: str = field(
        default="", metadata={"help": "Python of a venv with fastai 2.8 (e.g. .fastai-venv/bin/python); empty: skip."}
    )
    label_counts: list[int] | None = field(
        default=None,
        metadata={"help": "Train only these of the preset's label counts (e.g. in another process; default: all)."},
    )
    fastai_label_counts: list[int] | None = field(
        default=None, metadata={"help": "Label counts to run with fastai (default: all of the preset's)."}
    )
    tl_nlp_classifiers: bool = field(
        default=True,
        metadata={
            "help": "Train the tl_nlp classifiers; --tl_nlp_classifiers false runs only fastai's (e.g. in a second "
            "process next to the first, once stage 2 is cached; give it another --results_file)."
        },
    )
    results_file: str = field(
        default="results.json",
        metadata={"help": "File name (in output_dir) for this process's results; the plot reads every results*.json."},
    )
    implementations: list[str] = field(
        default_factory=lambda: ["ulmfit", "scratch"], metadata={"help": "Classifiers to train: ulmfit, scratch."}
    )
    ulmfit_learning_rates: list[float] = field(
        default_factory=lambda: [1e-2, 3e-3],
        metadata={
            "help": "Peak rates (top layer group) tried for the ULMFiT classifier at --grid_labels labels; the one "
            "with the best clas_valid accuracy (never test) trains every other size. One value: no grid."
        },
    )
    ulmfit_dropout_multipliers: list[float] = field(
        default_factory=lambda: [1.0, 0.5],
        metadata={
            "help": "Dropout multipliers (every AWD-LSTM dropout times this) tried with each rate of "
            "--ulmfit_learning_rates for the ULMFiT classifier."
        },
    )
    scratch_learning_rates: list[float] = field(
        default_factory=lambda: [1e-2, 3e-3],
        metadata={"help": "Peak rates tried for the from-scratch classifier (as --ulmfit_learning_rates)."},
    )
    scratch_dropout_multipliers: list[float] = field(
        default_factory=lambda: [1.0, 0.2],
        metadata={"help": "Dropout multipliers tried with each rate of --scratch_learning_rates."},
    )
    grid_labels: int = field(
        default=1_000,
        metadata={
            "help": "Label count (one of the preset's) at which each classifier's rate x dropout grid runs on "
            "clas_valid; the other label counts reuse its choice."
        },
    )
    max_grad_norm: float = field(
        default=0.0,
        metadata={"help": "Gradient clipping of the tl_nlp classifiers (0: none, as fastai's fit_one_cycle)."},
    )
    stlr_per_stage: bool = field(
        default=True,
        metadata={
            "help": "ULMFiT classifiers: restart the STLR triangle at each unfreezing stage (as fastai's one "
            "fit_one_cycle per stage); false: one triangle over the whole run."
        },
    )
    ulmfit_without: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Diagnostic: ULMFiT techniques (gradual_unfreezing, discriminative_lr) taken out of the ULMFiT "
            "classifier; results named ulmfit_without_<technique> and kept out of the plot. Both: the classifier "
            "initialised from the stage-2 LM trains exactly like the from-scratch one (named lm_init)."
        },
    )
    finetune_reviews: int = field(
        default=0, metadata={"help": "Stage 2 on the first N `lm_train` reviews instead of the preset's (0: preset)."}
    )
    finetune_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak rate of stage 2 (LM fine-tuning); default: the recipe's "
            f"({FinetuneTrainingArguments.LEARNING_RATES['awd_lstm']})."
        },
    )
    stage1_from: str = field(
        default="",
        metadata={
            "help": "Folder of a stage-1 LM with this preset's sizes (e.g. `make demo-awd-lstm`'s runs/demo_awd_lstm/lm_wikitext2): "
            "copied in (its tokenizer too) and fine-tuned here as stage 2; --language_models_from copies both."
        },
    )
    language_models_from: str = field(
        default="",
        metadata={
            "help": "Folder with lm_wikitext2/ and lm_imdb/ trained with this preset's sizes and stages (e.g. "
            "examples/ulmfit_demo.py's output for `cpu`): copied into output_dir instead of training stages 1-2."
        },
    )
    unfreeze_at_fractions: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4],
        metadata={"help": "ULMFiT classifiers: one more layer group (of 5) trains from each of these step fractions."},
    )
    bptt: int = field(default=70, metadata={"help": "Language-model window length."})
    lm_batch_size: int = field(default=32, metadata={"help": "Parallel streams in language-model training."})
    threads: int = field(
        default=1,
        metadata={
            "help": "torch threads (CPU). 1 by default: on 2 cores shared with other jobs, 2 threads ran a training "
            "step about 10x slower than 1 (threads waiting for each other); use the core count on a quiet machine."
        },
    )
    seed: int = field(default=42, metadata={"help": "Random seed (initialisations, data order)."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        unknown = set(self.implementations) - {"ulmfit", "scratch"}
        if not self.implementations or unknown:
            raise ValueError(f"--implementations takes ulmfit and/or scratch, got {self.implementations}")
        for kind in ("ulmfit", "scratch"):
            rates, drops = f"{kind}_learning_rates", f"{kind}_dropout_multipliers"
            if not getattr(self, rates) or any(not rate > 0 for rate in getattr(self, rates)):
                raise ValueError(f"--{rates} must be rates > 0, got {getattr(self, rates)}")
            if not getattr(self, drops) or any(not 0 <= m < 2 for m in getattr(self, drops)):
                raise ValueError(f"--{drops} must be in [0, 2), got {getattr(self, drops)}")
        if self.grid_labels not in self.sizes["label_counts"]:
            raise ValueError(
                f"--grid_labels must be one of the preset's {self.sizes['label_counts']}, got {self.grid_labels}"
            )
        if self.max_grad_norm < 0:
            raise ValueError(f"--max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        if self.language_models_from and not all(
            (Path(self.language_models_from) / name / "model.safetensors").is_file()
            for name in ("lm_wikitext2", "lm_imdb")
        ):
            raise ValueError(
                f"--language_models_from {self.language_models_from} must hold lm_wikitext2/ and lm_imdb/ model "
                "folders (e.g. runs/demo_awd_lstm after `make demo-awd-lstm`)"
            )
        for name in ("bptt", "lm_batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_reviews < 0 or (
            self.finetune_learning_rate is not None and not self.finetune_learning_rate > 0
        ):
            raise ValueError(
                f"--finetune_reviews must be >= 0 and --finetune_learning_rate > 0, got {self.finetune_reviews} and "
                f"{self.finetune_learning_rate}"
            )
        if self.stage1_from and not (Path(self.stage1_from) / "model.safetensors").is_file():
            raise ValueError(
                f"--stage1_from {self.stage1_from} must be a model folder (e.g. runs/demo_awd_lstm/lm_wikitext2)"
            )
        if self.language_models_from and self.stage_two_options:
            raise ValueError(
                f"{', '.join('--' + name for name in self.stage_two_options)} set how the stages are made here and "
                "--language_models_from copies both made elsewhere: give one or the other, not both"
            )
        if self.fastai_python and not Path(self.fastai_python).is_file():
            raise ValueError(
                f"--fastai_python {self.fastai_python} does not exist (bash scripts/build_fastai_env.sh builds it)"
            )
        if not self.tl_nlp_classifiers:
            for kind in self.implementations:
                if len(self.grid(kind)) > 1:
                    raise ValueError(
                        f"--tl_nlp_classifiers false runs no grid: give one --{kind}_learning_rates and one "
                        f"--{kind}_dropout_multipliers (the setting tl_nlp's grid chose), got {self.grid(kind)}"
                    )
        unknown = set(self.ulmfit_without) - set(ABLATIONS)
        if unknown:
            raise ValueError(f"--ulmfit_without takes {' and/or '.join(ABLATIONS)}, got {sorted(unknown)}")
        if self.fastai_python and self.ulmfit_without and "ulmfit" in self.implementations:
            raise ValueError("--ulmfit_without has no fastai counterpart: drop --fastai_python")
        for name in ("label_counts", "fastai_label_counts"):
            unknown = set(getattr(self, name) or []) - set(self.sizes["label_counts"])
            if unknown:
                raise ValueError(
                    f"--{name} must be among the preset's {self.sizes['label_counts']}, got {sorted(unknown)}"
                )
        if not self.output_dir:
            self.output_dir = f"runs/sample_efficiency/{self.preset}"

    @property
    def sizes(self) -> dict:
        return PRESETS[self.preset]

    @property
    def stage_two_options(self) -> dict:
        """The options given that change how stages 1 and 2 are made here (recorded with them, checked on reuse)."""
        options = {name: getattr(self, name) for name in ("stage1_from", "finetune_reviews", "finetune_learning_rate")}
        return {name: value for name, value in options.items() if value}

    def grid(self, kind: str) -> list[tuple[float, float]]:
        """The (peak rate, dropout multiplier) settings tried for the `ulmfit` or `scratch` classifier."""
        rates, drops = getattr(self, f"{kind}_learning_rates"), getattr(self, f"{kind}_dropout_multipliers")
        return [(rate, drop) for drop in drops for rate in rates]


def protocol_rows(data_dir: Path) -> dict[str, list[int]]:
    """The fixed rows of the small protocol, plus `train_100`: the first 50 reviews of each class of `train_1k`."""
    protocol = json.loads((data_dir / "imdb" / "small_protocol.json").read_text())
    rows = {key: value["rows"] for key, value in protocol.items() if isinstance(value, dict)}
    labels = load_text_dataset(str(data_dir / "imdb" / "train.parquet"))["label"]
    per_class: dict[int, list[int]] = {0: [], 1: []}
    for row in rows["train_1k"]:
        if len(per_class[labels[row]]) < 50:
            per_class[labels[row]].append(row)
    rows["train_100"] = per_class[0] + per_class[1]
    return rows


def labelled_subset(label_count: int) -> str:
    return {100: "train_100", 1_000: "train_1k", 10_000: "train_10k"}[label_count]


def general_options(args: SampleEfficiencyArguments, name: str) -> dict:
    """What every stage of the protocol sets beyond the recipe's stage defaults: its checkpoint folder, the seed and
    quieter logging."""
    return dict(
        output_dir=str(Path(args.output_dir) / "checkpoints" / name),
        seed=args.seed,
        logging_steps=50,
        disable_tqdm=True,
    )


def language_model_stage(
    stage: str, train_texts, valid_texts, args: SampleEfficiencyArguments, folder: Path, epochs: float, **options
) -> dict:
    """ULMFiT stage 1 or 2 through the recipe (`train_language_model`: carried-state streams, the stage's default
    rates unless `--finetune_learning_rate`), saved in `folder`; returns a record: validation perplexity before and
    after, training tokens, seconds and tokens/s."""
    start = time.perf_counter()
    arguments_class = PretrainTrainingArguments if stage == "pretrain" else FinetuneTrainingArguments
    training = arguments_class(
        **general_options(args, folder.name),
        num_train_epochs=epochs,
        per_device_train_batch_size=args.lm_batch_size,
        learning_rate=args.finetune_learning_rate if stage == "finetune" else None,
        dataset_name="WikiText-2 train" if stage == "pretrain" else "IMDb unsup, lm_train rows of small_protocol.json",
    )
    result = train_language_model(
        train_texts, folder, eval_data=valid_texts, training_args=training, stage=stage, bptt=args.bptt, **options
    )
    steps = json.loads((folder / TRAINING_RECORD_FILE).read_text())["stages"][-1]["num_train_steps"]
    tokens = steps * args.lm_batch_size * args.bptt
    record = {
        "valid_perplexity_before": result["eval_perplexity_before"],
        "valid_perplexity_after": result["eval_perplexity"],
        "train_tokens": tokens,
        "train_seconds": result["train_runtime"],
        "train_tokens_per_s": tokens / result["train_runtime"],
        "seconds": time.perf_counter() - start,
    }
    (folder / "stage_record.json").write_text(json.dumps(record, indent=2))
    return record


def copy_folder_once(source: Path, destination: Path) -> None:
    """Copies `source` to `destination` unless it is already there. The copy goes to a temporary folder renamed into
    place, so a process started next to this one on the same `--output_dir` never sees a half-copied folder, and a
    folder that exists is never rewritten (its weights may be memory-mapped by that other process); one holding other
    weights than `source` is an error."""
    if destination.exists():
        weights = [folder / "model.safetensors" for folder in (source, destination)]
        if not (weights[1].is_file() and filecmp.cmp(*weights, shallow=False)):
            raise SystemExit(
                f"{destination} exists and its model.safetensors is not {weights[0]}'s: delete it or choose "
                "another --output_dir"
            )
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    try:
        staging.rename(destination)
    except OSError:  # another process put it there first
        shutil.rmtree(staging)


def check_preset_sizes(folder: Path, args: SampleEfficiencyArguments, option: str) -> None:
    """Stops with a one-line error if the LM in `folder` (given by `option`) does not have the preset's sizes."""
    config = AWDLSTMConfig.from_pretrained(folder)
    for key in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers"):
        if getattr(config, key) != args.sizes[key]:
            raise SystemExit(
                f"{folder / 'config.json'}: {key} is {getattr(config, key)}, the preset {args.preset!r} has "
                f"{args.sizes[key]}; train the stages here (drop {option})"
            )


def seed_language_models(args: SampleEfficiencyArguments, output: Path, corpora: dict) -> dict:
    """Copies `--language_models_from`'s two LM folders into `output` (checking that their sizes are the preset's)
    and returns their stage records: validation perplexities now, training tokens from the preset's epochs and, when
    the folder is `examples/ulmfit_demo.py`'s, the stages' seconds from its `classifier/demo_metrics.json`."""
    source = Path(args.language_models_from)
    check_preset_sizes(source / "lm_imdb", args, "--language_models_from")
    demo_metrics = source / "classifier" / "demo_metrics.json"
    seconds = json.loads(demo_metrics.read_text())["seconds"] if demo_metrics.is_file() else {}
    tokenizer = ULMFiTTokenizerFast.from_pretrained(source / "lm_imdb")
    stages: dict = {"copied_from": str(source), "vocab_size": len(tokenizer)}
    for stage, folder, train_key, valid_key, epochs in (
        ("pretrain", "lm_wikitext2", "wiki_train", "wiki_valid", args.sizes["pretrain_epochs"]),
        ("finetune", "lm_imdb", "lm_reviews", "lm_valid", args.sizes["finetune_epochs"]),
    ):
        copy_folder_once(source / folder, output / folder)
        model = AWDLSTMForCausalLM.from_pretrained(output / folder)
        train_tokenized = tokenize_for_language_model(corpora[train_key], tokenizer, skip_empty=True)
        train_tokens = sum(len(ids) for ids in train_tokenized["input_ids"])
        valid = LanguageModelStreams.from_dataset(
            tokenize_for_language_model(corpora[valid_key], tokenizer, skip_empty=True),
            batch_size=args.lm_batch_size,
            bptt=args.bptt,
            shuffle=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        stages[stage] = {
            "valid_perplexity_after": stream_perplexity(model, valid),
            "train_tokens": round(epochs * train_tokens),
            "train_seconds": seconds.get(stage),
            "train_tokens_per_s": epochs * train_tokens / seconds[stage] if stage in seconds else None,
        }
        stages["parameters"] = sum(p.numel() for p in model.parameters())
    return stages


def classifier_arguments(
    args: SampleEfficiencyArguments, kind: str, name: str, epochs: int, learning_rate: float
) -> tuple[str, ClassifierTrainingArguments]:
    """The recipe's classifier arguments for `kind` (`ulmfit` or `scratch`), and the name of the run:
    `--ulmfit_without` takes techniques out of the `ulmfit` classifier and renames it (`lm_init` without both: it
    trains like `scratch`)."""
    if kind == "ulmfit":
        without = set(args.ulmfit_without)
        technique: dict = dict(gradual_unfreezing="gradual_unfreezing" not in without)
        if "discriminative_lr" in without:
            technique["discriminative_lr_decay"] = 1.0
        if technique["gradual_unfreezing"]:
            technique.update(unfreeze_at_fractions=args.unfreeze_at_fractions, stlr_per_stage=args.stlr_per_stage)
        if without == set(ABLATIONS):
            kind = "lm_init"
        elif without:
            kind = "ulmfit_without_" + "_and_".join(sorted(without))
    else:
        # Nothing pretrained to protect: every layer trains from the first step, at one rate.
        technique = dict(gradual_unfreezing=False, discriminative_lr_decay=1.0)
    training = ClassifierTrainingArguments(
        **general_options(args, f"{kind}_{name}"),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        max_grad_norm=args.max_grad_norm,
        per_device_train_batch_size=args.sizes["batch_size"],
        per_device_eval_batch_size=128,
        **technique,
    )
    return kind, training


def save_random_language_model(stage2: Path, folder: Path, seed: int) -> Path:
    """A randomly initialised AWD-LSTM of stage 2's sizes with its tokenizer: where the `scratch` classifier starts."""
    if not (folder / "model.safetensors").is_file():
        set_seed(seed)
        AWDLSTMForCausalLM(AWDLSTMConfig.from_pretrained(stage2)).save_pretrained(folder)
        ULMFiTTokenizerFast.from_pretrained(stage2).save_pretrained(folder)
    return folder


def train_classifier(
    kind: str,
    label_count: int,
    epochs: int,
    data: dict,
    lm_folder: Path,
    args: SampleEfficiencyArguments,
    learning_rate: float,
    dropout_multiplier: float = 1.0,
    evaluate_test: bool = True,
) -> tuple[dict, ClassificationTrainer]:
    """One tl_nlp classifier, prepared by the recipe (`prepare_classifier`) from `lm_folder` (stage 2 for `ulmfit`,
    a random model for `scratch`) on the raw texts `data["train"]`, trained, evaluated on the tokenized
    `data["valid"]` and (unless `evaluate_test` is false, for the runs of a grid that are not chosen) `data["test"]`."""
    kind, training = classifier_arguments(args, kind, str(label_count), epochs, learning_rate)
    prepared = prepare_classifier(
        str(lm_folder),
        data["train"],
        Path(args.output_dir) / "classifiers" / f"{kind}_{label_count}",
        label_names=LABEL_NAMES,
        training_args=training,
        max_length=args.sizes["max_tokens"] or None,
        config_overrides={"dropout_multiplier": dropout_multiplier},
    )
    trainer = prepared.trainer
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    valid = trainer.evaluate(data["valid"], metric_key_prefix="valid")
    train_tokens = epochs * sum(trainer.train_dataset["length"])
    result = {
        "implementation": "tl_nlp",
        "classifier": kind,
        "labels": label_count,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "dropout_multiplier": dropout_multiplier,
        "valid_accuracy": valid["valid_accuracy"],
        "valid_predicted_positive": float((trainer.predict(data["valid"]).predictions.argmax(-1) == 1).mean()),
        "train_seconds": train_seconds,
        "train_tokens_per_s": train_tokens / train_seconds,
        "final_train_loss": next((log["loss"] for log in reversed(trainer.state.log_history) if "loss" in log), None),
    }
    if evaluate_test:
        add_test_accuracy(result, trainer, data["test"])
    return result, trainer


def add_test_accuracy(result: dict, trainer: ClassificationTrainer, test_set: datasets.Dataset) -> None:
    """Adds the test accuracy, seconds and tokens/s of the trained classifier in `trainer` to `result`."""
    start = time.perf_counter()
    test = trainer.evaluate(test_set, metric_key_prefix="test")
    result["test_seconds"] = time.perf_counter() - start
    result["test_accuracy"] = test["test_accuracy"]
    result["test_tokens_per_s"] = sum(test_set["length"]) / result["test_seconds"]


def write_fastai_inputs(data: dict, label_count: int, folder: Path) -> Path:
    """Token ids and labels as plain arrays (no pickles) for the fastai worker."""
    path = folder / f"data_{label_count}.npz"
    arrays = {}
    for split in ("train", "test", "valid"):
        ids = data[split]["input_ids"]
        arrays[f"{split}_ids"] = np.concatenate([np.asarray(row, dtype=np.int64) for row in ids])
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(row) for row in ids]).astype(np.int64)
        arrays[f"{split}_labels"] = np.asarray(data[split]["labels"], dtype=np.int64)
    np.savez(path, **arrays)
    return path


def run_fastai(kind, label_count, epochs, data_path, encoder_path, config, args, learning_rate: float) -> dict:
    job = {
        "classifier": kind,
        "labels": label_count,
        "epochs": epochs,
        "data": str(data_path),
        "encoder": str(encoder_path) if kind == "ulmfit" else None,
        "learning_rate": learning_rate,
        "batch_size": args.sizes["batch_size"],
        "unfreeze_at_fractions": args.unfreeze_at_fractions,
        "seed": args.seed,
        "threads": args.threads,
        "config": config,
    }
    completed = subprocess.run(
        [args.fastai_python, str(FASTAI_WORKER), json.dumps(job)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"fastai {kind} classifier on {label_count} labels failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.2))
    styles = {
        ("tl_nlp", "ulmfit"): ("C0", "o-", "ULMFiT (tl_nlp)"),
        ("tl_nlp", "scratch"): ("C1", "s-", "from scratch (tl_nlp)"),
        ("fastai", "ulmfit"): ("C0", "o--", "ULMFiT (fastai)"),
        ("fastai", "scratch"): ("C1", "s--", "from scratch (fastai)"),
    }
    for (implementation, kind), (color, style, label) in styles.items():
        points = sorted(
            (r["labels"], r["test_accuracy"])
            for r in results
            if r["implementation"] == implementation and r["classifier"] == kind
        )
        if points:
            axes.plot(*zip(*points, strict=True), style, color=color, label=label, alpha=0.6 if "--" in style else 1)
    axes.set_xscale("log")
    axes.set_xlabel("labelled training reviews")
    axes.set_ylabel("test accuracy")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    (args,) = HfArgumentParser(SampleEfficiencyArguments).parse_args_into_dataclasses()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    sizes = args.sizes
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir)
    rows = protocol_rows(data_dir)
    imdb = {s: load_text_dataset(str(data_dir / "imdb" / f"{s}.parquet")) for s in ("train", "test", "unsup")}
    wiki = {s: load_text_dataset(str(data_dir / "wikitext-2" / f"{s}.txt")) for s in ("train", "valid")}
    if args.finetune_reviews > len(rows["lm_train"]):
        raise SystemExit(
            f"--finetune_reviews {args.finetune_reviews}: {data_dir / 'imdb' / 'small_protocol.json'} has only "
            f"{len(rows['lm_train'])} lm_train rows"
        )
    lm_reviews = imdb["unsup"].select(rows["lm_train"][: args.finetune_reviews or sizes["finetune_reviews"]])
    lm_valid = imdb["unsup"].select(rows["lm_valid"])
    results_path = output / args.results_file
    report: dict = {"arguments": asdict(args), "preset": sizes, "stages": {}, "classifiers": []}

    def save() -> None:
        results_path.write_text(json.dumps(report, indent=2))

    stage1, stage2 = output / "lm_wikitext2", output / "lm_imdb"
    if args.language_models_from and not (output / "lm_stages.json").is_file():
        print(f"== stages 1 and 2: copying {args.language_models_from}", flush=True)
        corpora = {"wiki_train": wiki["train"], "wiki_valid": wiki["valid"], "lm_reviews": lm_reviews}
        corpora["lm_valid"] = lm_valid
        report["stages"] = seed_language_models(args, output, corpora)
        (output / "lm_stages.json").write_text(json.dumps(report["stages"], indent=2))
        print(f"   {report['stages']}", flush=True)
    elif (stage2 / "model.safetensors").is_file():
        print(f"== stages 1 and 2: reusing {stage1} and {stage2}")
        report["stages"] = json.loads((output / "lm_stages.json").read_text())
        if report["stages"].get("options", {}) != args.stage_two_options:
            raise SystemExit(
                f"{output / 'lm_stages.json'}: stages 1 and 2 there were made with options "
                f"{report['stages'].get('options', {})}, this run gives {args.stage_two_options}; delete {stage1} and "
                f"{stage2} or choose another --output_dir"
            )
    else:
        report["stages"]["options"] = args.stage_two_options
        if args.stage1_from:
            print(f"== stage 1: copying {args.stage1_from}")
            check_preset_sizes(Path(args.stage1_from), args, "--stage1_from")
            copy_folder_once(Path(args.stage1_from), stage1)
            report["stages"]["parameters"] = AWDLSTMForCausalLM.from_pretrained(stage1).num_parameters()
            report["stages"]["pretrain"] = {"copied_from": args.stage1_from}
        else:
            start = time.perf_counter()
            tokenizer = train_ulmfit_tokenizer(
                (text for corpus in (wiki["train"], lm_reviews) for text in corpus["text"]),
                vocab_size=sizes["vocab_size"],
            )
            report["stages"]["tokenizer"] = {"seconds": time.perf_counter() - start, "vocab_size": len(tokenizer)}
            sizes_config = {key: sizes[key] for key in ("embedding_size", "hidden_size", "num_hidden_layers")}
            print(f"== stage 1: LM on WikiText-2, {sizes_config}")
            report["stages"]["pretrain"] = language_model_stage(
                "pretrain",
                wiki["train"],
                wiki["valid"],
                args,
                stage1,
                sizes["pretrain_epochs"],
                tokenizer=tokenizer,
                model_config=sizes_config,
            )
            report["stages"]["parameters"] = AWDLSTMForCausalLM.from_pretrained(stage1).num_parameters()
            print(f"   {report['stages']['pretrain']}")
        print(f"== stage 2: LM fine-tuned on {len(lm_reviews):,} IMDb reviews")
        report["stages"]["finetune"] = language_model_stage(
            "finetune",
            lm_reviews,
            lm_valid,
            args,
            stage2,
            sizes["finetune_epochs"],
            model_name_or_path=str(stage1),
        )
        print(f"   {report['stages']['finetune']}")
        (output / "lm_stages.json").write_text(json.dumps(report["stages"], indent=2))
    save()

    config = AWDLSTMConfig.from_pretrained(stage2)
    fastai_config = {
        # Unset dropouts are fastai's classifier defaults (before dropout_multiplier, which fastai applies too).
        key: getattr(config, key) if getattr(config, key) is not None else FASTAI_DROPOUTS["classifier"][key]
        for key in (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "input_dropout",
            "hidden_dropout",
            "embedding_dropout",
            "weight_dropout",
            "dropout_multiplier",
            "classifier_hidden_sizes",
            "classifier_dropouts",
            "bptt_chunk_length",
            "pad_token_id",
        )
    }
    fastai_folder = output / "fastai_inputs"
    encoder_path = fastai_folder / "encoder.npz"
    if args.fastai_python:
        fastai_folder.mkdir(exist_ok=True)
        weights = load_file(str(stage2 / "model.safetensors"))
        np.savez(encoder_path, **{k: v.numpy() for k, v in weights.items() if k.startswith("awd_lstm.")})

    # Held-out sets read as the recipe's classifier reads its training texts (the same tokenizer and cut), once.
    tokenizer = ULMFiTTokenizerFast.from_pretrained(stage2)
    encode = classification_tokenizer(tokenizer, config, sizes["max_tokens"] or None)

    def tokenized(texts: datasets.Dataset) -> datasets.Dataset:
        return tokenize_dataset(texts, encode, label_names=LABEL_NAMES)[0]

    if sizes["test_reviews"] > len(rows["test_5k"]):  # the gpu preset: the whole test set
        test_set = tokenized(imdb["test"])
    else:
        test_set = tokenized(imdb["test"].select(rows["test_5k"]))
        if sizes["test_reviews"] < len(test_set):  # the tiny preset: a balanced head of test_5k
            labels = np.asarray(test_set["labels"])
            keep = [int(i) for c in (0, 1) for i in np.flatnonzero(labels == c)[: sizes["test_reviews"] // 2]]
            test_set = test_set.select(keep)
    valid_set = tokenized(imdb["train"].select(rows["clas_valid"]))
    fastai_counts = args.fastai_label_counts or sizes["label_counts"]
    epochs_for = dict(zip(sizes["label_counts"], sizes["classifier_epochs"], strict=True))
    data_for, data_paths = {}, {}
    for label_count in sizes["label_counts"]:
        train_texts = imdb["train"].select(rows[labelled_subset(label_count)])
        data_for[label_count] = {"train": train_texts, "test": test_set, "valid": valid_set}
        if args.fastai_python and label_count in fastai_counts:
            fastai_data = {"train": tokenized(train_texts), "test": test_set, "valid": valid_set}
            data_paths[label_count] = write_fastai_inputs(fastai_data, label_count, fastai_folder)
    scratch_folder = save_random_language_model(stage2, output / "random_init", args.seed)
    start_for = {"ulmfit": stage2, "scratch": scratch_folder}
    # All tl_nlp classifiers first, then fastai's on the same data: a run cut short still has the whole tl_nlp curve.
    # Each classifier's rate x dropout grid (if it has more than one setting) runs first, at --grid_labels labels on
    # clas_valid; its other label counts, and fastai's runs, use the chosen setting.
    tl_nlp_counts = (args.label_counts or sizes["label_counts"]) if args.tl_nlp_classifiers else []
    gridded = [kind for kind in args.implementations if len(args.grid(kind)) > 1 and tl_nlp_counts]
    chosen = {kind: args.grid(kind)[0] for kind in args.implementations}
    runs = [
        ("tl_nlp", kind, count)
        for kind in args.implementations
        for count in tl_nlp_counts
        if not (kind in gridded and count == args.grid_labels)
    ]
    runs += [("fastai", kind, count) for count in fastai_counts for kind in args.implementations if args.fastai_python]

    def record(result: dict) -> None:
        report["classifiers"].append(result)
        save()
        print(
            f"   test accuracy {result['test_accuracy']:.4f} (clas_valid {result['valid_accuracy']:.4f}), "
            f"train {result['train_seconds']:.0f} s ({result['train_tokens_per_s']:.0f} tokens/s)",
            flush=True,
        )

    report["grids"], report["choices"] = {}, {}
    for kind in gridded:
        count, best = args.grid_labels, None
        report["grids"][kind] = []
        for rate, drop in args.grid(kind):
            print(
                f"== tl_nlp {kind} classifier, {count:,} labels, rate {rate:g}, dropout x{drop:g} (grid)", flush=True
            )
            result, trainer = train_classifier(
                kind, count, epochs_for[count], data_for[count], start_for[kind], args, rate, drop, False
            )
            report["grids"][kind].append(result)
            save()
            print(f"   clas_valid accuracy {result['valid_accuracy']:.4f}", flush=True)
            if best is None or result["valid_accuracy"] > best[0]["valid_accuracy"]:
                best = (result, trainer)
        result, trainer = best
        chosen[kind] = (result["learning_rate"], result["dropout_multiplier"])
        report["choices"][kind] = {"learning_rate": chosen[kind][0], "dropout_multiplier": chosen[kind][1]}
        add_test_accuracy(result, trainer, data_for[count]["test"])
        record(result)
        del best, trainer
    for implementation, kind, label_count in runs:
        epochs = epochs_for[label_count]
        rate, drop = chosen[kind]
        print(
            f"== {implementation} {kind} classifier, {label_count:,} labels, {epochs} epochs, rate {rate:g}, "
            f"dropout x{drop:g}",
            flush=True,
        )
        if implementation == "tl_nlp":
            result, _ = train_classifier(
                kind, label_count, epochs, data_for[label_count], start_for[kind], args, rate, drop
            )
        else:
            config_for = {**fastai_config, "dropout_multiplier": drop}
            result = run_fastai(
                kind, label_count, epochs, data_paths[label_count], encoder_path, config_for, args, rate
            )
        record(result)
    title = (
        f"IMDb, preset {args.preset}: AWD-LSTM {sizes['embedding_size']}/{sizes['hidden_size']}/"
        f"{sizes['num_hidden_layers']}, first {sizes['max_tokens'] or 'all'} tokens, {len(test_set):,} test reviews"
    )
    # Every results*.json of the folder: a fastai-only process run next to the main one lands in the same plot.
    merged = [r for path in sorted(output.glob("results*.json")) for r in json.loads(path.read_text())["classifiers"]]
    plot(merged, output / "sample_efficiency.png", title)
    print(f"== results in {results_path}, plot in {output / 'sample_efficiency.png'}")
    print("| labels | classifier | implementation | test accuracy | clas_valid accuracy | train s | tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for r in merged:
        print(
            f"| {r['labels']:,} | {r['classifier']} | {r['implementation']} | {r['test_accuracy']:.4f} | "
            f"{r['valid_accuracy']:.4f} | {r['train_seconds']:.0f} | {r['train_tokens_per_s']:.0f} |"
        )
    if any(math.isnan(r["test_accuracy"]) for r in merged):
        sys.exit("a classifier's accuracy is NaN")


if __name__ == "__main__":
    main()
