//! Fidelity of the emulated device's Hopper (sm_90a) instructions, and conformance of an H100's:
//! mbarrier, wgmma (register fragments, matrix descriptors, swizzle layouts), elect.sync, named
//! barriers, setmaxnreg and stmatrix, through the probes of `kernels/probe/hopper.cu`
//! (launchers in `attn_kernels::runtime::probe`).
//!
//! Every expectation comes from a model written here from NVIDIA's PTX ISA (sections named by
//! title), never from the emulator's code. The wgmma operands are chosen so that every partial
//! sum is exact in f32 (few significant bits, narrow exponents): the expected D is then the
//! exact A*B + C on any conforming implementation, so the same bit-exact checks are the
//! emulator's fidelity test and a GPU's conformance test. On a GPU that is not compute
//! capability 9.x the tests print why they skip. The checker tests (misuse on purpose) and the
//! compute-capability gate are for the emulated device only.

use attn_kernels::runtime::probe::{
    self, HopperMisbehave, MbarOp, TmaCall, TmaSwizzle, WgmmaA, WgmmaCall, LDMATRIX_ROWS, NOT_A_MEMBER, WGMMA_NS,
};
use attn_kernels::{DType, Gpu};
use attn_kernels_harness::bench::gpu_for_test;
use attn_kernels_harness::check::Rng;

// ============================================================================ plumbing

struct Dut {
    gpu: Gpu,
    emulated: bool,
}

fn device(test: &str) -> Option<Dut> {
    let gpu = gpu_for_test(&format!("emu_hopper::{test}"))?;
    let info = gpu.info();
    let emulated = info.emulated;
    if info.compute_capability.0 != 9 {
        eprintln!(
            "{test}: skipped: {} presents compute capability {}.{}; the Hopper probes need 9.x",
            info.name, info.compute_capability.0, info.compute_capability.1
        );
        return None;
    }
    eprintln!("{test}: on {} ({})", info.name, if emulated { "fidelity" } else { "conformance" });
    Some(Dut { gpu, emulated })
}

// ============================================================================ 16-bit floats

/// A value with at most 3 significant bits and exponent in [-3, 3], as f16 or bf16 bits, and its
/// value. Products of two such values and sums of up to 64 of them plus an accumulator of the
/// same kind are exact in f32.
fn small_value(rng: &mut Rng, bf16: bool) -> (u16, f64) {
    // Zero one time in 8, else (4 + m) / 4 * 2^e with m in 0..4: 1.00 .. 1.11 in binary.
    let mant = rng.below(8) as u32;
    if mant == 0 {
        return (0, 0.0);
    }
    let sig = 4 + (mant % 4);
    let e = rng.below(7) as i32 - 3;
    let neg = rng.below(2) == 1;
    let v = sig as f64 / 4.0 * 2f64.powi(e) * if neg { -1.0 } else { 1.0 };
    let bits = if bf16 {
        ((v as f32).to_bits() >> 16) as u16
    } else {
        // f16: sign, 5-bit exponent (bias 15), 10-bit fraction; sig/4 = 1.ff
        let frac = ((sig - 4) as u16) << 8;
        ((neg as u16) << 15) | (((e + 15) as u16) << 10) | frac
    };
    (bits, v)
}

/// An f32 accumulator value of the same kind (exact sums).
fn small_f32(rng: &mut Rng) -> f32 {
    let sig = rng.below(16) as f32;
    let e = rng.below(5) as i32 - 2;
    let neg = rng.below(2) == 1;
    sig * 2f32.powi(e) * if neg { -1.0 } else { 1.0 }
}

// ============================================================================ wgmma model

/// "Register Fragments" (wgmma .m64nNk16, matrix D, f32): thread t of the warpgroup (warp t/32,
/// lane t%32), register i of its N/2 holds row 16 (t/32) + (t%32)/4 + 8 ((i/2) % 2), column
/// 8 (i/4) + 2 (t%4) + i%2.
fn d_pos(t: usize, i: usize) -> (usize, usize) {
    let (w, lane) = (t / 32, t % 32);
    (16 * w + lane / 4 + 8 * ((i / 2) % 2), 8 * (i / 4) + 2 * (lane % 4) + i % 2)
}

/// "Register Fragments" (matrix A, .f16/.bf16, from registers): register r of thread t holds two
/// elements (low half first): row 16 (t/32) + (t%32)/4 + 8 (r % 2), column 2 (t%4) + h + 8 (r / 2).
fn a_pos(t: usize, r: usize, h: usize) -> (usize, usize) {
    let (w, lane) = (t / 32, t % 32);
    (16 * w + lane / 4 + 8 * (r % 2), 2 * (lane % 4) + h + 8 * (r / 2))
}

/// Swizzle modes of the matrix descriptor (bits 62-63).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Swz {
    None,
    B32,
    B64,
    B128,
}

impl Swz {
    fn code(self) -> u64 {
        match self {
            Swz::None => 0,
            Swz::B128 => 1,
            Swz::B64 => 2,
            Swz::B32 => 3,
        }
    }
    /// Row width in bytes of the swizzled K-major layouts.
    fn width(self) -> usize {
        match self {
            Swz::None => 16,
            Swz::B32 => 32,
            Swz::B64 => 64,
            Swz::B128 => 128,
        }
    }
}

