"""AWD-LSTM in transformers' Auto classes and `pipeline()`, registered when transformers loads them.

`import tl_nlp` must stay cheap (no torch, no transformers: the `tl-nlp` command answers `--help` at once), yet after
it `AutoConfig`, `AutoModel*`, `AutoTokenizer` and `pipeline("text-classification")` must know AWD-LSTM folders.
Registering needs the AWD-LSTM classes and transformers' Auto modules, which cost torch's import. So each
registration runs when transformers itself loads the module it extends, right after that module has run:

| transformers module                          | what is registered                                           |
|----------------------------------------------|--------------------------------------------------------------|
| `transformers.models.auto.configuration_auto`| `AutoConfig`: model type `awd_lstm` -> `AWDLSTMConfig`       |
| `transformers.models.auto.modeling_auto`     | `AutoModel`, `AutoModelForCausalLM`, `...ForSequenceClassification`; the classes' auto class, so that `save_pretrained` ships their code |
| `transformers.models.auto.tokenization_auto` | `AutoTokenizer`: `AWDLSTMConfig` -> `ULMFiTTokenizerFast`      |
| `transformers.pipelines`                     | `"text-classification"`: batches by length for AWD-LSTM only |

A module transformers has already loaded when tl_nlp is imported is extended at once. The others are extended by an
import hook ([`RegisterAfterImport`], first on `sys.meta_path`): it lets the usual finder locate the module, runs
the module as usual, calls the registration, then puts the module's own loader back and leaves `sys.meta_path` once
all four are done. Nothing of transformers is replaced: the registrations are its public `register` calls.

The text-classification task keeps transformers' class for every model but AWD-LSTM: the class registered for the
task, `tl_nlp.pipeline_selector.TextClassificationPipelineSelector`, is never instantiated; it builds an `AWDLSTMTextClassificationPipeline`
for an AWD-LSTM model and the task's previous class (transformers' `TextClassificationPipeline`) for any other.
If another library registered its own class for the task first, tl_nlp leaves the task alone and logs it; AWD-LSTM
folders then get the batching with `pipeline(..., pipeline_class=AWDLSTMTextClassificationPipeline)`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

logger = logging.getLogger(__name__)


def register_auto_config(configuration_auto: ModuleType) -> None:
    from .models.awd_lstm.configuration_awd_lstm import AWDLSTMConfig

    configuration_auto.AutoConfig.register("awd_lstm", AWDLSTMConfig, exist_ok=True)
    AWDLSTMConfig.register_for_auto_class("AutoConfig")


def register_auto_models(modeling_auto: ModuleType) -> None:
    from .models.awd_lstm.configuration_awd_lstm import AWDLSTMConfig
    from .models.awd_lstm.modeling_awd_lstm import (
        AWDLSTMForCausalLM,
        AWDLSTMForSequenceClassification,
        AWDLSTMModel,
    )

    for auto_class, model_class in (
        ("AutoModel", AWDLSTMModel),
        ("AutoModelForCausalLM", AWDLSTMForCausalLM),
        ("AutoModelForSequenceClassification", AWDLSTMForSequenceClassification),
    ):
        getattr(modeling_auto, auto_class).register(AWDLSTMConfig, model_class, exist_ok=True)
        # `save_pretrained` then copies the modeling code into the folder, which loads with `trust_remote_code=True`
        # where tl_nlp is not installed.
        model_class.register_for_auto_class(auto_class)


def register_auto_tokenizer(tokenization_auto: ModuleType) -> None:
    """The ULMFiT tokenizer that AWD-LSTM folders ship with: found without `trust_remote_code` (folders whose
    tokenizer_config names another class keep that class)."""
    from .data.tokenization_ulmfit import ULMFiTTokenizerFast
    from .models.awd_lstm.configuration_awd_lstm import AWDLSTMConfig

    tokenization_auto.AutoTokenizer.register(AWDLSTMConfig, fast_tokenizer_class=ULMFiTTokenizerFast, exist_ok=True)


def register_text_classification_pipeline(pipelines: ModuleType) -> None:
    from .pipeline_selector import TextClassificationPipelineSelector

    task = pipelines.PIPELINE_REGISTRY.supported_tasks["text-classification"]
    if task["impl"] is TextClassificationPipelineSelector:
        return
    stock = pipelines.TextClassificationPipeline
    # transformers names the class by its dotted path, imported when a pipeline is built.
    if task["impl"] not in (stock, f"{stock.__module__}.{stock.__qualname__}"):
        logger.info(
            "text-classification already uses %s: tl_nlp keeps it (pass pipeline_class="
            "AWDLSTMTextClassificationPipeline to batch AWD-LSTM inputs by length)",
            task["impl"],
        )
        return
    # `register_pipeline` warns whenever a task's class changes; here that is the point, so it is silenced once.
    transformers_logger = logging.getLogger("transformers.pipelines.base")
    level = transformers_logger.level
    transformers_logger.setLevel(logging.ERROR)
    try:
        pipelines.PIPELINE_REGISTRY.register_pipeline(
            "text-classification",
            pipeline_class=TextClassificationPipelineSelector,
            pt_model=task["pt"],
            default=task.get("default"),
            type=task.get("type"),
        )
    finally:
        transformers_logger.setLevel(level)


# transformers module -> what to register once it has run. A module imports the ones above it.
REGISTRATIONS: dict[str, Callable[[ModuleType], None]] = {
    "transformers.models.auto.configuration_auto": register_auto_config,
    "transformers.models.auto.modeling_auto": register_auto_models,
    "transformers.models.auto.tokenization_auto": register_auto_tokenizer,
    "transformers.pipelines": register_text_classification_pipeline,
}


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs a module with its own loader, gives the module that loader back, then calls the registration."""

    def __init__(self, loader: importlib.abc.Loader, register: Callable[[ModuleType], None]):
        self.loader = loader
        self.register = register

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # as if this wrapper had never been there
        self.loader.exec_module(module)
        # A package may replace itself in sys.modules while it runs (transformers' lazy modules do).
        self.register(sys.modules.get(module.__name__, module))


class RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Import hook: calls `registrations[name](module)` right after module `name` has run, once per name.

    It finds nothing itself: it asks the finders after it on `sys.meta_path` and wraps the loader they return.
    """

    def __init__(self, registrations: dict[str, Callable[[ModuleType], None]]):
        self.pending = dict(registrations)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        register = self.pending.pop(fullname, None)
        if register is None:
            return None
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderThenRegister(spec.loader, register)
                return spec
        return None


def register_when_transformers_loads() -> None:
    """Registers AWD-LSTM in the transformers modules already loaded, and hooks the import of the others."""
    pending = {}
    for name, register in REGISTRATIONS.items():
        module = sys.modules.get(name)
        if module is not None:
            register(module)
        else:
            pending[name] = register
    if pending and not any(isinstance(finder, RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterAfterImport(pending))
