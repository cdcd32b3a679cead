// Word count, in JavaScript: the same job as examples-wasm/guests/wordcount.
//
// Words are maximal runs of letters (case-sensitive); the output is each
// word with the number of times it occurs. `map` emits (word, "1") per
// occurrence, `combine` and `reduce` emit (word, decimal sum of the values).
//
// In-mapper combining: when `init` says the task is a map task of a job
// that combines (`task.phase` 'map', `task.combine` true, `task.bufferBytes`
// > 0), `map` does not emit (word, "1") per occurrence but counts the words
// in a Map, and emits (word, count) for every word of it when the Map takes
// more than `bufferBytes` (roughly: each word's length plus SLOT_OVERHEAD)
// and from `finish`, at the end of the task. When `combine` is false `map`
// emits (word, "1") per word, as the contract asks. The host may still run
// `combine` on what `map` emits.
//
// Built into a component with componentize-js against the world `job` of
// guest-sdk/wit (see ./build). The exports of the world are this module's
// exported functions; the interface `host` is imported by its WIT name.
// Keys and values are bytes (`list<u8>` arrives as a Uint8Array); a
// `result<_, string>` export returns normally for `ok` and throws for `err`.

import { emit, nextValues, addCounters } from 'quern:job/host@0.2.0';
import { ALPHABETIC } from './alphabetic.js';

// Letters: the Rust guest splits the lossily decoded UTF-8 text on
// `!char::is_alphabetic()`, which is the Unicode `Alphabetic` property, the
// same property as /\p{Alphabetic}/u. The component's SpiderMonkey has no
// ICU and rejects \p{...}, so ./build generates alphabetic.js (see
// gen-alphabetic.mjs): the same set as explicit ranges, taken from Node's
// /\p{Alphabetic}/u. The Unicode versions of Node and Rust may differ on
// letters added recently.
const WORD = new RegExp(`[${ALPHABETIC}]+`, 'gu');
const NON_ASCII = /[^\x00-\x7f]/;

const decoder = new TextDecoder(); // lossy: invalid UTF-8 becomes U+FFFD, as in Rust
const strictDecoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

const TRUNCATED_LENGTH = 'malformed batch from the host: truncated length';
const TRUNCATED_FIELD = 'malformed batch from the host: truncated field';
const U64_MAX = (1n << 64n) - 1n;

// The pair batch of a word is u32le length, word, u32le 1, "1". Map builds
// it as one string that TextEncoder turns into bytes in a single call: a
// length below 128 is four code units below 128, which encode as
// themselves. Longer words (rare) are written as bytes.
const LENGTH_PREFIX = [];
for (let n = 0; n < 128; n++) LENGTH_PREFIX.push(String.fromCharCode(n) + '\0\0\0');
const ONE_FIELD = '\x01\0\0\0' + '1';

function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function concat(chunks) {
  if (chunks.length === 1) return chunks[0];
  let size = 0;
  for (const c of chunks) size += c.length;
  const out = new Uint8Array(size);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

/** UTF-8 length of a string that holds no lone surrogate. */
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair (two code units) is four bytes.
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c < 0xe000 ? 2 : 3;
  }
  return n;
}

/**
 * Pair batch bytes of (words[i], counts[i]) for each word, or of
 * (words[i], "1") when `counts` is null. `ascii`: every word is ASCII.
 */
function encodePairs(words, counts, ascii) {
  const chunks = [];
  let text = '';
  // An indexed loop: `for (const word of words)` goes through the iterator
  // protocol, which costs five times as much in the component's interpreter.
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    const len = ascii ? word.length : utf8Length(word);
    // The value field: a count's decimal digits are few and ASCII.
    let value = ONE_FIELD;
    if (counts !== null) {
      const digits = String(counts[i]);
      value = LENGTH_PREFIX[digits.length] + digits;
    }
    if (len < 128) {
      text += LENGTH_PREFIX[len] + word + value;
      continue;
    }
    // A long word: its length needs bytes above 0x7f.
    if (text) chunks.push(encoder.encode(text));
    text = '';
    const bytes = encoder.encode(word);
    const tail = encoder.encode(value);
    const pair = new Uint8Array(4 + bytes.length + tail.length);
    view(pair).setUint32(0, bytes.length, true);
    pair.set(bytes, 4);
    pair.set(tail, 4 + bytes.length);
    chunks.push(pair);
  }
  if (text) chunks.push(encoder.encode(text));
  return concat(chunks);
}

