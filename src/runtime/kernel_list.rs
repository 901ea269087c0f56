// The kernel list: every CUDA entry point of the library, written once.
//
// This file is plain Rust with no dependencies, read twice:
// - build.rs `include!`s it and generates from it, per kernel module (`kernels/**/*.cu`),
//   `$OUT_DIR/generated/<module>_entries.cuh` (the `extern "C" __global__` entry points with
//   their `__launch_bounds__`, and `static_assert`s that the constants the C++ derives equal the
//   values below; each .cu includes its file at its end), the emulated device's registrations,
//   the module manifest (`EmbeddedModule::kernels`) and `$OUT_DIR/kernel_table.rs`: one
//   [`Kernel`] row per entry point, the table the Rust side dispatches through
//   (`attn_kernels::runtime::find_kernel(Key)`).
// - the library compiles it as `attn_kernels::runtime::kernel_list`: the types of the table, and
//   the per-family constants and formulas the host needs beyond one row (which variants exist,
//   the shared-memory formula of a kernel whose chunk is chosen at launch).
//
// A family below says, for its kernels: the module, the parameter struct (kernels/params.h), the
// template body each entry point calls, the instances (dtype x head dims x variants) and their
// launch constants. Adding an instance here adds the entry point, its registration on the
// emulated device, its table row and the compile-time checks.
//
// (Plain `//` comments: an `include!`d file may not carry inner doc comments.)

/// Element type of a kernel instance (the template's `T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dt {
    F32,
    F16,
    BF16,
}

impl Dt {
    /// The entry-point name part: `f32`, `f16`, `bf16`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::F16 => "f16",
            Dt::BF16 => "bf16",
        }
    }
    /// The C++ type.
    pub const fn cxx(self) -> &'static str {
        match self {
            Dt::F32 => "float",
            Dt::F16 => "__half",
            Dt::BF16 => "__nv_bfloat16",
        }
    }
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::F16 | Dt::BF16 => 2,
        }
    }
}

/// The conformance probes of `kernels/probe/collectives.cu` and, for the Hopper (sm_90a)
/// instructions, `kernels/probe/hopper.cu` (one instruction family each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKernel {
    Mma,
    Ldmatrix,
    Shfl,
    Vote,
    CpAsync,
    Ex2,
    Cvt,
    Misbehave,
    Mbarrier,
    Wgmma,
    HopperMisc,
    HopperMisbehave,
    Tma,
}

impl ProbeKernel {
    pub const ALL: [ProbeKernel; 13] = [
        ProbeKernel::Mma,
        ProbeKernel::Ldmatrix,
        ProbeKernel::Shfl,
        ProbeKernel::Vote,
        ProbeKernel::CpAsync,
        ProbeKernel::Ex2,
        ProbeKernel::Cvt,
        ProbeKernel::Misbehave,
        ProbeKernel::Mbarrier,
        ProbeKernel::Wgmma,
        ProbeKernel::HopperMisc,
        ProbeKernel::HopperMisbehave,
        ProbeKernel::Tma,
    ];
    /// The name part and the body's name in `ak::probe`.
    pub const fn stem(self) -> &'static str {
        match self {
            ProbeKernel::Mma => "mma",
            ProbeKernel::Ldmatrix => "ldmatrix",
            ProbeKernel::Shfl => "shfl",
            ProbeKernel::Vote => "vote",
            ProbeKernel::CpAsync => "cp_async",
            ProbeKernel::Ex2 => "ex2",
            ProbeKernel::Cvt => "cvt",
            ProbeKernel::Misbehave => "misbehave",
            ProbeKernel::Mbarrier => "mbarrier",
            ProbeKernel::Wgmma => "wgmma",
            ProbeKernel::HopperMisc => "hopper_misc",
            ProbeKernel::HopperMisbehave => "hopper_misbehave",
            ProbeKernel::Tma => "tma",
        }
    }
    /// The source file that defines the probe.
    pub const fn source(self) -> &'static str {
        match self {
            ProbeKernel::Mbarrier
            | ProbeKernel::Wgmma
            | ProbeKernel::HopperMisc
            | ProbeKernel::HopperMisbehave
            | ProbeKernel::Tma => {
                probe::HOPPER_SOURCE
            }
            _ => probe::SOURCE,
        }
    }
}

/// What the host looks an entry point up by: the family and the instance's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// Attention prefill (kernels/attention/prefill.cu), head dims `d` (q, k) and `dv` (v, o),
    /// specialised for ALiBi and softcap.
    AttnFwd { dtype: Dt, d: usize, dv: usize, alibi: bool, softcap: bool },
    /// Attention prefill for sm_90a (kernels/attention/prefill_sm90.cu), `Dv = dv` (d or 2d).
    AttnFwdSm90 { dtype: Dt, d: usize, dv: usize, alibi: bool, softcap: bool },
    /// The RoPE pre-pass of fused-RoPE attention: keys of head dim `d` rotated once.
    AttnRopeKeys { dtype: Dt, d: usize },
    /// The same for the query rows (the sm_90a attention kernel reads Q rotated).
    AttnRopeQueries { dtype: Dt, d: usize },
    /// Split-KV decode (kernels/decode/decode.cu), `D = Dv = d`, `rows` query rows per CTA.
    Decode { dtype: Dt, d: usize, rows: usize },
    /// The combine of decode's splits.
    DecodeCombine { dtype: Dt },
    /// `merge_states`.
    MergeStates { dtype: Dt },
    /// KV-cache append (kernels/decode/append.cu).
    AppendKv { dtype: Dt },
    /// Fused differential attention prefill, `variant` 1 or 2, per-map head dim `d`.
    DiffPrefill { variant: u8, dtype: Dt, d: usize },
    /// The same on sm_90a (kernels/diff_attention/prefill_sm90.cu), specialised for ALiBi and
    /// softcap.
    DiffPrefillSm90 { variant: u8, dtype: Dt, d: usize, alibi: bool, softcap: bool },
    /// The unfused baselines' subtract + RMSNorm.
    DiffEpilogue { dtype: Dt },
    /// Fused differential decode (v1), pass 1: `heads` diff heads per block.
    DiffDecodeSplit { dtype: Dt, d: usize, heads: usize },
    /// Fused differential decode, pass 2.
    DiffDecodeCombine { dtype: Dt, d: usize },
    /// Recurrent prefill of `linear_attention` (`delta: false`) or `delta_rule`, for `K <= k`
    /// (`k` one of [`linear::BINS`]).
    LinearPrefill { delta: bool, k: usize },
    /// Recurrent decode (T = 1 fast path), same bins.
    LinearDecode { delta: bool, k: usize },
    /// Chunked tensor-core prefill of `linear_attention`, key dim `k`, value dim `v`.
    LinearChunked { dtype: Dt, k: usize, v: usize },
    /// `rwkv4`.
    Rwkv4 { dtype: Dt },
    /// Standalone RoPE.
    Rope { dtype: Dt },
    /// A conformance probe.
    Probe(ProbeKernel),
}

