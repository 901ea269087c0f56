/* A C program using the attn-kernels C ABI the way an engine would: device memory from
 * ak_alloc, tensors described by raw addresses and strides, attention on the legacy default
 * stream, results compared with a naive double-precision attention written here.
 *
 * Checks:
 *   1. causal GQA attention, f16, B=2 Sq=130 Sk=150 Hq=4 Hkv=2 D=64, q strided inside a
 *      [B, Sq, Hq, 2D] buffer: o and lse within the f16 bound of docs/ops.md (rel L2 < 3e-3);
 *   2. hostile descriptors (null ptr, misaligned ptr, short len_bytes, output overlapping an
 *      input, NULL descriptor, bad config) return the right code, a message naming the argument,
 *      and leave the output buffer untouched.
 *
 * Prints one line per check; exits 0 only when every check passed. Built and run by
 * capi/tests/c_program.rs with ATTN_KERNELS_DEVICE=emu. Seed: time, or AK_TEST_SEED. */

#include "attn_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { B = 2, SQ = 130, SK = 150, HQ = 4, HKV = 2, D = 64 };

static int failures = 0;

#define EXPECT(cond, ...)                                      \
    do {                                                       \
        if (!(cond)) {                                         \
            failures++;                                        \
            printf("FAIL: ");                                  \
            printf(__VA_ARGS__);                               \
            printf("  [%s:%d]\n", __FILE__, __LINE__);         \
        }                                                      \
    } while (0)

/* Abort on a failing setup call (allocation, copy): nothing after it could be checked. */
static void must(ak_status s, const char *what) {
    if (s != AK_OK) {
        printf("FATAL: %s: %s: %s\n", what, ak_status_name(s), ak_last_error_message());
        exit(2);
    }
}

/* ---------------------------------------------------------------- f16 <-> float */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even; inputs here are small and normal or zero. */
static uint16_t float_to_half(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t sign = (bits >> 16) & 0x8000;
    int32_t exp = (int32_t)((bits >> 23) & 0xff) - 127 + 15;
    uint32_t man = bits & 0x7fffff;
    if (exp <= 0) return (uint16_t)sign; /* flush tiny values to zero */
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

/* ---------------------------------------------------------------- random */

static uint64_t rng_state;

static double uniform(void) { /* xorshift64*, in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t x = rng_state * 2685821657736338717ull;
    return (double)(x >> 11) / (double)(1ull << 52) - 1.0;
}

static void fill_random_half(uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = float_to_half((float)uniform());
}

/* ---------------------------------------------------------------- descriptors */

static ak_tensor tensor4(uint64_t ptr, uint64_t len_bytes, ak_dtype dtype, const int64_t shape[4], const int64_t strides[4]) {
    ak_tensor t;
    memset(&t, 0, sizeof t);
    t.ptr = ptr;
    t.len_bytes = len_bytes;
    t.dtype = dtype;
    t.rank = 4;
    for (int i = 0; i < 4; i++) {
        t.shape[i] = shape[i];
        t.strides[i] = strides[i];
    }
    return t;
}

static ak_tensor tensor3(uint64_t ptr, uint64_t len_bytes, ak_dtype dtype, const int64_t shape[3]) {
    ak_tensor t;
    memset(&t, 0, sizeof t);
    t.ptr = ptr;
    t.len_bytes = len_bytes;
    t.dtype = dtype;
    t.rank = 3;
    for (int i = 0; i < 3; i++) t.shape[i] = shape[i];
    t.strides[2] = 1;
    t.strides[1] = shape[2];
    t.strides[0] = shape[1] * shape[2];
    return t;
}

static const ak_i32_array NO_ARRAY = {NULL, 0};

/* ---------------------------------------------------------------- the reference */

/* Naive causal GQA attention in double, bottom-right aligned mask: key j seen by row i when
 * j <= i + SK - SQ. q is read from the strided [B, SQ, HQ, 2D] host buffer. */
static void reference(const uint16_t *q2, const uint16_t *k, const uint16_t *v, double *o, double *lse) {
    const double scale = 1.0 / sqrt((double)D);
    static double s[SK];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < HQ; h++) {
            int kh = h / (HQ / HKV);
            for (int i = 0; i < SQ; i++) {
                const uint16_t *qi = q2 + (((size_t)b * SQ + i) * HQ + h) * 2 * D;
                int last = i + SK - SQ; /* P(i) */
                double m = -INFINITY;
                for (int j = 0; j <= last && j < SK; j++) {
                    const uint16_t *kj = k + (((size_t)b * SK + j) * HKV + kh) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)half_to_float(qi[d]) * half_to_float(kj[d]);
                    s[j] = dot * scale;
                    if (s[j] > m) m = s[j];
                }
                double sum = 0;
                for (int j = 0; j <= last && j < SK; j++) sum += exp(s[j] - m);
                double *oi = o + (((size_t)b * SQ + i) * HQ + h) * D;
                for (int d = 0; d < D; d++) oi[d] = 0;
                for (int j = 0; j <= last && j < SK; j++) {
                    double p = exp(s[j] - m) / sum;
                    const uint16_t *vj = v + (((size_t)b * SK + j) * HKV + kh) * D;
                    for (int d = 0; d < D; d++) oi[d] += p * half_to_float(vj[d]);
                }
                lse[((size_t)b * HQ + h) * SQ + i] = last < 0 ? -INFINITY : m + log(sum);
            }
        }
}

