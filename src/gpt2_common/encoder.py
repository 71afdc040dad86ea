"""GPT-2's byte-level BPE tokenizer.

A re-implementation of OpenAI's ``gpt-2/src/encoder.py`` that produces exactly the same token ids:
the same pre-tokenisation regex, the same byte-to-unicode table and the same merge order from
``vocab.bpe``. Differences from the original are additions only:

* errors are :class:`EncoderError` with a one-line message (missing or malformed vocabulary files,
  token ids out of range, non-``str`` input);
* text containing lone surrogates (``"\\ud800"``, not encodable as UTF-8, where the original
  raises) is first repaired the way ``tiktoken`` does it: the text goes through UTF-16 with
  ``surrogatepass`` and back with ``errors="replace"``, so a valid high+low pair becomes its
  code point and a lone surrogate becomes U+FFFD. The ids then match ``tiktoken``'s, and
  ``decode(encode(x)) == x`` holds for every ``x`` without lone surrogates;
* ``encode(text, allow_endoftext=True)`` maps each literal ``<|endoftext|>`` to :data:`EOT`;
* the cache of merged words is bounded and words of any length merge in ``O(n log n)``.

Which characters count as letters, numbers or spaces comes from the ``regex`` module's Unicode
tables; characters assigned in recent Unicode versions may therefore be split differently than by
a tokenizer built on older tables (e.g. tiktoken's), as with any copy of the original.
"""
from __future__ import annotations

import heapq
import json
import operator
import os
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import regex

from .constants import ENDOFTEXT
from .constants import EOT_TOKEN as EOT

__all__ = ["EOT", "ENDOFTEXT", "EncoderError", "Encoder", "bytes_to_unicode", "get_encoder",
           "load_encoder", "read_vocab", "write_vocab"]

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""The pre-tokenisation regex of the original (splits text into words before BPE)."""
_SPLIT = regex.compile(PATTERN).findall

PathLike = Union[str, "os.PathLike[str]"]


class EncoderError(ValueError):
    """A problem with the vocabulary files or with the input of encode/decode (one-line message)."""


def bytes_to_unicode() -> Dict[int, str]:
    """The original's reversible map from each byte to a printable, non-space character.

    Printable Latin-1 bytes map to themselves; the other 68 (control codes, space, ...) map to
    ``chr(256)``, ``chr(257)``, ... in byte order. So ``" "`` (32) becomes ``"Ġ"`` (U+0120).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 256
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(extra)
            extra += 1
    return table


_BYTE_TO_CHAR: Dict[int, str] = bytes_to_unicode()
_CHAR_TO_BYTE: Dict[str, int] = {c: b for b, c in _BYTE_TO_CHAR.items()}
# str.translate table: the Latin-1 decoding of a byte string -> its byte-level unicode form.
_TRANSLATE = [_BYTE_TO_CHAR[b] for b in range(256)]