/// One compiled entry point and its launch constants: a row of the generated table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub key: Key,
    /// The kernel module (`EmbeddedModule::name`): the source path under kernels/, `/` as `_`.
    pub module: &'static str,
    /// The `extern "C"` name.
    pub name: &'static str,
    /// The block the host launches. Its thread count is the `__launch_bounds__` maximum, except
    /// for kernels without launch bounds (`bounded == false`: the probes, whose block the caller
    /// picks).
    pub block: [u32; 3],
    /// Whether the entry point carries `__launch_bounds__`.
    pub bounded: bool,
    /// The second `__launch_bounds__` argument (minimum resident blocks per SM); 0: not given.
    pub min_blocks: u32,
    /// Dynamic shared memory per block, bytes, when it is fixed per instance (0: none, or computed
    /// at launch from the family's formula, as for [`Key::LinearPrefill`]).
    pub smem_bytes: u32,
    /// Grid items per block: query rows (attention and diff prefill; decode: rows per CTA),
    /// diff heads (diff decode split), value columns (linear), rows or (row, head) items
    /// (merge_states, diff epilogue), channels (rwkv4); 1 where a block is one item; 0 for probes.
    pub rows: u32,
    /// Keys per tile or pipeline stage (attention, decode, diff prefill and decode), tokens per
    /// chunk (linear chunked); 0 where not tiled.
    pub keys: u32,
}

impl Kernel {
    /// Threads per block.
    pub const fn threads(&self) -> u32 {
        self.block[0] * self.block[1] * self.block[2]
    }
    /// The block as a launch dimension.
    pub const fn block_dim(&self) -> (u32, u32, u32) {
        (self.block[0], self.block[1], self.block[2])
    }
}

// =============================================================================== the families

/// Attention prefill: `kernels/attention/prefill.cu`, `ak::attention::attention_forward<T, Cfg>`.
pub mod attention {
    use super::Dt;

    pub const SOURCE: &str = "kernels/attention/prefill.cu";
    pub const PARAMS: &str = "AkAttnParams";
    pub const DTYPES: [Dt; 2] = [Dt::F16, Dt::BF16];

    /// One tile configuration, `ak::attention::Cfg<D, DV, MT, NWARPS, BN>`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Tile {
        pub d: usize,
        pub dv: usize,
        /// 16-row m-tiles per warp.
        pub m_tiles: usize,
        pub warps: usize,
        /// Keys per tile.
        pub block_n: usize,
        /// Keys per tile of the softcap instances (their tanh constants cost the registers that
        /// some 64- and 128-key tiles lack).
        pub block_n_softcap: usize,
        /// `__launch_bounds__` minimum blocks per SM.
        pub min_blocks: u32,
    }

    pub const TILES: [Tile; 5] = [
        // 128 x 128, 4 warps x 32 rows (54 KB); softcap 128 x 64 (36 KB)
        Tile { d: 64, dv: 64, m_tiles: 2, warps: 4, block_n: 128, block_n_softcap: 64, min_blocks: 2 },
        // 128 x 64, 4 warps x 32 rows (68 KB)
        Tile { d: 128, dv: 128, m_tiles: 2, warps: 4, block_n: 64, block_n_softcap: 64, min_blocks: 2 },
        // 128 x 32, 8 warps x 16 rows (99 KB)
        Tile { d: 256, dv: 256, m_tiles: 1, warps: 8, block_n: 32, block_n_softcap: 32, min_blocks: 1 },
        // Dv = 2D, 128 x 64 (60 KB); softcap 128 x 32 (47 KB)
        Tile { d: 64, dv: 128, m_tiles: 2, warps: 4, block_n: 64, block_n_softcap: 32, min_blocks: 2 },
        // Dv = 2D, 128 x 64, 8 warps x 16 rows (116 KB)
        Tile { d: 128, dv: 256, m_tiles: 1, warps: 8, block_n: 64, block_n_softcap: 64, min_blocks: 1 },
    ];
    /// The score variants each tile is instantiated for: (ALiBi, softcap).
    pub const VARIANTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    /// Head dims of the RoPE pre-pass (`ak::attention::rope_pass<T, D, QUERIES>`), for keys and
    /// for queries.
    pub const ROPE_KEY_DIMS: [usize; 3] = [64, 128, 256];
    /// Key rows per pre-pass block (`ROPE_ROWS`) and its threads (`ROPE_THREADS`).
    pub const ROPE_ROWS: usize = 64;
    pub const ROPE_THREADS: usize = 128;

    impl Tile {
        /// Query rows per block.
        pub const fn block_m(&self) -> usize {
            16 * self.m_tiles * self.warps
        }
        pub const fn threads(&self) -> usize {
            32 * self.warps
        }
        /// Dynamic shared memory: Q (reused for O) plus one stage of K and one of V, rows padded
        /// by 8 elements of 2 bytes (`Cfg::SMEM_BYTES`).
        pub const fn smem_bytes(&self) -> usize {
            let qs = if self.d > self.dv { self.d } else { self.dv } + 8;
            let (ks, vs) = (self.d + 8, self.dv + 8);
            2 * (self.block_m() * qs + self.block_n * ks + self.block_n * vs)
        }
        /// The tile of one score variant: `block_n_softcap` keys per tile under softcap.
        pub const fn for_variant(&self, softcap: bool) -> Tile {
            Tile { block_n: if softcap { self.block_n_softcap } else { self.block_n }, ..*self }
        }
        pub fn cfg(&self) -> String {
            format!("ak::attention::Cfg<{}, {}, {}, {}, {}>", self.d, self.dv, self.m_tiles, self.warps, self.block_n)
        }
    }
}

