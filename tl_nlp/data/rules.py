"""ULMFiT's text pre-processing rules (Howard & Ruder 2018, section 4), as pure string functions.

The rules run on raw text before it is split into tokens; `undo_rules` turns a list of tokens back into readable
text. This module imports only the standard library: `save_pretrained` copies it next to the tokenizer so that a
saved tokenizer folder applies exactly the same rules where tl_nlp is not installed.

Example:

```python
>>> apply_rules("I LOVED it!!! <br />It was very very very good.")
'i xxup loved it xxrep 3 ! \\nxxmaj it was xxwrep 3 very good.'
>>> undo_rules("xxmaj the xxup end xxrep 3 !".split())
'The END!!!'
```
"""

import html
import re

UNKNOWN_TOKEN = "xxunk"
PAD_TOKEN = "xxpad"
BOS_TOKEN = "xxbos"
EOS_TOKEN = "xxeos"
FIELD_TOKEN = "xxfld"
REPEAT_TOKEN = "xxrep"
WORD_REPEAT_TOKEN = "xxwrep"
UPPER_TOKEN = "xxup"
CAPITALIZED_TOKEN = "xxmaj"

# fastai's order, which the AWD-LSTM config defaults rely on (xxpad=1, xxbos=2, xxeos=3).
SPECIAL_TOKENS = (
    UNKNOWN_TOKEN,
    PAD_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    FIELD_TOKEN,
    REPEAT_TOKEN,
    WORD_REPEAT_TOKEN,
    UPPER_TOKEN,
    CAPITALIZED_TOKEN,
)

# Left-overs of HTML and of escaped strings seen in web corpora (IMDb has `<br />` in most reviews), and the
# WikiText markers for numbers split by the tokenizer that produced it (`1 @,@ 000`).
_HTML_REPLACEMENTS = (
    ("#39;", "'"),
    ("amp;", "&"),
    ("#146;", "'"),
    ("nbsp;", " "),
    ("#36;", "$"),
    ("\\n", "\n"),
    ("quot;", "'"),
    ("<br />", "\n"),
    ('\\"', '"'),
    ("<unk>", UNKNOWN_TOKEN),
    (" @.@ ", "."),
    (" @-@ ", "-"),
    (" @,@ ", ","),
    ("...", " …"),
)

# A non-space character written three times or more in a row: `!!!!` -> `xxrep 4 !`. (`\1\1+` rather than
# `\1{2,}`: the same matches, found in about half the time by Python's regex engine.)
_CHARACTER_RUN = re.compile(r"(\S)\1\1+")
# A word written three times or more in a row, separated only by whitespace: `very very very` -> `xxwrep 3 very`.
# The pattern starts by consuming the whitespace before the word (the text gets a leading space), so that the
# regex engine skips straight to whitespace instead of testing a look-behind at every character. `\w++` is
# possessive: a word is never retried shorter, which keeps the scan linear.
_WORD_RUN = re.compile(r"(\s)(\w++)(?:\s+\2(?!\w)){2,}")
_SPACED_SYMBOLS = re.compile(r"([/#\\])")
# Two literal spaces first: the engine searches for them like a substring.
_SPACE_RUN = re.compile("  +")
# A whitespace-delimited word that starts with a capital: all capitals (2+ characters, no lower-case letter; group
# 1 holds the rest of the word) or capitalised (one capital, then no capital and at least one lower-case letter).
# Starting with `[A-Z]` lets the engine skip to capitals; `(?<!\S.)` then checks that the capital starts a word.
# One pass marks both kinds; the final lower-casing does the rest.
_CAPITAL_WORD = re.compile(r"[A-Z](?<!\S.)(?:([^a-z\s]+)(?!\S)|(?=[^A-Z\s]*[a-z][^A-Z\s]*(?!\S)))")


def fix_html(text: str) -> str:
    """Replaces HTML left-overs (`<br />`, `&amp;`, `#39;`...) by the characters they stand for.

    Whole entities are decoded first, then the ones that lost their `&`: fastai does it the other way round, which
    turns `&amp;` into `&&` and `&#39;` into `&'`.
    """
    text = html.unescape(text)
    for old, new in _HTML_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def _character_run(match: re.Match) -> str:
    return f" {REPEAT_TOKEN} {len(match.group(0))} {match.group(1)} "


def replace_character_runs(text: str) -> str:
    """`cooool` -> `c xxrep 4 o l`: runs of 3+ identical non-space characters."""
    return _CHARACTER_RUN.sub(_character_run, text)


def _word_run(match: re.Match) -> str:
    return f"{match.group(1)} {WORD_REPEAT_TOKEN} {len(match.group(0).split())} {match.group(2)} "


def replace_word_runs(text: str) -> str:
    """`very very very` -> `xxwrep 3 very`: runs of 3+ identical words."""
    return _WORD_RUN.sub(_word_run, " " + text)[1:]


def _capital_word(match: re.Match) -> str:
    return f"{UPPER_TOKEN if match.group(1) else CAPITALIZED_TOKEN} {match.group(0)}"


def replace_capitals(text: str) -> str:
    """`GREAT` -> `xxup GREAT`, `The` -> `xxmaj The` (lower-cased later by `apply_rules`); single letters (`I`, `A`)
    and mixed case (`McDonald`) get no marker."""
    return _CAPITAL_WORD.sub(_capital_word, text)


def apply_rules(text: str) -> str:
    """Applies every ULMFiT rule, in fastai's order, and returns the lower-cased, space-separated result.

    The beginning-of-text token is not added here: the tokenizer's post-processor adds `xxbos`, so that
    `add_special_tokens=False` works as in any transformers tokenizer.
    """
    text = fix_html(text)
    text = replace_character_runs(text)
    text = replace_word_runs(text)
    text = _SPACED_SYMBOLS.sub(r" \1 ", text)
    text = _SPACE_RUN.sub(" ", text)
    text = replace_capitals(text)
    return text.lower().strip()


_CLOSERS = ".,!?;:%)]}…"
_CLITICS = frozenset(["n't", "'s", "'m", "'re", "'ve", "'d", "'ll"])
_OPENERS = ("(", "[", "{", "$", "#")


def undo_rules(tokens: list[str]) -> str:
    """Turns ULMFiT tokens back into readable text: `xxmaj the` -> `The`, `xxup end` -> `END`, `xxrep 3 !` -> `!!!`,
    `xxwrep 3 very` -> `very very very`, and no space before punctuation. Spacing and letter case the rules did
    not record (mixed case, the original whitespace) are not restored."""
    words: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token == CAPITALIZED_TOKEN and following is not None:
            words.append(following[:1].upper() + following[1:])
            index += 2
        elif token == UPPER_TOKEN and following is not None:
            words.append(following.upper())
            index += 2
        elif token in (REPEAT_TOKEN, WORD_REPEAT_TOKEN) and following is not None and following.isdigit():
            repeated = tokens[index + 2] if index + 2 < len(tokens) else ""
            if repeated in (CAPITALIZED_TOKEN, UPPER_TOKEN) and index + 3 < len(tokens):
                repeated = undo_rules(tokens[index + 2 : index + 4])
                index += 1
            count = int(following)
            words.append(repeated * count if token == REPEAT_TOKEN else " ".join([repeated] * count))
            index += 3
        else:
            words.append(token)
            index += 1
    text = ""
    for word in words:
        attaches = word[:1] in _CLOSERS or word in _CLITICS or word[:1].isspace()
        if text and not attaches and not text[-1].isspace() and not _ends_with_opener(text):
            text += " "
        text += word
    return text


def _ends_with_opener(text: str) -> bool:
    return text.endswith(_OPENERS)
