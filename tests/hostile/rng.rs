//! The random draws of the generators: a small seeded generator and the shape defects every
//! family uses.

use attn_kernels::DType;

/// splitmix64: each proptest case draws one seed; everything else follows from it, so the
/// failing seed proptest prints reproduces the case.
pub struct R(pub u64);

impl R {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)].clone()
    }
    pub fn float(&mut self) -> DType {
        self.pick(&[DType::F32, DType::F16, DType::BF16])
    }
    /// A dtype different from `d`.
    pub fn other_dtype(&mut self, d: DType) -> DType {
        let all = [DType::F32, DType::F16, DType::BF16, DType::I32];
        let others: Vec<DType> = all.into_iter().filter(|&x| x != d).collect();
        self.pick(&others)
    }
    /// A shape of rank `rank` with small dims.
    pub fn shape(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.range(1, 3)).collect()
    }
    /// A rank in 0..=5 other than the `ok` ones.
    pub fn bad_rank(&mut self, ok: &[usize]) -> usize {
        loop {
            let r = self.range(0, 5);
            if !ok.contains(&r) {
                return r;
            }
        }
    }
    /// Cumulative offsets of `lens`.
    pub fn cu(lens: &[usize]) -> Vec<i32> {
        let mut cu = vec![0i32];
        for &l in lens {
            cu.push(cu.last().unwrap() + l as i32);
        }
        cu
    }
    /// A cu_seqlens that `check_cu_seqlens(.., total)` must reject.
    pub fn bad_cu(&mut self, total: usize) -> Vec<i32> {
        let t = total as i32;
        match self.range(0, 6) {
            0 => vec![],
            1 => vec![0],
            2 => vec![self.int(1, 5) as i32, t + 5],                                 // not starting at 0
            3 => vec![0, t + 2, t + 1],                                              // decreasing
            4 => vec![0, t + self.int(1, 4) as i32],                                 // wrong last entry
            5 => vec![0, i32::MAX, if t == i32::MAX { 0 } else { t }],               // overflowing, decreasing
            _ => vec![0, self.int(-5, -1) as i32, t],                                // negative
        }
    }
}

/// A shape that differs from `s` (same rank, one dim changed).
pub fn perturb(r: &mut R, s: &[usize]) -> Vec<usize> {
    let mut out = s.to_vec();
    if out.is_empty() {
        return vec![1];
    }
    let i = r.range(0, out.len() - 1);
    out[i] = if out[i] == 0 || r.bool() { out[i] + r.range(1, 3) } else { out[i] - 1 };
    out
}
