"""The class tl_nlp registers for transformers' `"text-classification"` task (`tl_nlp.auto_registration`).

It is never an instance itself: `pipeline()` gets a `TaskTextClassificationPipeline` for a model that tl_nlp trained
for a task beyond one text (its config names the task: pairs, regression, multi-label), an
`AWDLSTMTextClassificationPipeline` (batches by length) for any other AWD-LSTM model and transformers' own
`TextClassificationPipeline` for every other model, so registering tl_nlp changes nothing for the other models.
"""

from typing import Any

from transformers import TextClassificationPipeline


class TextClassificationPipelineSelector(TextClassificationPipeline):
    """Builds the text-classification pipeline for the model it is given (see the module's docstring).

    `pipeline()` reads only class attributes before building the pipeline (which loaders to run), and those are
    `TextClassificationPipeline`'s.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> TextClassificationPipeline:
        # Imported here: this module is loaded while transformers.pipelines finishes loading, possibly on the way to
        # loading the AWD-LSTM pipeline's module itself.
        from .models.awd_lstm.pipeline_awd_lstm import AWDLSTMTextClassificationPipeline

        model = kwargs["model"] if "model" in kwargs else args[0]
        config = getattr(model, "config", None)
        if getattr(config, "tl_nlp_task", None):
            from .task_pipeline import TaskTextClassificationPipeline

            return TaskTextClassificationPipeline(*args, **kwargs)
        if getattr(config, "model_type", None) == "awd_lstm":
            return AWDLSTMTextClassificationPipeline(*args, **kwargs)
        # An instance of another class: Python does not run this class's __init__ on it again.
        return TextClassificationPipeline(*args, **kwargs)