/// Attention prefill for Hopper: `kernels/attention/prefill_sm90.cu`,
/// `ak::attention::sm90::attention_forward<T, Cfg<D, DV, BN, STAGES>, ALIBI, SOFTCAP>` (wgmma, TMA,
/// a producer and two consumer warpgroups). Same score variants as [`attention`].
pub mod attention_sm90 {
    use super::Dt;

    pub const SOURCE: &str = "kernels/attention/prefill_sm90.cu";
    pub const PARAMS: &str = "AkAttnSm90Params";
    pub const DTYPES: [Dt; 2] = [Dt::F16, Dt::BF16];
    /// Threads per block: three warpgroups (`Cfg::NT`).
    pub const THREADS: usize = 384;
    /// Query rows per block: two consumer warpgroups of 64 (`Cfg::BM`).
    pub const ROWS: usize = 128;

    /// One tile configuration, `ak::attention::sm90::Cfg<D, DV, BN, STAGES>`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Tile {
        pub d: usize,
        pub dv: usize,
        /// Keys per tile.
        pub block_n: usize,
        /// K/V stages of the TMA ring.
        pub stages: usize,
    }

    pub const TILES: [Tile; 5] = [
        // 128 x 128, 2 stages (81 KB)
        Tile { d: 64, dv: 64, block_n: 128, stages: 2 },
        // 128 x 128, 2 stages (161 KB)
        Tile { d: 128, dv: 128, block_n: 128, stages: 2 },
        // 128 x 64, 2 stages (193 KB): O is 128 registers per consumer thread
        Tile { d: 256, dv: 256, block_n: 64, stages: 2 },
        // Dv = 2D. 128 x 128, 2 stages (129 KB): O (64 registers) as d128's
        Tile { d: 64, dv: 128, block_n: 128, stages: 2 },
        // 128 x 64, 2 stages (161 KB): O (128 registers) as d256's
        Tile { d: 128, dv: 256, block_n: 64, stages: 2 },
    ];

    impl Tile {
        /// Dynamic shared memory: 1024 bytes of alignment slack, the Q area (Q, then the staged
        /// O: `ROWS` x max(d, dv)), and `stages` x (K, V), 2-byte elements (`Cfg::SMEM_BYTES`).
        pub const fn smem_bytes(&self) -> usize {
            let wide = if self.dv > self.d { self.dv } else { self.d };
            1024 + 2 * (ROWS * wide + self.stages * self.block_n * (self.d + self.dv))
        }
        pub fn cfg(&self) -> String {
            format!("ak::attention::sm90::Cfg<{}, {}, {}, {}>", self.d, self.dv, self.block_n, self.stages)
        }
    }
}

/// Split-KV decode, its combine and merge_states (`kernels/decode/decode.cu`), and the
/// KV-cache append (`kernels/decode/append.cu`).
pub mod decode {
    use super::Dt;

    pub const SOURCE: &str = "kernels/decode/decode.cu";
    pub const APPEND_SOURCE: &str = "kernels/decode/append.cu";
    /// Threads per decode CTA (`ak::decode::THREADS`).
    pub const THREADS: usize = 128;
    /// Head-dim elements per lane (`VEC`).
    pub const VEC: usize = 8;
    /// Keys per lane group per pipeline stage (`KPS`).
    pub const KPS: usize = 2;
    /// cp.async pipeline depth (`STAGES`).
    pub const STAGES: usize = 4;
    pub const DTYPES: [Dt; 2] = [Dt::F16, Dt::BF16];
    /// Head dims `D = Dv` with a decode kernel.
    pub const HEAD_DIMS: [usize; 3] = [64, 128, 256];
    /// Query rows per CTA of the instances, ascending.
    pub const ROWS: [usize; 4] = [1, 2, 4, 8];
    /// Rows (warps of 32 lanes) per merge_states block.
    pub const MERGE_ROWS: usize = 4;
    /// Threads of the combine, merge_states and append blocks.
    pub const SMALL_THREADS: usize = 128;
    pub const MERGE_DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::BF16];
    pub const APPEND_DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::BF16];

    /// Keys one CTA consumes per pipeline stage for head dim `d` (`keys_per_stage<D>()`).
    pub const fn keys_per_stage(d: usize) -> usize {
        THREADS / (d / VEC) * KPS
    }
    /// Dynamic shared memory of one decode CTA (`smem_bytes<T, ROWS>()`): the larger of the
    /// cp.async ring and the end-of-CTA merge buffer.
    pub const fn smem_bytes(dtype: Dt, rows: usize) -> usize {
        let u4 = VEC * dtype.size() / 16;
        let ring = STAGES * KPS * 2 * u4 * THREADS * 16;
        let merge = (rows * THREADS * VEC + 2 * rows * THREADS) * 4;
        if ring > merge {
            ring
        } else {
            merge
        }
    }
}

/// Fused differential attention: prefill v1/v2 and the baselines' epilogue
/// (`kernels/diff_attention/prefill.cu`), decode v1 (`kernels/diff_attention/decode.cu`).
pub mod diff_attention {
    use super::Dt;