/// "Matrix Descriptor Format": 14-bit start address, leading and stride byte offsets (each >> 4),
/// base offset 0, swizzle mode.
fn descriptor(start: usize, lbo: usize, sbo: usize, swz: Swz) -> u64 {
    ((start as u64 >> 4) & 0x3fff) | ((lbo as u64 >> 4) & 0x3fff) << 16 | ((sbo as u64 >> 4) & 0x3fff) << 32 | swz.code() << 62
}

/// An operand of `rows` (its M or N extent) x (16 ks) placed in the image at `base` ("Shared
/// Memory Matrix Layout"), K-major or MN-major: its per-k-step descriptors and the byte address
/// of element (row, k).
struct Operand {
    base: usize,
    swz: Swz,
    lbo: usize,
    sbo: usize,
    rows: usize,
    ks: usize,
    mn_major: bool,
    /// Distance between the start addresses of consecutive k-steps.
    step: usize,
}

impl Operand {
    /// K-major. No swizzle: 8x16-byte core matrices; `wide` puts the K-adjacent core matrices far
    /// apart (LBO large, SBO 128) instead of next to each other (LBO 128, SBO 256 per k-step).
    /// Swizzled: rows of W bytes holding up to W/2 elements of K, 8-row groups 8W apart, k-steps
    /// 32 bytes apart inside the row.
    fn k_major(base: usize, swz: Swz, rows: usize, ks: usize, wide: bool) -> Operand {
        let (lbo, sbo, step) = match swz {
            Swz::None if wide => (rows / 8 * 128, 128, 2 * (rows / 8 * 128)),
            Swz::None => (128, 256 * ks, 256),
            _ => (16, 8 * swz.width(), 32),
        };
        Operand { base, swz, lbo, sbo, rows, ks, mn_major: false, step }
    }
    /// MN-major (8 elements of M/N per 16-byte chunk). No swizzle: chunk c of every K row at
    /// c SBO, K rows 16 bytes apart, 8-row K groups LBO apart; `wide` puts the K groups far apart
    /// (LBO = rows/8 x 128, SBO 128) instead of next to each other (LBO 128, SBO 256 per k-step).
    /// Swizzled: K rows of W bytes holding W/2 elements of M/N, blocks of W/2 M/N elements LBO
    /// apart, 8-row K groups SBO apart; `wide` puts the M/N blocks innermost (LBO 8W, SBO = the
    /// blocks' bytes, as a row-major V tile loaded by TMA in boxes of W bytes) instead of the K
    /// groups (SBO 8W, LBO = all K groups' bytes).
    fn mn_major(base: usize, swz: Swz, rows: usize, ks: usize, wide: bool) -> Operand {
        let (lbo, sbo, step) = match swz {
            Swz::None if wide => (rows / 8 * 128, 128, 2 * (rows / 8 * 128)),
            Swz::None => (128, 256 * ks, 256),
            s => {
                let (blocks, group) = (rows.div_ceil(s.width() / 2), 8 * s.width());
                if wide {
                    (group, blocks * group, 2 * blocks * group)
                } else {
                    (2 * ks * group, group, 2 * group)
                }
            }
        };
        Operand { base, swz, lbo, sbo, rows, ks, mn_major: true, step }
    }
    fn new(mn_major: bool, base: usize, swz: Swz, rows: usize, ks: usize, wide: bool) -> Operand {
        if mn_major {
            Operand::mn_major(base, swz, rows, ks, wide)
        } else {
            Operand::k_major(base, swz, rows, ks, wide)
        }
    }
    /// Bytes from `base` to past the last element.
    fn bytes(&self) -> usize {
        let mut end = 0;
        for s in 0..self.ks {
            for r in 0..self.rows {
                for k in 0..16 {
                    end = end.max(self.addr(s, r, k) + 2);
                }
            }
        }
        end - self.base
    }
    /// Start address (relative to the image) of k-step s.
    fn start(&self, s: usize) -> usize {
        self.base + s * self.step
    }
    fn desc(&self, s: usize) -> u64 {
        descriptor(self.start(s), self.lbo, self.sbo, self.swz)
    }
    /// Element (row, k) of k-step s. Swizzled layouts: the 16-byte chunk index of the address
    /// (bits 4..) is XORed with its bits 7.. (1, 2 or 3 bits for 32B, 64B, 128B): the pattern is
    /// a function of the shared address, repeating every 8 rows of W bytes.
    fn addr(&self, s: usize, row: usize, k: usize) -> usize {
        let start = self.start(s);
        match (self.swz, self.mn_major) {
            (Swz::None, false) => start + row / 8 * self.sbo + k / 8 * self.lbo + row % 8 * 16 + k % 8 * 2,
            (Swz::None, true) => start + row / 8 * self.sbo + k / 8 * self.lbo + k % 8 * 16 + row % 8 * 2,
            (swz, mn) => {
                let w = swz.width();
                let lin = if mn {
                    let (c, per) = (row / 8, w / 16);
                    start + c / per * self.lbo + c % per * 16 + k % 8 * w + k / 8 * self.sbo + row % 8 * 2
                } else {
                    start + row / 8 * self.sbo + row % 8 * w + 2 * k
                };
                let mask = w / 16 - 1;
                lin ^ (((lin >> 7) & mask) << 4)
            }
        }
    }
}

