"""Zero-shot text classification by language-model scoring: no labelled data, only a prompt and label words.

Each text is put in a template (`"{text} It was"`) and each label is scored by the log-likelihood the language model
gives its word(s) after the prompt (`" great"` / `" terrible"`); a word of several tokens scores the sum of their
log-probabilities, and a label with several words the log of the summed probabilities. The label with the highest
score wins; `scores` are their softmax. With `calibration_text` ("contextual calibration", Zhao et al. 2021), the
scores of a content-free input (`"N/A"` in the template) are subtracted first, which removes the model's prior
preference for one label word. With several templates (the default is three), each gives label log-probabilities
and their mean decides.

Any causal LM works. AWD-LSTM carries its state: the prompt is read once and each label continuation is scored
from the state after it. Other models (GPT-2, Llama...) read prompt and continuation together, once per word.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

# The defaults were chosen on SST-2 *training* sentences with SmolLM2-135M-Instruct, never on dev (BENCHMARKS.md,
# "Zero-shot SST-2"), label words = the label names. First, on 200 sentences, one template: this one scored 0.860
# as it is (0.800 with "N/A" calibration), GPT's "{text} very" 0.775 (0.790 calibrated), the chat template with the
# question below 0.575 (0.725 calibrated).
DEFAULT_TEMPLATE = "Review: {text}\nSentiment:"
# Then several templates at once (their label log-probabilities averaged), from the templates that name neither the
# labels nor the domain, by balanced accuracy on 2,000 training sentences: these three scored 0.826 (accuracy 0.856
# and 0.817 on two slices of 500 and 1,500), DEFAULT_TEMPLATE alone 0.814 (0.816 and 0.807). Each template is one
# more pass of the model: pass one template for a third of the time.
DEFAULT_TEMPLATES = (DEFAULT_TEMPLATE, "Review: {text}\nThe sentiment of this review is", "{text} very")
# What a chat model is asked (as the user's message) with chat=True.
DEFAULT_CHAT_TEMPLATE = "{text}\nIs the sentiment of this review positive or negative?"


def _label_words(labels: Sequence[str] | Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(labels, Mapping):
        words = {label: [value] if isinstance(value, str) else list(value) for label, value in labels.items()}
    elif isinstance(labels, str):
        raise ValueError(
            f"labels must be a list of label words or a mapping label -> word(s), got the string {labels!r}"
        )
    else:
        words = {label: [label] for label in labels}
    if len(words) < 2:
        raise ValueError(f"labels must name at least 2 labels, got {list(words)}.")
    for label, label_words in words.items():
        if not label_words or any(not isinstance(w, str) or not w.strip() for w in label_words):
            raise ValueError(f"label {label!r} needs at least one non-empty word, got {label_words!r}.")
    return words


def _check_batching(batch_size: int, max_length: int | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}.")


class ZeroShotLMClassifier:
    """Classify texts with a causal language model and no training, by the likelihood of each label's word(s).

    Args:
        model (`nn.Module`): a causal LM (`AWDLSTMForCausalLM`, `GPT2LMHeadModel`, any `AutoModelForCausalLM`).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        labels (`Sequence[str]` or `Mapping[str, str | Sequence[str]]`): the label words (each label is its own
            word), or label -> word(s), e.g. `{"positive": ["great", "good"], "negative": ["terrible", "bad"]}`.
        template (`str` or `Sequence[str]`, *optional*): the prompt, with `{text}` where the text goes, or several
            prompts: each is scored on its own, its label log-likelihoods normalised over the labels, and their mean
            decides (a prompt ensemble, as in Jiang et al. 2020 and Schick & Schuetze 2021's PET; one model pass per
            prompt). Defaults to `DEFAULT_TEMPLATES`: `"Review: {text}\nSentiment:"`, `"Review: {text}\nThe
            sentiment of this review is"` and GPT's `"{text} very"`, which scored 1.2 points of balanced accuracy
            above the first one alone on 2,000 SST-2 training sentences (SmolLM2-135M-Instruct); with `chat=True`,
            the question `DEFAULT_CHAT_TEMPLATE`. Naming the domain helps more where it is known (`"Movie review:
            {text}\nSentiment:"` added: +1.3 more there). transformers' zero-shot pipeline (NLI, not LM scoring)
            has one `hypothesis_template`; a prompt ensemble is the LM-scoring counterpart. Each word is scored as the
            continuation `" " + word` (just `word` after a prompt that ends in white space, as a chat turn does).
        batch_size (`int`, defaults to 16): texts per forward pass.
        max_length (`int`, *optional*): keep only the last `max_length` tokens of each prompt (the words next to
            the label matter most).
        calibration_text (`str` or `Sequence[str]`, *optional*): a content-free text (e.g. `"N/A"`) whose label
            scores are subtracted (Zhao et al. 2021), or a list of unlabelled texts of the task whose mean label
            scores are subtracted: the model's average preference for a label word on the task's own texts is
            taken out (after Fei et al. 2023's domain-context calibration, which averages over random in-domain
            words). The list assumes roughly balanced labels in what is classified: it centres the decisions on the
            texts it was given. Calibrated template by template. Off by default: on SST-2 training sentences "N/A"
            cost SmolLM2-135M-Instruct 6 points with `DEFAULT_TEMPLATE`, but it took gemma-3-270m (a base model that
            said "positive" for 93% of them) from 0.645 to 0.820 there, and from 0.5826 to 0.8521 on SST-2 dev with
            the three default templates: use calibration for a model that leans towards one label word.
        chat (`bool`, defaults to `False`): put the template, as the user's message, in the tokenizer's chat template
            (generation prompt added) and score the answer's first word. Off by default, also for chat-tuned models:
            SmolLM2-135M-Instruct scored 0.575 that way against 0.860 with `DEFAULT_TEMPLATE` as plain text.
        add_bos (`bool`, *optional*): make every prompt start with the BOS token (`True`) or not (`False`). By default
            the tokenizer decides, except for Gemma, which was trained with `<bos>` first and gets it always.

    Example:

    ```python
    >>> classifier = ZeroShotLMClassifier(model, tokenizer, {"positive": "great", "negative": "terrible"})
    >>> classifier(["A wonderful film.", "Dull and far too long."])  # doctest: +SKIP
    [{'label': 'positive', 'score': 0.71, 'scores': {...}}, {'label': 'negative', ...}]
    ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        labels: Sequence[str] | Mapping[str, str | Sequence[str]],
        template: str | Sequence[str] | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        calibration_text: str | Sequence[str] | None = None,
        chat: bool = False,
        add_bos: bool | None = None,
    ):
        self.chat = chat
        if chat and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True needs a tokenizer with a chat template; this one has none (use chat=False).")
        if template is None:
            template = DEFAULT_CHAT_TEMPLATE if self.chat else DEFAULT_TEMPLATES
        templates = [template] if isinstance(template, str) else list(template)
        if not templates:
            raise ValueError("template must be a prompt with '{text}' or a non-empty list of them, got [].")
        for one in templates:
            if not isinstance(one, str) or "{text}" not in one:
                raise ValueError(f"template must contain '{{text}}' where the text goes, got {one!r}.")
        _check_batching(batch_size, max_length)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.templates = templates
        self.batch_size = batch_size
        self.max_length = max_length
        self.label_words = _label_words(labels)
        self.labels = list(self.label_words)
        model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
        self.carries_state = model_type == "awd_lstm"
        # Gemma was trained with <bos> starting every sequence and scores without it are close to noise; a Gemma
        # tokenizer loaded from some conversions does not add it, so it is made sure of here.
        self.add_bos = (True if model_type.startswith("gemma") else None) if add_bos is None else add_bos
        self.prompt_formats = [self._render(one) for one in templates]
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        # Per template, every word of every label as token ids of its continuation; which label each word is of.
        self._words = [self._word_ids(prompt_format) for prompt_format in self.prompt_formats]
        self._word_label = [index for index, label in enumerate(self.labels) for _ in self.label_words[label]]
        self.calibration_scores = None
        if calibration_text is not None:
            texts = [calibration_text] if isinstance(calibration_text, str) else list(calibration_text)
            if not texts or any(not isinstance(text, str) or not text.strip() for text in texts):
                raise ValueError(
                    "calibration_text must be a non-empty text or a non-empty list of non-empty texts, got "
                    f"{calibration_text!r:.200}."
                )
            self.calibration_scores = torch.stack(
                [self.label_log_likelihoods(texts, index).mean(dim=0) for index in range(len(templates))]
            )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def prompt_format(self) -> str:
        """The (first) prompt as the model reads it, `{text}` left in it."""
        return self.prompt_formats[0]

    def _word_ids(self, prompt_format: str) -> list[list[int]]:
        # After a prompt that ends in a space or a new line (a chat turn), the label word follows directly.
        prefix = "" if prompt_format[-1:].isspace() else " "
        words = []
        for label in self.labels:
            for word in self.label_words[label]:
                ids = self.tokenizer(prefix + word.strip(), add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ValueError(f"label word {word!r} of label {label!r} tokenizes to nothing.")
                words.append(ids)
        return words

    def _render(self, template: str) -> str:
        """The prompt's text with `{text}` left in it: the template itself, or the template as the user's message of
        a chat turn that the model is about to answer (the tokenizer's chat template, generation prompt added)."""
        if not self.chat:
            return template
        message = [{"role": "user", "content": template}]
        return self.tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)

    def _prompt_ids(self, texts: Sequence[str], template: int = 0) -> list[list[int]]:
        prompt_format = self.prompt_formats[template]
        if self.chat:
            # A chat template writes its own special tokens (Gemma's <bos> included): the tokenizer adds none.
            prompts = [prompt_format.replace("{text}", text) for text in texts]
            ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer([prompt_format.format(text=text) for text in texts])["input_ids"]
        bos = self.tokenizer.bos_token_id
        if self.add_bos is not None and bos is not None:
            ids = [[bos] + row if self.add_bos and row[:1] != [bos] else row for row in ids]
            ids = [row[1:] if not self.add_bos and row[:1] == [bos] else row for row in ids]
        return [row[-self.max_length :] if self.max_length else row for row in ids]

    def _pad(self, rows: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad rows of ids on the right (or the left): `(input_ids, attention_mask)` on the model's device."""
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[index, span] = torch.tensor(row)
            attention_mask[index, span] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    @torch.no_grad()
    def word_log_likelihoods(self, texts: Sequence[str], template: int = 0) -> torch.Tensor:
        """`(len(texts), num_words)`: log p(word | prompt) of every label word, summed over its tokens, after the
        prompt of template number `template`."""
        prompts = self._prompt_ids(texts, template)
        if self.carries_state:
            return self._scores_from_state(prompts, self._words[template])
        return self._scores_from_concatenation(prompts, self._words[template])

    def _scores_from_state(self, prompts: list[list[int]], words: list[list[int]]) -> torch.Tensor:
        # Left padding puts every prompt's last token in the last column, so only that column's logits are computed
        # (the decoder over the whole vocabulary costs as much as the LSTM); the state is each row's after its last
        # real token whatever the padding.
        input_ids, attention_mask = self._pad(prompts, left=True)
        out = self.model(input_ids, attention_mask=attention_mask, logits_to_keep=1, return_dict=True)
        first_log_probs = out.logits[:, -1].float().log_softmax(-1)
        scores = []
        for word in words:
            score = first_log_probs[:, word[0]]
            if len(word) > 1:
                # Continue each prompt's state with the word's tokens: the prompt is never read again.
                continuation = torch.tensor([word[:-1]] * len(prompts), device=self.device)
                log_probs = self.model(continuation, state=out.state, return_dict=True).logits.float().log_softmax(-1)
                targets = torch.tensor(word[1:], device=self.device)
                score = score + log_probs.gather(-1, targets.expand(len(prompts), -1).unsqueeze(-1)).sum((1, 2))
            scores.append(score)
        return torch.stack(scores, dim=1)

    def _log_probs_at(self, rows: list[list[int]], positions: list[list[int]]) -> torch.Tensor:
        """`(len(rows), k, vocab)`: the next-token log-probabilities at `positions[i]` (k per row) of each row.

        Rows are padded on the right, so every real token sees exactly what it would see alone. Where the model takes
        `logits_to_keep` as positions (Llama, Gemma, Qwen... in transformers), only the positions asked for go
        through the output layer: Gemma's 262k-word vocabulary would otherwise cost a GB of logits per batch.
        """
        input_ids, attention_mask = self._pad(rows)
        wanted = torch.tensor(positions, device=self.device)
        if self._takes_logits_to_keep:
            kept = wanted.unique()  # sorted
            logits = self.model(input_ids, attention_mask=attention_mask, logits_to_keep=kept).logits
            wanted = torch.searchsorted(kept, wanted)
        else:
            logits = self.model(input_ids, attention_mask=attention_mask).logits
        rows_index = torch.arange(len(rows), device=self.device).unsqueeze(1)
        return logits[rows_index, wanted].float().log_softmax(-1)

    def _scores_from_concatenation(self, prompts: list[list[int]], words: list[list[int]]) -> torch.Tensor:
        # One pass over the prompts scores the first token of every word (label words are mostly one token); a word
        # of several tokens needs its earlier tokens in the input: one more pass for each such word.
        first = self._log_probs_at(prompts, [[len(prompt) - 1] for prompt in prompts])[:, 0]
        scores = []
        for word in words:
            score = first[:, word[0]]
            if len(word) > 1:
                rows = [prompt + word[:-1] for prompt in prompts]
                # The logit at position p predicts the token at p + 1.
                positions = [[len(prompt) + offset for offset in range(len(word) - 1)] for prompt in prompts]
                log_probs = self._log_probs_at(rows, positions)
                targets = torch.tensor(word[1:], device=self.device).expand(len(prompts), -1).unsqueeze(-1)
                score = score + log_probs.gather(-1, targets).sum((1, 2))
            scores.append(score)
        return torch.stack(scores, dim=1)

    def label_log_likelihoods(self, texts: Sequence[str], template: int = 0) -> torch.Tensor:
        """`(len(texts), num_labels)`: log of the summed probabilities of each label's words after the prompt of
        template number `template` (uncalibrated)."""
        results = []
        word_label = torch.tensor(self._word_label)
        for start in range(0, len(texts), self.batch_size):
            words = self.word_log_likelihoods(texts[start : start + self.batch_size], template).cpu()
            per_label = [words[:, word_label == index].logsumexp(dim=1) for index in range(len(self.labels))]
            results.append(torch.stack(per_label, dim=1))
        return torch.cat(results)

    def label_log_probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """`(len(texts), num_labels)`: the log-probability of each label, what `__call__` reports. Per template, the
        label log-likelihoods (calibrated where asked) are normalised over the labels; several templates average
        these log-probabilities (a product of experts), then normalise again."""
        per_template = []
        for index in range(len(self.templates)):
            scores = self.label_log_likelihoods(texts, index)
            if self.calibration_scores is not None:
                scores = scores - self.calibration_scores[index]
            per_template.append(scores.log_softmax(dim=1))
        return torch.stack(per_template).mean(dim=0).log_softmax(dim=1)

    def __call__(self, texts: str | Sequence[str]) -> list[dict]:
        """Classify `texts` (one string or several).

        Returns:
            `list[dict]`: per text, `label` (the best), `score` (its probability among the labels) and `scores`
            (label -> probability), as the text-classification pipeline with `top_k=None` reports them.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return []
        probabilities = self.label_log_probabilities(texts).exp()
        results = []
        for row in probabilities.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                {"label": self.labels[best], "score": row[best], "scores": dict(zip(self.labels, row, strict=True))}
            )
        return results


class ZeroShotMultipleChoice:
    """Answer multiple-choice questions with a causal language model and no training: the choice whose tokens the LM
    finds most likely after the context wins (GPT's zero-shot evaluation by LM scoring, Radford et al. 2018).

    Each choice is scored by the sum of the log-probabilities of its tokens, read after the context (`" " + choice`
    follows the context, as `ZeroShotLMClassifier` scores label words). With `length_normalization=True` the sum is
    divided by the number of the choice's tokens, so that longer answers are not penalised for their length (the
    per-token average that GPT-3's evaluation uses on some tasks); the plain sum is the default, as in GPT-2's and
    lm-evaluation-harness' `acc`. Any causal LM works, AWD-LSTM included; context and choice are read together.

    Args:
        model (`nn.Module`): a causal LM (`AWDLSTMForCausalLM`, `GPT2LMHeadModel`, any `AutoModelForCausalLM`).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        length_normalization (`bool`, defaults to `False`): score choices by their mean token log-probability.
        batch_size (`int`, defaults to 16): (context, choice) sequences per forward pass.
        max_length (`int`, *optional*): keep only the last `max_length` tokens of each context.

    Example:

    ```python
    >>> answer = ZeroShotMultipleChoice(model, tokenizer)  # doctest: +SKIP
    >>> answer(["The man broke his toe because"], [["he dropped a hammer on his foot.", "he got a hole in his sock."]])
    [{'label': 0, 'score': 0.83, 'scores': [0.83, 0.17]}]  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        length_normalization: bool = False,
        batch_size: int = 16,
        max_length: int | None = None,
    ):
        _check_batching(batch_size, max_length)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.length_normalization = length_normalization
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _context_ids(self, context: str) -> list[int]:
        ids = self.tokenizer(context)["input_ids"]
        ids = ids[-self.max_length :] if self.max_length else ids
        if not ids:
            # The first choice token needs a position to be predicted from: start from BOS (or end-of-text).
            start = (
                self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            )
            if start is None:
                raise ValueError(f"context {context!r} tokenizes to nothing and the tokenizer has no BOS token.")
            ids = [start]
        return ids

    @torch.no_grad()
    def choice_log_likelihoods(
        self, contexts: Sequence[str], choices: Sequence[Sequence[str]]
    ) -> tuple[list[list[float]], list[list[int]]]:
        """Per row and choice: the summed log-probability of the choice's tokens after the context, and their count.

        Raises:
            `ValueError` naming the row and the choice when a choice is missing, empty or tokenizes to nothing.
        """
        if len(contexts) != len(choices):
            raise ValueError(f"{len(contexts)} contexts for {len(choices)} rows of choices.")
        sequences = []  # (row, choice index, context ids, choice ids)
        for row, (context, row_choices) in enumerate(zip(contexts, choices, strict=True)):
            if not isinstance(context, str) or not context.strip():
                raise ValueError(f"row {row}: the context {context!r} is missing or empty.")
            context_ids = self._context_ids(context)
            for index, choice in enumerate(row_choices):
                if not isinstance(choice, str) or not choice.strip():
                    raise ValueError(f"row {row}, choice {index}: {choice!r} is missing or empty.")
                ids = self.tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ValueError(f"row {row}, choice {index}: {choice!r} tokenizes to nothing.")
                sequences.append((row, index, context_ids, ids))
        sums = [[0.0] * len(row_choices) for row_choices in choices]
        counts = [[0] * len(row_choices) for row_choices in choices]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            rows = [context + choice for _, _, context, choice in batch]
            width = max(len(row) for row in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for index, row in enumerate(rows):
                input_ids[index, : len(row)] = torch.tensor(row)
                attention_mask[index, : len(row)] = 1
            logits = self.model(input_ids.to(self.device), attention_mask=attention_mask.to(self.device)).logits
            log_probs = logits.float().log_softmax(-1).cpu()
            for index, (row, choice_index, context, choice) in enumerate(batch):
                # The logit at position p predicts the token at p + 1.
                positions = torch.arange(len(context) - 1, len(context) - 1 + len(choice))
                score = log_probs[index, positions, torch.tensor(choice)].sum()
                sums[row][choice_index] = float(score)
                counts[row][choice_index] = len(choice)
        return sums, counts

    def __call__(self, contexts: str | Sequence[str], choices: Sequence[str] | Sequence[Sequence[str]]) -> list[dict]:
        """Pick the most likely choice of each row (one context and its choices, or lists of both).

        Returns:
            `list[dict]`: per row, `label` (the index of the best choice), `score` (its probability among the
            choices: the softmax of the choice scores) and `scores` (every choice's probability, in order).
        """
        if isinstance(contexts, str):
            contexts, choices = [contexts], [choices]
        sums, counts = self.choice_log_likelihoods(list(contexts), [list(row) for row in choices])
        results = []
        for row_sums, row_counts in zip(sums, counts, strict=True):
            scores = torch.tensor(row_sums)
            if self.length_normalization:
                scores = scores / torch.tensor(row_counts, dtype=torch.float)
            probabilities = scores.softmax(0).tolist()
            best = int(scores.argmax())
            results.append({"label": best, "score": probabilities[best], "scores": probabilities})
        return results