// In-mapper combining (see `init`): word -> count while the task's map holds
// its counts back, else null. The module lives as long as the task.
let held = null;
// Whether every held word is ASCII (their UTF-8 length is their length).
let heldAscii = true;
// Bytes the held words take, roughly: each word's length plus
// SLOT_OVERHEAD (the Map entry, the string and the count).
let heldBytes = 0;
const SLOT_OVERHEAD = 64;
// `task.bufferBytes`: how much `held` may take before it is emitted.
let budget = 0;
// The held counts go to the host in pair batches of this many pairs.
const EMIT_PAIRS = 4096;

/** Counts the words in `held`; emits it all whenever over budget. */
function hold(words, ascii) {
  if (!ascii) heldAscii = false;
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    const count = held.get(word);
    if (count !== undefined) {
      held.set(word, count + 1);
      continue;
    }
    held.set(word, 1);
    heldBytes += word.length + SLOT_OVERHEAD;
    if (heldBytes > budget) emitHeld();
  }
}

/** Emits (word, count) for every held word and empties `held`. */
function emitHeld() {
  const words = [];
  const counts = [];
  held.forEach((count, word) => {
    words.push(word);
    counts.push(count);
    if (words.length === EMIT_PAIRS) {
      emit(encodePairs(words, counts, heldAscii));
      words.length = 0;
      counts.length = 0;
    }
  });
  if (words.length > 0) emit(encodePairs(words, counts, heldAscii));
  held.clear();
  heldAscii = true;
  heldBytes = 0;
}

// componentize-js turns a thrown string into `err(string)`; anything else
// thrown (a TypeError from a bug, say) would trap with no message. `guard`
// turns such an exception into its message and stack.
function guard(exported) {
  return function (...args) {
    try {
      return exported(...args);
    } catch (e) {
      if (typeof e === 'string') throw e;
      throw e instanceof Error ? `${e}\n${e.stack}`.trimEnd() : String(e);
    }
  };
}

export const init = guard(function init(task, args) {
  // `task` says what the task is: `phase` ('map' or 'reduce'), `combine`
  // (false with --no-combine) and `bufferBytes` (a BigInt: WIT's u64).
  // `args` is an array of [name, value] from `--arg name=value`; word count
  // takes none. A job keeps what it learns here in module-level variables:
  // the module lives as long as the task (one instance per task).
  //
  // Hold the counts back only in a map task of a job that combines: with
  // `combine` false the guest must not combine either.
  if (task.phase === 'map' && task.combine && task.bufferBytes > 0n) {
    held = new Map();
    budget = Number(task.bufferBytes);
  }
  return { hasCombine: true };
});

export const map = guard(function map(input, records) {
  // A pair batch: (offset, line) pairs for `lines` input, one (file name,
  // contents) pair for `whole-file`. Only the values matter. They are
  // copied into one buffer, one line break apart, and decoded at once: a
  // line break is no letter, so this splits no word and makes none.
  const dv = view(records);
  const n = records.length;
  const starts = [];
  const ends = [];
  let size = 0;
  let pos = 0;
  while (pos < n) {
    if (pos + 4 > n) throw TRUNCATED_LENGTH;
    pos += 4 + dv.getUint32(pos, true);
    if (pos + 4 > n) throw pos > n ? TRUNCATED_FIELD : TRUNCATED_LENGTH;
    const len = dv.getUint32(pos, true);
    pos += 4;
    if (pos + len > n) throw TRUNCATED_FIELD;
    starts.push(pos);
    ends.push(pos + len);
    size += len + 1;
    pos += len;
  }
  const joined = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < starts.length; i++) {
    joined.set(records.subarray(starts[i], ends[i]), at);
    at += ends[i] - starts[i];
    joined[at++] = 0x0a;
  }
  const text = decoder.decode(joined);
  const words = text.match(WORD);
  if (words === null) return;
  const ascii = !NON_ASCII.test(text);
  if (held !== null) hold(words, ascii);
  else emit(encodePairs(words, null, ascii));
  addCounters([['words', BigInt(words.length)]]);
});

export const finish = guard(function finish() {
  // The end of the task: a map task emits the counts it still holds; a
  // reduce task has nothing left (each group was written when it was
  // reduced).
  if (held !== null && held.size > 0) emitHeld();
});

