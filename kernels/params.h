/* attn-kernels: every kernel's parameter struct, defined once.
 *
 * This header is the single source of truth shared by the CUDA kernels and the Rust side:
 * build.rs runs bindgen over it (src/runtime/params_bindings.rs is the checked-in output,
 * proven identical by the `bindings_match_header` test). Plain C only: no CUDA types, no
 * includes, so bindgen and nvcc read the same thing.
 *
 * Conventions
 *  - Every kernel takes exactly one of these structs by value.
 *  - Device pointers are `const void*` / `void*` (element type given by `dtype`), `const float*`
 *    for f32-only tensors, `const int*` for int32 tensors. NULL means "absent".
 *  - Strides are in elements, as `long long`; the last (feature) dimension is always contiguous.
 *  - Sizes are `int`; the Rust side rejects shapes whose element counts overflow them.
 *  - Each family owns one section below; keep the sections in this order.
 */
#ifndef ATTN_KERNELS_PARAMS_H
#define ATTN_KERNELS_PARAMS_H

/* Element type codes, as in `DType` on the Rust side. */
enum AkDType { AK_F32 = 0, AK_F16 = 1, AK_BF16 = 2 };

/* Positions below this many entries of the `lo` table are looked up directly; larger ones are
 * split p = hi * AK_ROPE_LO_SIZE + lo and combined by the angle-addition formulas. */
#define AK_ROPE_LO_SIZE 1024

/* ========================================================================================
 * rope: the two-level cos/sin table shared by the standalone kernel and fused attention.
 *
 * Both tables are built on the host in f64 and rounded once to f32, so the angle p * f_i is
 * exact before rounding even at p = 2^20 (an f32 product p * f_i is off by ~0.06 rad there):
 *   lo[j][i] = (cos, sin)(j * f_i)                 j in [0, AK_ROPE_LO_SIZE)
 *   hi[m][i] = (cos, sin)(m * AK_ROPE_LO_SIZE * f_i) m in [0, n_hi)
 * and for p = m * AK_ROPE_LO_SIZE + j: cos(p f) = ch cl - sh sl, sin(p f) = sh cl + ch sl.
 * Layout: float pairs, [rows][rotary_dim / 2][2]. Positions outside [0, n_hi * LO_SIZE) are
 * clamped by the kernels (the Rust side validates host-visible positions before launch).
 * ====================================================================================== */
typedef struct AkRopeTable {
    const float* lo;          /* [AK_ROPE_LO_SIZE][rotary_dim/2][2]; NULL = no RoPE */
    const float* hi;          /* [n_hi][rotary_dim/2][2] */
    int n_hi;                 /* rows of `hi` */
    int rotary_dim;           /* even, <= head dim; dims >= rotary_dim pass through */
    int interleaved;          /* 0: NeoX pairs (i, i + d/2); 1: GPT-J pairs (2i, 2i+1) */
    float attention_factor;   /* multiplies the rotated pairs (YaRN, LongRoPE) */
} AkRopeTable;

/* Standalone RoPE over x [rows, heads, head_dim] with a row stride and head stride
 * (BSHD with B*S flattened, or varlen [total, H, D]). Out of place or in place (y == x). */
typedef struct AkRopeParams {
    const void* x;
    void* y;
    const int* position_ids;  /* [rows] or NULL: position = position_offset + (row % seqlen) */
    AkRopeTable table;
    long long x_row_stride, x_head_stride;
    long long y_row_stride, y_head_stride;
    int rows;                 /* B * S, or total tokens with varlen */
    int seqlen;               /* S: rows per sequence when position_ids is NULL */
    int heads;
    int head_dim;
    int position_offset;
    int dtype;                /* AkDType of x and y */
} AkRopeParams;

/* ========================================================================================
 * attention (prefill): section 1 of the spec.   [owner: attention family]
 * ====================================================================================== */

/* Attention forward. Tensors are addressed as
 *   base + b * batch_stride + (row0 + i) * row_stride + head * head_stride + d
 * where row0 = cu_seqlens[b] for varlen (batch strides 0 then) and 0 otherwise, so dense BSHD,
 * packed varlen and views into a packed qkv buffer all fit. Strides must keep 16-byte alignment
 * (multiples of 8 elements); the Rust side checks this. */
