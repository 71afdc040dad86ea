"""Tests for gpt2_common.encoder: golden ids, agreement with tiktoken built from the same vocabulary
files, round trips, <|endoftext|> handling, error messages and the bounded cache."""
from __future__ import annotations

import random
import shutil
import unicodedata
from pathlib import Path

import pytest
import regex

from gpt2_common.encoder import (ENDOFTEXT, EOT, Encoder, EncoderError, bytes_to_unicode,
                                 get_encoder, load_encoder)
from conftest import need


@pytest.fixture(scope="module")
def enc(vocab_dir) -> Encoder:
    return load_encoder(vocab_dir)


@pytest.fixture(scope="module")
def tk(enc):
    """tiktoken's encoder built from the same encoder.json (no network)."""
    need("tiktoken")
    return enc.tiktoken()


CASES = {
    "python": 'def f(x: int) -> str:\n    """Doc."""\n    return f"{x!r:>10}"  # note\n\n'
              "class A(B):\n\tpass\r\n",
    "spaces": "a  b   c    d     e",
    "tabs": "\tx\t\ty\t \t",
    "newlines": "\n\nline\n\n\n\nend\n",
    "mixed_ws": " \t\n \r\n\u00a0\u3000\u2028 x \x0b\x0c\x1c\x85 ",
    "trailing_ws": "word   ",
    "only_ws": " \n\t  ",
    "empty": "",
    "contractions": "I'm, you're, we've, it's, they'll, he'd, don't",
    "contractions_upper": "DON'T WE'LL I'M IT'S THEY'RE WE'VE HE'D",
    "contractions_mixed": "We'LL Don'T it'S they'Re we'vE",
    "emoji": "I 😀 you 🎉🎉 🇺🇳 👍🏽",
    "emoji_zwj": "👩‍👩‍👧‍👦 👨🏾‍💻 🏳️‍🌈",
    "cjk": "日本語のテキスト。中文文本，한국어 텍스트",
    "combining": "e\u0301 a\u0308\u0323 Z\u0351\u0352\u0353 क्षि",
    "control": "a\x01b\x02\x7f\x1b[0mc\x08",
    "nul": "\x00 \x00\x00 a\x00",
    "numbers": "3.14159 1,000,000 ١٢٣ ½ Ⅻ 2024-01-01",
    "punctuation": "!!! ??? ... --- «quoted» “curly” ''' \"\"\"",
    "endoftext_plain": "before<|endoftext|>after",
}


def test_constants(enc):
    assert EOT == 50256 and ENDOFTEXT == "<|endoftext|>"
    assert enc.encoder[ENDOFTEXT] == EOT and len(enc) == 50257


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    ("The dog", [464, 3290]),
    (" Hello world", [18435, 995]),
    ("hello world", [31373, 995]),
    ("GPT-2 isn't bad!", [38, 11571, 12, 17, 2125, 470, 2089, 0]),
    ("  \n\tx", [220, 220, 198, 197, 87]),
    ("日本語", [33768, 98, 17312, 105, 45739, 252]),
    ("😀", [47249, 222]),
    (ENDOFTEXT, [27, 91, 437, 1659, 5239, 91, 29]),
])
def test_golden_ids(enc, text, ids):
    assert enc.encode(text) == ids
    assert enc.decode(ids) == text


def test_get_encoder_original_api(vocab_dir, enc):
    e = get_encoder(Path(vocab_dir).name, str(Path(vocab_dir).parent))
    assert e.encode("Hello world") == [15496, 995]
    assert e.encoder == enc.encoder and e.bpe_ranks == enc.bpe_ranks


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_tiktoken_and_round_trips(enc, tk, name):
    text = CASES[name]
    assert enc.encode(text) == tk.encode_ordinary(text)
    assert enc.decode(enc.encode(text)) == text


def _stable(c: str, _cn=regex.compile(r"\p{Cn}")) -> bool:
    """Code points whose class (letter, number, space, other) is the same in every Unicode version
    from Python's unicodedata up to the regex module's: assigned already, or still unassigned.
    Characters assigned in between may be split differently by regex and tiktoken's Rust tables."""
    return unicodedata.category(c) != "Cn" or _cn.match(c) is not None


RANGES = [(0x00, 0x1F), (0x20, 0x7E), (0x80, 0x24F), (0x300, 0x36F), (0x370, 0x52F),
          (0x590, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F), (0x2070, 0x2BFF), (0x3000, 0x30FF),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFE00, 0xFE0F),
          (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F),
          (0x0, 0x10FFFF)]
PIECES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "'s", "'T", "'ll", "'VE", "'", "\u200d", "\x00"]


def _random_texts(n: int, seed: int = 1234):
    rng = random.Random(seed)
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.3:
                parts.append(rng.choice(PIECES))
            else:
                lo, hi = rng.choice(RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 5))))
        yield "".join(c for c in "".join(parts) if _stable(c))


