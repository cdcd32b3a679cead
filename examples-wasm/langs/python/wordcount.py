"""Word count, in Python: the same job as examples-wasm/guests/wordcount.

Words are maximal runs of letters (case-sensitive); the output is each word
with the number of times it occurs. `map` emits (word, "1") per occurrence,
`combine` and `reduce` emit (word, decimal sum of the values).

In-mapper combining: when `init` says the task is a map task of a job that
combines (`task.phase` map, `task.combine` true, `task.buffer_bytes` > 0),
`map` does not emit (word, "1") per occurrence but counts the words in a
`collections.Counter`, and emits (word, count) for every word of it when the
Counter takes more than `buffer_bytes` (roughly: each word's bytes plus
`_SLOT_OVERHEAD`) and from `finish`, at the end of the task. When `combine` is false `map` emits
(word, "1") per word, as the contract asks. The host may still run `combine`
on what `map` emits.

Built into a component with componentize-py against the world `job` of
guest-sdk/wit (see ./build). The generated bindings (`wit_world`) exist only
in the build directory.

Letters: the Rust guest splits the lossily decoded UTF-8 text on
`!char::is_alphabetic()`, the Unicode `Alphabetic` property (categories
Lu Ll Lt Lm Lo, plus Nl and Other_Alphabetic). Python's `str.isalpha` is the
categories Lu Ll Lt Lm Lo only, so the two agree on ASCII and on ordinary
letters of any script but differ on letter numbers such as U+216B ROMAN
NUMERAL TWELVE, circled letters such as U+24B6, and the combining vowel signs
of many scripts (e.g. Devanagari U+093E), which Rust counts as letters and
Python does not.
"""

import collections
import functools
import itertools
import re
import struct

from componentize_py_types import Err
from wit_world import GuestInfo, InputInfo, Phase, TaskInfo
from wit_world.imports import host

_U32 = struct.Struct("<I")
_unpack_u32 = _U32.unpack_from
_pack_u32 = _U32.pack

# The value "1" packed: u32le length 1, then "1". Every pair map emits ends
# with it.
_ONE_FIELD = b"\x01\x00\x00\x001"
_U64_MAX = (1 << 64) - 1

# ASCII text (the common case) is split on bytes, with no decoding at all.
_ASCII_WORD = re.compile(rb"[A-Za-z]+")
# Otherwise: runs of word characters that are neither digits nor "_" are a
# superset of runs of `str.isalpha` characters (they also take numeric
# characters such as "²" or "½"); `_letter_runs` trims them to letters.
_WORD = re.compile(r"[^\W\d_]+")

_TRUNCATED_LENGTH = "malformed batch from the host: truncated length"
_TRUNCATED_FIELD = "malformed batch from the host: truncated field"

# In-mapper combining (see `init`). componentize-py makes a new WitWorld for
# every call, so what lasts for the task lives in module globals.
#
# word (bytes) -> count while the task's map holds its counts back, else None.
_held = None
# Bytes the held words take, roughly: each word's bytes plus _SLOT_OVERHEAD
# (the dict slot, the bytes object and the int of the count).
_held_bytes = 0
_SLOT_OVERHEAD = 100
# `task.buffer_bytes`: how much `_held` may take before it is emitted.
_budget = 0
# The held counts go to the host in pair batches of about this many bytes.
_EMIT_BYTES = 64 * 1024


def _letter_runs(text):
    """The maximal runs of `str.isalpha` characters of `text`, as str."""
    words = []
    for candidate in _WORD.findall(text):
        if candidate.isalpha():
            words.append(candidate)
            continue
        start = None
        for i, ch in enumerate(candidate):
            if ch.isalpha():
                if start is None:
                    start = i
            elif start is not None:
                words.append(candidate[start:i])
                start = None
        if start is not None:
            words.append(candidate[start:])
    return words


def _words(lines):
    """The words of some lines (bytes), as UTF-8 bytes, in order."""
    text = b"\n".join(lines)
    if text.isascii():
        return _ASCII_WORD.findall(text)
    # Invalid UTF-8 becomes U+FFFD, as with Rust's from_utf8_lossy; it is
    # not a letter, so it separates words. A line break is not a letter
    # either, so joining the lines first splits no word and makes none.
    decoded = text.decode("utf-8", "replace")
    return [w.encode("utf-8") for w in _letter_runs(decoded)]


