"""Zero-shot classification by LM scoring: exact label log-likelihoods, carried state, calibration, CLI."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, ZeroShotLMClassifier
from tl_nlp.cli import main
from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.zero_shot import DEFAULT_CHAT_TEMPLATE, DEFAULT_TEMPLATE, DEFAULT_TEMPLATES

CORPUS = ["This movie was great, really great!", "Awful film. I hated it. Terrible.", "The cat sat on the mat."] * 4
TEXTS = ["A great film, I loved it.", "Awful.", "The cat was on the mat and it was great"]
LABELS = {"negative": ["bad", "Terrible"], "positive": "great"}  # " Terrible" is two tokens: xxmaj terrible


@pytest.fixture(scope="module")
def tokenizer():
    return train_ulmfit_tokenizer(CORPUS, min_frequency=1)


def awd_lstm_lm(vocab_size: int) -> AWDLSTMForCausalLM:
    torch.manual_seed(0)
    config = AWDLSTMConfig(vocab_size=vocab_size, embedding_size=8, hidden_size=12, num_hidden_layers=2)
    return AWDLSTMForCausalLM(config).eval()


def gpt2_lm(vocab_size: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=64, pad_token_id=1)
    return GPT2LMHeadModel(config).eval()


def reference_log_likelihood(model, tokenizer, prompt: str, word: str) -> float:
    """log p(word | prompt) from one unpadded pass over prompt + word, token by token."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    word_ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + word_ids])
    with torch.no_grad():
        log_probs = model(ids).logits[0].log_softmax(-1)
    return sum(float(log_probs[len(prompt_ids) - 1 + i, token]) for i, token in enumerate(word_ids))


@pytest.mark.parametrize("factory", [awd_lstm_lm, gpt2_lm])
def test_label_scores_are_the_exact_log_likelihoods_of_the_label_words(tokenizer, factory):
    model = factory(len(tokenizer))
    classifier = ZeroShotLMClassifier(model, tokenizer, LABELS, template="{text} It was", batch_size=2)
    assert [len(word) for word in classifier._words[0]] == [1, 2, 1]
    # Batches of 2 with prompts of different lengths: padding and (for AWD-LSTM) carried state change nothing.
    words = torch.cat([classifier.word_log_likelihoods(TEXTS[i : i + 2]) for i in range(0, 3, 2)])
    for row, text in enumerate(TEXTS):
        for column, word in enumerate(["bad", "Terrible", "great"]):
            expected = reference_log_likelihood(model, tokenizer, f"{text} It was", word)
            assert words[row, column].item() == pytest.approx(expected, abs=1e-4), (text, word)
    labels = classifier.label_log_likelihoods(TEXTS)
    torch.testing.assert_close(labels[:, 0], words[:, :2].logsumexp(1))  # several words: summed probabilities
    torch.testing.assert_close(labels[:, 1], words[:, 2])

    results = classifier(TEXTS)
    for result, scores in zip(results, labels.softmax(1).tolist(), strict=True):
        assert result["scores"] == pytest.approx(dict(zip(["negative", "positive"], scores, strict=True)))
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert result["score"] == pytest.approx(max(scores))