typedef struct AkAttnParams {
    const void* q;                 /* [.., Sq, Hq, D]   (dtype) */
    const void* k;                 /* [.., Sk, Hkv, D]  (dtype) */
    const void* v;                 /* [.., Sk, Hkv, Dv] (dtype) */
    void* o;                       /* [.., Sq, Hq, Dv]  (dtype) */
    float* lse;                    /* [B, Hq, Sq] or [Hq, total_q]; NULL = not written */
    const float* alibi_slopes;     /* [Hq] or NULL */
    const int* cu_seqlens_q;       /* [batch + 1] or NULL (dense) */
    const int* cu_seqlens_k;       /* [batch + 1] or NULL (dense) */
    const int* position_ids_q;     /* RoPE positions of query rows or NULL (P(i) = i + Sk - Sq) */
    const int* position_ids_k;     /* RoPE positions of key rows or NULL (j) */
    AkRopeTable rope;              /* rope.lo == NULL: no RoPE */
    void* k_rotated;               /* rope pre-pass output for keys: [B, Sk, Hkv, D] / [total_k, Hkv, D]
                                      packed; unused by the attention kernels */
    void* q_rotated;               /* rope pre-pass output for queries (the sm_90a kernel, which
                                      reads Q rotated): [B, Sq, Hq, D] / [total_q, Hq, D] packed */
    long long q_batch_stride, q_row_stride, q_head_stride;
    long long k_batch_stride, k_row_stride, k_head_stride;
    long long v_batch_stride, v_row_stride, v_head_stride;
    long long o_batch_stride, o_row_stride, o_head_stride;
    long long lse_batch_stride, lse_head_stride;     /* lse rows are contiguous */
    long long pos_q_batch_stride, pos_k_batch_stride; /* position ids: b * stride + row0 + i */
    int batch;                     /* B, or the number of sequences (varlen) */
    int seqlen_q, seqlen_k;        /* dense lengths (ignored per side when cu_seqlens is given) */
    int heads_q, heads_kv;         /* heads_q % heads_kv == 0 */
    int head_dim, head_dim_v;
    float scale;                   /* softmax scale */
    float softcap;                 /* 0 = off */
    int causal;                    /* bottom-right aligned */
    int window_left, window_right; /* < 0: unlimited */
    int dtype;                     /* AkDType of q, k, v, o (AK_F16 or AK_BF16) */
} AkAttnParams;

/* A CUtensorMap: the 128 opaque bytes cuTensorMapEncodeTiled writes, 64-byte aligned. */
typedef struct AkTensorMap {
    unsigned long long opaque[16] __attribute__((aligned(64)));
} AkTensorMap;

/* Attention prefill on sm_90a (kernels/attention/prefill_sm90.cu): AkAttnParams and the TMA
 * tensor maps of q, k and v, made by the host per launch over the same tensors: rank 4
 * (head_dim, heads, rows, batch) with the tensors' strides in bytes (varlen: one batch of all
 * packed rows), boxes of 64 elements x 1 head x the kernel's rows x 1, 128-byte swizzle. The
 * kernel takes it __grid_constant__, so the maps stay in parameter memory where TMA reads them.
 * The kernel is persistent: gridDim.x blocks share the query_blocks x heads_q x batch tiles. */
typedef struct AkAttnSm90Params {
    AkTensorMap tmap_q, tmap_k, tmap_v;
    AkAttnParams attn;
    int query_blocks;            /* query blocks per (head, sequence): ceil(longest Sq / rows) */
} AkAttnSm90Params;

/* ========================================================================================
 * decode and merge_states.                       [owner: decode family]
 * ====================================================================================== */
/* Split-KV decode over a contiguous or paged KV cache (src/decode). One CTA handles one
 * (split, kv head, row tile, sequence): up to ROWS query rows (the GQA group's heads times the
 * new tokens, packed so each K/V element is read once per group) against the keys of its split.
 * Cache addressing, for key j of sequence b (element strides):
 *   contiguous (block_table == NULL): block = b, row = j
 *   paged:  block = block_table[b * max_blocks + (j >> block_size_log2)], row = j & (2^log2 - 1)
 *   k element d of kv head g at  k_cache + block * k_block_stride + row * k_row_stride
 *                                + g * k_head_stride + d                    (same for v). */