    pub const PREFILL_SOURCE: &str = "kernels/diff_attention/prefill.cu";
    pub const SM90_SOURCE: &str = "kernels/diff_attention/prefill_sm90.cu";
    pub const SM90_PARAMS: &str = "AkDiffSm90Params";
    /// Threads per sm_90a prefill block: a producer and two consumer warpgroups.
    pub const SM90_THREADS: usize = 384;
    /// Query rows per sm_90a prefill block: each consumer warpgroup runs one map over all 64.
    pub const SM90_ROWS: usize = 64;
    /// The sm_90a prefill tile of a variant and d: (keys per K/V tile, ring stages). The
    /// consumer holds O (Dv / 2 registers), S (BN / 2) and P (BN / 4): v1 d = 128 (Dv = 256)
    /// takes 64 keys, like the attention kernel's d = 256.
    pub const fn sm90_tile(variant: u8, d: usize) -> (usize, usize) {
        match (variant, d) {
            (1, 128) => (64, 2),
            _ => (128, 2),
        }
    }
    /// Dynamic shared memory of one sm_90a prefill block: 1024 bytes of alignment slack, Q1 and
    /// Q2 (64 rows each), and the stages of K1 (and K2) and V (`Cfg::SMEM_BYTES`).
    pub const fn sm90_smem_bytes(variant: u8, d: usize) -> usize {
        let (dv, shared_k) = prefill_shape(variant, d);
        let (bn, stages) = sm90_tile(variant, d);
        let nk = if shared_k { 1 } else { 2 };
        1024 + 2 * (2 * SM90_ROWS * d + stages * bn * (nk * d + dv))
    }
    pub const DECODE_SOURCE: &str = "kernels/diff_attention/decode.cu";
    pub const DTYPES: [Dt; 2] = [Dt::F16, Dt::BF16];
    /// Per-map head dims `d` with kernels.
    pub const HEAD_DIMS: [usize; 2] = [64, 128];
    /// Threads per prefill block (`THREADS`: two groups of four warps).
    pub const PREFILL_THREADS: usize = 256;
    /// (row, head) items per epilogue block: one warp each.
    pub const EPILOGUE_ITEMS: usize = 4;
    /// Keys per decode tile (`DT`).
    pub const DECODE_KEYS: usize = 32;
    /// Threads per decode block (`DTHREADS`).
    pub const DECODE_THREADS: usize = 128;
    /// Diff heads per decode block of the instances (`GM`), ascending.
    pub const DECODE_HEADS: [usize; 4] = [1, 2, 4, 8];

    /// V width and whether K1 = K2 (one K tile per stage) of a variant (1 or 2).
    pub const fn prefill_shape(variant: u8, d: usize) -> (usize, bool) {
        if variant == 1 {
            (2 * d, false)
        } else {
            (d, true)
        }
    }
    /// The prefill tile of a variant and d: 16-row m-tiles per warp (`MT`; the block has
    /// 64 MT query rows) and keys per KV tile (`BC`). As large as registers allow without
    /// spills on sm_80 and sm_90a (benches/NOTES.md): v1 d = 128's O alone takes 128 registers.
    pub const fn prefill_tile(variant: u8, d: usize) -> (usize, usize) {
        match (variant, d) {
            (1, 64) => (1, 128),
            (2, 64) => (2, 64),
            (2, 128) => (1, 128),
            _ => (1, 64),
        }
    }
    /// Query rows per prefill block (`Layout::BR`).
    pub const fn prefill_rows(variant: u8, d: usize) -> usize {
        64 * prefill_tile(variant, d).0
    }
    /// Keys per prefill KV tile (`BC`).
    pub const fn prefill_keys(variant: u8, d: usize) -> usize {
        prefill_tile(variant, d).1
    }
    /// Dynamic shared memory of one prefill block: Q1 and Q2 tiles plus two KV stages
    /// (`sizeof(T) * Layout::SMEM_ELEMS`).
    pub const fn prefill_smem_bytes(dtype: Dt, variant: u8, d: usize) -> usize {
        let (dv, shared_k) = prefill_shape(variant, d);
        let nk = if shared_k { 1 } else { 2 };
        let (rows, keys) = (prefill_rows(variant, d), prefill_keys(variant, d));
        dtype.size() * (2 * rows * d + 2 * (nk * keys * d + keys * dv))
    }
    /// Dynamic shared memory of one decode split block with `gm` heads
    /// (`DecodeLayout<D>::smem_bytes<T, GM>()`): two stages of `[k1 | k2]` (padded) and V tiles,
    /// then `2 gm (d + DT + 3)` floats.
    pub const fn decode_smem_bytes(dtype: Dt, d: usize, gm: usize) -> usize {
        let tiles = 2 * (DECODE_KEYS * (2 * d + 8) + DECODE_KEYS * 2 * d);
        dtype.size() * tiles + 4 * 2 * gm * (d + DECODE_KEYS + 3)
    }
}

/// Linear-attention recurrences: `kernels/linear/recurrent.cu` (prefill and decode of
/// `linear_attention` and `delta_rule`), `kernels/linear/chunked.cu`, `kernels/linear/rwkv4.cu`.
pub mod linear {
    use super::Dt;

    pub const RECURRENT_SOURCE: &str = "kernels/linear/recurrent.cu";
    pub const CHUNKED_SOURCE: &str = "kernels/linear/chunked.cu";
    pub const RWKV4_SOURCE: &str = "kernels/linear/rwkv4.cu";

    /// Value columns per recurrent prefill block (`kPrefillCols`).
    pub const PREFILL_COLS: usize = 32;
    /// Value columns per recurrent decode block (`kDecodeCols`).
    pub const DECODE_COLS: usize = 64;
    /// Threads per recurrent decode block (`kDecodeThreads`).
    pub const DECODE_THREADS: usize = 256;
    /// Rows (keys) of the state per decode row group (`kDecodeRowGroups`).
    pub const DECODE_ROW_GROUPS: usize = 16;