def test_calibration_removes_the_models_prior_for_a_label_word(tokenizer):
    model = awd_lstm_lm(len(tokenizer))
    great = tokenizer(" great", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        model.decoder.bias[great] += 20.0  # the LM now says "great" after anything
    labels = {"negative": "bad", "positive": "great"}
    assert [result["label"] for result in ZeroShotLMClassifier(model, tokenizer, labels)(TEXTS)] == ["positive"] * 3
    raw = ZeroShotLMClassifier(model, tokenizer, labels, DEFAULT_TEMPLATE)  # one template (ensembles: below)
    calibrated = ZeroShotLMClassifier(model, tokenizer, labels, DEFAULT_TEMPLATE, calibration_text="N/A")
    expected = raw.label_log_likelihoods(TEXTS) - raw.label_log_likelihoods(["N/A"])
    got = [[result["scores"][label] for label in ("negative", "positive")] for result in calibrated(TEXTS)]
    torch.testing.assert_close(torch.tensor(got), expected.softmax(1))
    # Several unlabelled texts of the task: the mean of their label scores is what is subtracted.
    in_domain = ["A film.", "The plot, the actors and the music.", "Two hours at the cinema."]
    calibrated = ZeroShotLMClassifier(model, tokenizer, labels, DEFAULT_TEMPLATE, calibration_text=in_domain)
    expected = raw.label_log_likelihoods(TEXTS) - raw.label_log_likelihoods(in_domain).mean(0)
    got = [[result["scores"][label] for label in ("negative", "positive")] for result in calibrated(TEXTS)]
    torch.testing.assert_close(torch.tensor(got), expected.softmax(1))
    for bad in ([], ["A film.", ""], ["A film.", None]):
        with pytest.raises(ValueError, match="calibration_text must be"):
            ZeroShotLMClassifier(model, tokenizer, labels, calibration_text=bad)


@pytest.mark.parametrize("factory", [awd_lstm_lm, gpt2_lm])
def test_several_templates_average_their_label_log_probabilities(tokenizer, factory):
    """Each template is checked on its own by the exact log-likelihoods above; an ensemble is the mean of their
    label log-probabilities (normalised over the labels), calibrated template by template."""
    model = factory(len(tokenizer))
    templates = ["{text} It was", "Review: {text}\n"]  # the second ends in white space: words follow directly
    ensemble = ZeroShotLMClassifier(model, tokenizer, LABELS, template=templates, batch_size=2)
    singles = [ZeroShotLMClassifier(model, tokenizer, LABELS, template=template) for template in templates]
    assert singles[1]._words[0] == [
        tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("bad", "Terrible", "great")
    ]
    expected = torch.stack([single.label_log_likelihoods(TEXTS).log_softmax(1) for single in singles]).mean(0)
    got = [[result["scores"][label] for label in ("negative", "positive")] for result in ensemble(TEXTS)]
    torch.testing.assert_close(torch.tensor(got), expected.softmax(1))
    for index, single in enumerate(singles):
        torch.testing.assert_close(ensemble.label_log_likelihoods(TEXTS, index), single.label_log_likelihoods(TEXTS))
    calibrated = ZeroShotLMClassifier(model, tokenizer, LABELS, template=templates, calibration_text="N/A")
    expected = torch.stack(
        [(s.label_log_likelihoods(TEXTS) - s.label_log_likelihoods(["N/A"])).log_softmax(1) for s in singles]
    ).mean(0)
    got = [[result["scores"][label] for label in ("negative", "positive")] for result in calibrated(TEXTS)]
    torch.testing.assert_close(torch.tensor(got), expected.softmax(1))
    assert ZeroShotLMClassifier(model, tokenizer, LABELS).templates == list(DEFAULT_TEMPLATES)
    assert DEFAULT_TEMPLATES[0] == DEFAULT_TEMPLATE


def test_bad_settings_are_refused(tokenizer):
    model = awd_lstm_lm(len(tokenizer))
    with pytest.raises(ValueError, match="template must contain"):
        ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], template="It was")
    with pytest.raises(ValueError, match="template must contain"):
        ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], template=["{text} It was", "It was"])
    with pytest.raises(ValueError, match="non-empty list"):
        ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], template=[])
    with pytest.raises(ValueError, match="at least 2 labels"):
        ZeroShotLMClassifier(model, tokenizer, ["great"])
    with pytest.raises(ValueError, match="non-empty word"):
        ZeroShotLMClassifier(model, tokenizer, {"a": "great", "b": " "})


