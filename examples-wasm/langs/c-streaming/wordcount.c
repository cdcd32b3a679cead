/*
 * Word count for Quern's streaming mode: a plain C program, no SDK, no
 * bindings. Quern runs it as a WASI command once per task:
 *
 *   argv = [program, PHASE, name=value...]   PHASE is "map" or "reduce"
 *                                            (also in the QUERN_PHASE env var);
 *                                            name=value are the job's --arg's
 *   map:    stdin  = the split's records, one per line ("\n"-terminated)
 *           stdout = "word\t1\n" for every word
 *   reduce: stdin  = "word\tcount\n" lines sorted by the word's bytes
 *           stdout = "word\ttotal\n" per word, copied to the output as is
 *
 * Words are maximal runs of letters, as in the Rust guest
 * (examples-wasm/guests/wordcount), which splits String::from_utf8_lossy(line)
 * on !char::is_alphabetic(). Here the input is decoded as UTF-8 by hand: a
 * byte that does not start a well-formed sequence is a separator (Rust turns
 * it into U+FFFD, which is not a letter either), ASCII letters are [A-Za-z],
 * and other code points are letters when iswalpha() says so. On ASCII text
 * the result is the Rust guest's byte for byte. Beyond ASCII, wasi-libc's
 * iswalpha() and Rust's Unicode Alphabetic property disagree on some code
 * points: iswalpha() takes the decimal digits of other scripts (Arabic-Indic
 * U+0660..U+0669, Devanagari U+0966..U+096F, ...) for letters, and its
 * tables, older than Rust's, miss the letters of recent Unicode versions
 * (CJK extensions G and H, ...) and a few combining letters (U+0363..U+036F).
 * A native build uses its own C library's tables (glibc's, in a UTF-8 locale).
 *
 * Job arguments: min-count=N prints only the words seen at least N times
 * (default 1, i.e. every word); any other argument is refused.
 *
 * Build: examples-wasm/langs/c-streaming/build OUT_DIR. Test natively:
 *   cc -O2 -o wc wordcount.c
 *   cat *.txt | ./wc map | LC_ALL=C sort -t "$(printf '\t')" -k1,1 -s | ./wc reduce
 */
#define _POSIX_C_SOURCE 200809L /* getline */

#include <errno.h>
#include <locale.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <wctype.h>

/* How much stdin is read, and stdout buffered, at a time. */
#define IO_BUFFER_BYTES (64 * 1024)

static uint64_t min_count = 1;