/** A u64 sum: a Number while exact, a BigInt past 2^53. */
class Sum {
  constructor() {
    this.small = 0;
    this.big = null;
  }
  add(n) {
    if (this.big === null && typeof n === 'number' && this.small + n <= Number.MAX_SAFE_INTEGER) {
      this.small += n;
      return;
    }
    this.big = (this.big ?? BigInt(this.small)) + BigInt(n);
    if (this.big > U64_MAX) throw 'sum overflows u64';
  }
  toString() {
    return this.big === null ? String(this.small) : String(this.big);
  }
}

/** One value as a decimal u64, like Rust's `str::trim().parse::<u64>()`. */
function parseCount(bytes, start, end) {
  // Fast path: a few ASCII digits.
  if (end > start && end - start <= 15) {
    let n = 0;
    let i = start;
    for (; i < end; i++) {
      const d = bytes[i] - 0x30;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
    }
    if (i === end) return n;
  }
  let text;
  try {
    text = strictDecoder.decode(bytes.subarray(start, end));
  } catch {
    throw 'a value is not UTF-8 text';
  }
  const digits = text.trim().replace(/^\+/, '');
  if (!/^[0-9]+$/.test(digits)) throw `value ${JSON.stringify(text)} is not a whole number`;
  const n = BigInt(digits);
  if (n > U64_MAX) throw `value ${JSON.stringify(text)} is not a whole number`;
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** Adds the values of a value batch (from `host.next-values`) to `sum`. */
function addValueBatch(batch, sum) {
  const dv = view(batch);
  const n = batch.length;
  let pos = 0;
  while (pos < n) {
    if (pos + 4 > n) throw TRUNCATED_LENGTH;
    const len = dv.getUint32(pos, true);
    pos += 4;
    if (pos + len > n) throw TRUNCATED_FIELD;
    sum.add(len === 1 && batch[pos] === 0x31 ? 1 : parseCount(batch, pos, pos + len));
    pos += len;
  }
}

/** Emits (key, sum of its values) for each group of a group batch. */
function sumGroups(groups, lastComplete) {
  const dv = view(groups);
  const n = groups.length;
  const keys = [];
  const sums = [];
  let size = 0;
  let pos = 0;
  while (pos < n) {
    if (pos + 4 > n) throw TRUNCATED_LENGTH;
    const klen = dv.getUint32(pos, true);
    pos += 4;
    if (pos + klen + 4 > n) throw pos + klen > n ? TRUNCATED_FIELD : TRUNCATED_LENGTH;
    const key = groups.subarray(pos, pos + klen);
    pos += klen;
    let count = dv.getUint32(pos, true);
    pos += 4;
    const sum = new Sum();
    let ones = 0;
    for (; count > 0; count--) {
      // The value "1" (what map emits) is the five bytes 1 0 0 0 "1".
      if (
        groups[pos] === 1 &&
        groups[pos + 1] === 0 &&
        groups[pos + 2] === 0 &&
        groups[pos + 3] === 0 &&
        groups[pos + 4] === 0x31
      ) {
        ones++;
        pos += 5;
        continue;
      }
      if (pos + 4 > n) throw TRUNCATED_LENGTH;
      const len = dv.getUint32(pos, true);
      pos += 4;
      if (pos + len > n) throw TRUNCATED_FIELD;
      sum.add(parseCount(groups, pos, pos + len));
      pos += len;
    }
    sum.add(ones);
    if (pos === n && !lastComplete) {
      // The last group goes on past this batch: pull the rest.
      for (;;) {
        const more = nextValues();
        if (more.length === 0) break;
        addValueBatch(more, sum);
      }
    }
    const value = sum.toString();
    keys.push(key);
    sums.push(value);
    size += 8 + key.length + value.length;
  }
  if (keys.length === 0) return 0;
  // One pair batch for the whole call.
  const out = new Uint8Array(size);
  const odv = view(out);
  let at = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    const value = sums[i];
    odv.setUint32(at, key.length, true);
    out.set(key, at + 4);
    at += 4 + key.length;
    odv.setUint32(at, value.length, true);
    at += 4;
    for (let j = 0; j < value.length; j++) out[at++] = value.charCodeAt(j);
  }
  emit(out);
  return keys.length;
}

export const combine = guard(function combine(groups) {
  sumGroups(groups, true);
});

export const reduce = guard(function reduce(groups, lastComplete) {
  const distinct = sumGroups(groups, lastComplete);
  if (distinct > 0) addCounters([['distinct words', BigInt(distinct)]]);
});