def _quote(value):
    text = value.decode("utf-8")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _count(value):
    """One value as a decimal u64, like Rust's `str::trim().parse::<u64>()`."""
    digits = value.strip()
    if digits[:1] == b"+":
        digits = digits[1:]
    if digits.isdigit():  # bytes.isdigit: ASCII digits only, and not empty
        n = int(digits)
        if n <= _U64_MAX:
            return n
    try:
        quoted = _quote(value)
    except UnicodeDecodeError:
        raise Err("a value is not UTF-8 text") from None
    raise Err(f"value {quoted} is not a whole number")


def _sum_values(batch, pos, count):
    """Sums `count` packed values of `batch` from `pos`; returns (sum, pos)."""
    # Fast path: every value is "1" (what `map` emits). Five-byte fields
    # "\x01\0\0\0" "1" cannot overlap, so `count` of them in exactly
    # 5 * count bytes means all of them are "1".
    end = pos + 5 * count
    if batch.count(_ONE_FIELD, pos, end) == count and end <= len(batch):
        return count, end
    total = 0
    for _ in range(count):
        (length,) = _unpack_u32(batch, pos)
        pos += 4
        if length == 1 and batch[pos] == 0x31:
            total += 1
        else:
            if pos + length > len(batch):
                raise Err(_TRUNCATED_FIELD)
            total += _count(batch[pos : pos + length])
        pos += length
    return total, pos


def _sum_value_batch(batch):
    """Sums a value batch (from `host.next-values`)."""
    n = len(batch)
    if n % 5 == 0 and batch.count(_ONE_FIELD) == n // 5:
        return n // 5
    total = 0
    pos = 0
    while pos < n:
        if pos + 4 > n:
            raise Err(_TRUNCATED_LENGTH)
        (length,) = _unpack_u32(batch, pos)
        pos += 4
        if pos + length > n:
            raise Err(_TRUNCATED_FIELD)
        total += _count(batch[pos : pos + length])
        pos += length
    return total


def _sum_groups(groups, last_complete):
    """Emits (key, sum of its values) for each group of a group batch."""
    out = []
    pos = 0
    n = len(groups)
    while pos < n:
        if pos + 4 > n:
            raise Err(_TRUNCATED_LENGTH)
        (klen,) = _unpack_u32(groups, pos)
        pos += 4
        key_end = pos + klen
        if key_end + 4 > n:
            raise Err(_TRUNCATED_FIELD if key_end > n else _TRUNCATED_LENGTH)
        key = groups[pos:key_end]
        (count,) = _unpack_u32(groups, key_end)
        try:
            total, pos = _sum_values(groups, key_end + 4, count)
        except struct.error:
            raise Err(_TRUNCATED_LENGTH) from None
        except IndexError:
            raise Err(_TRUNCATED_FIELD) from None
        if pos > n:
            raise Err(_TRUNCATED_FIELD)
        if pos == n and not last_complete:
            # The last group goes on past this batch: pull the rest.
            while True:
                more = host.next_values()
                if not more:
                    break
                total += _sum_value_batch(more)
        if total > _U64_MAX:
            raise Err("sum overflows u64")
        value = b"%d" % total
        out.append(_pack_u32(klen) + key + _pack_u32(len(value)) + value)
    if out:
        host.emit(b"".join(out))
    return len(out)


def _hold(words):
    """Counts the words in `_held`; emits it all whenever over budget."""
    global _held_bytes
    # Only the words not held yet add to the table's size. Finding them
    # runs in C code (set, filterfalse) and touches only the batch's words,
    # not the whole table.
    new = list(itertools.filterfalse(_held.__contains__, set(words)))
    added = sum(map(len, new)) + _SLOT_OVERHEAD * len(new)
    if _held_bytes + added <= _budget:
        # The common case: the whole batch fits. Counter.update counts in
        # C code, with no Python loop per word.
        _held.update(words)
        _held_bytes += added
        return
    # The table fills up during this batch: word by word, emptying it into
    # the host whenever a new word takes it over budget.
    for word in words:
        count = _held.get(word)
        if count is not None:
            _held[word] = count + 1
            continue
        _held[word] = 1
        _held_bytes += len(word) + _SLOT_OVERHEAD
        if _held_bytes > _budget:
            _emit_held()