static void fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("c-streaming-wordcount: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence at s[0..n), storing
 * its code point in *cp; 0 when s[0] does not start one (an invalid or
 * truncated sequence). Well-formed means what Rust's from_utf8 accepts: no
 * overlong forms, no surrogates, nothing past U+10FFFF.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t len;
    uint32_t c;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2, c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3, c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;      /* no overlong forms */
        if (b == 0xED) hi = 0x9F;      /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4, c = b & 0x07;
        if (b == 0xF0) lo = 0x90;      /* no overlong forms */
        if (b == 0xF4) hi = 0x8F;      /* nothing past U+10FFFF */
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

/*
 * map: scans stdin in IO_BUFFER_BYTES chunks, so a line (or a word) of any
 * length runs in constant memory: a word cut by the end of a chunk is
 * written out in pieces, and "\t1\n" follows its last piece.
 */
static void run_map(void) {
    static unsigned char buf[IO_BUFFER_BYTES];
    size_t have = 0, pos = 0;
    bool eof = false, in_word = false;
    size_t word_start = 0;
    uint64_t words = 0;
    for (;;) {
        /* Keep at least 4 bytes ahead of pos (a whole UTF-8 sequence) unless
         * the input has ended. */
        if (have - pos < 4 && !eof) {
            if (in_word && word_start < pos) {
                fwrite(buf + word_start, 1, pos - word_start, stdout);
            }
            memmove(buf, buf + pos, have - pos);
            have -= pos;
            pos = 0;
            word_start = 0;
            size_t got = fread(buf + have, 1, sizeof buf - have, stdin);
            have += got;
            if (got == 0) {
                if (ferror(stdin)) fail(1, "reading stdin: %s", strerror(errno));
                eof = true;
            }
        }
        if (pos == have) break; /* end of input */
        uint32_t cp = 0;
        size_t len = utf8_decode(buf + pos, have - pos, &cp);
        bool letter = len > 0 && is_letter(cp);
        if (len == 0) len = 1; /* an invalid byte: a separator */
        if (letter && !in_word) {
            in_word = true;
            word_start = pos;
        } else if (!letter && in_word) {
            in_word = false;
            fwrite(buf + word_start, 1, pos - word_start, stdout);
            fputs("\t1\n", stdout);
            words++;
        }
        pos += len;
    }
    if (in_word) {
        fwrite(buf + word_start, 1, pos - word_start, stdout);
        fputs("\t1\n", stdout);
        words++;
    }
    /* Streaming mode has no user counters; stderr is the task's log. */
    fprintf(stderr, "map: %llu words\n", (unsigned long long)words);
}

/* Parses a count: decimal digits, surrounding ASCII whitespace allowed (as
 * Rust's str::trim + u64::from_str, which also takes a leading '+'). */
static bool parse_u64(const char *s, size_t n, uint64_t *out) {
    while (n > 0 && (*s == ' ' || (*s >= '\t' && *s <= '\r'))) s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || (s[n - 1] >= '\t' && s[n - 1] <= '\r'))) n--;
    if (n > 0 && *s == '+') s++, n--;
    if (n == 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void print_total(const char *word, size_t len, uint64_t total) {
    if (total < min_count) return;
    fwrite(word, 1, len, stdout);
    fprintf(stdout, "\t%llu\n", (unsigned long long)total);
}

/*
 * reduce: the counts of a word are on adjacent lines; sums them and prints
 * the word and its total when the word changes. getline grows its buffer,
 * so lines of any length are read whole.
 */
static void run_reduce(void) {
    char *line = NULL, *word = NULL;
    size_t line_cap = 0, word_cap = 0, word_len = 0;
    bool have_word = false;
    uint64_t total = 0, line_no = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, stdin)) != -1) {
        line_no++;
        size_t n = (size_t)got;
        if (n > 0 && line[n - 1] == '\n') n--;
        const char *tab = memchr(line, '\t', n);
        if (tab == NULL) fail(1, "reduce input line %llu has no TAB", (unsigned long long)line_no);
        size_t key_len = (size_t)(tab - line);
        uint64_t count;
        if (!parse_u64(tab + 1, n - key_len - 1, &count)) {
            fail(1, "reduce input line %llu: the count is not a whole number", (unsigned long long)line_no);
        }
        if (have_word && key_len == word_len && memcmp(line, word, key_len) == 0) {
            if (total > UINT64_MAX - count) fail(1, "the count of a word overflows 64 bits");
            total += count;
            continue;
        }
        if (have_word) print_total(word, word_len, total);
        if (key_len > word_cap) {
            word_cap = key_len * 2;
            word = realloc(word, word_cap);
            if (word == NULL) fail(1, "out of memory");
        }
        memcpy(word, line, key_len);
        word_len = key_len;
        have_word = true;
        total = count;
    }
    if (ferror(stdin)) fail(1, "reading stdin: %s", strerror(errno));
    if (have_word) print_total(word, word_len, total);
    free(line);
    free(word);
}

int main(int argc, char **argv) {
    /* wasi-libc's iswalpha knows Unicode in any locale; glibc's (a native
     * build) only in a UTF-8 one. */
    setlocale(LC_CTYPE, "C.UTF-8");
    const char *phase = argc > 1 ? argv[1] : getenv("QUERN_PHASE");
    if (phase == NULL) fail(2, "usage: %s map|reduce [name=value...]", argc > 0 ? argv[0] : "wordcount");
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "min-count=", 10) == 0) {
            const char *value = argv[i] + 10;
            if (!parse_u64(value, strlen(value), &min_count)) {
                fail(2, "job argument min-count=%s: not a whole number", value);
            }
        } else {
            fail(2, "unknown job argument `%s` (this job takes min-count=N)", argv[i]);
        }
    }
    setvbuf(stdout, NULL, _IOFBF, IO_BUFFER_BYTES);
    if (strcmp(phase, "map") == 0) {
        run_map();
    } else if (strcmp(phase, "reduce") == 0) {
        run_reduce();
    } else {
        fail(2, "unknown phase `%s` (expected map or reduce)", phase);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) fail(1, "writing stdout: %s", strerror(errno));
    return 0;
}
