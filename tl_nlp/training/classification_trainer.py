"""`ClassificationTrainer`: `ULMFiTTrainer` with fastai's length-aware batch orders for text classification."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers.trainer_utils import EvalLoopOutput, PredictionOutput

from ..data.classification_data import SortedSampler, SortishSampler
from .trainer import ULMFiTTrainer


class ClassificationTrainer(ULMFiTTrainer):
    """A `ULMFiTTrainer` whose training batches are sortish (similar lengths, random order, longest batch first) and
    whose evaluation batches are sorted by length, read from the dataset's `length` column (see
    `tl_nlp.data.tokenize_dataset`); `predict` still returns the rows in the dataset's order. Datasets without that column get Trainer's usual samplers. Use it with
    `DataCollatorWithPadding(tokenizer)`: little padding, and BPT3C in the model reads documents of any length.

    Under DDP the sortish batches are built at the global batch size (`per_device_train_batch_size` x processes)
    and Accelerate hands each process a consecutive slice of each, so a step sees the same examples as one process
    with the global batch size. For single-label classifiers `eval_loss` is the mean cross-entropy over the gathered
    logits: exact under DDP, where Trainer's own loss would count the duplicates that pad the last batch.

    Example:

    ```python
    >>> train, id2label, label2id = tokenize_dataset(raw_train, tokenizer)  # doctest: +SKIP
    >>> trainer = ClassificationTrainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
    ...                                 data_collator=DataCollatorWithPadding(tokenizer))  # doctest: +SKIP
    ```
    """

    def _get_dataloader(
        self,
        dataset,
        description: str,
        batch_size: int,
        sampler_fn: Callable | None = None,
        is_training: bool = False,
        dataloader_key: str | None = None,
    ) -> torch.utils.data.DataLoader:
        # Trainer drops the columns the model's forward does not take (`length` among them) before it asks for a
        # sampler, so the lengths are read here, while the column is still there.
        if "length" in getattr(dataset, "column_names", []):
            lengths = np.asarray(dataset["length"])
            sampler_fn = self._length_sampler_fn(lengths, batch_size, is_training)
        return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)

    def _length_sampler_fn(self, lengths: Sequence[int], batch_size: int, is_training: bool) -> Callable:
        if not is_training:
            return lambda dataset: SortedSampler(lengths)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # Accelerate deals out consecutive per-device batches to the processes in turn, so sortish batches of the
        # global size give every step the examples one process would see with that batch size.
        global_batch_size = batch_size * self.args.world_size
        return lambda dataset: SortishSampler(lengths, global_batch_size, seed=seed)

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if "length" in getattr(dataset, "column_names", []):
            return self._length_sampler_fn(dataset["length"], self._train_batch_size, is_training=True)(dataset)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        if "length" in getattr(eval_dataset, "column_names", []):
            return SortedSampler(eval_dataset["length"])
        return super()._get_eval_sampler(eval_dataset)

    def predict(
        self, test_dataset, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """`Trainer.predict`, with `predictions` and `label_ids` in the dataset's row order.

        Evaluation batches of a dataset with a `length` column are sorted by length, so Trainer's own `predict`
        returns the rows in that order; this puts row `i`'s prediction back at index `i`. Metrics do not change.

        Args:
            test_dataset: the dataset to predict (with `length`, e.g. from `tokenize_dataset`, or without).
            ignore_keys: keys of the model's output to leave out of the predictions.
            metric_key_prefix: prefix of the metrics' names.
        """
        output = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if "length" not in getattr(test_dataset, "column_names", []):
            return output
        # Position k of the output is row sorted_rows[k]; argsort inverts that permutation.
        dataset_order = np.argsort(SortedSampler(test_dataset["length"]).order, kind="stable")

        def in_row_order(values):
            if isinstance(values, (tuple, list)):
                return type(values)(in_row_order(value) for value in values)
            if isinstance(values, np.ndarray) and values.ndim > 0 and len(values) == len(dataset_order):
                return values[dataset_order]
            return values

        return PredictionOutput(
            predictions=in_row_order(output.predictions),
            label_ids=in_row_order(output.label_ids),
            metrics=output.metrics,
        )

    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        loss = self._gathered_cross_entropy(output)
        if loss is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = loss
        return output

    def _gathered_cross_entropy(self, output: EvalLoopOutput) -> float | None:
        """Mean cross-entropy over the gathered logits and labels (duplicates already dropped by Accelerate's
        `gather_for_metrics`), for single-label classifiers; `None` when that is not the model's loss."""
        logits, labels = output.predictions, output.label_ids
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        single_label = (
            config is not None
            and getattr(config, "num_labels", 1) > 1
            and getattr(config, "problem_type", None) in (None, "single_label_classification")
        )
        if not (
            single_label
            and isinstance(logits, np.ndarray)
            and isinstance(labels, np.ndarray)
            and logits.ndim == 2
            and labels.ndim == 1
            and np.issubdtype(labels.dtype, np.integer)
            and len(logits) == len(labels) > 0
        ):
            return None
        loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels).long())
        return loss.item()