struct WgmmaCase {
    n: usize,
    bf16: bool,
    ks: usize,
    a_swz: Option<Swz>, // None: A from registers
    b_swz: Swz,
    wide_k: bool,
    scale_d: bool,
    /// MN-major A (from shared memory) and B.
    trans_a: bool,
    trans_b: bool,
}

/// Build the call and the expected D (`[thread][register]`) for a case.
fn wgmma_case(rng: &mut Rng, c: &WgmmaCase) -> (WgmmaCall, Vec<f32>) {
    let (n, ks) = (c.n, c.ks);
    assert!((1..=4).contains(&ks), "the wgmma probe takes 1 to 4 k-steps (MAX_KS in kernels/probe/hopper.cu)");
    let kk = 16 * ks;
    let mut a = vec![vec![(0u16, 0f64); kk]; 64];
    let mut b = vec![vec![(0u16, 0f64); kk]; n]; // B^T: n rows of K (K-major)
    for row in a.iter_mut() {
        for x in row.iter_mut() {
            *x = small_value(rng, c.bf16);
        }
    }
    for row in b.iter_mut() {
        for x in row.iter_mut() {
            *x = small_value(rng, c.bf16);
        }
    }
    let c_in: Vec<f32> = if c.scale_d {
        (0..128 * n / 2).map(|_| small_f32(rng)).collect()
    } else {
        vec![f32::NAN; 128 * n / 2] // ignored with scale-d 0
    };
    // Image: A (if from shared memory) at 0, B at the next 1024-byte boundary.
    let a_lay = c.a_swz.map(|s| Operand::new(c.trans_a, 0, s, 64, ks, c.wide_k));
    let b_base = a_lay.as_ref().map_or(0, |l| l.bytes().div_ceil(1024) * 1024);
    let b_lay = Operand::new(c.trans_b, b_base, c.b_swz, n, ks, !c.wide_k);
    let mut image = vec![0u8; (b_base + b_lay.bytes()).div_ceil(4) * 4];
    let mut put = |addr: usize, bits: u16| image[addr..addr + 2].copy_from_slice(&bits.to_le_bytes());
    for s in 0..ks {
        if let Some(l) = &a_lay {
            for (r, row) in a.iter().enumerate() {
                for k in 0..16 {
                    put(l.addr(s, r, k), row[16 * s + k].0);
                }
            }
        }
        for (r, row) in b.iter().enumerate() {
            for k in 0..16 {
                put(b_lay.addr(s, r, k), row[16 * s + k].0);
            }
        }
    }
    let steps = (0..ks)
        .map(|s| {
            let a_op = match &a_lay {
                Some(l) => WgmmaA::Desc(l.desc(s)),
                None => WgmmaA::Regs(
                    (0..128)
                        .map(|t| {
                            std::array::from_fn(|r| {
                                let lo = a_pos(t, r, 0);
                                let hi = a_pos(t, r, 1);
                                a[lo.0][16 * s + lo.1].0 as u32 | (a[hi.0][16 * s + hi.1].0 as u32) << 16
                            })
                        })
                        .collect(),
                ),
            };
            (a_op, b_lay.desc(s))
        })
        .collect();
    // D = A B + C (C only with scale-d), exact in f64 and in f32.
    let mut want = vec![0f32; 128 * n / 2];
    for t in 0..128 {
        for i in 0..n / 2 {
            let (r, col) = d_pos(t, i);
            let mut acc = if c.scale_d { c_in[t * n / 2 + i] as f64 } else { 0.0 };
            for k in 0..kk {
                acc += a[r][k].1 * b[col][k].1;
            }
            want[t * n / 2 + i] = acc as f32;
        }
    }
    let call = WgmmaCall {
        n,
        dtype: if c.bf16 { DType::BF16 } else { DType::F16 },
        steps,
        scale_d: c.scale_d,
        c: c_in,
        image,
        peek: false,
        trans_a: c.trans_a,
        trans_b: c.trans_b,
    };
    (call, want)
}

fn check_wgmma(dut: &Dut, rng: &mut Rng, c: &WgmmaCase) {
    let (call, want) = wgmma_case(rng, c);
    let what = format!(
        "m64n{}k16 {} x{} k-steps, A {}{}, B {:?}{}{}, scale-d {}, seed {}",
        c.n,
        if c.bf16 { "bf16" } else { "f16" },
        c.ks,
        c.a_swz.map_or("registers".to_string(), |s| format!("{s:?}")),
        if c.trans_a { " MN-major" } else { "" },
        c.b_swz,
        if c.trans_b { " MN-major" } else { "" },
        if c.wide_k { " (wide K)" } else { "" },
        c.scale_d,
        rng.seed
    );
    let (got, _) = probe::wgmma(&dut.gpu, &call).unwrap_or_else(|e| panic!("{what}: {e}"));
    for t in 0..128 {
        for i in 0..c.n / 2 {
            let (g, w) = (got[t * c.n / 2 + i], want[t * c.n / 2 + i]);
            assert!(
                g.to_bits() == w.to_bits(),
                "{what}: thread {t} register {i} (D[{}][{}]) = {g}, the ISA's model gives {w}",
                d_pos(t, i).0,
                d_pos(t, i).1
            );
        }
    }
}