typedef struct AkDecodeParams {
    const void* q;              /* [B, seqlen_q, heads_q, head_dim], contiguous */
    const void* k_cache;
    const void* v_cache;
    const int* block_table;     /* [B, max_blocks] or NULL (contiguous cache) */
    const int* cache_seqlens;   /* [B]: keys 0 .. cache_seqlens[b] are attended (after append) */
    const float* alibi_slopes;  /* [heads_q] or NULL */
    void* o;                    /* [B, seqlen_q, heads_q, head_dim_v] (num_splits == 1) */
    float* lse;                 /* [B, heads_q, seqlen_q] (num_splits == 1) */
    float* o_partial;           /* [num_splits, B, seqlen_q, heads_q, head_dim_v] (num_splits > 1) */
    float* lse_partial;         /* [num_splits, B, heads_q, seqlen_q] (num_splits > 1) */
    AkRopeTable rope;           /* RoPE on read (q at P(i), cached key j at j); lo == NULL: none */
    int rope_keys;              /* 1: rotate the cached keys on read; 0: the cache holds rotated keys */
    long long k_block_stride, k_row_stride, k_head_stride;
    long long v_block_stride, v_row_stride, v_head_stride;
    int batch;
    int seqlen_q;               /* new tokens per sequence (Sq_new) */
    int heads_q;
    int heads_kv;
    int head_dim;               /* D = Dv on the GPU */
    int row_tiles;              /* ceil(heads_q / heads_kv * seqlen_q / ROWS) */
    int max_blocks;
    int block_size_log2;
    int num_splits;
    float scale;
    float softcap;              /* 0 = off */
    int causal;
    int window_left;            /* < 0: unlimited */
    int window_right;           /* < 0: unlimited */
    int dtype;                  /* AkDType of q, caches, o */
} AkDecodeParams;

/* Split-KV combine: o = sum_s w_s o_s / sum_s w_s with w_s = exp(lse_s - max lse), in split
 * order (deterministic). One CTA per output row (b, t, h). */
typedef struct AkDecodeCombineParams {
    const float* o_partial;     /* [num_splits, rows, head_dim_v] with rows = B * seqlen_q * heads_q */
    const float* lse_partial;   /* [num_splits, B, heads_q, seqlen_q] */
    void* o;                    /* [B, seqlen_q, heads_q, head_dim_v] */
    float* lse;                 /* [B, heads_q, seqlen_q] */
    int num_splits;
    int batch;
    int seqlen_q;
    int heads_q;
    int head_dim_v;
    int dtype;
} AkDecodeCombineParams;

/* merge_states (docs/merge_states.md): o [B, S, H, Dv] in dtype, lse [B, H, S] f32. */
typedef struct AkMergeStatesParams {
    const void* o_a;
    const float* lse_a;
    const void* o_b;
    const float* lse_b;
    void* o;
    float* lse;
    int batch;
    int seqlen;
    int heads;
    int head_dim_v;
    int dtype;
} AkMergeStatesParams;

/* Cache append: rows t of k_new / v_new [B, seqlen_new, heads_kv, D] go to cache position
 * cache_seqlens[b] + t (old lengths; same block/row addressing as AkDecodeParams). With RoPE,
 * K is rotated at that position on the way in. */
typedef struct AkAppendKvParams {
    const void* k_new;
    const void* v_new;
    void* k_cache;
    void* v_cache;
    const int* block_table;     /* [B, max_blocks] or NULL */
    const int* cache_seqlens;   /* [B], lengths before the append */
    AkRopeTable rope;
    long long k_block_stride, k_row_stride, k_head_stride;
    long long v_block_stride, v_row_stride, v_head_stride;
    int batch;
    int seqlen_new;
    int heads_kv;
    int head_dim;
    int head_dim_v;
    int max_blocks;
    int block_size_log2;
    int dtype;
} AkAppendKvParams;

/* ========================================================================================
 * diff_attention: section 3 of the spec.          [owner: diff_attention family]
 * ====================================================================================== */

/* Fused differential attention, prefill (kernels/diff_attention/prefill.cu).
 *
 * One block computes both softmax maps of one diff head h for a tile of query rows:
 *   map 1: Q1 = q head 2h against K1,   map 2: Q2 = q head 2h+1 against K2,   shared V.
 * v1: k has 2*Hkv heads of width d (K1 = head 2g, K2 = head 2g+1), v has Hkv heads of width 2d,
 *     lambda is [H] (lambda_row_stride = lambda_batch_stride = 0), optional norm_weight [2d].
 * v2: k and v have Hkv heads of width d, K1 = K2 = head g; lambda is per token
 *     ([B, Sq, H] or varlen [total_q, H]); no norm.
 * In both, g = h / (H / Hkv). Varlen: cu_seqlens_q/k given, batch strides ignored, rows offset by
 * cu[b]; seqlen_q / seqlen_k then hold the maximum over sequences (grid sizing only).
 * lse index: b * lse_batch_stride + h * lse_head_stride + row (row includes the varlen offset). */