class Encoder:
    """GPT-2 byte-level BPE: ``encode`` text to token ids and ``decode`` them back.

    ``encoder`` maps token strings (in the byte-level alphabet of :func:`bytes_to_unicode`) to ids;
    ``bpe_merges`` lists symbol pairs, earliest merged first. Merged words are cached in
    ``cache`` (regex piece -> ids), which is cleared whenever it reaches ``cache_size`` entries.
    """

    def __init__(self, encoder: Dict[str, int], bpe_merges: Sequence[Tuple[str, str]],
                 errors: str = "replace", cache_size: int = 100_000) -> None:
        self.encoder = encoder
        self.decoder: Dict[int, str] = {i: s for s, i in encoder.items()}
        # As in the original, a pair listed twice keeps its last rank.
        self.bpe_ranks: Dict[Tuple[str, str], int] = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.errors = errors
        self.byte_encoder, self.byte_decoder = _BYTE_TO_CHAR, _CHAR_TO_BYTE  # as in the original
        self.cache: Dict[str, Tuple[int, ...]] = {}
        self.cache_size = cache_size
        self._bytes: Dict[int, bytes] = {
            i: bytes(_CHAR_TO_BYTE[c] for c in s) for i, s in self.decoder.items()}

    def __len__(self) -> int:
        return len(self.encoder)

    def tiktoken(self):
        """``tiktoken``'s BPE engine over this vocabulary (ids as ranks, token strings mapped back to
        bytes through :func:`bytes_to_unicode`, the same regex): an independent implementation to
        check and time this one against. Needs the ``tiktoken`` package; no network."""
        import tiktoken

        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        ranks = {bytes(byte_of[c] for c in s): i for s, i in self.encoder.items() if s != ENDOFTEXT}
        special = {ENDOFTEXT: self.encoder[ENDOFTEXT]} if ENDOFTEXT in self.encoder else {}
        return tiktoken.Encoding(name="gpt2-from-files", pat_str=PATTERN, mergeable_ranks=ranks,
                                 special_tokens=special)

    # -- BPE ------------------------------------------------------------------------------------

    def bpe(self, word: str) -> List[str]:
        """Merge the characters of ``word`` (byte-level alphabet) into vocabulary symbols.

        Like the original, each step takes the lowest-ranked adjacent pair and merges all its
        non-overlapping occurrences left to right. Equal ranks mean equal pairs, and a merge never
        recreates the pair just merged, so we only track ranks: short words keep a list of pair
        ranks, long ones a heap (``O(n log n)`` instead of the original's ``O(n^2)``). Returns the
        symbols as a list (the original joined them with spaces).
        """
        if len(word) > 64:
            return self._bpe_heap(word)
        ranks, missing = self.bpe_ranks, float("inf")
        parts = list(word)
        pair_ranks = [ranks.get(p, missing) for p in zip(parts, parts[1:])]
        while pair_ranks:
            best = min(pair_ranks)
            if best == missing:
                break
            i = pair_ranks.index(best)
            while i >= 0:
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
                del pair_ranks[i]
                if i > 0:
                    pair_ranks[i - 1] = ranks.get((parts[i - 1], parts[i]), missing)
                if i < len(pair_ranks):
                    pair_ranks[i] = ranks.get((parts[i], parts[i + 1]), missing)
                try:
                    i = pair_ranks.index(best, i + 1)
                except ValueError:
                    i = -1
        return parts

    def _bpe_heap(self, word: str) -> List[str]:
        """:meth:`bpe` for long words: a linked list of symbols plus a heap of (rank, position)."""
        ranks = self.bpe_ranks
        parts: List[str] = list(word)  # "" marks a symbol merged into its left neighbour
        nxt = [*range(1, len(parts)), -1]
        prv = list(range(-1, len(parts) - 1))
        heap = [(r, i) for i, pair in enumerate(zip(parts, parts[1:]))
                if (r := ranks.get(pair)) is not None]
        heapq.heapify(heap)
        while heap:
            best = heap[0][0]
            batch = []  # every occurrence of the best pair, left to right, merged as one step
            while heap and heap[0][0] == best:
                batch.append(heapq.heappop(heap)[1])
            for i in batch:
                j = nxt[i]
                if not parts[i] or j < 0 or ranks.get((parts[i], parts[j])) != best:
                    continue  # stale: this pair changed since it was pushed
                parts[i] += parts[j]
                parts[j] = ""
                k = nxt[i] = nxt[j]
                if k >= 0:
                    prv[k] = i
                    if (r := ranks.get((parts[i], parts[k]))) is not None:
                        heapq.heappush(heap, (r, i))
                h = prv[i]
                if h >= 0 and (r := ranks.get((parts[h], parts[i]))) is not None:
                    heapq.heappush(heap, (r, h))
        return [p for p in parts if p]

    def _encode_piece(self, piece: str) -> Tuple[int, ...]:
        """Ids of one regex piece (cache miss path); stores the result in the bounded cache."""
        word = piece.encode("utf-8").decode("latin-1").translate(_TRANSLATE)
        ids = tuple(self.encoder[s] for s in self.bpe(word))
        if len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[piece] = ids
        return ids

    # -- public API -----------------------------------------------------------------------------

    def encode(self, text: str, *, allow_endoftext: bool = False) -> List[int]:
        """Token ids of ``text``.

        By default ``<|endoftext|>`` in ``text`` is ordinary text (7 tokens), as in the original;
        with ``allow_endoftext=True`` each occurrence becomes :data:`EOT` and the text between
        occurrences is encoded as usual.
        """
        if not isinstance(text, str):
            raise EncoderError(f"encode() expects str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: repaired as tiktoken does (module docstring)
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if allow_endoftext and ENDOFTEXT in text:
            out: List[int] = []
            for n, chunk in enumerate(text.split(ENDOFTEXT)):
                if n:
                    out.append(EOT)
                out += self.encode(chunk)
            return out
        cache, miss = self.cache, self._encode_piece
        out = []
        for piece in _SPLIT(text):
            ids = cache.get(piece)
            out += ids if ids is not None else miss(piece)
        return out

    def encode_batch(self, texts: Iterable[str], *,
                     allow_endoftext: bool = False) -> List[List[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(t, allow_endoftext=allow_endoftext) for t in texts]

    def decode(self, tokens: Iterable[int]) -> str:
        """Text of token ids; bytes that do not form complete UTF-8 characters (a token sequence
        cut inside a character) become U+FFFD (with the default ``errors="replace"``)."""
        return self.decode_bytes(tokens).decode("utf-8", errors=self.errors)

    def decode_bytes(self, tokens: Iterable[int]) -> bytes:
        """The bytes of token ids (a token may hold part of a UTF-8 character)."""
        table = self._bytes
        if not isinstance(tokens, (list, tuple)):
            tokens = list(tokens)  # may be read twice below
        try:
            return b"".join([table[t] for t in tokens])
        except (KeyError, TypeError):  # numpy/torch scalars, bad ids: check one by one
            return b"".join([table[self._check_id(t)] for t in tokens])

    def _check_id(self, token: object) -> int:
        """``token`` as a valid id, or :class:`EncoderError` naming it."""
        try:
            i = operator.index(token)  # int, numpy integer, integer 0-d tensor
        except (TypeError, ValueError):
            raise EncoderError(f"token ids must be integers, got {token!r}") from None
        if i not in self._bytes:
            raise EncoderError(f"token id {i} out of range (vocabulary has ids 0..{len(self) - 1})")
        return i


# -- loading --------------------------------------------------------------------------------------

def _read(path: str) -> str:
    """Text of a vocabulary file, or a one-line :class:`EncoderError`."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise EncoderError(f"missing vocabulary file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EncoderError(f"cannot read vocabulary file {path}: {e}") from None


def _tokenizer_json(path: str) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """``(encoder, merges)`` of a Hugging Face ``tokenizer.json`` that is GPT-2's byte-level BPE
    (a BPE model, GPT-2's byte-level pre-tokenizer without a prefix space, no normalizer, no
    dropout or subword affixes, added tokens only ones the vocabulary has under the same ids);
    anything else is a one-line :class:`EncoderError`. The vocabulary itself is checked by the
    caller, as encoder.json's is."""
    try:
        data = json.loads(_read(path))
    except json.JSONDecodeError as e:
        raise EncoderError(f"invalid JSON in {path}: {e}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "merges" not in model:
        what = model.get("type", "no BPE merges") if isinstance(model, dict) else "no model"
        raise EncoderError(f"{path}: a {what} tokenizer, not GPT-2's byte-level BPE")

    def kind(part: str) -> str:
        v = data.get(part)
        return "none" if v is None else str(v.get("type")) if isinstance(v, dict) else repr(v)

    pre = data.get("pre_tokenizer") or {}
    wrong = [f"normalizer {kind('normalizer')}"] if data.get("normalizer") is not None else []
    if kind("pre_tokenizer") != "ByteLevel":
        wrong.append(f"pre-tokenizer {kind('pre_tokenizer')}")
    elif pre.get("add_prefix_space", False) or not pre.get("use_regex", True):
        wrong.append("a byte-level pre-tokenizer with add_prefix_space or without GPT-2's regex")
    if kind("decoder") not in ("ByteLevel", "none"):
        wrong.append(f"decoder {kind('decoder')}")
    for field, ok in (("dropout", None), ("continuing_subword_prefix", ""), ("end_of_word_suffix", ""),
                      ("byte_fallback", False)):
        if model.get(field) not in (ok, None):
            wrong.append(f"{field} {model[field]!r}")
    if wrong:
        raise EncoderError(f"{path}: not GPT-2's byte-level BPE ({', '.join(wrong)})")
    encoder, raw = model.get("vocab"), model["merges"]
    if not isinstance(encoder, dict) or not isinstance(raw, list):
        raise EncoderError(f"malformed {path}: expected model.vocab an object and model.merges a list")
    merges = []
    for n, m in enumerate(raw):
        pair = tuple(m.split(" ")) if isinstance(m, str) else tuple(m) if isinstance(m, list) else ()
        if len(pair) != 2 or not all(isinstance(x, str) and x for x in pair):
            raise EncoderError(f"malformed {path}: merge {n} is {m!r}, not two symbols")
        merges.append(pair)
    for t in data.get("added_tokens") or []:
        content, id_ = (t.get("content"), t.get("id")) if isinstance(t, dict) else (None, None)
        if encoder.get(content) != id_:
            raise EncoderError(f"{path}: added token {content!r} (id {id_}) is not in GPT-2's "
                               "vocabulary under that id")
    return encoder, merges


def read_vocab(model_dir: PathLike) -> Tuple[Dict[str, int], List[Tuple[str, str]], Tuple[str, str]]:
    """``(encoder, merges, (vocabulary file, merges file))`` of the model folder ``model_dir``,
    checked: from ``encoder.json`` and ``vocab.bpe``, in a Hugging Face folder from the same files
    named ``vocab.json`` and ``merges.txt``, or from its ``tokenizer.json`` when it has only that
    (then both file names are its path). One-line :class:`EncoderError`."""
    from .hf import tokenizer_file, vocab_paths

    tokenizer = tokenizer_file(model_dir)
    if tokenizer is not None:
        encoder, merges = _tokenizer_json(tokenizer)
        enc_path = bpe_path = tokenizer
    else:
        enc_path, bpe_path = vocab_paths(model_dir)
        try:
            encoder = json.loads(_read(enc_path))
        except json.JSONDecodeError as e:
            raise EncoderError(f"invalid JSON in {enc_path}: {e}") from None
        merges = None
    enc_name = os.path.basename(enc_path)
    if not (isinstance(encoder, dict) and encoder
            and all(type(v) is int and v >= 0 for v in encoder.values())):
        raise EncoderError(f"malformed {enc_path}: expected an object mapping tokens to ids >= 0")
    if len(set(encoder.values())) != len(encoder):
        raise EncoderError(f"malformed {enc_path}: two tokens share an id")
    bad = next((t for t in encoder if not t or any(c not in _CHAR_TO_BYTE for c in t)), None)
    if bad is not None:
        raise EncoderError(f"malformed {enc_path}: token {bad!r} is not in the byte-level alphabet")
    missing = next((c for c in _TRANSLATE if c not in encoder), None)
    if missing is not None:
        raise EncoderError(f"malformed {enc_path}: no token for byte symbol {missing!r}")

    if merges is None:
        merges = []
        for n, line in enumerate(_read(bpe_path).split("\n"), start=1):
            if not line.strip() or (n == 1 and line.startswith("#")):  # "#version: 0.2" header
                continue
            pair = tuple(line.split())
            if len(pair) != 2:
                raise EncoderError(f"malformed {bpe_path} line {n}: expected two symbols, got {line!r}")
            if pair[0] + pair[1] not in encoder:
                raise EncoderError(f"malformed {bpe_path} line {n}: merge {line!r} makes "
                                   f"{pair[0] + pair[1]!r}, which is not in {enc_name}")
            merges.append(pair)
    else:
        bad = next((m for m in merges if m[0] + m[1] not in encoder), None)
        if bad is not None:
            raise EncoderError(f"malformed {bpe_path}: merge {' '.join(bad)!r} makes {bad[0] + bad[1]!r}, "
                               "which is not in its vocabulary")
    # every merge makes one token: 256 byte tokens + the merges (+ <|endoftext|>) is the whole
    # vocabulary (GPT-2: 256 + 50000 + 1 = 50257), so a file cut at a line boundary is caught here
    expected = 256 + len(merges) + (ENDOFTEXT in encoder)
    if expected != len(encoder):
        raise EncoderError(f"{bpe_path} has {len(merges)} merges but {enc_path} has {len(encoder)} "
                           f"tokens (expected 256 + merges{' + 1' if ENDOFTEXT in encoder else ''} = "
                           f"{expected}): a file is truncated or from another vocabulary")
    return encoder, merges, (enc_path, bpe_path)


def load_encoder(model_dir: PathLike) -> Encoder:
    """The :class:`Encoder` from ``encoder.json`` and ``vocab.bpe`` in ``model_dir`` (in a Hugging
    Face folder: the same files named ``vocab.json`` and ``merges.txt``, or its ``tokenizer.json``;
    see :func:`read_vocab`)."""
    encoder, merges, _ = read_vocab(model_dir)
    return Encoder(encoder, merges)


def write_vocab(encoder: Dict[str, int], merges: Sequence[Tuple[str, str]], enc_path: str,
                bpe_path: str) -> None:
    """Write ``encoder.json`` and ``vocab.bpe`` (under any names) as OpenAI's files are written:
    GPT-2's vocabulary comes out byte for byte as released."""
    with open(enc_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(dict(sorted(encoder.items(), key=operator.itemgetter(1)))))
    with open(bpe_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def get_encoder(model_name: str, models_dir: PathLike) -> Encoder:
    """The original's entry point: the encoder of ``<models_dir>/<model_name>``."""
    return load_encoder(os.path.join(os.fspath(models_dir), model_name))