#[test]
fn wgmma_every_n_a_from_registers() {
    let Some(dut) = device("wgmma_every_n_a_from_registers") else { return };
    let mut rng = Rng::from_time();
    for (j, &n) in WGMMA_NS.iter().enumerate() {
        for bf16 in [false, true] {
            let case = WgmmaCase { n, bf16, ks: 1 + j % 2, a_swz: None, b_swz: Swz::None, wide_k: j % 3 == 0, scale_d: j % 4 != 1, trans_a: false, trans_b: false };
            check_wgmma(&dut, &mut rng, &case);
        }
    }
}

#[test]
fn wgmma_descriptors_every_swizzle() {
    let Some(dut) = device("wgmma_descriptors_every_swizzle") else { return };
    let mut rng = Rng::from_time();
    for (j, swz) in [Swz::None, Swz::B32, Swz::B64, Swz::B128].into_iter().enumerate() {
        // Rows of W bytes hold W/2 elements of K: up to W/32 k-steps of 16.
        let ks = match swz {
            Swz::None => 2,
            Swz::B32 => 1,
            Swz::B64 => 2,
            Swz::B128 => 4,
        };
        for (n, bf16) in [(64, j % 2 == 0), (256, j % 2 == 1), (if j % 2 == 0 { 96 } else { 192 }, true)] {
            // A from shared memory in the same mode, and from registers with B in this mode.
            for a_swz in [Some(swz), None] {
                let case = WgmmaCase { n, bf16, ks, a_swz, b_swz: swz, wide_k: n == 64, scale_d: n != 256, trans_a: false, trans_b: false };
                check_wgmma(&dut, &mut rng, &case);
            }
        }
    }
}

/// MN-major operands (imm-trans-a / imm-trans-b), as the B of O += P V reads a row-major V tile:
/// every swizzle mode, both orders of the M/N blocks and K groups, A from shared memory (K- or
/// MN-major) and from registers.
#[test]
fn wgmma_mn_major_operands_every_swizzle() {
    let Some(dut) = device("wgmma_mn_major_operands_every_swizzle") else { return };
    let mut rng = Rng::from_time();
    for (j, swz) in [Swz::None, Swz::B32, Swz::B64, Swz::B128].into_iter().enumerate() {
        for (n, bf16, ks) in [(64, j % 2 == 0, 2), (128, j % 2 == 1, 4), (if j % 2 == 0 { 8 } else { 256 }, true, 1)] {
            for (a_swz, trans_a) in [(Some(swz), true), (Some(swz), false), (None, false)] {
                // A swizzled K-major row of W bytes holds W/2 elements of K: at most W/32 k-steps.
                let ks = if a_swz.is_some() && !trans_a && swz != Swz::None { ks.min(swz.width() / 32) } else { ks };
                for wide_k in [false, true] {
                    let case = WgmmaCase { n, bf16, ks, a_swz, b_swz: swz, wide_k, scale_d: n != 128, trans_a, trans_b: true };
                    check_wgmma(&dut, &mut rng, &case);
                }
            }
        }
    }
}

#[test]
fn wgmma_results_invisible_before_wait() {
    let Some(dut) = device("wgmma_results_invisible_before_wait") else { return };
    if !dut.emulated {
        eprintln!("wgmma_results_invisible_before_wait: skipped on a GPU (the registers are undefined before the wait)");
        return;
    }
    let mut rng = Rng::from_time();
    let case = WgmmaCase { n: 64, bf16: true, ks: 2, a_swz: Some(Swz::B128), b_swz: Swz::B128, wide_k: false, scale_d: true, trans_a: false, trans_b: false };
    let (mut call, want) = wgmma_case(&mut rng, &case);
    call.peek = true;
    let c0: Vec<u32> = (0..128).map(|t| call.c[t * 32].to_bits()).collect();
    let (got, peek) = probe::wgmma(&dut.gpu, &call).expect("wgmma with peek");
    let peek = peek.expect("peek requested");
    for t in 0..128 {
        assert_eq!(got[t * 32].to_bits(), want[t * 32].to_bits(), "thread {t}: D after the wait");
        // Between issue and wait the emulated device's registers hold neither the input nor
        // the result (its contract: a NaN poison).
        assert!(f32::from_bits(peek[t]).is_nan(), "thread {t}: d[0] before the wait was {:#x}, not poison", peek[t]);
        assert_ne!(peek[t], c0[t], "thread {t}");
    }
}

// ============================================================================ mbarrier

/// "Contents of the mbarrier object" / "Phase Completion of the mbarrier object": expected and
/// pending arrival counts, tx-count, current phase. A phase completes when pending arrivals and
/// tx-count are both zero; the pending count then resets to the expected count.
#[derive(Clone, Copy, Default)]
struct MbarModel {
    expected: u32,
    pending: u32,
    tx: i64,
    phase: u32,
}

