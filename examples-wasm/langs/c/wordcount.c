/*
 * Word count as a component of the quern:job world (guest-sdk/wit/quern.wit),
 * in C with the bindings of `wit-bindgen c` (job.h / job.c, generated at build
 * time). The same job as the Rust guest (examples-wasm/guests/wordcount):
 *
 *   map:     (offset, line)   -> (word, "1") for every word of the line
 *   combine: (word, counts)   -> (word, sum)  on the map side
 *   reduce:  (word, counts)   -> (word, sum)  one output line "word<TAB>sum"
 *   finish:  the end of a task: map emits the counts it still holds
 *
 * In-mapper combining: when init says the task is a map task of a job that
 * combines (task-info: phase map, combine true, buffer-bytes > 0), map does
 * not emit (word, "1") per occurrence but counts the words in a hash table,
 * and emits (word, count) for every word of the table when the table takes
 * more than buffer-bytes (roughly: each word's bytes plus SLOT_OVERHEAD)
 * and from finish. When combine is false, map emits (word, "1") per word,
 * as the contract asks. The host may still run combine on what map emits.
 *
 * Words are maximal runs of letters. The Rust guest splits
 * String::from_utf8_lossy(line) on !char::is_alphabetic(); here the line is
 * decoded as UTF-8 by hand: a byte that does not start a well-formed sequence
 * is a separator (Rust turns it into U+FFFD, which is not a letter either),
 * ASCII letters are [A-Za-z], and other code points are letters when
 * iswalpha() says so. On ASCII text the output is the Rust guest's byte for
 * byte. Beyond ASCII, wasi-libc's iswalpha() and Rust's Unicode Alphabetic
 * property disagree on some code points: iswalpha() takes the decimal digits
 * of other scripts (Arabic-Indic U+0660..U+0669, Devanagari U+0966..U+096F,
 * ...) for letters, and its tables, older than Rust's, miss the letters of
 * recent Unicode versions (CJK extensions G and H, ...) and a few combining
 * letters (U+0363..U+036F). Where that matters, replace is_letter() with a
 * table generated from Unicode's DerivedCoreProperties.txt.
 *
 * Job arguments (`--arg name=value`, given to init): min-count=N makes reduce
 * write only the words seen at least N times (default 1: every word). Any
 * other argument fails the task, naming it.
 *
 * Counters: map adds the number of words it saw to the user counter "words".
 *
 * Ownership, as wit-bindgen's C bindings define it: the arguments of an export
 * (exports_job_*) belong to it and are freed here; an error string returned
 * through `err` must be heap-allocated (job_string_dup), the bindings free it
 * once the host has read it; the arguments of an import (quern_job_host_*) are
 * only borrowed by the host, and the list next-values returns is ours to free.
 */
#include "job.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* Pairs are handed to the host once this many bytes are pending, so that a
 * batch of pairs costs one call across the boundary. */
#define EMIT_FLUSH_BYTES (64 * 1024)

static const char MALFORMED[] = "malformed batch from the host";

/* ---- arguments and task ----------------------------------------------- */

static uint64_t min_count = 1;

/* Whether map holds its counts back in the table (init: a map task of a job
 * that combines), and the bytes the table may take before it is emitted. */
static bool holding;
static uint64_t budget;

/* ---- output: a pair batch being filled -------------------------------- */

static uint8_t *pending;
static size_t pending_len, pending_cap;

static void reserve(size_t extra) {
    if (pending_cap - pending_len >= extra) return;
    size_t cap = pending_cap ? pending_cap : 2 * EMIT_FLUSH_BYTES;
    while (cap - pending_len < extra) cap *= 2;
    pending = realloc(pending, cap);
    if (pending == NULL) abort();
    pending_cap = cap;
}

/* Appends u32le length, bytes: one field of a batch. */
static void put_field(const uint8_t *bytes, size_t len) {
    reserve(4 + len);
    uint8_t *at = pending + pending_len;
    at[0] = (uint8_t)len;
    at[1] = (uint8_t)(len >> 8);
    at[2] = (uint8_t)(len >> 16);
    at[3] = (uint8_t)(len >> 24);
    memcpy(at + 4, bytes, len);
    pending_len += 4 + len;
}