typedef struct AkDiffAttnParams {
    const void* q;
    const void* k;
    const void* v;
    void* o;                     /* [B, Sq, H, Dv] or [total_q, H, Dv], dtype of q */
    float* lse1;
    float* lse2;
    const float* lambda;
    const void* norm_weight;     /* [Dv] or NULL (v1 only), in norm_weight_dtype */
    const float* alibi_slopes;   /* [H]: head h's slope for both maps, or NULL */
    const int* cu_seqlens_q;     /* [B+1] or NULL */
    const int* cu_seqlens_k;     /* [B+1] or NULL */
    const int* position_ids_q;   /* RoPE positions, [B, Sq] / [total_q], or NULL: P(i) */
    const int* position_ids_k;   /* [B, Sk] / [total_k], or NULL: j */
    AkRopeTable rope;            /* rope.lo == NULL: no RoPE; else Q is rotated by the kernel and
                                    k holds keys already rotated (the rope_keys pre-pass) */
    long long q_batch_stride, q_row_stride, q_head_stride;
    long long k_batch_stride, k_row_stride, k_head_stride;
    long long v_batch_stride, v_row_stride, v_head_stride;
    long long o_batch_stride, o_row_stride, o_head_stride;
    long long lse_batch_stride, lse_head_stride;
    long long lambda_batch_stride, lambda_row_stride;   /* head stride is 1 */
    long long pos_q_batch_stride, pos_k_batch_stride;
    int batch;
    int heads;                   /* H: diff heads (q has 2H heads) */
    int kv_groups;               /* H / Hkv: diff heads per kv head */
    int seqlen_q;
    int seqlen_k;
    int head_dim;                /* d: width of q and k heads */
    float scale;                 /* softmax scale */
    float softcap;               /* <= 0: off */
    float norm_factor;           /* 1 - lambda_init */
    float eps;
    int causal;
    int window_left;             /* < 0: unbounded */
    int window_right;
    int dtype;                   /* AkDType of q, k, v, o */
    int norm_weight_dtype;       /* AkDType of norm_weight: f32 or dtype */
} AkDiffAttnParams;

/* Fused differential attention on sm_90a (kernels/diff_attention/prefill_sm90.cu): the TMA
 * tensor maps of q (2H heads of d), k (v1: 2Hkv heads, v2: Hkv, of d) and v (Hkv heads of Dv),
 * made as for AkAttnSm90Params: rank 4 (head dim, heads, rows, batch), boxes of 64 elements x
 * 1 head x the kernel's rows (q) or keys (k, v) x 1, 128-byte swizzle; taken __grid_constant__. */
typedef struct AkDiffSm90Params {
    AkTensorMap tmap_q, tmap_k, tmap_v;
    AkDiffAttnParams diff;
    int query_blocks;            /* query blocks per (diff head, sequence): ceil(longest Sq / 64) */
} AkDiffSm90Params;

/* Baseline epilogue for the unfused benchmarks: o = a - lambda_h * b, then optional RMSNorm
 * over the row (a, b: [rows, H, Dv] in `dtype`, rows = B * Sq). With a_hi / b_hi non-NULL the
 * row is split in halves: a holds columns [0, Dv/2) and a_hi columns [Dv/2, Dv) (same strides),
 * likewise b / b_hi (the four-call baseline). Not used by the fused path. */
typedef struct AkDiffEpilogueParams {
    const void* a;
    const void* a_hi;
    const void* b;
    const void* b_hi;
    void* o;
    const float* lambda;         /* [H] */
    const void* norm_weight;     /* [Dv] or NULL, in norm_weight_dtype */
    long long a_row_stride, a_head_stride;
    long long b_row_stride, b_head_stride;
    long long o_row_stride, o_head_stride;
    int rows;
    int heads;
    int dv;
    float norm_factor;
    float eps;
    int dtype;
    int norm_weight_dtype;       /* AkDType of norm_weight: f32 or dtype */
} AkDiffEpilogueParams;