    /// One key-dim bin of the recurrent kernels: the instances serve `K <= k`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Bin {
        pub k: usize,
        /// Prefill: state rows per thread in registers (`KPT`) and threads per column (`KSPLIT`).
        pub kpt: usize,
        pub ksplit: usize,
        /// Prefill `__launch_bounds__` minimum blocks per SM (0: not given).
        pub prefill_min_blocks: u32,
        /// Decode: state rows per thread (`ROWS`) and minimum blocks per SM.
        pub decode_rows: usize,
        pub decode_min_blocks: u32,
    }

    /// The bins, ascending; a key dim takes the first bin with `K <= k`.
    pub const BINS: [Bin; 3] = [
        Bin { k: 64, kpt: 64, ksplit: 1, prefill_min_blocks: 0, decode_rows: 4, decode_min_blocks: 3 },
        Bin { k: 128, kpt: 128, ksplit: 1, prefill_min_blocks: 0, decode_rows: 8, decode_min_blocks: 3 },
        // Four threads per column, 64 rows each. Decode: 2 resident blocks (3 for K <= 128) keep
        // enough state loads in flight at T = 1.
        Bin { k: 256, kpt: 64, ksplit: 4, prefill_min_blocks: 1, decode_rows: 16, decode_min_blocks: 2 },
    ];

    /// The bin of key dim `key_dim`, if any.
    pub fn bin(key_dim: usize) -> Option<&'static Bin> {
        BINS.iter().find(|b| key_dim <= b.k)
    }

    impl Bin {
        /// Floats per staged token row (`PrefillLayout<KPT, KSPLIT>::ROW`): KSPLIT parts, each
        /// shifted by 4 more floats when split.
        pub const fn prefill_row(&self) -> usize {
            self.ksplit * if self.ksplit == 1 { self.kpt } else { self.kpt + 4 }
        }
        /// Register length of a column, `>= K` (`KPAD`).
        pub const fn kpad(&self) -> usize {
            self.kpt * self.ksplit
        }
        /// Dynamic shared memory (floats) of the prefill kernel for a chunk of `chunk` tokens
        /// with `rows` staged rows per token (2 + vector decay + 2 for the delta rule):
        /// `chunk * (rows * ROW + 32 + 2) + KPAD` (`PrefillLayout::floats`).
        pub const fn prefill_smem_floats(&self, chunk: usize, rows: usize) -> usize {
            chunk * (rows * self.prefill_row() + PREFILL_COLS + 2) + self.kpad()
        }
    }

    /// Tokens per chunk of the chunked kernel (`ak::linear::C`).
    pub const CHUNK: usize = 64;
    pub const CHUNKED_DTYPES: [Dt; 2] = [Dt::F16, Dt::BF16];
    /// Key and value dims of the chunked kernel.
    pub const CHUNKED_DIMS: [usize; 2] = [64, 128];

    /// Dynamic shared memory of the chunked kernel (`Layout<T, K, V>::BYTES`): one block holds
    /// all `v` value columns.
    pub const fn chunked_smem_bytes(k: usize, v: usize) -> usize {
        let pad = 8;
        let c = CHUNK;
        let qk = c * (k + pad) * 2;
        let vv = c * (v + pad) * 2;
        let a = c * (c + pad) * 2;
        let g = c * (k + 1) * 4;
        2 * qk + vv + a + g + 5 * k * 4 + 25 * k * 4 + k * 4 + 16 * 4
    }
    /// Threads of a chunked block: `v / 16` warps.
    pub const fn chunked_threads(v: usize) -> usize {
        2 * v
    }

    pub const RWKV4_DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::BF16];
    /// Threads (one channel each) per rwkv4 block.
    pub const RWKV4_THREADS: usize = 128;
}

/// Standalone RoPE: `kernels/rope/rope.cu`.
pub mod rope {
    use super::Dt;

    pub const SOURCE: &str = "kernels/rope/rope.cu";
    pub const DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::BF16];
    pub const THREADS: usize = 128;
    /// Largest rotary_dim of the kernel's shared cos/sin row (`2 * AK_ROPE_MAX_HALF`).
    pub const MAX_ROTARY_DIM: usize = 2048;
}

/// Conformance probes: `kernels/probe/collectives.cu`.
pub mod probe {
    pub const SOURCE: &str = "kernels/probe/collectives.cu";
    /// The Hopper (sm_90a) probes.
    pub const HOPPER_SOURCE: &str = "kernels/probe/hopper.cu";
}

// ========================================================================= the instances

/// One entry point as build.rs generates it: its table row plus the C++ it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub key: Key,
    pub name: String,
    /// The parameter struct of kernels/params.h the entry point takes.
    pub params: &'static str,
    /// The body: a call of the family's template with `p`.
    pub body: String,
    pub block: [u32; 3],
    pub bounded: bool,
    pub min_blocks: u32,
    pub smem_bytes: u32,
    pub rows: u32,
    pub keys: u32,
    /// C++ constant expressions that must hold (compiled as `static_assert`s after the entry).
    pub asserts: Vec<String>,
}

/// One kernel module (a `.cu` file) and its entry points, in source order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The source path, `kernels/<family>/<name>.cu`.
    pub source: &'static str,
    /// Family-wide C++ checks (the C++ spelling of the constants above).
    pub asserts: Vec<String>,
    pub instances: Vec<Instance>,
}

impl Module {
    /// The module name: the source path under kernels/ without `.cu`, `/` replaced by `_`.
    pub fn name(&self) -> String {
        module_name(self.source)
    }
}

/// The module name of a source path (`kernels/decode/decode.cu` -> `decode_decode`).
pub fn module_name(source: &str) -> String {
    let rel = source.strip_prefix("kernels/").unwrap_or(source);
    rel.strip_suffix(".cu").unwrap_or(rel).replace(['/', '\\'], "_")
}

/// An entry-point name from its parts: `ak_<part>_<part>...`.
fn entry_name(parts: &[&str]) -> String {
    let mut all = vec!["ak"];
    all.extend_from_slice(parts);
    all.join("_")
}

fn eq(lhs: impl std::fmt::Display, rhs: impl std::fmt::Display) -> String {
    format!("{lhs} == {rhs}")
}

/// A plain instance: one block of `threads`, launch bounds `(threads[, min_blocks])`.
struct Plain {
    key: Key,
    name: String,
    params: &'static str,
    body: String,
    threads: usize,
    min_blocks: u32,
    smem_bytes: usize,
    rows: usize,
    keys: usize,
}

impl Plain {
    fn build(self, asserts: Vec<String>) -> Instance {
        Instance {
            key: self.key,
            name: self.name,
            params: self.params,
            body: self.body,
            block: [self.threads as u32, 1, 1],
            bounded: true,
            min_blocks: self.min_blocks,
            smem_bytes: self.smem_bytes as u32,
            rows: self.rows as u32,
            keys: self.keys as u32,
            asserts,
        }
    }
}

