"""Models for every task: transformers' own classes where they exist, and GPT's multi-sequence heads otherwise.

- Classes, pairs, regression and multi-label: `AutoModelForSequenceClassification` with the task's `problem_type`
  (BERT-style: the pooled `[CLS]`; GPT-style: a linear head on the last token, GPT's extract token; AWD-LSTM: concat
  pooling and its BatchNorm/Linear head).
- Multiple choice: `AutoModelForMultipleChoice` for encoders (BERT, RoBERTa...). For decoders and AWD-LSTM, which
  transformers gives no such class, [`MultiSequenceClassifier`] reads one sequence per choice with a one-output
  sequence classifier and takes the softmax over the choices (GPT, Radford et al. 2018, section 3.3).
- Similarity (a pair read in both orders): [`MultiSequenceClassifier`] adds the two sequences' representations
  element-wise before the classifier's head, as GPT does.
- Multi-label and regression heads start from the training labels ([`start_head_at_training_labels`]: each label's
  rate, the mean score), where transformers starts every head's bias at zero.

The saved folder is always a plain transformers classifier folder; its config carries the task (`tl_nlp_task`), from
which [`load_task_model`] rebuilds the same model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMultipleChoice, AutoModelForSequenceClassification
from transformers.modeling_outputs import MultipleChoiceModelOutput, SequenceClassifierOutput

from .. import gguf
from ..extras import is_peft_model
from ..tasks import TaskSpec, task_of_config

MODES = ("choices", "sum")


class MultiSequenceClassifier(nn.Module):
    """Several token sequences per example through one sequence classifier (a decoder's or AWD-LSTM's).

    - `mode="choices"` (multiple choice): the classifier has one output; each choice's sequence gets a score and the
      scores of an example's choices are its logits, trained with cross-entropy (softmax over the choices).
    - `mode="sum"` (similarity): the representations of a pair read in both orders (the last token's hidden state for
      decoders, concat pooling for AWD-LSTM) are summed, then go through the classifier's head; the loss follows the
      config's `problem_type` (MSE for regression).

    Inputs are `(batch, sequences, length)` (see `tl_nlp.data.task_encoding.TaskDataCollator`). `layer_groups`
    groups the wrapper like the classifier it holds, its head in the top group; `save_pretrained` saves that
    classifier (its config names the task), which [`load_task_model`] wraps again. The classifier may be LoRA-wrapped
    (`tl_nlp.ulmfit_lora_model`): the sequences then go through its adapters.

    Args:
        classifier (`PreTrainedModel` or `peft.PeftModel`): an `AWDLSTMForSequenceClassification` or a decoder's
            `...ForSequenceClassification` (one label for `"choices"`), or either wrapped by peft.
        mode (`str`): `"choices"` or `"sum"`.

    Example:

    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2ForSequenceClassification
    >>> scorer = GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2, num_labels=1,
    ...                                                   pad_token_id=0))
    >>> model = MultiSequenceClassifier(scorer, "choices")
    >>> out = model(torch.randint(1, 50, (2, 3, 7)), labels=torch.tensor([0, 2]))
    >>> out.logits.shape
    torch.Size([2, 3])
    ```
    """

    # The loss is a batch mean: Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False
    # `layer_groups` finds the stack of blocks under `getattr(model, model.base_model_prefix)`, also when this
    # wrapper is itself wrapped (auxiliary LM loss).
    base_model_prefix = "base_model"

    def __init__(self, classifier: nn.Module, mode: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "choices" and classifier.config.num_labels != 1:
            raise ValueError(
                f"mode 'choices' scores each choice with one output; the classifier has {classifier.config.num_labels}"
            )
        self.classifier = classifier
        self.mode = mode
        self.is_awd_lstm = classifier.config.model_type == "awd_lstm"
        self.train(classifier.training)

    @property
    def config(self):
        """The classifier's configuration."""
        return self.classifier.config

    @property
    def _model(self) -> nn.Module:
        """The transformers classifier the sequences go through: under its LoRA wrapper, if any (peft adapts the
        model in place, so its layers run the adapters)."""
        return self.classifier.get_base_model() if is_peft_model(self.classifier) else self.classifier

    @property
    def awd_lstm(self) -> nn.Module:
        """The AWD-LSTM encoder (the auxiliary LM loss reads it); AttributeError for decoders."""
        return self._model.awd_lstm

    @property
    def base_model(self) -> nn.Module:
        """The classifier's backbone (`AWDLSTMModel`, `GPT2Model`, `LlamaModel`...)."""
        return self._model.base_model

    def get_base_model(self) -> nn.Module:
        """The wrapped classifier (`layer_groups` groups the wrapper like it)."""
        return self.classifier

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """The classifier's dummy rows as two sequences each: what `layer_groups` traces the data flow with."""
        return {
            key: value.unsqueeze(1).repeat(1, 2, 1)
            for key, value in self._model.dummy_inputs.items()
            if isinstance(value, torch.Tensor) and value.dim() == 2
        }

    def get_input_embeddings(self) -> nn.Module:
        return self._model.get_input_embeddings()

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Saves the wrapped classifier: a plain folder whose config carries the task (a LoRA-wrapped classifier
        saves its adapter, as peft does; the recipe merges it first)."""
        self.classifier.save_pretrained(save_directory, **kwargs)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """`(rows, features)` before the head, and the last hidden states `(rows, length, hidden)` (decoders)."""
        if self.is_awd_lstm:
            return self._model.pool_document(input_ids, attention_mask), None
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        hidden = self.base_model(input_ids, attention_mask=mask).last_hidden_state
        # The last real token, wherever the padding is (the extract token of GPT's input transformation).
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        last = (mask.bool() * positions).argmax(-1)
        return hidden[torch.arange(len(hidden), device=hidden.device), last], hidden

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self._model.classifier(features) if self.is_awd_lstm else self._model.score(features)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MultipleChoiceModelOutput | SequenceClassifierOutput:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, sequences, length)`): the choices or both orders.
            attention_mask (`torch.Tensor` of the same shape, *optional*): 1 for real tokens.
            labels (`torch.Tensor`, *optional*): the right choice `(batch,)`, or the targets of the pair.
            output_hidden_states (`bool`, *optional*): also return the last hidden states of every sequence,
                `(batch * sequences, length, hidden)` (decoders; the auxiliary LM loss reads them).
        """
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be (batch, sequences, length), got shape {tuple(input_ids.shape)}")
        batch, count, length = input_ids.shape
        flat_ids = input_ids.reshape(batch * count, length)
        flat_mask = attention_mask.reshape(batch * count, length) if attention_mask is not None else None
        features, hidden = self.features(flat_ids, flat_mask)
        features = features.view(batch, count, -1)
        hidden_states = (hidden,) if output_hidden_states and hidden is not None else None
        if self.mode == "choices":
            logits = self.head(features.reshape(batch * count, -1)).view(batch, count)
            loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
            return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        logits = self.head(features.sum(dim=1))
        loss = None
        if labels is not None:
            loss = self._model.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


def multi_sequence_mode(spec: TaskSpec, family: str) -> str | None:
    """`"choices"`, `"sum"` or None (one sequence per example) for a task and a model family."""
    if spec.task == "multiple_choice" and family != "encoder":
        return "choices"
    if spec.symmetric_pair and family != "encoder":
        return "sum"
    return None


def task_model_from_pretrained(
    model_name_or_path: str,
    spec: TaskSpec,
    family: str,
    id2label: dict[int, str] | None = None,
    vocab_size: int | None = None,
    trust_remote_code: bool = False,
    **config_overrides: Any,
) -> nn.Module:
    """A new model for the task on a pretrained checkpoint (a new head; the task written into its config).

    Args:
        model_name_or_path: the checkpoint (a language model or encoder folder, a Hub id, or a GGUF file:
            `folder/x.gguf`, dequantised by `tl_nlp.gguf.load_model`).
        spec: the task.
        family: `"encoder"`, `"decoder"` or `"awd_lstm"` (`tl_nlp.data.task_encoding.task_family`).
        id2label: class names (classes, multi-label); regression and multiple choice have none.
        vocab_size: the tokenizer's size after `add_task_tokens`: the embeddings are resized to it.
        trust_remote_code: allow a Hub checkpoint's own code.
        config_overrides: further config values (`pad_token_id`, ...).
    """
    values: dict[str, Any] = dict(config_overrides)
    if spec.task == "multiple_choice":
        if family == "encoder":
            model = gguf.load_model(
                AutoModelForMultipleChoice, model_name_or_path, trust_remote_code=trust_remote_code, **values
            )
        else:
            model = gguf.load_model(
                AutoModelForSequenceClassification,
                model_name_or_path,
                num_labels=1,
                trust_remote_code=trust_remote_code,
                **values,
            )
    else:
        if id2label is not None:
            values.update(
                num_labels=len(id2label), id2label=id2label, label2id={name: i for i, name in id2label.items()}
            )
        else:
            values["num_labels"] = 1
        model = gguf.load_model(
            AutoModelForSequenceClassification,
            model_name_or_path,
            problem_type=spec.problem_type,
            trust_remote_code=trust_remote_code,
            **values,
        )
    if vocab_size is not None and vocab_size != model.get_input_embeddings().weight.size(0):
        model.resize_token_embeddings(vocab_size)
    model.config.tl_nlp_task = spec.to_dict()
    mode = multi_sequence_mode(spec, family)
    return MultiSequenceClassifier(model, mode) if mode else model


def start_head_at_training_labels(model: nn.Module, spec: TaskSpec, labels: Any) -> bool:
    """Sets the bias of the new head's output layer from the training labels, so that training starts from the
    constant prediction that fits them best instead of from zero:

    - multi-label: each label's log-odds in the training rows (its sigmoid starts at the label's rate, not at 0.5);
    - regression: the mean target (the prediction starts at the mean, not at 0).

    With a zero bias every sigmoid starts at 0.5, while a label of GoEmotions is on in 0.4% to 32% of comments, and
    an STS-B score (0 to 5) starts 2.7 below its mean. With Adam a bias moves by about the learning rate per step, so
    at fine-tuning rates (1e-4) it alone would need thousands of steps to get there, and the weights and the encoder
    are bent to shift every output first. Measured with all-MiniLM-L6-v2 at the recipe's defaults (BENCHMARKS.md,
    "Heads that start from the training labels"): on GoEmotions (2,000 comments, 3 epochs, 375 steps) test macro-F1
    0.078 from zero (3 seeds; every comment given every frequent label, as `Trainer` at its defaults, 0.053) and 0.213
    from the label rates (7 seeds), above a linear layer fitted on the frozen encoder (0.198); on SST-5 as a score
    Spearman +0.3 points (7 seeds), on STS-B level (-0.3; 7 seeds against 3 from zero). This is the prior initialisation of Lin et al.
    (2017, "Focal Loss", section 4.1), and for regression the mean that gradient boosting starts from. transformers
    and fastai start every head's bias at zero; single-label classes and multiple choice (a softmax, starting at 1/n)
    keep it.

    Args:
        model: the task model (`task_model_from_pretrained`), before any LoRA wrapping.
        spec: the task; only `multi_label` and `regression` are changed.
        labels: the training rows' labels: multi-hot vectors (`(rows, labels)`) or float targets (`(rows,)`).

    Returns:
        Whether the bias was set: not for another task, nor for a head whose output layer has no bias (the `score`
        layer of GPT-2 and Llama-style classifiers, which transformers builds without one; SmolLM2-135M with LoRA
        learns GoEmotions without it, test macro-F1 0.332 over 3 seeds).
    """
    if spec.task not in ("multi_label", "regression"):
        return False
    classifier = model.classifier if isinstance(model, MultiSequenceClassifier) else model
    num_labels = classifier.config.num_labels
    values = torch.as_tensor(labels, dtype=torch.float64).reshape(len(labels), num_labels)
    if spec.task == "multi_label":
        # A label never (or always) on in the training rows gets the rate of half a row, not an infinite log-odds.
        rates = values.mean(0).clamp(0.5 / len(labels), 1 - 0.5 / len(labels))
        bias = torch.log(rates / (1 - rates))
    else:
        bias = values.mean(0)
    output = _head_output_layer(classifier, num_labels)
    if output is None or output.bias is None:
        return False
    with torch.no_grad():
        output.bias.copy_(bias.to(output.bias.dtype))
    return True


def _head_output_layer(model: nn.Module, num_labels: int) -> nn.Linear | None:
    """The last linear layer of the model's head (outside its backbone) with one output per label."""
    from ..training.lora import head_modules

    found = None
    children = dict(model.named_children())
    for name in head_modules(model):  # the top-level heads (and "pooler", a name for peft, which is left out)
        if name not in children:
            continue
        for module in children[name].modules():
            if isinstance(module, nn.Linear) and module.out_features == num_labels:
                found = module
    return found


def load_task_model(model_name_or_path: str, trust_remote_code: bool = False) -> tuple[nn.Module, TaskSpec | None]:
    """A trained task model from its folder, as it was trained (multiple choice and similarity wrapped again), and
    its task (None for a plain classifier folder, read as `AutoModelForSequenceClassification`)."""
    from ..data.task_encoding import task_family

    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    spec = task_of_config(config)
    family = task_family(config) if spec is not None else None
    if spec is not None and spec.task == "multiple_choice" and family == "encoder":
        model = AutoModelForMultipleChoice.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code
        )
    mode = multi_sequence_mode(spec, family) if spec is not None else None
    return (MultiSequenceClassifier(model, mode) if mode else model), spec