/* Fused differential decode, variant v1 (kernels/diff_attention/decode.cu): one new query token
 * per sequence against a KV cache, split along the keys.
 * Caches: the decode family's layouts with D = Dv = 2d: each of the Hkv kv heads of k_cache holds
 * [k1 | k2] (the k heads 2g, 2g+1 of a v1 prefill, adjacent), v_cache holds the 2d-wide V.
 *   contiguous: k_cache [B, S_max, Hkv, 2d], block_table == NULL, k/v_batch_stride per sequence;
 *   paged:      k_cache [num_blocks, block_size, Hkv, 2d], block_table [B, max_blocks],
 *               k/v_batch_stride per block.
 * Key j of sequence b (j < cache_seqlens[b]) sits at row j (contiguous) or at row j % block_size
 * of block block_table[b][j / block_size] (paged). The query sits at position P = seqlen - 1.
 * Pass 1 writes per split s and map m the normalised partial output and its lse to
 * part_o [B, H, splits, 2, 2d] and part_lse [B, H, splits, 2]; pass 2 merges the splits of each
 * map, then applies difference, RMSNorm and scale, writing o [B, H, 2d], lse1/lse2 [B, H]. */
typedef struct AkDiffDecodeParams {
    const void* q;               /* [B, 1, 2H, d] (q_batch_stride per sequence) */
    const void* k_cache;
    const void* v_cache;
    const int* cache_seqlens;    /* [B] */
    const int* block_table;      /* [B, max_blocks] or NULL (contiguous) */
    float* part_o;
    float* part_lse;
    void* o;
    float* lse1;
    float* lse2;
    const float* lambda;         /* [H] */
    const void* norm_weight;     /* [2d] or NULL, in norm_weight_dtype */
    const float* alibi_slopes;   /* [H] or NULL */
    long long q_batch_stride, q_head_stride;
    long long k_batch_stride, k_row_stride, k_head_stride;
    long long v_batch_stride, v_row_stride, v_head_stride;
    long long block_table_stride;
    long long o_batch_stride, o_head_stride;
    int batch;
    int heads;                   /* H */
    int kv_groups;               /* H / Hkv */
    int head_dim;                /* d */
    int block_size;              /* paged: rows per block; contiguous: ignored */
    int num_splits;
    int keys_per_split;          /* multiple of the kernel's key tile */
    float scale;
    float softcap;
    float norm_factor;
    float eps;
    int window_left;             /* < 0: unbounded */
    int dtype;
    int norm_weight_dtype;       /* AkDType of norm_weight: f32 or dtype */
} AkDiffDecodeParams;

/* ========================================================================================
 * linear-attention recurrences: section 4.        [owner: linear family]
 * ====================================================================================== */

/* Log-decay layouts of `g` (AkLinearParams.decay_kind); rows index the flattened B*T tokens. */
enum AkLinearDecay {
    AK_LINEAR_DECAY_NONE = 0,           /* no g */
    AK_LINEAR_DECAY_PER_TOKEN_KEY = 1,  /* [rows, H, K] */
    AK_LINEAR_DECAY_PER_TOKEN = 2,      /* [rows, H] */
    AK_LINEAR_DECAY_PER_HEAD_KEY = 3,   /* [H, K] */
    AK_LINEAR_DECAY_PER_HEAD = 4        /* [H] */
};

/* Recurrent linear_attention and delta_rule (kernels/linear/recurrent.cu), prefill and decode.
 * q, k, a, b are [rows, H, K], v and o [rows, H, V], contiguous, rows = B*T (varlen: total).
 * States are f32 [slots, H, K, V]; sequence n reads and writes state row slot_ids[n] (or n),
 * so a serving pool is updated in place by passing state_in == state_out. */
typedef struct AkLinearParams {
    const void* q;            /* dtype */
    const void* k;            /* dtype */
    const void* v;            /* dtype */
    const void* a;            /* dtype; delta_rule only (NULL for linear_attention) */
    const void* b;            /* dtype; delta_rule only */
    const void* g;            /* log decay, layout decay_kind, dtype g_dtype; NULL = none */
    const void* u;            /* bonus [H, K], dtype u_dtype; NULL = inclusive form */
    void* o;                  /* [rows, H, V], dtype */
    const float* state_in;    /* [slots, H, K, V]; NULL = zeros */
    float* state_out;         /* [slots, H, K, V]; may equal state_in (in-place slot pool) */
    const int* cu_seqlens;    /* [n_seqs + 1] or NULL: sequence n = rows n*seq_len .. +seq_len */
    const int* slot_ids;      /* [n_seqs] distinct state rows, or NULL: row n */
    float scale;
    int n_seqs;
    int seq_len;              /* T when cu_seqlens is NULL */
    int heads;
    int key_dim;              /* K */
    int value_dim;            /* V */
    int decay_kind;           /* AkLinearDecay */
    int dtype;                /* AkDType of q, k, v, a, b, o */
    int g_dtype;              /* AkDType of g (f32 or dtype) */
    int u_dtype;              /* AkDType of u (f32 or dtype) */
    int chunk;                /* prefill kernel: tokens staged in shared memory at once */
} AkLinearParams;