def _emit_held():
    """Emits (word, count) for every held word and empties `_held`."""
    global _held_bytes
    out = []
    size = 0
    for word, count in _held.items():
        value = b"%d" % count
        pair = _pack_u32(len(word)) + word + _pack_u32(len(value)) + value
        out.append(pair)
        size += len(pair)
        if size >= _EMIT_BYTES:
            host.emit(b"".join(out))
            out.clear()
            size = 0
    if out:
        host.emit(b"".join(out))
    _held.clear()
    _held_bytes = 0


def _errors_as_err(export):
    """Turns any exception but `Err` into an `Err` naming it and where.

    componentize-py turns `raise Err(message)` into `err(message)`; any other
    exception would trap with "Python function threw an unexpected
    exception" and no trace of what went wrong. (The frames are walked by
    hand: importing `traceback` would add a megabyte to the component.)
    """

    @functools.wraps(export)
    def wrapper(*args):
        try:
            return export(*args)
        except Err:
            raise
        except Exception as e:
            frames = []
            tb = e.__traceback__.tb_next  # skip this wrapper
            while tb is not None:
                code = tb.tb_frame.f_code
                frames.append(f"{code.co_name} ({code.co_filename}:{tb.tb_lineno})")
                tb = tb.tb_next
            raise Err(f"{type(e).__name__}: {e} in {' <- '.join(reversed(frames))}") from None

    return wrapper


class WitWorld:
    """The exports of the world `job`; componentize-py looks for this name."""

    @_errors_as_err
    def init(self, task: TaskInfo, args) -> GuestInfo:
        # `task` says what the task is: `phase` (Phase.MAP or Phase.REDUCE),
        # `combine` (false with --no-combine) and `buffer_bytes`. `args` is a
        # list of (name, value) from `--arg name=value`; word count takes
        # none. componentize-py makes a new WitWorld for every call, so a job
        # keeps what it learns here in module globals, not on `self`; the
        # module lives as long as the task.
        global _held, _budget
        # Hold the counts back only in a map task of a job that combines:
        # with `combine` false the guest must not combine either.
        if task.phase == Phase.MAP and task.combine and task.buffer_bytes > 0:
            _held = collections.Counter()
            _budget = task.buffer_bytes
        return GuestInfo(has_combine=True)

    @_errors_as_err
    def map(self, input: InputInfo, records: bytes) -> None:
        # A pair batch: (offset, line) pairs for `lines` input, one
        # (file name, contents) pair for `whole-file`. Only values matter.
        lines = []
        pos = 0
        n = len(records)
        try:
            while pos < n:
                (klen,) = _unpack_u32(records, pos)
                pos += 4 + klen
                (vlen,) = _unpack_u32(records, pos)
                pos += 4
                lines.append(records[pos : pos + vlen])
                pos += vlen
        except struct.error:
            raise Err(_TRUNCATED_LENGTH) from None
        if pos > n:
            raise Err(_TRUNCATED_FIELD)
        words = _words(lines)
        if not words:
            return
        if _held is not None:
            _hold(words)
        else:
            # One pair batch for the whole call: u32le len, word, u32le 1, "1".
            host.emit(b"".join([_pack_u32(len(w)) + w + _ONE_FIELD for w in words]))
        host.add_counters([("words", len(words))])

    @_errors_as_err
    def finish(self) -> None:
        # The end of the task: a map task emits the counts it still holds;
        # a reduce task has nothing left (each group was written when it was
        # reduced).
        if _held:
            _emit_held()

    @_errors_as_err
    def combine(self, groups: bytes) -> None:
        _sum_groups(groups, True)

    @_errors_as_err
    def reduce(self, groups: bytes, last_complete: bool) -> None:
        distinct = _sum_groups(groups, last_complete)
        if distinct:
            host.add_counters([("distinct words", distinct)])