fn attention_module() -> Module {
    use attention::*;
    let mut instances = Vec::new();
    for t in TILES {
        for dtype in DTYPES {
            for (alibi, softcap) in VARIANTS {
                let t = t.for_variant(softcap);
                let mut name = vec![dtype.suffix().to_string(), format!("d{}", t.d)];
                if t.dv != t.d {
                    name.push(format!("dv{}", t.dv));
                }
                if alibi {
                    name.push("alibi".into());
                }
                if softcap {
                    name.push("softcap".into());
                }
                let parts: Vec<&str> = ["attn", "fwd"].into_iter().chain(name.iter().map(String::as_str)).collect();
                let cfg = t.cfg();
                instances.push(
                    Plain {
                        key: Key::AttnFwd { dtype, d: t.d, dv: t.dv, alibi, softcap },
                        name: entry_name(&parts),
                        params: PARAMS,
                        body: format!("ak::attention::attention_forward<{}, {cfg}, {alibi}, {softcap}>(p)", dtype.cxx()),
                        threads: t.threads(),
                        min_blocks: t.min_blocks,
                        smem_bytes: t.smem_bytes(),
                        rows: t.block_m(),
                        keys: t.block_n,
                    }
                    .build(vec![
                        eq(format!("{cfg}::NT"), t.threads()),
                        eq(format!("{cfg}::BM"), t.block_m()),
                        eq(format!("{cfg}::BN"), t.block_n),
                        eq(format!("{cfg}::SMEM_BYTES"), t.smem_bytes()),
                    ]),
                );
            }
        }
    }
    for d in ROPE_KEY_DIMS {
        for dtype in DTYPES {
            let dn = format!("d{d}");
            for queries in [false, true] {
                let side = if queries { "queries" } else { "keys" };
                instances.push(
                    Plain {
                        key: if queries { Key::AttnRopeQueries { dtype, d } } else { Key::AttnRopeKeys { dtype, d } },
                        name: entry_name(&["attn", "rope", side, dtype.suffix(), &dn]),
                        params: PARAMS,
                        body: format!("ak::attention::rope_pass<{}, {d}, {queries}>(p)", dtype.cxx()),
                        threads: ROPE_THREADS,
                        min_blocks: 0,
                        smem_bytes: 0,
                        rows: ROPE_ROWS,
                        keys: 0,
                    }
                    .build(Vec::new()),
                );
            }
        }
    }
    let asserts = vec![eq("ak::attention::ROPE_ROWS", ROPE_ROWS), eq("ak::attention::ROPE_THREADS", ROPE_THREADS)];
    Module { source: SOURCE, asserts, instances }
}

fn attention_sm90_module() -> Module {
    use attention_sm90::*;
    let mut instances = Vec::new();
    for t in TILES {
        for dtype in DTYPES {
            for (alibi, softcap) in attention::VARIANTS {
                let dn = format!("d{}", t.d);
                let dvn = format!("dv{}", t.dv);
                let mut parts = vec!["attn", "fwd", "sm90", dtype.suffix(), &dn];
                if t.dv != t.d {
                    parts.push(&dvn);
                }
                if alibi {
                    parts.push("alibi");
                }
                if softcap {
                    parts.push("softcap");
                }
                let cfg = t.cfg();
                instances.push(
                    Plain {
                        key: Key::AttnFwdSm90 { dtype, d: t.d, dv: t.dv, alibi, softcap },
                        name: entry_name(&parts),
                        params: PARAMS,
                        body: format!("ak::attention::sm90::attention_forward<{}, {cfg}, {alibi}, {softcap}>(p)", dtype.cxx()),
                        threads: THREADS,
                        min_blocks: 1,
                        smem_bytes: t.smem_bytes(),
                        rows: ROWS,
                        keys: t.block_n,
                    }
                    .build(vec![
                        eq(format!("{cfg}::NT"), THREADS),
                        eq(format!("{cfg}::BM"), ROWS),
                        eq(format!("{cfg}::BN"), t.block_n),
                        eq(format!("{cfg}::SMEM_BYTES"), t.smem_bytes()),
                    ]),
                );
            }
        }
    }
    Module { source: SOURCE, asserts: Vec::new(), instances }
}

fn decode_modules() -> [Module; 2] {
    use decode::*;
    let mut instances = Vec::new();
    for dtype in DTYPES {
        for d in HEAD_DIMS {
            for rows in ROWS {
                let (dn, rn) = (format!("d{d}"), format!("r{rows}"));
                instances.push(
                    Plain {
                        key: Key::Decode { dtype, d, rows },
                        name: entry_name(&["decode", dtype.suffix(), &dn, &rn]),
                        params: "AkDecodeParams",
                        body: format!("ak::decode::decode_kernel<{}, {d}, {rows}>(p)", dtype.cxx()),
                        threads: THREADS,
                        min_blocks: 0,
                        smem_bytes: smem_bytes(dtype, rows),
                        rows,
                        keys: keys_per_stage(d),
                    }
                    .build(vec![
                        eq(format!("ak::decode::smem_bytes<{}, {rows}>()", dtype.cxx()), smem_bytes(dtype, rows)),
                        eq(format!("ak::decode::keys_per_stage<{d}>()"), keys_per_stage(d)),
                    ]),
                );
            }
        }
    }
    for dtype in DTYPES {
        instances.push(
            Plain {
                key: Key::DecodeCombine { dtype },
                name: entry_name(&["decode", "combine", dtype.suffix()]),
                params: "AkDecodeCombineParams",
                body: format!("ak::decode::combine_kernel<{}>(p)", dtype.cxx()),
                threads: SMALL_THREADS,
                min_blocks: 0,
                smem_bytes: 0,
                rows: 1,
                keys: 0,
            }
            .build(Vec::new()),
        );
    }
    for dtype in MERGE_DTYPES {
        // One warp per (b, s, h) row, MERGE_ROWS rows per block: block (32, MERGE_ROWS).
        let mut merge = Plain {
            key: Key::MergeStates { dtype },
            name: entry_name(&["merge", "states", dtype.suffix()]),
            params: "AkMergeStatesParams",
            body: format!("ak::decode::merge_kernel<{}>(p)", dtype.cxx()),
            threads: SMALL_THREADS,
            min_blocks: 0,
            smem_bytes: 0,
            rows: MERGE_ROWS,
            keys: 0,
        }
        .build(Vec::new());
        merge.block = [(SMALL_THREADS / MERGE_ROWS) as u32, MERGE_ROWS as u32, 1];
        instances.push(merge);
    }
    let decode = Module {
        source: SOURCE,
        asserts: vec![
            eq("ak::decode::THREADS", THREADS),
            eq("ak::decode::VEC", VEC),
            eq("ak::decode::KPS", KPS),
            eq("ak::decode::STAGES", STAGES),
        ],
        instances,
    };
    let append = Module {
        source: APPEND_SOURCE,
        asserts: Vec::new(),
        instances: APPEND_DTYPES
            .into_iter()
            .map(|dtype| {
                Plain {
                    key: Key::AppendKv { dtype },
                    name: entry_name(&["append", "kv", dtype.suffix()]),
                    params: "AkAppendKvParams",
                    body: format!("ak::decode::append_kernel<{}>(p)", dtype.cxx()),
                    threads: SMALL_THREADS,
                    min_blocks: 0,
                    smem_bytes: 0,
                    rows: 1,
                    keys: 0,
                }
                .build(Vec::new())
            })
            .collect(),
    };
    [decode, append]
}

