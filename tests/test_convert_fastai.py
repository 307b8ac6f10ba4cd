"""fastai checkpoints -> tl_nlp folders: parity with fastai's own models, safe loading, clear errors."""

import json
import os
import pickle
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tl_nlp import AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.cli import main as cli_main
from tl_nlp.convert_fastai import (
    convert_fastai_checkpoint,
    fastai_to_awd_lstm_state_dict,
    load_fastai_state_dict,
    load_fastai_vocab,
    ulmfit_tokenizer_from_fastai_vocab,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
WORDS = ["the", ".", ",", "movie", "a", "and", "good", "bad", "film", "it", "is", "was", "great", "!", "i", "plot"]
# fastai pads its vocabulary to a multiple of 8 with repeated `xxfake`.
VOCAB = SPECIALS + WORDS + ["xxfake"] * (32 - len(SPECIALS) - len(WORDS))


# Why a test that compares against fastai skips (pytest's reason).
NO_FASTAI = (
    "no fastai reference environment: `make .fastai-venv/.ready` builds it with scripts/build_fastai_env.sh (needs "
    "the package index), or set TL_NLP_FASTAI_PYTHON to the python of an environment with fastai"
)


def fastai_python() -> str | None:
    candidates = [os.environ.get("TL_NLP_FASTAI_PYTHON"), str(REPO_ROOT / ".fastai-venv" / "bin" / "python")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


FASTAI_SCRIPT = textwrap.dedent(
    """
    import json, pickle, sys
    import torch
    from fastai.learner import save_model
    from fastai.optimizer import Adam
    from fastai.text.all import AWD_LSTM, awd_lstm_clas_config, awd_lstm_lm_config, get_language_model, get_text_classifier

    out, vocab = sys.argv[1], json.loads(sys.argv[2])
    torch.manual_seed(0)
    sizes = dict(emb_sz=8, n_hid=12, n_layers=3)
    lm = get_language_model(AWD_LSTM, len(vocab), config={**awd_lstm_lm_config, **sizes})
    clas = get_text_classifier(
        AWD_LSTM, len(vocab), 3, seq_len=8, max_len=40, config={**awd_lstm_clas_config, **sizes}, lin_ftrs=[6]
    )
    with torch.no_grad():  # random everything, BatchNorm statistics included, so that every tensor matters
        for model in (lm, clas):
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.5)
    ids = torch.randint(4, 25, (2, 30))
    lm.eval(); clas.eval()
    with torch.no_grad():
        lm.reset()
        lm_logits = lm(ids)[0]
        clas_logits = clas(ids)[0]
    torch.save(lm.state_dict(), f"{out}/lm.pth")
    save_model(f"{out}/clas.pth", clas, Adam(clas.parameters(), lr=1e-3))  # learn.save: {"model", "opt"}
    with open(f"{out}/vocab.pkl", "wb") as f:
        pickle.dump(vocab, f)
    json.dump({"ids": ids.tolist(), "lm": lm_logits.tolist(), "clas": clas_logits.tolist()}, open(f"{out}/expected.json", "w"))
    """
)


@pytest.fixture(scope="module")
def fastai_files(tmp_path_factory) -> Path:
    python = fastai_python()
    if python is None:
        pytest.skip(NO_FASTAI)
    out = tmp_path_factory.mktemp("fastai")
    result = subprocess.run(
        [python, "-c", FASTAI_SCRIPT, str(out), json.dumps(VOCAB)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_converted_language_model_gives_fastais_logits(fastai_files, tmp_path):
    expected = json.loads((fastai_files / "expected.json").read_text())
    model = convert_fastai_checkpoint(fastai_files / "lm.pth", fastai_files / "vocab.pkl", tmp_path / "lm")
    assert isinstance(model, AWDLSTMForCausalLM)
    config = model.config
    assert (config.vocab_size, config.embedding_size, config.hidden_size, config.num_hidden_layers) == (32, 8, 12, 3)
    assert config.tie_word_embeddings and config.pad_token_id == 1 and config.bos_token_id == 2
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    ids = torch.tensor(expected["ids"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, torch.tensor(expected["lm"]), rtol=0, atol=1e-5)


def test_converted_classifier_gives_fastais_logits(fastai_files, tmp_path):
    expected = json.loads((fastai_files / "expected.json").read_text())
    model = convert_fastai_checkpoint(
        fastai_files / "clas.pth",
        fastai_files / "vocab.pkl",
        tmp_path / "clas",
        labels=["neg", "neu", "pos"],
        bptt=8,
        max_len=40,
    )
    assert isinstance(model, AWDLSTMForSequenceClassification)
    assert model.config.classifier_hidden_sizes == [6] and model.config.num_labels == 3
    assert (model.config.bptt_chunk_length, model.config.max_len) == (8, 40)
    # fastai's Linear layers after a BatchNorm have no bias: ours are zero.
    assert torch.equal(model.classifier.layers[2].bias, torch.zeros(6))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clas").eval()
    assert reloaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    ids = torch.tensor(expected["ids"])  # 30 tokens: 4 chunks of 8, all pooled as in fastai
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, torch.tensor(expected["clas"]), rtol=0, atol=1e-5)


def test_tokenizer_keeps_fastais_vocabulary_order(tmp_path):
    vocab_path = tmp_path / "vocab.pkl"
    vocab_path.write_bytes(pickle.dumps(VOCAB))
    vocab, labels = load_fastai_vocab(vocab_path)
    assert vocab == VOCAB and labels is None
    tokenizer = ulmfit_tokenizer_from_fastai_vocab(vocab)
    tokenizer.save_pretrained(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok", trust_remote_code=True)
    assert len(tokenizer) == len(VOCAB)
    # Every word keeps its fastai id; the `xxfake` fillers keep their ids but text never reaches them.
    assert [tokenizer.convert_tokens_to_ids(word) for word in WORDS] == list(range(9, 9 + len(WORDS)))
    assert tokenizer.convert_ids_to_tokens(31) == "xxfake 31"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("The movie was GREAT!!! xxfake")["input_ids"])
    # "3" (of `xxrep 3 !`) is not in this tiny vocabulary, and `xxfake` in text is unknown, as in fastai.
    assert tokens == ["xxbos", "xxmaj", "the", "movie", "was", "xxup", "great", "xxrep", "xxunk", "!", "xxunk"]


def test_vocabulary_with_class_names_and_cli(fastai_files, tmp_path):
    vocab_path = tmp_path / "vocab_and_classes.pkl"
    vocab_path.write_bytes(pickle.dumps([VOCAB, ["a", "b", "c"]]))
    assert (
        cli_main(
            [
                "convert-fastai",
                "--weights",
                str(fastai_files / "clas.pth"),
                "--vocab",
                str(vocab_path),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}
    assert {"tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }


class _RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(VOCAB))
    assert (
        cli_main(
            [
                "convert-fastai",
                "--weights",
                str(tmp_path / "nope.pth"),
                "--vocab",
                str(tmp_path / "vocab.pkl"),
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert error.startswith("tl-nlp convert-fastai: error: fastai weights ") and "nope.pth do not exist" in error
    assert error.count("\n") == 1


def test_crafted_vocabulary_pickle_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "evil.pkl", tmp_path / "pwned"
    path.write_bytes(pickle.dumps(["xxunk", _RunsAShellCommand(marker)]))
    with pytest.raises(ValueError, match=r"refusing to load the fastai vocabulary .*evil\.pkl: .*(posix|os)\.system"):
        load_fastai_vocab(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"itos": VOCAB}))
    with pytest.raises(ValueError, match=r"evil\.pkl is dict, expected a non-empty list"):
        load_fastai_vocab(path)
    path.write_bytes(pickle.dumps(["xxunk", 3]))
    with pytest.raises(ValueError, match=r"evil\.pkl entry 1 is int"):
        load_fastai_vocab(path)


def test_weights_that_need_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    torch.save({"model": {"0.encoder.weight": torch.zeros(2, 2)}, "hook": _RunsAShellCommand(marker)}, path)
    with pytest.raises(ValueError, match=r"cannot load the fastai weights .*evil\.pth safely"):
        load_fastai_state_dict(path)
    assert not marker.exists()


def _tiny_fastai_lm_state_dict() -> dict[str, torch.Tensor]:
    embeddings = torch.randn(32, 8)
    state = {"0.encoder.weight": embeddings, "1.decoder.weight": embeddings.clone(), "1.decoder.bias": torch.zeros(32)}
    for i, (n_in, n_out) in enumerate([(8, 12), (12, 8)]):
        state[f"0.rnns.{i}.weight_hh_l0_raw"] = torch.randn(4 * n_out, n_out)
        state[f"0.rnns.{i}.module.weight_ih_l0"] = torch.randn(4 * n_out, n_in)
        state[f"0.rnns.{i}.module.bias_ih_l0"] = torch.randn(4 * n_out)
        state[f"0.rnns.{i}.module.bias_hh_l0"] = torch.randn(4 * n_out)
    return state


def test_mapping_reads_sizes_and_tying_from_the_shapes():
    state = _tiny_fastai_lm_state_dict()
    kind, values, converted = fastai_to_awd_lstm_state_dict(state)
    assert kind == "lm" and values["num_hidden_layers"] == 2 and values["hidden_size"] == 12
    assert values["tie_word_embeddings"] and "decoder.weight" not in converted
    state["1.decoder.weight"] = torch.randn(32, 8)
    del state["1.decoder.bias"]  # fastai's out_bias=False
    _, values, converted = fastai_to_awd_lstm_state_dict(state)
    assert not values["tie_word_embeddings"] and torch.equal(converted["decoder.bias"], torch.zeros(32))


def test_bad_checkpoints_get_clear_errors(tmp_path):
    state = _tiny_fastai_lm_state_dict()
    state["0.rnns.1.module.weight_ih_l0"] = torch.randn(32, 7)
    with pytest.raises(ValueError, match=r"LSTM layer 1 `weight_ih` has shape \(32, 7\), expected \(32, 12\)"):
        fastai_to_awd_lstm_state_dict(state, source="x.pth")
    with pytest.raises(ValueError, match="holds only an encoder"):
        fastai_to_awd_lstm_state_dict({"encoder.weight": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="not a fastai AWD-LSTM"):
        fastai_to_awd_lstm_state_dict({"bert.embeddings.weight": torch.zeros(3, 2)})
    bidirectional = {**_tiny_fastai_lm_state_dict(), "0.rnns.0.module.weight_ih_l0_reverse": torch.zeros(1)}
    with pytest.raises(ValueError, match="bidirectional"):
        fastai_to_awd_lstm_state_dict(bidirectional)
    torch.save(_tiny_fastai_lm_state_dict(), tmp_path / "lm.pth")
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(VOCAB[:30]))
    with pytest.raises(ValueError, match=r"vocab\.pkl has 30 tokens but the embeddings in .*lm\.pth have 32 rows"):
        convert_fastai_checkpoint(tmp_path / "lm.pth", tmp_path / "vocab.pkl", tmp_path / "out")
    with pytest.raises(ValueError, match=r"missing\.pth do not exist"):
        load_fastai_state_dict(tmp_path / "missing.pth")


def test_backwards_model_gets_a_reversing_tokenizer(tmp_path):
    torch.save(_tiny_fastai_lm_state_dict(), tmp_path / "bwd.pth")
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(VOCAB))
    convert_fastai_checkpoint(tmp_path / "bwd.pth", tmp_path / "vocab.pkl", tmp_path / "out", backwards=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    forward = ulmfit_tokenizer_from_fastai_vocab(VOCAB)
    assert tokenizer.reverse
    assert tokenizer("the movie was good")["input_ids"] == forward("the movie was good")["input_ids"][::-1]
    with pytest.raises(ValueError, match="labels were given but .*bwd.pth is a language model"):
        convert_fastai_checkpoint(tmp_path / "bwd.pth", tmp_path / "vocab.pkl", tmp_path / "o2", labels=["a", "b"])
