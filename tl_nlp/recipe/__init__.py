"""The ULMFiT recipe for notebooks and scripts: one function per stage, and the whole recipe in one call.

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

from .data import RecipeError, TextData
from .methods import METHODS, ClassifierMethodArguments
from .stages import (
    StageResult,
    evaluate_classifier,
    finetune_language_model,
    language_model_objective,
    predict,
    predict_probabilities,
    pretrain_language_model,
    train_classifier,
    train_language_model,
)
from .ulmfit import run_ulmfit

__all__ = [
    "ClassifierMethodArguments",
    "METHODS",
    "RecipeError",
    "StageResult",
    "TextData",
    "evaluate_classifier",
    "finetune_language_model",
    "language_model_objective",
    "predict",
    "predict_probabilities",
    "pretrain_language_model",
    "run_ulmfit",
    "train_classifier",
    "train_language_model",
]