impl MbarModel {
    fn settle(&mut self) {
        if self.pending == 0 && self.tx == 0 {
            self.phase += 1;
            self.pending = self.expected;
        }
    }
    /// test_wait.parity: the phase of that parity is the current one (incomplete) when the
    /// parities match, else the immediately preceding one (complete).
    fn parity_done(&self, p: u32) -> bool {
        self.phase % 2 != p
    }
}

#[test]
fn mbarrier_phases_parity_tx_and_tokens() {
    let Some(dut) = device("mbarrier_phases_parity_tx_and_tokens") else { return };
    let mut rng = Rng::from_time();
    for trial in 0..4 {
        let count = 1 + rng.below(5) as u32;
        let mut m = MbarModel { expected: count, pending: count, tx: 0, phase: 0 };
        let mut steps = vec![(rng.below(64) as u32, MbarOp::Init(count))];
        let mut want = vec![0u32];
        // Tokens live in the arriving thread's registers: by (thread, slot).
        let mut tokens = std::collections::HashMap::<(u32, u32), u32>::new();
        for _ in 0..40 {
            let th = rng.below(64) as u32;
            let slot = rng.below(8) as u32;
            // With every arrival in, the phase waits for its tx-count: no arrival is legal then.
            let pick = rng.below(8);
            let pick = if m.pending == 0 && pick <= 2 { 4 } else { pick };
            let op = match pick {
                0 | 1 => {
                    let c = 1 + rng.below(m.pending as usize) as u32;
                    tokens.insert((th, slot), m.phase);
                    m.pending -= c;
                    m.settle();
                    (MbarOp::Arrive(c, slot), 0)
                }
                2 => {
                    let tx = 16 * (1 + rng.below(8) as u32);
                    tokens.insert((th, slot), m.phase);
                    m.tx += tx as i64; // expect-tx, then arrive-on
                    m.pending -= 1;
                    m.settle();
                    (MbarOp::ArriveExpectTx(tx, slot), 0)
                }
                3 => {
                    let tx = 16 * (1 + rng.below(4) as u32);
                    m.tx += tx as i64;
                    (MbarOp::ExpectTx(tx), 0)
                }
                4 if m.tx > 0 => {
                    // Part or all of what is expected lands.
                    let tx = 16 * (1 + rng.below((m.tx / 16) as usize)) as u32;
                    m.tx -= tx as i64;
                    m.settle();
                    (MbarOp::CompleteTx(tx), 0)
                }
                5 | 4 => {
                    let p = rng.below(2) as u32;
                    (MbarOp::TestParity(p), m.parity_done(p) as u32)
                }
                6 => match tokens.get(&(th, slot)) {
                    Some(&ph) => (MbarOp::TestToken(slot), (m.phase > ph) as u32),
                    None => (MbarOp::TestParity(1), m.parity_done(1) as u32),
                },
                _ => {
                    // Wait only for a phase the model says has completed (else: a deadlock).
                    let p = (m.phase + 1) % 2;
                    (MbarOp::WaitParity(p), 1)
                }
            };
            steps.push((th, op.0));
            want.push(op.1);
        }
        let got = probe::mbarrier_script(&dut.gpu, &steps).unwrap_or_else(|e| panic!("trial {trial} seed {}: {e}", rng.seed));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "trial {trial} seed {}: step {i} {:?}; script {:?}", rng.seed, steps[i], &steps[..=i]);
        }
    }
}

#[test]
fn mbarrier_producer_consumer_pipeline() {
    let Some(dut) = device("mbarrier_producer_consumer_pipeline") else { return };
    let mut rng = Rng::from_time();
    let rounds: Vec<[u32; 32]> = (0..6).map(|_| std::array::from_fn(|_| rng.below(1 << 30) as u32)).collect();
    let got = probe::mbarrier_pipeline(&dut.gpu, &rounds).unwrap_or_else(|e| panic!("seed {}: {e}", rng.seed));
    assert_eq!(got, rounds, "seed {}: what warp 0 read in each round", rng.seed);
}

// ============================================================================ elect, stmatrix, named barriers

#[test]
fn elect_sync_one_leader_per_mask() {
    let Some(dut) = device("elect_sync_one_leader_per_mask") else { return };
    let mut rng = Rng::from_time();
    let mut masks = vec![!0u32, 1, 0x8000_0000, 0xf0f0_f0f0];
    masks.extend((0..4).map(|_| (rng.below(1 << 32) as u32) | 1 << rng.below(32)));
    for mask in masks {
        let got = probe::elect(&dut.gpu, mask).expect("elect");
        // "elect.sync": exactly one member is elected; every member gets its lane in d.
        let members: Vec<usize> = (0..32).filter(|l| mask >> l & 1 == 1).collect();
        let leader = got[members[0]] & 0xff;
        assert!(mask >> leader & 1 == 1, "mask {mask:#x}: leader {leader} is not a member");
        for l in 0..32 {
            if mask >> l & 1 == 0 {
                assert_eq!(got[l], NOT_A_MEMBER, "mask {mask:#x}: lane {l} is not a member");
            } else {
                assert_eq!(got[l], leader | ((l as u32 == leader) as u32) << 8, "mask {mask:#x}: lane {l}");
            }
        }
    }
}