def test_cli_zero_shot_writes_the_classifiers_answers(tokenizer, tmp_path, capsys):
    model = awd_lstm_lm(len(tokenizer))
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    argv = ["zero-shot", "--model_name_or_path", str(tmp_path / "lm"), "--labels", "negative", "positive",
            "--label_words", "bad|Terrible", "great", "--input_file", str(tmp_path / "texts.txt")]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = ZeroShotLMClassifier(model, tokenizer, LABELS)(TEXTS)
    assert [line["text"] for line in lines] == TEXTS
    for line, answer in zip(lines, expected, strict=True):
        assert line["label"] == answer["label"]
        assert line["scores"] == pytest.approx(answer["scores"], abs=1e-6)

    def same_scores_as_the_api(flags: list[str], **options) -> None:
        assert main([*argv, *flags]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        expected = ZeroShotLMClassifier(model, tokenizer, LABELS, **options)(TEXTS)
        for line, answer in zip(lines, expected, strict=True):
            assert line["scores"] == pytest.approx(answer["scores"], abs=1e-6)

    # Several calibration texts: the mean of their label scores is subtracted, as in the Python API.
    in_domain = ["A film.", "Two hours at the cinema."]
    same_scores_as_the_api(["--calibration_text", *in_domain], calibration_text=in_domain)
    # Several templates: an ensemble, as in the Python API.
    templates = ["{text} It was", "Review: {text} Sentiment:"]
    same_scores_as_the_api(["--template", *templates], template=templates)
    assert main([*argv, "--template", "{text} It was", "no text here"]) == 2
    assert "template must contain '{text}', got 'no text here'" in capsys.readouterr().err

    assert main([*argv, "--calibration_text", "N/A", " "]) == 2
    assert "calibration_text: text 2 of 2 is empty" in capsys.readouterr().err

    assert main(argv[:6] + ["--label_words", "bad"]) == 2
    assert "label_words has 1 entries for 2 labels" in capsys.readouterr().err
    assert main(["zero-shot", "--model_name_or_path", str(tmp_path / "nowhere"), "--labels", "a", "b"]) == 2
    assert "cannot load a causal language model" in capsys.readouterr().err


# ---- zero-shot multiple choice ---------------------------------------------------------------------------------------

from tl_nlp.zero_shot import ZeroShotMultipleChoice  # noqa: E402

CONTEXTS = ["The cat sat on the mat because", "I hated it so"]
CHOICES = [["it was great.", "Awful film, terrible."], ["the movie was great", "the cat sat"]]


@pytest.mark.parametrize("factory", [awd_lstm_lm, gpt2_lm])
def test_choice_scores_are_the_exact_log_likelihoods_of_the_choices(tokenizer, factory):
    model = factory(len(tokenizer))
    # Batches of 3 sequences of different lengths: padding changes nothing.
    answer = ZeroShotMultipleChoice(model, tokenizer, batch_size=3)
    sums, counts = answer.choice_log_likelihoods(CONTEXTS, CHOICES)
    for row, context in enumerate(CONTEXTS):
        for index, choice in enumerate(CHOICES[row]):
            expected = reference_log_likelihood(model, tokenizer, context, choice)
            assert sums[row][index] == pytest.approx(expected, abs=1e-4)
            assert counts[row][index] == len(tokenizer(" " + choice, add_special_tokens=False)["input_ids"])
    results = answer(CONTEXTS, CHOICES)
    for row, result in enumerate(results):
        assert result["label"] == max(range(2), key=lambda index: sums[row][index])
        assert sum(result["scores"]) == pytest.approx(1.0) and result["score"] == max(result["scores"])
    # Length normalisation ranks the choices by their mean token log-probability.
    normalised = ZeroShotMultipleChoice(model, tokenizer, length_normalization=True)(CONTEXTS, CHOICES)
    for row, result in enumerate(normalised):
        means = [total / count for total, count in zip(sums[row], counts[row], strict=True)]
        assert result["label"] == max(range(2), key=means.__getitem__)
    # One row on its own: a context string and its list of choices.
    assert answer(CONTEXTS[0], CHOICES[0])[0]["label"] == results[0]["label"]


def test_a_missing_choice_is_named(tokenizer):
    answer = ZeroShotMultipleChoice(gpt2_lm(len(tokenizer)), tokenizer)
    with pytest.raises(ValueError, match=r"row 1, choice 0: None is missing or empty"):
        answer(CONTEXTS, [CHOICES[0], [None, "the cat sat"]])


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)


