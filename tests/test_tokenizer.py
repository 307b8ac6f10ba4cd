"""The ULMFiT tokenizer: rules, fastai parity on crafted text, vocabulary, decode, save/load, subwords, pipeline()."""

import os

import pytest
import torch
from fresh_process import run_without_tl_nlp
from transformers import AutoTokenizer, pipeline

from tl_nlp import AWDLSTMConfig, AWDLSTMForSequenceClassification
from tl_nlp.data import SPECIAL_TOKENS, ULMFiTTokenizerFast, apply_rules, train_ulmfit_tokenizer, undo_rules
from tl_nlp.data.rules import fix_html, replace_capitals, replace_character_runs, replace_word_runs

CORPUS = [
    "Hello world. I don't like it!!! It's GREAT, isn't it? very very very good",
    "The movie was <br /><br />AWFUL &amp; boring... I can't believe it's 7/10 on #IMDb.",
    "The cat sat on the mat. The dog sat on the cat. Mr. O'Brien wasn't there.",
] * 3

# fastai 2.x `Tokenizer(WordTokenizer())` on CORPUS[0], run in .fastai-venv: the reference our rules follow.
FASTAI_TOKENS = (
    "xxbos xxmaj hello world . i do n't like it xxrep 3 ! xxmaj it 's xxup great , is n't it ? xxwrep 3 very good"
).split()


@pytest.fixture(scope="module")
def tokenizer():
    return train_ulmfit_tokenizer(CORPUS, min_frequency=1)


def test_rules_on_crafted_strings():
    assert fix_html("a<br />b &amp; c #39;d nbsp;e") == "a\nb & c 'd  e"
    assert replace_character_runs("cooool!!!!") == "c xxrep 4 o l xxrep 4 ! "
    assert replace_character_runs("too!!") == "too!!"  # two is not a run
    assert replace_word_runs("it is very very very good") == "it is  xxwrep 3 very  good"
    assert replace_word_runs("the the theory") == "the the theory"
    assert replace_word_runs("very very good") == "very very good"
    assert replace_capitals("The BIG dog I A McDonald A1") == "xxmaj The xxup BIG dog I A McDonald xxup A1"
    assert apply_rules("  I LOVED it!!! <br />See 1/2 #1  ok ") == "i xxup loved it xxrep 3 ! \nxxmaj see 1 / 2 # 1 ok"


def test_rules_at_line_starts_and_text_edges():
    # Pinned on the first implementation of the rules (one regex pass per rule, look-behinds at every character).
    assert apply_rules("very very very") == "xxwrep 3 very"
    assert apply_rules("x the the the\n the") == "x xxwrep 4 the"
    assert apply_rules("ab ab ab. ab ab ab") == "xxwrep 3 ab . xxwrep 3 ab"
    assert apply_rules("THE THE THE") == "xxwrep 3 xxup the"
    assert apply_rules("foo\tBar\nBAZ") == "foo\txxmaj bar\nxxup baz"
    assert apply_rules("aaa AAA AaA") == "xxrep 3 a xxrep 3 a aaa"
    assert apply_rules("GREAT Movie U.S.A. B2B 3D X-Men O'Brien iPhone") == (
        "xxup great xxmaj movie xxup u.s.a. xxup b2b 3d x-men o'brien iphone"
    )


def test_undo_rules_reads_back():
    assert (
        undo_rules("xxmaj the xxup cat sat xxrep 3 ! xxwrep 3 very good .".split())
        == "The CAT sat!!! very very very good."
    )
    assert undo_rules("i do n't know , xxmaj bob 's ( ok )".split()) == "i don't know, Bob's (ok)"