def _repaired(text: str) -> str:
    """What decode(encode(text)) gives: lone surrogates become U+FFFD, valid pairs are joined."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def test_random_strings_match_tiktoken_and_round_trip(enc, tk):
    for text in _random_texts(3000):
        ids = enc.encode(text)
        assert ids == tk.encode_ordinary(text), repr(text)
        assert enc.decode(ids) == _repaired(text), repr(text)


def test_round_trip_without_tiktoken(enc):
    for text in _random_texts(500, seed=99):
        if not regex.search(r"[\ud800-\udfff]", text):
            assert enc.decode(enc.encode(text)) == text


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "x \ud83d y", "\ud83d\ude00",
                                  "\ude00\ud83d", "ok \ud800\ud800 ok"])
def test_lone_surrogates_encode_like_tiktoken(enc, tk, text):
    ids = enc.encode(text)
    assert ids == tk.encode(text) == tk.encode_ordinary(text)
    assert enc.decode(ids) == _repaired(text)


def test_surrogate_handling_documented_cases(enc):
    assert enc.decode(enc.encode("a\ud800b")) == "a\ufffdb"
    assert enc.encode("\ud83d\ude00") == enc.encode("😀")  # a valid pair is the code point


def test_long_words_match_tiktoken(enc, tk):
    rng = random.Random(5)
    texts = ["ACGT" * 3000, "a" * 5000, " " * 3000 + "x", "\n" * 2000,
             "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5000)),
             "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(2000))]
    for text in texts:
        assert enc.encode(text) == tk.encode_ordinary(text)
        assert enc.decode(enc.encode(text)) == text


def test_heap_and_list_merges_agree(enc):
    words = ["hello", "Ġworld", "ĠHello", "aaaaaaa", "abababab", "ĠsupercalifragilisticĠ",
             "ĠACGTACGTACGTACGT", "ãģĵãĤĵãģ«ãģ¡ãģ¯"]
    rng = random.Random(7)
    alphabet = list(bytes_to_unicode().values())
    words += ["".join(rng.choice(alphabet[:94]) for _ in range(rng.randint(2, 40)))
              for _ in range(300)]
    for w in words:
        assert enc.bpe(w) == enc._bpe_heap(w), w
        assert "".join(enc.bpe(w)) == w


def test_partial_utf8_decodes_with_replacement(enc):
    ids = enc.encode("😀")
    assert len(ids) == 2
    assert enc.decode(ids[:1]) == "\ufffd"
    assert enc.decode(ids[1:]).startswith("\ufffd")
    assert enc.decode(ids) == "😀"
    ids = enc.encode("ab日c")
    pieces = [enc.decode([t]) for t in ids]
    assert "\ufffd" in "".join(pieces) and enc.decode(ids) == "ab日c"


def test_every_single_token_decodes(enc):
    texts = [enc.decode([i]) for i in range(len(enc))]  # never raises
    assert texts[EOT] == ENDOFTEXT and texts[15496] == "Hello"


def test_endoftext_is_plain_text_by_default(enc, tk):
    text = "a<|endoftext|>b"
    ids = enc.encode(text)
    assert EOT not in ids
    assert ids == tk.encode(text, disallowed_special=())
    assert enc.decode(ids) == text


@pytest.mark.parametrize("text", ["<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
                                  "x <|endoftext|> y<|endoftext|>", "no special", "<|endoftext|"])
def test_endoftext_option(enc, tk, text):
    ids = enc.encode(text, allow_endoftext=True)
    assert ids == tk.encode(text, allowed_special={ENDOFTEXT})
    assert ids.count(EOT) == text.count(ENDOFTEXT)
    assert enc.decode(ids) == text


def test_endoftext_option_splits(enc):
    assert enc.encode(ENDOFTEXT, allow_endoftext=True) == [EOT]
    assert enc.encode("Hello world<|endoftext|>The dog", allow_endoftext=True) == [
        15496, 995, EOT, 464, 3290]


def test_encode_batch(enc):
    texts = ["Hello world", "The dog", "", "x<|endoftext|>"]
    assert enc.encode_batch(texts) == [enc.encode(t) for t in texts]
    assert enc.encode_batch(texts, allow_endoftext=True)[3][-1] == EOT


def test_decode_accepts_iterables_and_numpy(enc):
    np = need("numpy")
    ids = enc.encode("Hello world, the dog")
    assert enc.decode(np.array(ids)) == "Hello world, the dog"
    assert enc.decode(np.array(ids, dtype=np.int32).tolist()) == "Hello world, the dog"
    assert enc.decode(iter(ids)) == "Hello world, the dog"
    assert enc.decode(tuple(ids)) == "Hello world, the dog"
    assert enc.decode([]) == ""


# -- errors ----------------------------------------------------------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    assert isinstance(err.value, ValueError)
    return msg


@pytest.mark.parametrize("token", [50257, -1, 10**9])
def test_decode_out_of_range_names_the_id(enc, token):
    with pytest.raises(EncoderError) as err:
        enc.decode([15496, token])
    assert str(token) in _one_line(err) and "out of range" in str(err.value)


@pytest.mark.parametrize("token", ["5", 1.5, None])
def test_decode_rejects_non_integers(enc, token):
    with pytest.raises(EncoderError) as err:
        enc.decode([token])
    _one_line(err)


@pytest.mark.parametrize("value", [b"bytes", None, 42, ["a"]])
def test_encode_rejects_non_str(enc, value):
    with pytest.raises(EncoderError) as err:
        enc.encode(value)
    assert type(value).__name__ in _one_line(err)


@pytest.fixture
def vocab_copy(vocab_dir, tmp_path) -> Path:
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copy(Path(vocab_dir) / f, tmp_path / f)
    return tmp_path


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_missing_file_is_named(vocab_copy, name):
    (vocab_copy / name).unlink()
    with pytest.raises(EncoderError) as err:
        load_encoder(vocab_copy)
    assert str(vocab_copy / name) in _one_line(err)


def test_missing_directory(tmp_path):
    with pytest.raises(EncoderError) as err:
        get_encoder("nope", str(tmp_path))
    assert str(tmp_path / "nope" / "encoder.json") in _one_line(err)


@pytest.mark.parametrize("content, words", [
    ('{"a": 1,', "invalid JSON"),
    ("", "invalid JSON"),
    ("[1, 2]", "malformed"),
    ('{"a": "x"}', "malformed"),
    ('{"a": 0, "b": 0}', "share an id"),
    ('{"a b": 0}', "alphabet"),
    ('{"a": 0}', "byte symbol"),
])
def test_bad_encoder_json(vocab_copy, content, words):
    (vocab_copy / "encoder.json").write_text(content, encoding="utf-8")
    with pytest.raises(EncoderError) as err:
        load_encoder(vocab_copy)
    msg = _one_line(err)
    assert words in msg and "encoder.json" in msg


def test_non_utf8_file(vocab_copy):
    (vocab_copy / "vocab.bpe").write_bytes(b"#version: 0.2\n\xff\xfe x\n")
    with pytest.raises(EncoderError) as err:
        load_encoder(vocab_copy)
    assert "vocab.bpe" in _one_line(err)


@pytest.mark.parametrize("line, words", [("Ġ t x", "line 3"), ("Ġt", "line 3"),
                                         ("q z", "not in encoder.json")])
def test_bad_vocab_bpe(vocab_copy, line, words):
    lines = (vocab_copy / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[2] = line
    (vocab_copy / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(EncoderError) as err:
        load_encoder(vocab_copy)
    msg = _one_line(err)
    assert words in msg and "vocab.bpe" in msg


@pytest.mark.parametrize("keep", [1, 2, 40000, 50000])
def test_vocab_bpe_cut_at_a_line_boundary(vocab_copy, keep):
    """A vocab.bpe cut after a whole line used to load and tokenize differently ("hell" + "o")."""
    lines = (vocab_copy / "vocab.bpe").read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert len(lines) == 50001  # header + 50000 merges
    (vocab_copy / "vocab.bpe").write_text("\n".join(lines[:keep]) + "\n", encoding="utf-8")
    with pytest.raises(EncoderError) as err:
        load_encoder(vocab_copy)
    assert _one_line(err).endswith(f"{keep - 1} merges but {vocab_copy / 'encoder.json'} has 50257 "
                                   "tokens (expected 256 + merges + 1 = "
                                   f"{256 + keep - 1 + 1}): a file is truncated or from another "
                                   "vocabulary")


def test_copied_files_load_and_header_is_optional(vocab_copy, enc):
    assert load_encoder(str(vocab_copy)).bpe_ranks == enc.bpe_ranks
    text = (vocab_copy / "vocab.bpe").read_text(encoding="utf-8")
    (vocab_copy / "vocab.bpe").write_text(text.split("\n", 1)[1], encoding="utf-8")
    assert load_encoder(vocab_copy).bpe_ranks == enc.bpe_ranks


# -- cache -----------------------------------------------------------------------------------------

def test_cache_is_bounded(enc):
    assert enc.cache_size == 100_000 and len(enc.cache) <= enc.cache_size
    small = Encoder(enc.encoder, list(enc.bpe_ranks), cache_size=50)
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(3, 9)))
             for _ in range(2000)]
    text = " ".join(words)
    assert small.encode(text) == enc.encode(text)
    assert len(small.cache) <= small.cache_size
    for w in words[:300]:  # cached and uncached paths give the same ids
        assert small.encode(" " + w) == enc.encode(" " + w)
        assert len(small.cache) <= small.cache_size