#[test]
fn stmatrix_all_forms() {
    let Some(dut) = device("stmatrix_all_forms") else { return };
    let mut rng = Rng::from_time();
    for num in [1usize, 2, 4] {
        for trans in [false, true] {
            let image: [u16; LDMATRIX_ROWS * 8] = std::array::from_fn(|_| rng.below(1 << 16) as u16);
            // Distinct rows, so no two lanes store to the same place.
            let mut all: Vec<u32> = (0..LDMATRIX_ROWS as u32).collect();
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i + 1));
            }
            let rows: [u32; 32] = std::array::from_fn(|l| all[l]);
            let regs: [[u32; 4]; 32] = std::array::from_fn(|_| std::array::from_fn(|_| rng.below(1 << 32) as u32));
            let got = probe::stmatrix(&dut.gpu, num, trans, &image, &rows, &regs).expect("stmatrix");
            // "stmatrix": matrix i's row r goes to the address of lane 8i + r; element (r, c) is
            // in register i of lane 4r + c/2, half c % 2 (low first); .trans stores the transpose:
            // element (r, c) from lane 4c + r/2, half r % 2.
            let mut want = image;
            for i in 0..num {
                for r in 0..8 {
                    for c in 0..8 {
                        let (lane, half) = if trans { (4 * c + r / 2, r % 2) } else { (4 * r + c / 2, c % 2) };
                        want[rows[8 * i + r] as usize * 8 + c] = (regs[lane][i] >> (16 * half)) as u16;
                    }
                }
            }
            assert_eq!(got, want.to_vec(), "stmatrix .x{num}{} seed {}", if trans { ".trans" } else { "" }, rng.seed);
        }
    }
}

#[test]
fn named_barriers_and_setmaxnreg() {
    let Some(dut) = device("named_barriers_and_setmaxnreg") else { return };
    let mut rng = Rng::from_time();
    let values: [u32; 256] = std::array::from_fn(|_| rng.below(1 << 32) as u32);
    let got = probe::named_barriers(&dut.gpu, &values).expect("named barriers");
    // "bar, barrier": bar.arrive / bar.sync with a thread count order the arriving threads'
    // earlier accesses before the waiting threads' later ones.
    for t in 0..256 {
        let from = if t < 128 { t + 128 } else { t - 128 };
        assert_eq!(got[t], values[from], "thread {t} reads what thread {from} wrote; seed {}", rng.seed);
    }
}

// ============================================================================ TMA

/// The box a tiled tensor copy writes to shared memory (PTX ISA "Tensor copy" / "Tensor Access
/// Modes: tile", the driver's cuTensorMapEncodeTiled documentation): the box's elements in order,
/// dimension 0 innermost, element j taken at coordinates c_i + j_i * elementStrides_i (no stride
/// in dimension 0), zero where any coordinate is outside [0, dims_i); packed densely from the
/// (1024-byte aligned) destination, then each byte address's 16-byte chunk index XORed with its
/// address bits from 7 up (1, 2, 3 bits for the 32B, 64B, 128B swizzle spans).
fn tma_model(c: &TmaCall) -> Vec<u8> {
    let esize = match c.dtype {
        DType::F32 => 4,
        _ => 2,
    };
    let rank = c.dims.len();
    let n: Vec<usize> = (0..rank)
        .map(|i| if i == 0 { c.box_dim[0] as usize } else { (c.box_dim[i] as usize).div_ceil(c.element_strides[i] as usize) })
        .collect();
    let total: usize = n.iter().product();
    let span = match c.swizzle {
        TmaSwizzle::None => 0,
        TmaSwizzle::B32 => 32,
        TmaSwizzle::B64 => 64,
        TmaSwizzle::B128 => 128,
    };
    let mut out = vec![0u8; total * esize];
    for e in 0..total {
        let mut r = e;
        let mut offset = Some(0i64);
        for i in 0..rank {
            let j = (r % n[i]) as i64;
            r /= n[i];
            let g = c.coords[i] as i64 + j * if i == 0 { 1 } else { c.element_strides[i] as i64 };
            if g < 0 || g >= c.dims[i] as i64 {
                offset = None;
            } else if let Some(o) = offset.as_mut() {
                *o += g * if i == 0 { esize as i64 } else { c.strides[i - 1] as i64 };
            }
        }
        let mut addr = e * esize;
        if span > 0 {
            addr ^= ((addr >> 7) & (span / 16 - 1)) << 4;
        }
        if let Some(o) = offset {
            out[addr..addr + esize].copy_from_slice(&c.data[o as usize..o as usize + esize]);
        }
    }
    out
}