/* rwkv4 (kernels/linear/rwkv4.cu): k, v, y [B, T, C] (dtype), w, u [C] f32,
 * state (aa, bb, pp) [B, 3, C] f32. */
typedef struct AkRwkv4Params {
    const void* k;
    const void* v;
    const float* w;           /* per-step log decay */
    const float* u;           /* bonus */
    void* y;
    const float* state_in;    /* NULL = (0, 0, -1e38) */
    float* state_out;         /* may equal state_in */
    int batch;
    int seq_len;
    int channels;
    int dtype;                /* AkDType of k, v, y */
} AkRwkv4Params;

/* chunked prefill */
/* linear_attention by chunks of 64 tokens on tensor cores (kernels/linear/chunked.cu). One CTA
 * per (64 value columns, head, sequence) walks its sequence chunk by chunk with the state
 * [K, 64] in f32 registers. q, k, v, o contiguous: q/k [rows, H, K], v/o [rows, H, V], rows =
 * B*T (sequence n = rows [n*seqlen, (n+1)*seqlen)) or, with cu_seqlens, the packed tokens. */
typedef struct AkChunkedParams {
    const void* q;
    const void* k;
    const void* v;
    const void* g;              /* log decay (dtype g_dtype) or NULL: no decay */
    const void* u;              /* bonus [H, K] (dtype u_dtype) or NULL: inclusive form */
    const float* initial_state; /* [N, H, K, V] or NULL (zeros) */
    void* o;                    /* [rows, H, V], dtype */
    float* final_state;         /* [N, H, K, V] */
    const int* cu_seqlens;      /* [N + 1] or NULL */
    long long g_row_stride;     /* elements of g between token rows (0: per-head decay) */
    long long g_head_stride;    /* elements between heads */
    int g_key_stride;           /* 1: per-key decay, 0: scalar per (row, head) */
    int n_seqs;
    int seqlen;                 /* T when cu_seqlens is NULL */
    int heads;
    int key_dim;                /* 64 or 128 */
    int value_dim;              /* 64 or 128 */
    int dtype;                  /* AkDType of q, k, v, o: AK_F16 or AK_BF16 */
    int g_dtype;                /* AkDType of g */
    int u_dtype;                /* AkDType of u */
    float scale;
} AkChunkedParams;

/* ========================================================================================
 * utility kernels (copy bandwidth probe, poison fill).  [owner: foundation]
 * ====================================================================================== */
typedef struct AkFillParams {
    void* dst;
    unsigned long long n_words;   /* 32-bit words to fill */
    unsigned int word;            /* bit pattern, e.g. 0x7fc00000 (NaN) or 0xffffffff */
} AkFillParams;

typedef struct AkCopyParams {
    const void* src;
    void* dst;
    unsigned long long n_vec16;   /* 16-byte vectors to copy */
} AkCopyParams;

/* ========================================================================================
 * probes: conformance probes of the warp-level instructions the kernels use (mma, ldmatrix,
 * shfl, vote, cp.async, ex2, f16/bf16 conversions), one warp each.  [owner: emulator tests]
 * Operand and result layouts are per kernel (kernels/probe/collectives.cu, src/runtime/probe.rs).
 * ====================================================================================== */
typedef struct AkProbeParams {
    const void* in;               /* per-lane operands */
    void* out;                    /* per-lane results */
    int mode;                     /* kernel-specific variant (dtype, shuffle kind, ...) */
    int n;                        /* element count of the elementwise probes */
    unsigned int mask;            /* member mask of the vote probes */
    int width;                    /* shuffle width: 32, 16, 8 or 4 */
} AkProbeParams;

#endif /* ATTN_KERNELS_PARAMS_H */
