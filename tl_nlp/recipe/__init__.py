"""The ULMFiT recipe for notebooks and scripts: one function per stage, and the whole recipe in one call.

Modules, one role each: `config` (the typed configuration of every stage, and the only place stage defaults are
written), `data` (where a stage reads its texts), `loading` (checkpoints, tokenizers, model families),
`language_model` (stages 1 and 2), `classifier` (stage 3 and its transfer methods, with `methods`), `evaluation`
(metrics and predictions of saved classifiers), `results` (what a stage saves, prints and uploads) and `ulmfit`
(the stages in one call). The `tl-nlp` commands (`tl_nlp.cli.recipe`) parse the same dataclasses.

```python
>>> from tl_nlp.recipe import TextData, run_ulmfit
>>> results = run_ulmfit(
...     pretrain_data="../shared/data/wikitext-2/train.txt",
...     finetune_data=TextData("../shared/data/imdb/unsup.parquet", max_examples=2000),
...     train_data=TextData("../shared/data/imdb/train.parquet", max_examples=400),
...     eval_data=TextData("../shared/data/imdb/test.parquet", max_examples=1000),
...     label_names=["negative", "positive"], output_dir="runs/recipe")  # doctest: +SKIP
>>> results["classifier"].metrics["eval_accuracy"]  # doctest: +SKIP
```
"""

from .classifier import prepare_classifier, train_classifier
from .config import (
    METHODS,
    ClassifierMethodArguments,
    ClassifierTrainingArguments,
    DataArguments,
    EvaluateArguments,
    FinetuneTrainingArguments,
    HubArguments,
    ModelArguments,
    PretrainTrainingArguments,
    StageTrainingArguments,
    UlmfitArguments,
)
from .data import RecipeError, TextData
from .evaluation import evaluate_classifier, predict, predict_probabilities
from .language_model import (
    finetune_language_model,
    prepare_language_model,
    pretrain_language_model,
    train_language_model,
)
from .loading import language_model_objective
from .results import StageResult
from .ulmfit import run_ulmfit

__all__ = [
    "ClassifierMethodArguments",
    "ClassifierTrainingArguments",
    "DataArguments",
    "EvaluateArguments",
    "FinetuneTrainingArguments",
    "HubArguments",
    "METHODS",
    "ModelArguments",
    "PretrainTrainingArguments",
    "RecipeError",
    "StageResult",
    "StageTrainingArguments",
    "TextData",
    "UlmfitArguments",
    "evaluate_classifier",
    "finetune_language_model",
    "language_model_objective",
    "predict",
    "predict_probabilities",
    "prepare_classifier",
    "prepare_language_model",
    "pretrain_language_model",
    "run_ulmfit",
    "train_classifier",
    "train_language_model",
]