#[test]
fn tma_tiles_with_bounds_strides_and_swizzles() {
    let Some(dut) = device("tma_tiles_with_bounds_strides_and_swizzles") else { return };
    let mut rng = Rng::from_time();
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| 1 + rng.below(255) as u8).collect() };
    let cases = [
        // 2D bf16, padded rows (224 bytes for 96 elements), 128B swizzle, partly past both ends.
        TmaCall {
            dtype: DType::BF16,
            dims: vec![96, 40],
            strides: vec![224],
            box_dim: vec![64, 16],
            element_strides: vec![1, 1],
            swizzle: TmaSwizzle::B128,
            coords: vec![48, 30],
            data: bytes(224 * 40),
        },
        // The same box before both starts.
        TmaCall {
            dtype: DType::BF16,
            dims: vec![96, 40],
            strides: vec![224],
            box_dim: vec![64, 16],
            element_strides: vec![1, 1],
            swizzle: TmaSwizzle::B128,
            coords: vec![-8, -4],
            data: bytes(224 * 40),
        },
        // 3D f32, no swizzle, element stride 2 in dimension 1, a negative coordinate.
        TmaCall {
            dtype: DType::F32,
            dims: vec![20, 9, 5],
            strides: vec![80, 720],
            box_dim: vec![8, 4, 3],
            element_strides: vec![1, 2, 1],
            swizzle: TmaSwizzle::None,
            coords: vec![16, 3, -1],
            data: bytes(720 * 5),
        },
        // 5D f16, 32B swizzle.
        TmaCall {
            dtype: DType::F16,
            dims: vec![16, 3, 2, 2, 3],
            strides: vec![32, 96, 192, 384],
            box_dim: vec![16, 2, 2, 1, 2],
            element_strides: vec![1, 1, 1, 1, 1],
            swizzle: TmaSwizzle::B32,
            coords: vec![0, 2, 1, 1, 2],
            data: bytes(384 * 3),
        },
        // 1D f32, 64B swizzle, past the end.
        TmaCall {
            dtype: DType::F32,
            dims: vec![40],
            strides: vec![],
            box_dim: vec![16],
            element_strides: vec![1],
            swizzle: TmaSwizzle::B64,
            coords: vec![30],
            data: bytes(160),
        },
        // 4D bf16, 64B swizzle, inside.
        TmaCall {
            dtype: DType::BF16,
            dims: vec![32, 4, 3, 2],
            strides: vec![64, 256, 768],
            box_dim: vec![32, 4, 2, 2],
            element_strides: vec![1, 1, 1, 1],
            swizzle: TmaSwizzle::B64,
            coords: vec![0, 0, 1, 0],
            data: bytes(768 * 2),
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let got = probe::tma_load(&dut.gpu, c).unwrap_or_else(|e| panic!("case {i} seed {}: {e}", rng.seed));
        let want = tma_model(c);
        assert_eq!(got.len(), want.len(), "case {i}");
        if let Some(b) = (0..want.len()).find(|&b| got[b] != want[b]) {
            panic!("case {i} ({c:?}) seed {}: shared byte {b} is {}, the model gives {}", rng.seed, got[b], want[b]);
        }
    }
}

// ============================================================================ checkers