/* ---------------------------------------------------------------- hostile calls */

static ak_status run(const ak_device *dev, const char *config, const ak_tensor *q, const ak_tensor *k, const ak_tensor *v,
                     const ak_tensor *o, const ak_tensor *lse) {
    return ak_attention(dev, NULL, config, q, k, v, NULL, NO_ARRAY, NO_ARRAY, NO_ARRAY, NO_ARRAY, o, lse);
}

/* The call failed with `want`, its message names `arg` (and contains `also` if given), and
 * the buffer [buf, buf + bytes) still equals `expect`. */
static void expect_refused(const char *what, ak_status got, ak_status want, const char *arg, const char *also, const ak_device *dev,
                           uint64_t buf, uint64_t bytes, const unsigned char *expect) {
    /* The message is valid until the next ak_ call on this thread: keep a copy. */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ak_last_error_message());
    char quoted[64];
    snprintf(quoted, sizeof quoted, "`%s`", arg);
    int ok = got == want && strstr(msg, quoted) != NULL && (also == NULL || strstr(msg, also) != NULL);
    EXPECT(ok, "%s: got %s \"%s\", want %s naming %s", what, ak_status_name(got), msg, ak_status_name(want), quoted);
    unsigned char *now = malloc(bytes);
    must(ak_memcpy_dtoh(dev, NULL, now, buf, bytes), "download after a refused call");
    int untouched = memcmp(now, expect, bytes) == 0;
    EXPECT(untouched, "%s: the output buffer was written by a refused call", what);
    free(now);
    if (ok && untouched) printf("ok: %s -> %s, \"%s\"; output untouched\n", what, ak_status_name(got), msg);
}

/* ---------------------------------------------------------------- main */