fn diff_attention_modules() -> [Module; 3] {
    use diff_attention::*;
    let mut prefill = Vec::new();
    for variant in [1u8, 2] {
        for dtype in DTYPES {
            for d in HEAD_DIMS {
                let (dv, shared_k) = prefill_shape(variant, d);
                let (mt, bc) = prefill_tile(variant, d);
                let smem = prefill_smem_bytes(dtype, variant, d);
                let layout = format!("ak::diff::Layout<{d}, {dv}, {shared_k}, {mt}, {bc}>");
                let (vn, dn) = (format!("v{variant}"), format!("d{d}"));
                prefill.push(
                    Plain {
                        key: Key::DiffPrefill { variant, dtype, d },
                        name: entry_name(&["diff", "prefill", &vn, dtype.suffix(), &dn]),
                        params: "AkDiffAttnParams",
                        body: format!("ak::diff::diff_prefill<{}, {d}, {dv}, {shared_k}, {mt}, {bc}>(p)", dtype.cxx()),
                        threads: PREFILL_THREADS,
                        min_blocks: 1,
                        smem_bytes: smem,
                        rows: prefill_rows(variant, d),
                        keys: bc,
                    }
                    .build(vec![
                        eq(format!("sizeof({}) * {layout}::SMEM_ELEMS", dtype.cxx()), smem),
                        eq(format!("{layout}::BR"), prefill_rows(variant, d)),
                    ]),
                );
            }
        }
    }
    for dtype in DTYPES {
        prefill.push(
            Plain {
                key: Key::DiffEpilogue { dtype },
                name: entry_name(&["diff", "epilogue", dtype.suffix()]),
                params: "AkDiffEpilogueParams",
                body: format!("ak::diff::diff_epilogue<{}>(p)", dtype.cxx()),
                threads: 32 * EPILOGUE_ITEMS,
                min_blocks: 0,
                smem_bytes: 0,
                rows: EPILOGUE_ITEMS,
                keys: 0,
            }
            .build(Vec::new()),
        );
    }
    let mut decode = Vec::new();
    for dtype in DTYPES {
        for d in HEAD_DIMS {
            let dn = format!("d{d}");
            for gm in DECODE_HEADS {
                let smem = decode_smem_bytes(dtype, d, gm);
                decode.push(
                    Plain {
                        key: Key::DiffDecodeSplit { dtype, d, heads: gm },
                        name: entry_name(&["diff", "decode", "split", dtype.suffix(), &dn, &format!("g{gm}")]),
                        params: "AkDiffDecodeParams",
                        body: format!("ak::diff::diff_decode_split<{}, {d}, {gm}>(p)", dtype.cxx()),
                        threads: DECODE_THREADS,
                        min_blocks: 0,
                        smem_bytes: smem,
                        rows: gm,
                        keys: DECODE_KEYS,
                    }
                    .build(vec![eq(
                        format!("ak::diff::DecodeLayout<{d}>::smem_bytes<{}, {gm}>()", dtype.cxx()),
                        smem,
                    )]),
                );
            }
            decode.push(
                Plain {
                    key: Key::DiffDecodeCombine { dtype, d },
                    name: entry_name(&["diff", "decode", "combine", dtype.suffix(), &dn]),
                    params: "AkDiffDecodeParams",
                    body: format!("ak::diff::diff_decode_combine<{}, {d}>(p)", dtype.cxx()),
                    threads: DECODE_THREADS,
                    min_blocks: 0,
                    smem_bytes: 0,
                    rows: 1,
                    keys: 0,
                }
                .build(Vec::new()),
            );
        }
    }
    [
        Module {
            source: PREFILL_SOURCE,
            asserts: vec![
                eq("ak::diff::THREADS", PREFILL_THREADS),
            ],
            instances: prefill,
        },
        Module {
            source: DECODE_SOURCE,
            asserts: vec![eq("ak::diff::DT", DECODE_KEYS), eq("ak::diff::DTHREADS", DECODE_THREADS)],
            instances: decode,
        },
        diff_sm90_module(),
    ]
}

fn diff_sm90_module() -> Module {
    use diff_attention::*;
    let mut instances = Vec::new();
    for variant in [1u8, 2] {
        for dtype in DTYPES {
            for d in HEAD_DIMS {
                let (dv, shared_k) = prefill_shape(variant, d);
                let (bn, stages) = sm90_tile(variant, d);
                let smem = sm90_smem_bytes(variant, d);
                let cfg = format!("ak::diff::sm90::Cfg<{d}, {dv}, {shared_k}, {bn}, {stages}>");
                for (alibi, softcap) in attention::VARIANTS {
                    let (vn, dn) = (format!("v{variant}"), format!("d{d}"));
                    let mut parts = vec!["diff", "prefill", "sm90", &vn, dtype.suffix(), &dn];
                    if alibi {
                        parts.push("alibi");
                    }
                    if softcap {
                        parts.push("softcap");
                    }
                    instances.push(
                        Plain {
                            key: Key::DiffPrefillSm90 { variant, dtype, d, alibi, softcap },
                            name: entry_name(&parts),
                            params: SM90_PARAMS,
                            body: format!("ak::diff::sm90::diff_forward<{}, {cfg}, {alibi}, {softcap}>(p)", dtype.cxx()),
                            threads: SM90_THREADS,
                            min_blocks: 1,
                            smem_bytes: smem,
                            rows: SM90_ROWS,
                            keys: bn,
                        }
                        .build(vec![
                            eq(format!("{cfg}::NT"), SM90_THREADS),
                            eq(format!("{cfg}::BM"), SM90_ROWS),
                            eq(format!("{cfg}::SMEM_BYTES"), smem),
                        ]),
                    );
                }
            }
        }
    }
    Module { source: SM90_SOURCE, asserts: Vec::new(), instances }
}