@pytest.fixture(scope="module")
def gguf_llama(tmp_path_factory):
    """A tiny Llama and its byte-level BPE tokenizer (spaces are tokens here), read from a GGUF file."""
    pytest.importorskip("gguf")
    from gguf_fixtures import write_tiny_llama_gguf
    from transformers import AutoModelForCausalLM

    from tl_nlp.gguf import load_model, load_tokenizer

    folder = tmp_path_factory.mktemp("gguf_lm")
    write_tiny_llama_gguf(folder / "tiny.gguf")
    model = load_model(AutoModelForCausalLM, str(folder), gguf_file="tiny.gguf").eval()
    return folder, model, load_tokenizer(str(folder), gguf_file="tiny.gguf")


def test_chat_models_are_asked_in_their_chat_template_and_answer_without_a_space(gguf_llama):
    _, model, tokenizer = gguf_llama
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        classifier = ZeroShotLMClassifier(model, tokenizer, {"negative": "bad", "positive": "great"}, chat=True)
        assert not ZeroShotLMClassifier(model, tokenizer, ["bad", "great"]).chat  # asked for, never by default
    finally:
        tokenizer.chat_template = None
    question = DEFAULT_CHAT_TEMPLATE.replace("{text}", TEXTS[0])
    # The template writes <s> itself: one BOS, not two; the answer starts the assistant's line, with no space.
    expected = tokenizer(f"<s>user: {question}\nassistant:\n", add_special_tokens=False)["input_ids"]
    assert classifier._prompt_ids(TEXTS[:1])[0] == expected
    assert expected.count(tokenizer.bos_token_id) == 1
    assert classifier._words[0] == [
        tokenizer(word, add_special_tokens=False)["input_ids"] for word in ("bad", "great")
    ]
    words = classifier.word_log_likelihoods(TEXTS)
    for row, prompt in enumerate(classifier._prompt_ids(TEXTS)):
        for column, word in enumerate(classifier._words[0]):
            with torch.no_grad():
                log_probs = model(torch.tensor([prompt + word])).logits[0].log_softmax(-1)
            reference = sum(float(log_probs[len(prompt) - 1 + i, t]) for i, t in enumerate(word))
            assert words[row, column].item() == pytest.approx(reference, abs=1e-4)
    with pytest.raises(ValueError, match="chat template"):
        ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], chat=True)


def test_bos_is_added_once_when_asked_and_removed_when_not(gguf_llama):
    _, model, tokenizer = gguf_llama
    bos = tokenizer.bos_token_id
    plain = ZeroShotLMClassifier(model, tokenizer, ["bad", "great"])._prompt_ids(TEXTS)
    assert all(row[0] != bos for row in plain)  # this tokenizer adds no BOS by itself
    with_bos = ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], add_bos=True)._prompt_ids(TEXTS)
    assert with_bos == [[bos] + row for row in plain]
    # "<s>" in the template is the BOS token; add_bos=True does not double it, add_bos=False takes it out.
    template = "<s>" + DEFAULT_TEMPLATE
    assert ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], template, add_bos=True)._prompt_ids(TEXTS) == (
        with_bos
    )
    assert ZeroShotLMClassifier(model, tokenizer, ["bad", "great"], template, add_bos=False)._prompt_ids(TEXTS) == (
        plain
    )


def test_cli_zero_shot_reads_a_gguf_file(gguf_llama, tmp_path, capsys):
    folder, model, tokenizer = gguf_llama
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    argv = ["zero-shot", "--model_name_or_path", str(folder), "--gguf_file", "tiny.gguf", "--labels", "bad", "great",
            "--input_file", str(tmp_path / "texts.txt")]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = ZeroShotLMClassifier(model, tokenizer, ["bad", "great"])(TEXTS)
    for line, answer in zip(lines, expected, strict=True):
        assert line["scores"] == pytest.approx(answer["scores"], abs=1e-6)