def test_tokens_match_fastai_on_crafted_text(tokenizer):
    ids = tokenizer(CORPUS[0])["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == FASTAI_TOKENS


def test_special_tokens_first_in_fastai_order(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == list(range(9))
    config = AWDLSTMConfig()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (
        config.pad_token_id,
        config.bos_token_id,
        config.eos_token_id,
    )
    assert tokenizer.unk_token_id == 0


def test_vocabulary_min_frequency_and_max_size():
    texts = ["alpha beta alpha beta alpha gamma"]
    tokenizer = train_ulmfit_tokenizer(texts, min_frequency=3)
    assert "alpha" in tokenizer.get_vocab() and "beta" not in tokenizer.get_vocab()
    assert tokenizer.tokenize("beta") == ["xxunk"]
    tokenizer = train_ulmfit_tokenizer(texts, min_frequency=1, vocab_size=len(SPECIAL_TOKENS) + 2)
    assert len(tokenizer) == 11 and {"alpha", "beta"} <= set(tokenizer.get_vocab())


def test_decode_undoes_the_rules(tokenizer):
    ids = tokenizer("The CAT sat on the mat!!!")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The CAT sat on the mat!!!"
    assert tokenizer.decode(ids) == "xxbos The CAT sat on the mat!!!"


def test_save_and_auto_load_give_identical_ids(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenization_ulmfit.py", "rules.py"} <= set(os.listdir(tmp_path))
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    direct = ULMFiTTokenizerFast.from_pretrained(tmp_path)
    batch = CORPUS[:3] + ["Unseen WORDS here!!!"]
    expected = tokenizer(batch, padding=True, return_tensors="pt")
    for other in (loaded, direct):
        got = other(batch, padding=True, return_tensors="pt")
        assert torch.equal(got["input_ids"], expected["input_ids"])
        assert torch.equal(got["attention_mask"], expected["attention_mask"])
        assert other.decode(got["input_ids"][1], skip_special_tokens=True) == tokenizer.decode(
            expected["input_ids"][1], skip_special_tokens=True
        )


def test_saved_folder_loads_without_tl_nlp(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    expected = tokenizer(CORPUS[1])["input_ids"]
    script = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(json.dumps(tokenizer(sys.argv[2])['input_ids']))\n"
    )
    assert run_without_tl_nlp(script, [str(tmp_path), CORPUS[1]], tmp_path) == expected


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_subword_tokenizer(model_type, tmp_path):
    tokenizer = train_ulmfit_tokenizer(CORPUS, model_type=model_type, vocab_size=120, min_frequency=1)
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == list(range(9))
    ids = tokenizer("The CAT sat!!!")["input_ids"]
    # The rule tokens are whole tokens, never cut into pieces.
    assert ids[:2] == [vocab["xxbos"], vocab["xxmaj"]] and vocab["xxup"] in ids and vocab["xxrep"] in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The CAT sat!!!"
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded(CORPUS)["input_ids"] == tokenizer(CORPUS)["input_ids"]


def test_reverse_tokenizer_reverses_ids_before_padding(tokenizer, tmp_path):
    backward = ULMFiTTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, reverse=True)
    forward_ids = tokenizer(["The cat sat.", "The dog"])["input_ids"]
    padded = backward(["The cat sat.", "The dog"], padding=True)["input_ids"]
    assert padded[0] == forward_ids[0][::-1]
    assert padded[1] == forward_ids[1][::-1] + [tokenizer.pad_token_id] * (len(forward_ids[0]) - len(forward_ids[1]))
    assert backward.decode(padded[0], skip_special_tokens=True) == "The cat sat."
    backward.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)("The cat sat.")["input_ids"] == padded[0]
    # One text with return_tensors: a (1, length) tensor, as forward tokenizers give and pipeline() expects.
    assert backward("The cat sat.", return_tensors="pt")["input_ids"].tolist() == [padded[0]]


def test_pipeline_on_raw_text_uses_training_ids(tokenizer):
    torch.manual_seed(0)
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2, num_labels=2
    )
    model = AWDLSTMForSequenceClassification(config).eval()
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, device="cpu")
    scores = {item["label"]: item["score"] for item in classify([CORPUS[1]])[0]}
    with torch.no_grad():
        expected = model(**tokenizer(CORPUS[1], return_tensors="pt")).logits.softmax(-1)[0]
    assert scores["LABEL_0"] == pytest.approx(expected[0].item(), abs=1e-6)
    assert scores["LABEL_1"] == pytest.approx(expected[1].item(), abs=1e-6)


def test_large_batch_encoded_in_chunks_gives_the_ids_of_one_by_one_calls(tokenizer):
    chunked = ULMFiTTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    chunked.pipeline_chunk_size = 2  # 9 texts: five chunks, the last one short
    encoded = chunked(CORPUS)
    one_by_one = [tokenizer(text) for text in CORPUS]
    assert encoded["input_ids"] == [single["input_ids"] for single in one_by_one]
    assert encoded["attention_mask"] == [single["attention_mask"] for single in one_by_one]
    assert [encoding.word_ids for encoding in encoded.encodings] == [single.word_ids() for single in one_by_one]
    truncated = chunked(CORPUS, truncation=True, max_length=5)["input_ids"]
    assert truncated == [ids[:5] for ids in encoded["input_ids"]]
    backward = ULMFiTTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, reverse=True)
    backward.pipeline_chunk_size = 2
    assert backward(CORPUS)["input_ids"] == [ids[::-1] for ids in encoded["input_ids"]]
    with pytest.raises(TypeError, match="row 7 is NoneType"):
        chunked(CORPUS[:7] + [None, "text"])


def test_bad_texts_name_the_row(tokenizer):
    with pytest.raises(TypeError, match="row 1 is NoneType"):
        tokenizer(["fine", None])
    with pytest.raises(TypeError, match="row 0 is int"):
        train_ulmfit_tokenizer([3, "text"])


def test_decoding_a_continuation_starts_with_the_space_that_joins_it_to_the_text_before():
    tokenizer = train_ulmfit_tokenizer(["The movie was good. I didn't like it!"] * 3, min_frequency=1)
    ids = tokenizer("The movie was good")["input_ids"]  # xxbos xxmaj the movie was good
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The movie was good"
    assert tokenizer.decode(ids[3:], skip_special_tokens=True) == " movie was good"
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids([".", "xxmaj", "i"])) == ". I"
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids(["n't", "like"])) == "n't like"