/* Hands the pending pairs to the host (which copies them). */
static void flush_pairs(void) {
    if (pending_len == 0) return;
    job_list_u8_t batch = {pending, pending_len};
    quern_job_host_emit(&batch);
    pending_len = 0;
}

static void emit(const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len) {
    put_field(key, key_len);
    put_field(value, value_len);
    if (pending_len >= EMIT_FLUSH_BYTES) flush_pairs();
}

/* Emits (key, n in decimal). */
static void emit_count(const uint8_t *key, size_t key_len, uint64_t n) {
    char digits[20];
    size_t at = sizeof digits;
    do {
        digits[--at] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    emit(key, key_len, (const uint8_t *)digits + at, sizeof digits - at);
}

/* ---- counters --------------------------------------------------------- */

static int64_t words_seen; /* since the last flush */

static void flush_counters(void) {
    if (words_seen == 0) return;
    job_tuple2_string_s64_t deltas[1];
    job_string_set(&deltas[0].f0, "words"); /* borrowed, not copied */
    deltas[0].f1 = words_seen;
    job_list_tuple2_string_s64_t list = {deltas, 1};
    quern_job_host_add_counters(&list);
    words_seen = 0;
}

/* Everything an export buffered goes to the host before it returns. */
static void flush(void) {
    flush_pairs();
    flush_counters();
}

static bool fail(job_string_t *err, const char *message) {
    job_string_dup(err, message);
    return false;
}

/* ---- reading batches -------------------------------------------------- */

typedef struct {
    const uint8_t *at, *end;
} reader_t;

static reader_t reader(const job_list_u8_t *list) {
    return (reader_t){list->ptr, list->ptr + list->len};
}

static bool read_u32(reader_t *r, uint32_t *out) {
    if (r->end - r->at < 4) return false;
    *out = (uint32_t)r->at[0] | (uint32_t)r->at[1] << 8 | (uint32_t)r->at[2] << 16 |
           (uint32_t)r->at[3] << 24;
    r->at += 4;
    return true;
}

static bool read_field(reader_t *r, const uint8_t **bytes, size_t *len) {
    uint32_t n;
    if (!read_u32(r, &n) || (size_t)(r->end - r->at) < n) return false;
    *bytes = r->at;
    *len = n;
    r->at += n;
    return true;
}

/* ---- words ------------------------------------------------------------ */

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence at s[0..n), storing
 * its code point in *cp; 0 when s[0] does not start one. Well-formed means
 * what Rust's from_utf8 accepts: no overlong forms, no surrogates, nothing
 * past U+10FFFF.
 */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t len;
    uint32_t c;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2, c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3, c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0; /* no overlong forms */
        if (b == 0xED) hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4, c = b & 0x07;
        if (b == 0xF0) lo = 0x90; /* no overlong forms */
        if (b == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    c = (c << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return len;
}

static bool is_letter(uint32_t cp) {
    if (cp < 0x80) return (uint32_t)((cp | 0x20) - 'a') < 26;
    return iswalpha((wint_t)cp) != 0;
}

/* ---- in-mapper combining: word -> count ------------------------------- */

/* Bytes counted per word of the table on top of the word's own, roughly
 * what it costs: its share of the slots (4/3 to 8/3 of a 24-byte slot, see
 * grow_table) and the allocation of its copy. */
#define SLOT_OVERHEAD 64

typedef struct {
    uint8_t *word; /* a copy, malloc'd; NULL for a free slot */
    size_t len;
    uint64_t count;
    uint32_t hash;
} slot_t;

/* Open addressing with linear probing; the capacity is a power of two and
 * at most three quarters of the slots are taken. */
static slot_t *slots;
static size_t slots_cap, slots_used;
static uint64_t table_bytes; /* the words' bytes + SLOT_OVERHEAD each */

/* FNV-1a. The table holds one task's own words: no adversary to resist. */
static uint32_t hash_bytes(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

/* The slot of (word, hash): the one holding it, or the free one where it
 * goes. */
static slot_t *find_slot(slot_t *table, size_t cap, const uint8_t *word, size_t len,
                         uint32_t hash) {
    size_t mask = cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        slot_t *s = &table[i];
        if (s->word == NULL ||
            (s->hash == hash && s->len == len && memcmp(s->word, word, len) == 0)) {
            return s;
        }
    }
}

/* Doubles the number of slots (1024 to begin with), moving the words over. */
static void grow_table(void) {
    size_t cap = slots_cap ? 2 * slots_cap : 1024;
    slot_t *table = calloc(cap, sizeof *table);
    if (table == NULL) abort();
    for (size_t i = 0; i < slots_cap; i++) {
        slot_t *old = &slots[i];
        if (old->word != NULL) *find_slot(table, cap, old->word, old->len, old->hash) = *old;
    }
    free(slots);
    slots = table;
    slots_cap = cap;
}

/* Emits (word, count) for every word of the table and empties it (keeping
 * its slots for the words to come). */
static void emit_table(void) {
    for (size_t i = 0; slots_used > 0 && i < slots_cap; i++) {
        slot_t *s = &slots[i];
        if (s->word == NULL) continue;
        emit_count(s->word, s->len, s->count);
        free(s->word);
        *s = (slot_t){0};
        slots_used--;
    }
    table_bytes = 0;
}

/* Adds one occurrence of the word to the table; emits the whole table when
 * that takes it over budget. */
static void count_word(const uint8_t *word, size_t len) {
    if ((slots_used + 1) * 4 > slots_cap * 3) grow_table();
    uint32_t hash = hash_bytes(word, len);
    slot_t *s = find_slot(slots, slots_cap, word, len, hash);
    if (s->word != NULL) {
        s->count++;
        return;
    }
    s->word = malloc(len);
    if (s->word == NULL) abort();
    memcpy(s->word, word, len);
    s->len = len;
    s->count = 1;
    s->hash = hash;
    slots_used++;
    table_bytes += len + SLOT_OVERHEAD;
    if (table_bytes > budget) emit_table();
}

/* ---- map -------------------------------------------------------------- */

/* One word of the input: into the table when map holds its counts back,
 * else out at once as (word, "1"). */
static void map_word(const uint8_t *word, size_t len) {
    static const uint8_t one[] = {'1'};
    words_seen++;
    if (holding) {
        count_word(word, len);
    } else {
        emit(word, len, one, 1);
    }
}

/* Maps every word of the line. */
static void map_line(const uint8_t *line, size_t len) {
    size_t pos = 0, start = 0;
    bool in_word = false;
    while (pos < len) {
        uint32_t cp = 0;
        size_t n = utf8_decode(line + pos, len - pos, &cp);
        bool letter = n > 0 && is_letter(cp);
        if (n == 0) n = 1; /* an invalid byte: a separator */
        if (letter && !in_word) {
            in_word = true;
            start = pos;
        } else if (!letter && in_word) {
            in_word = false;
            map_word(line + start, pos - start);
        }
        pos += n;
    }
    if (in_word) map_word(line + start, pos - start);
}

/* ---- counts ----------------------------------------------------------- */

static bool is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* A count: decimal digits with optional surrounding ASCII whitespace and a
 * leading '+' (what Rust's str::trim + u64::from_str accept). */
static bool parse_u64(const uint8_t *s, size_t n, uint64_t *out) {
    while (n > 0 && is_space(*s)) s++, n--;
    while (n > 0 && is_space(s[n - 1])) n--;
    if (n > 0 && *s == '+') s++, n--;
    if (n == 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Adds `count` values read from r (or all of r when count is UINT32_MAX, for
 * a value batch) to *total. */
static bool sum_values(reader_t *r, uint32_t count, uint64_t *total, job_string_t *err) {
    for (uint32_t i = 0; count == UINT32_MAX ? r->at < r->end : i < count; i++) {
        const uint8_t *value;
        size_t len;
        uint64_t n;
        if (!read_field(r, &value, &len)) return fail(err, MALFORMED);
        if (!parse_u64(value, len, &n)) return fail(err, "a count is not a whole number");
        if (*total > UINT64_MAX - n) return fail(err, "a sum overflows 64 bits");
        *total += n;
    }
    return true;
}

/* The last group of a reduce batch with last-complete = false goes on in
 * value batches from host.next-values, until one is empty. */
static bool sum_next_values(uint64_t *total, job_string_t *err) {
    for (;;) {
        job_list_u8_t more;
        quern_job_host_next_values(&more);
        if (more.len == 0) {
            job_list_u8_free(&more);
            return true;
        }
        reader_t r = reader(&more);
        bool ok = sum_values(&r, UINT32_MAX, total, err);
        job_list_u8_free(&more);
        if (!ok) return false;
    }
}

/* Emits (key, decimal sum of its values) for every group of a group batch;
 * reduce leaves out the sums below min-count. */
static bool sum_groups(const job_list_u8_t *groups, bool last_complete, bool reducing,
                       job_string_t *err) {
    reader_t r = reader(groups);
    while (r.at < r.end) {
        const uint8_t *key;
        size_t key_len;
        uint32_t count;
        uint64_t total = 0;
        if (!read_field(&r, &key, &key_len) || !read_u32(&r, &count)) return fail(err, MALFORMED);
        if (!sum_values(&r, count, &total, err)) return false;
        if (r.at == r.end && !last_complete && !sum_next_values(&total, err)) return false;
        if (reducing && total < min_count) continue;
        emit_count(key, key_len, total);
    }
    return true;
}

/* ---- the exports ------------------------------------------------------ */

static bool has_name(const job_string_t *s, const char *name) {
    return s->len == strlen(name) && memcmp(s->ptr, name, s->len) == 0;
}

bool exports_job_init(job_task_info_t *task, job_list_tuple2_string_string_t *args,
                      job_guest_info_t *ret, job_string_t *err) {
    /* Hold the counts back only in a map task of a job that combines: with
     * combine false (--no-combine) the guest must not combine either. */
    holding = task->phase == JOB_PHASE_MAP && task->combine && task->buffer_bytes > 0;
    budget = task->buffer_bytes;
    bool ok = true;
    for (size_t i = 0; ok && i < args->len; i++) {
        const job_string_t *name = &args->ptr[i].f0, *value = &args->ptr[i].f1;
        if (has_name(name, "min-count")) {
            if (!parse_u64(value->ptr, value->len, &min_count)) {
                ok = fail(err, "job argument min-count: not a whole number");
            }
        } else {
            /* The message names the argument: "unknown job argument `NAME`". */
            static const char prefix[] = "unknown job argument `";
            size_t len = sizeof prefix - 1 + name->len + 1;
            char *message = malloc(len);
            if (message == NULL) abort();
            memcpy(message, prefix, sizeof prefix - 1);
            memcpy(message + sizeof prefix - 1, name->ptr, name->len);
            message[len - 1] = '`';
            err->ptr = (uint8_t *)message; /* freed by the bindings */
            err->len = len;
            ok = false;
        }
    }
    job_list_tuple2_string_string_free(args);
    ret->has_combine = true;
    return ok;
}

bool exports_job_map(job_input_info_t *input, job_list_u8_t *records, job_string_t *err) {
    /* input->file names the input file and input->format is "lines" (key =
     * byte offset, value = line) or "whole-file"; word count needs neither. */
    bool ok = true;
    reader_t r = reader(records);
    while (r.at < r.end) {
        const uint8_t *offset, *line;
        size_t offset_len, line_len;
        if (!read_field(&r, &offset, &offset_len) || !read_field(&r, &line, &line_len)) {
            ok = fail(err, MALFORMED);
            break;
        }
        map_line(line, line_len);
    }
    flush();
    job_input_info_free(input);
    job_list_u8_free(records);
    return ok;
}

bool exports_job_finish(job_string_t *err) {
    (void)err;
    /* A map task emits the counts it still holds; a reduce task has nothing
     * left (each group was written when it was reduced). */
    if (holding) emit_table();
    flush();
    return true;
}

bool exports_job_reduce(job_list_u8_t *groups, bool last_complete, job_string_t *err) {
    bool ok = sum_groups(groups, last_complete, true, err);
    flush();
    job_list_u8_free(groups);
    return ok;
}

bool exports_job_combine(job_list_u8_t *groups, job_string_t *err) {
    bool ok = sum_groups(groups, true, false, err);
    flush();
    job_list_u8_free(groups);
    return ok;
}