#[test]
fn hopper_checkers_catch_misuse() {
    let Some(dut) = device("hopper_checkers_catch_misuse") else { return };
    if !dut.emulated {
        eprintln!("hopper_checkers_catch_misuse: skipped on a GPU (the probes misuse the instructions on purpose)");
        return;
    }
    for (kind, checker, phrase) in [
        (HopperMisbehave::WaitUninitialisedMbarrier, "synccheck", "no mbarrier.init initialised"),
        (HopperMisbehave::PhaseNeverCompletes, "synccheck", "deadlock"),
        (HopperMisbehave::TxCountUnderflow, "synccheck", "tx-count underflow"),
        (HopperMisbehave::AccumulatorWrittenBeforeWait, "racecheck", "accumulator registers"),
        (HopperMisbehave::ARegisterWrittenBeforeWait, "racecheck", "A-operand registers"),
        (HopperMisbehave::GroupNeverWaited, "synccheck", "not retired by a wgmma.wait_group"),
        (HopperMisbehave::OperandWrittenBeforeWait, "racecheck", "pending wgmma.mma_async reads"),
        (HopperMisbehave::MissingFence, "synccheck", "without a wgmma.fence"),
        (HopperMisbehave::SetmaxnregNotUniform, "synccheck", "differ within the warpgroup"),
        (HopperMisbehave::OperandNotProxyFenced, "racecheck", "no fence.proxy.async"),
    ] {
        match probe::hopper_misbehave(&dut.gpu, kind) {
            Ok(()) => panic!("{kind:?}: the emulator accepted it; {checker} should have fired"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(checker) && e.contains(phrase), "{kind:?}: expected a {checker} finding ({phrase}), got: {e}");
            }
        }
    }
    probe::hopper_misbehave(&dut.gpu, HopperMisbehave::Correct).expect("the correct wgmma sequence runs clean");
    // Another warpgroup overwriting a wgmma operand must be ordered after the reader's
    // wait_group. Ordered only after the issue, the write lands after the retirement in the
    // in-order schedule (the reported race) or, in other schedules, while the op is pending.
    match probe::hopper_misbehave(&dut.gpu, HopperMisbehave::OperandOverwrittenAfterIssue) {
        Ok(()) => panic!("an operand overwritten by another warpgroup before the reader's wait: racecheck should have fired"),
        Err(e) => {
            let e = e.to_string();
            let inorder = std::env::var("ATTN_KERNELS_EMU_SCHEDULE").is_ok_and(|s| s == "inorder");
            let retired = e.contains("races with a wgmma.mma_async read by warpgroup 0");
            let pending = e.contains("pending wgmma.mma_async reads");
            assert!(e.contains("racecheck") && (retired || (!inorder && pending)), "expected a racecheck finding, got: {e}");
        }
    }
    probe::hopper_misbehave(&dut.gpu, HopperMisbehave::OperandOverwrittenAfterWait)
        .expect("an operand overwritten after an mbarrier that follows the reader's wait_group runs clean");
    // A word read by 128 threads, then overwritten by another warpgroup: ordered after every
    // read by an mbarrier phase (no block-wide barrier) it runs clean, which needs each reader's
    // own clock (a summary of "many readers" could only be ordered by a block-wide barrier) ...
    probe::hopper_misbehave(&dut.gpu, HopperMisbehave::ManyReadsThenOrderedWrite)
        .expect("a write ordered after all 128 reads by an mbarrier phase runs clean");
    // ... and with the arrivals before the reads, some read is not ordered before the write
    // (in-order: the last reader's read follows its arrival; other schedules may run the write
    // first, which the read then reports).
    match probe::hopper_misbehave(&dut.gpu, HopperMisbehave::ManyReadsThenUnorderedWrite) {
        Ok(()) => panic!("a write not ordered after the reads of the word: racecheck should have fired"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("racecheck") && e.contains("races with a"), "expected a racecheck finding, got: {e}");
        }
    }
    // Readers are forgotten at an ordered write, so bytes read by new threads after every
    // rewrite (a persistent kernel's shared areas) never outgrow the per-reader lists.
    probe::hopper_misbehave(&dut.gpu, HopperMisbehave::ReadersForgottenAtEachWrite)
        .expect("8 KB read by other threads after each ordered rewrite runs clean");
    // A tensor copy's box read with no wait on its mbarrier (a __syncthreads is no substitute).
    let call = TmaCall {
        dtype: DType::F32,
        dims: vec![64, 8],
        strides: vec![256],
        box_dim: vec![16, 8],
        element_strides: vec![1, 1],
        swizzle: TmaSwizzle::None,
        coords: vec![0, 0],
        data: vec![1; 256 * 8],
    };
    match probe::tma_read_without_wait(&dut.gpu, &call) {
        Ok(_) => panic!("a TMA box read without waiting on its mbarrier: racecheck should have fired"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("racecheck") && e.contains("not been waited for"), "expected a racecheck finding, got: {e}");
        }
    }
    probe::tma_load(&dut.gpu, &call).expect("the same copy waited for runs clean");
    // A tensor copy overwriting bytes the threads wrote through the generic proxy: the writers'
    // fence.proxy.async must be ordered before the copy (a __syncthreads alone orders the
    // writes, not the proxies). With the fence the copy runs clean and its bytes replace them.
    match probe::tma_load_over_generic_writes(&dut.gpu, &call, false) {
        Ok(_) => panic!("a TMA write over generic-proxy writes with no fence.proxy.async: racecheck should have fired"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("racecheck") && e.contains("cp.async.bulk.tensor writes") && e.contains("no fence.proxy.async"),
                "expected a racecheck finding, got: {e}"
            );
        }
    }
    let fenced = probe::tma_load_over_generic_writes(&dut.gpu, &call, true).expect("the fenced copy runs clean");
    let plain = probe::tma_load(&dut.gpu, &call).expect("the copy");
    assert_eq!(fenced, plain, "the copy's bytes replace the generic writes");
}

/// Hopper instructions on a device presenting compute capability 8.0 are an archcheck finding.
/// The emulated device reads ATTN_KERNELS_EMU_CC once per process: the test reruns itself in a
/// child process with it set.
#[test]
fn hopper_instructions_refused_at_cc_8() {
    const CHILD: &str = "ATTN_KERNELS_TEST_HOPPER_CC8_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let gpu = Gpu::emulated().expect("the emulated device (child process)");
        assert_eq!(gpu.info().compute_capability, (8, 0), "ATTN_KERNELS_EMU_CC=8.0 presents 8.0");
        let e = probe::elect(&gpu, !0).expect_err("elect.sync at compute capability 8.0 must be refused").to_string();
        assert!(e.contains("archcheck") && e.contains("elect.sync"), "got: {e}");
        let e = probe::hopper_misbehave(&gpu, HopperMisbehave::Correct).expect_err("wgmma at 8.0").to_string();
        assert!(e.contains("archcheck") && e.contains("wgmma"), "got: {e}");
        return;
    }
    let Some(dut) = device("hopper_instructions_refused_at_cc_8") else { return };
    if !dut.emulated {
        eprintln!("hopper_instructions_refused_at_cc_8: skipped on a GPU (it checks the emulated device's gate)");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "hopper_instructions_refused_at_cc_8", "--test-threads", "1", "--nocapture"])
        .env(CHILD, "1")
        .env("ATTN_KERNELS_EMU_CC", "8.0")
        .env_remove("ATTN_KERNELS_TEST_LOG")
        .env_remove("ATTN_KERNELS_EMU_COVERAGE")
        .output()
        .expect("run the child");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child at compute capability 8.0 failed:\n{text}");
}