int main(void) {
    const char *seed_env = getenv("AK_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    printf("attention_test: seed %llu (AK_TEST_SEED=%llu replays it)\n", (unsigned long long)seed, (unsigned long long)seed);

    ak_device *dev = NULL;
    must(ak_device_open(0, &dev), "ak_device_open");
    int emulated = -1;
    must(ak_device_is_emulated(dev, &emulated), "ak_device_is_emulated");
    printf("device: %s\n", emulated ? "emulated (ATTN_KERNELS_DEVICE=emu)" : "GPU");

    /* Host data: q inside [B, SQ, HQ, 2D] (the other half is random too, and must not matter). */
    const size_t n_q2 = (size_t)B * SQ * HQ * 2 * D, n_k = (size_t)B * SK * HKV * D, n_o = (size_t)B * SQ * HQ * D;
    const size_t n_lse = (size_t)B * HQ * SQ;
    uint16_t *q2 = malloc(n_q2 * 2), *k = malloc(n_k * 2), *v = malloc(n_k * 2), *o = malloc(n_o * 2);
    float *lse = malloc(n_lse * 4);
    double *o_ref = malloc(n_o * sizeof(double)), *lse_ref = malloc(n_lse * sizeof(double));
    fill_random_half(q2, n_q2);
    fill_random_half(k, n_k);
    fill_random_half(v, n_k);

    uint64_t d_q2, d_k, d_v, d_o, d_lse;
    must(ak_alloc(dev, n_q2 * 2, &d_q2), "ak_alloc q");
    must(ak_alloc(dev, n_k * 2, &d_k), "ak_alloc k");
    must(ak_alloc(dev, n_k * 2, &d_v), "ak_alloc v");
    must(ak_alloc(dev, n_o * 2, &d_o), "ak_alloc o");
    must(ak_alloc(dev, n_lse * 4, &d_lse), "ak_alloc lse");
    must(ak_memcpy_htod(dev, NULL, d_q2, q2, n_q2 * 2), "upload q");
    must(ak_memcpy_htod(dev, NULL, d_k, k, n_k * 2), "upload k");
    must(ak_memcpy_htod(dev, NULL, d_v, v, n_k * 2), "upload v");

    const int64_t q_shape[4] = {B, SQ, HQ, D}, q_strides[4] = {SQ * HQ * 2 * D, HQ * 2 * D, 2 * D, 1};
    const int64_t kv_shape[4] = {B, SK, HKV, D}, kv_strides[4] = {SK * HKV * D, HKV * D, D, 1};
    const int64_t o_strides[4] = {SQ * HQ * D, HQ * D, D, 1};
    const int64_t lse_shape[3] = {B, HQ, SQ};
    ak_tensor tq = tensor4(d_q2, n_q2 * 2, AK_DTYPE_F16, q_shape, q_strides);
    ak_tensor tk = tensor4(d_k, n_k * 2, AK_DTYPE_F16, kv_shape, kv_strides);
    ak_tensor tv = tensor4(d_v, n_k * 2, AK_DTYPE_F16, kv_shape, kv_strides);
    ak_tensor to = tensor4(d_o, n_o * 2, AK_DTYPE_F16, q_shape, o_strides);
    ak_tensor tlse = tensor3(d_lse, n_lse * 4, AK_DTYPE_F32, lse_shape);
    const char *config = "{\"causal\": true}";

    /* ------------------------------------------------ 1. the computation */
    ak_status s = run(dev, config, &tq, &tk, &tv, &to, &tlse);
    EXPECT(s == AK_OK, "attention: %s: %s", ak_status_name(s), ak_last_error_message());
    must(ak_stream_synchronize(dev, NULL), "synchronize");
    must(ak_memcpy_dtoh(dev, NULL, o, d_o, n_o * 2), "download o");
    must(ak_memcpy_dtoh(dev, NULL, lse, d_lse, n_lse * 4), "download lse");
    reference(q2, k, v, o_ref, lse_ref);

    double err2 = 0, ref2 = 0, lerr2 = 0, lref2 = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n_o; i++) {
        double x = half_to_float(o[i]);
        if (!isfinite(x)) bad++;
        err2 += (x - o_ref[i]) * (x - o_ref[i]);
        ref2 += o_ref[i] * o_ref[i];
    }
    for (size_t i = 0; i < n_lse; i++) {
        if (isinf(lse_ref[i])) { /* rows that see no key: must match exactly */
            if (lse[i] != (float)lse_ref[i]) bad++;
            continue;
        }
        if (!isfinite(lse[i])) bad++;
        lerr2 += (lse[i] - lse_ref[i]) * (lse[i] - lse_ref[i]);
        lref2 += lse_ref[i] * lse_ref[i];
    }
    double rel_o = sqrt(err2 / ref2), rel_lse = sqrt(lerr2 / lref2);
    int computed = s == AK_OK && bad == 0 && rel_o < 3e-3 && rel_lse < 3e-3;
    EXPECT(computed, "attention vs naive double reference: rel error o %.3g, lse %.3g, %zu non-finite or mismatched", rel_o, rel_lse, bad);
    if (computed)
        printf("ok: attention f16 causal GQA B=%d Sq=%d Sk=%d Hq=%d Hkv=%d D=%d, strided q: rel error o %.2e, lse %.2e (bound 3e-3)\n", B, SQ,
               SK, HQ, HKV, D, rel_o, rel_lse);

    /* ------------------------------------------------ 2. hostile descriptors */
    unsigned char *sentinel = malloc(n_o * 2);
    memset(sentinel, 0x5a, n_o * 2);
    must(ak_memcpy_htod(dev, NULL, d_o, sentinel, n_o * 2), "fill o with a sentinel");
    ak_tensor bad_t;

    bad_t = tq;
    bad_t.ptr = 0;
    expect_refused("null q.ptr", run(dev, config, &bad_t, &tk, &tv, &to, &tlse), AK_ERR_INVALID_ARGUMENT, "q.ptr", "null", dev, d_o, n_o * 2,
                   sentinel);

    bad_t = tk;
    bad_t.ptr = d_k + 1;
    bad_t.len_bytes -= 1;
    expect_refused("k.ptr off its 2-byte elements", run(dev, config, &tq, &bad_t, &tv, &to, &tlse), AK_ERR_INVALID_ARGUMENT, "k.ptr",
                   "aligned", dev, d_o, n_o * 2, sentinel);

    bad_t = tq;
    bad_t.ptr = d_q2 + 2;
    bad_t.len_bytes -= 2;
    expect_refused("q.ptr not 16-byte aligned", run(dev, config, &bad_t, &tk, &tv, &to, &tlse), AK_ERR_INVALID_ARGUMENT, "q", "misaligned",
                   dev, d_o, n_o * 2, sentinel);

    bad_t = tv;
    bad_t.len_bytes -= 2;
    expect_refused("v.len_bytes one element short", run(dev, config, &tq, &tk, &bad_t, &to, &tlse), AK_ERR_INVALID_ARGUMENT, "v.len_bytes",
                   NULL, dev, d_o, n_o * 2, sentinel);

    bad_t = to;
    bad_t.strides[2] = 0; /* every head of a row on one address */
    expect_refused("o with aliased elements", run(dev, config, &tq, &tk, &tv, &bad_t, &tlse), AK_ERR_INVALID_ARGUMENT, "o.strides", NULL,
                   dev, d_o, n_o * 2, sentinel);

    /* o placed inside q's buffer: refused, and q's buffer keeps its contents. */
    bad_t = to;
    bad_t.ptr = d_q2 + 256;
    bad_t.len_bytes = n_q2 * 2 - 256;
    expect_refused("o overlapping q", run(dev, config, &tq, &tk, &tv, &bad_t, &tlse), AK_ERR_INVALID_ARGUMENT, "o", "overlaps", dev, d_q2,
                   n_q2 * 2, (const unsigned char *)q2);

    bad_t = tlse;
    bad_t.ptr = d_o;
    bad_t.len_bytes = n_o * 2;
    expect_refused("lse overlapping o", run(dev, config, &tq, &tk, &tv, &to, &bad_t), AK_ERR_INVALID_ARGUMENT, "lse", "overlaps", dev, d_o,
                   n_o * 2, sentinel);

    bad_t = tk;
    bad_t.shape[1] = SK - 1;
    expect_refused("k with a shape unlike v", run(dev, config, &tq, &bad_t, &tv, &to, &tlse), AK_ERR_SHAPE, "v", NULL, dev, d_o, n_o * 2,
                   sentinel);

    bad_t = tk;
    bad_t.dtype = 42;
    expect_refused("unknown dtype code", run(dev, config, &tq, &bad_t, &tv, &to, &tlse), AK_ERR_INVALID_ARGUMENT, "k.dtype", NULL, dev, d_o,
                   n_o * 2, sentinel);

    expect_refused("NULL v descriptor", run(dev, config, &tq, &tk, NULL, &to, &tlse), AK_ERR_NULL_POINTER, "v", NULL, dev, d_o, n_o * 2,
                   sentinel);

    expect_refused("NULL device handle", run(NULL, config, &tq, &tk, &tv, &to, &tlse), AK_ERR_NULL_POINTER, "dev", NULL, dev, d_o, n_o * 2,
                   sentinel);

    expect_refused("unknown config key", run(dev, "{\"causal\": true, \"casual\": 1}", &tq, &tk, &tv, &to, &tlse), AK_ERR_CONFIG,
                   "config_json", "casual", dev, d_o, n_o * 2, sentinel);

    /* A success clears the message. */
    s = run(dev, config, &tq, &tk, &tv, &to, &tlse);
    EXPECT(s == AK_OK && ak_last_error_message()[0] == '\0', "a successful call leaves an empty message, got %s \"%s\"", ak_status_name(s),
           ak_last_error_message());

    must(ak_free(dev, d_q2), "free");
    s = ak_free(dev, d_q2);
    EXPECT(s == AK_ERR_INVALID_ARGUMENT && strstr(ak_last_error_message(), "`ptr`"), "double free refused: %s \"%s\"", ak_status_name(s),
           ak_last_error_message());
    must(ak_device_close(dev), "ak_device_close");

    free(q2), free(k), free(v), free(o), free(lse), free(o_ref), free(lse_ref), free(sentinel);
    if (failures) {
        printf("attention_test: %d check(s) FAILED (seed %llu)\n", failures, (unsigned long long)seed);
        return 1;
    }
    printf("attention_test: all checks passed\n");
    return 0;
}