fn linear_modules() -> [Module; 3] {
    use linear::*;
    let mut recurrent = Vec::new();
    for delta in [false, true] {
        let op = if delta { "delta" } else { "linear" };
        for b in BINS {
            let layout = format!("ak::linear::PrefillLayout<{}, {}>", b.kpt, b.ksplit);
            let mut asserts = vec![eq(format!("{layout}::ROW"), b.prefill_row()), eq(format!("{layout}::KPAD"), b.kpad())];
            // The formula is affine in the chunk and the row count: four points prove it.
            for (chunk, rows) in [(1, 2), (64, 2), (1, 5), (64, 5)] {
                asserts.push(eq(format!("{layout}::floats({chunk}, {rows})"), b.prefill_smem_floats(chunk, rows)));
            }
            recurrent.push(
                Plain {
                    key: Key::LinearPrefill { delta, k: b.k },
                    name: entry_name(&[op, "prefill", &format!("k{}", b.k)]),
                    params: "AkLinearParams",
                    body: format!("ak::linear::prefill<{delta}, {}, {}>(p)", b.kpt, b.ksplit),
                    threads: 32 * b.ksplit,
                    min_blocks: b.prefill_min_blocks,
                    smem_bytes: 0,
                    rows: PREFILL_COLS,
                    keys: 0,
                }
                .build(asserts),
            );
        }
    }
    for delta in [false, true] {
        let op = if delta { "delta" } else { "linear" };
        for b in BINS {
            recurrent.push(
                Plain {
                    key: Key::LinearDecode { delta, k: b.k },
                    name: entry_name(&[op, "decode", &format!("k{}", b.k)]),
                    params: "AkLinearParams",
                    body: format!("ak::linear::decode<{delta}, {}>(p)", b.decode_rows),
                    threads: DECODE_THREADS,
                    min_blocks: b.decode_min_blocks,
                    smem_bytes: 0,
                    rows: DECODE_COLS,
                    keys: 0,
                }
                .build(vec![eq(format!("{} * ak::linear::kDecodeRowGroups", b.decode_rows), b.k)]),
            );
        }
    }
    let mut chunked = Vec::new();
    for dtype in CHUNKED_DTYPES {
        for k in CHUNKED_DIMS {
            for v in CHUNKED_DIMS {
                let smem = chunked_smem_bytes(k, v);
                chunked.push(
                    Plain {
                        key: Key::LinearChunked { dtype, k, v },
                        name: entry_name(&["linear", "chunked", dtype.suffix(), &format!("k{k}"), &format!("v{v}")]),
                        params: "AkChunkedParams",
                        body: format!("ak::linear::chunked_forward<{}, {k}, {v}>(p)", dtype.cxx()),
                        threads: chunked_threads(v),
                        min_blocks: 0,
                        smem_bytes: smem,
                        rows: v,
                        keys: CHUNK,
                    }
                    .build(vec![eq(format!("ak::linear::Layout<{}, {k}, {v}>::BYTES", dtype.cxx()), smem)]),
                );
            }
        }
    }
    let rwkv4 = RWKV4_DTYPES
        .into_iter()
        .map(|dtype| {
            Plain {
                key: Key::Rwkv4 { dtype },
                name: entry_name(&["rwkv4", dtype.suffix()]),
                params: "AkRwkv4Params",
                body: format!("ak::linear::rwkv4_forward<{}>(p)", dtype.cxx()),
                threads: RWKV4_THREADS,
                min_blocks: 0,
                smem_bytes: 0,
                rows: RWKV4_THREADS,
                keys: 0,
            }
            .build(Vec::new())
        })
        .collect();
    [
        Module {
            source: CHUNKED_SOURCE,
            asserts: vec![eq("ak::linear::C", CHUNK)],
            instances: chunked,
        },
        Module {
            source: RECURRENT_SOURCE,
            asserts: vec![
                eq("ak::linear::kPrefillCols", PREFILL_COLS),
                eq("ak::linear::kDecodeCols", DECODE_COLS),
                eq("ak::linear::kDecodeThreads", DECODE_THREADS),
                eq("ak::linear::kDecodeRowGroups", DECODE_ROW_GROUPS),
            ],
            instances: recurrent,
        },
        Module { source: RWKV4_SOURCE, asserts: Vec::new(), instances: rwkv4 },
    ]
}

fn rope_module() -> Module {
    use rope::*;
    Module {
        source: SOURCE,
        asserts: vec![eq("2 * AK_ROPE_MAX_HALF", MAX_ROTARY_DIM)],
        instances: DTYPES
            .into_iter()
            .map(|dtype| {
                Plain {
                    key: Key::Rope { dtype },
                    name: entry_name(&["rope", dtype.suffix()]),
                    params: "AkRopeParams",
                    body: format!("ak::rope::rope_row<{}>(p)", dtype.cxx()),
                    threads: THREADS,
                    min_blocks: 0,
                    smem_bytes: 0,
                    rows: 1,
                    keys: 0,
                }
                .build(Vec::new())
            })
            .collect(),
    }
}

fn probe_module(source: &'static str) -> Module {
    Module {
        source,
        asserts: Vec::new(),
        instances: ProbeKernel::ALL
            .into_iter()
            .filter(|k| k.source() == source)
            .map(|k| Instance {
                key: Key::Probe(k),
                name: entry_name(&["probe", k.stem()]),
                params: "AkProbeParams",
                body: format!("ak::probe::{}(p)", k.stem()),
                // No launch bounds: one warp, or 256-thread blocks for the elementwise probes.
                block: [32, 1, 1],
                bounded: false,
                min_blocks: 0,
                smem_bytes: 0,
                rows: 0,
                keys: 0,
                asserts: Vec::new(),
            })
            .collect(),
    }
}

/// Parameter structs that hold TMA tensor maps: their entry points take the parameter
/// `__grid_constant__`, so it stays in parameter memory, where the copies read the maps in place.
pub const GRID_CONSTANT_PARAMS: [&str; 2] = [attention_sm90::PARAMS, diff_attention::SM90_PARAMS];

/// Every kernel module and its entry points.
pub fn modules() -> Vec<Module> {
    let mut m = vec![attention_module(), attention_sm90_module()];
    m.extend(decode_modules());
    m.extend(diff_attention_modules());
    m.extend(linear_modules());
    m.push(probe_module(probe::SOURCE));
    m.push(probe_module(probe::HOPPER_SOURCE));
    m.push(rope_module());
    m
}
