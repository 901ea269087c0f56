//! `decode` over paged and contiguous KV caches on candle's CPU device against attention written
//! in plain candle ops (f64) over the keys gathered from the cache through the block table.

mod common;

use attn_kernels_candle::attn_kernels::attention::alibi_slopes;
use attn_kernels_candle::{decode, decode_with_lse, AttentionConfig, CacheIndex, DecodeOptions, RopeConfig};
use candle_core::{Device, IndexOp, Tensor};
use common::*;

struct Paged {
    k: Tensor,
    v: Tensor,
    block_table: Vec<i32>,
    max_blocks: usize,
    block_size: usize,
}

/// A paged cache with blocks handed out in random order; unused table entries are -1.
fn paged(rng: &mut Rng, seqlens: &[i32], block_size: usize, max_blocks: usize, hkv: usize, d: usize, dv: usize) -> Paged {
    let used: Vec<usize> = seqlens.iter().map(|&s| (s as usize).div_ceil(block_size)).collect();
    let num_blocks = used.iter().sum::<usize>() + 3; // a few blocks nobody uses
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let mut next = ids.into_iter();
    let mut block_table = vec![-1i32; seqlens.len() * max_blocks];
    for (b, &n) in used.iter().enumerate() {
        for i in 0..n {
            block_table[b * max_blocks + i] = next.next().unwrap();
        }
    }
    Paged {
        k: rng.tensor(&[num_blocks, block_size, hkv, d], -1.0, 1.0),
        v: rng.tensor(&[num_blocks, block_size, hkv, dv], -1.0, 1.0),
        block_table,
        max_blocks,
        block_size,
    }
}

/// The first `sk` keys of sequence `b`, gathered with candle ops: `[sk, Hkv, D]`.
fn gather(cache: &Tensor, p: &Paged, b: usize, sk: usize) -> Tensor {
    let (nb, bs, h, d) = cache.dims4().unwrap();
    let rows: Vec<u32> =
        (0..sk).map(|j| (p.block_table[b * p.max_blocks + j / p.block_size] as usize * bs + j % bs) as u32).collect();
    let idx = Tensor::from_vec(rows, sk, &Device::Cpu).unwrap();
    cache.reshape((nb * bs, h, d)).unwrap().index_select(&idx, 0).unwrap()
}

fn check_paged(name: &str, seqlens: &[i32], sq_new: usize, cfg: &AttentionConfig, alibi: bool, rope: Option<RefRope>) {
    let mut rng = Rng::new(name);
    let (hq, hkv, d, dv, block_size, max_blocks) = (6, 2, 16, 24, 8, 7);
    let b = seqlens.len();
    let p = paged(&mut rng, seqlens, block_size, max_blocks, hkv, d, dv);
    let q = rng.tensor(&[b, sq_new, hq, d], -1.0, 1.0);
    let slopes = alibi_slopes(hq);
    let slopes_t = Tensor::new(slopes.as_slice(), &Device::Cpu).unwrap();
    let index = CacheIndex::Paged { block_table: p.block_table.clone(), max_blocks, cache_seqlens: seqlens.to_vec() };
    let (o, lse) =
        decode_with_lse(&q, &p.k, &p.v, &index, cfg, alibi.then_some(&slopes_t), &DecodeOptions::default()).unwrap();
    assert_eq!(o.dims(), &[b, sq_new, hq, dv]);
    assert_eq!(lse.dims(), &[b, hq, sq_new]);
    let r = RefOpts {
        scale: 1.0 / (d as f64).sqrt(),
        causal: cfg.causal,
        window_left: cfg.window_left,
        window_right: cfg.window_right,
        softcap: cfg.softcap,
        alibi: alibi.then_some(slopes),
        rope,
        ..Default::default()
    };
    let mut ro = Vec::new();
    let mut rlse = Vec::new();
    for (i, &sk) in seqlens.iter().enumerate() {
        let (oi, li) = ref_attention_seq(&q.i(i).unwrap(), &gather(&p.k, &p, i, sk as usize), &gather(&p.v, &p, i, sk as usize), &r).unwrap();
        ro.push(oi);
        rlse.push(li);
    }
    let (ro, rlse) = (Tensor::stack(&ro, 0).unwrap(), Tensor::stack(&rlse, 0).unwrap());
    assert_close(&format!("{name} o"), &o, &ro, F32_BOUND);
    assert_close(&format!("{name} lse"), &lse, &rlse, F32_BOUND);
}

#[test]
fn paged_causal_gqa_with_empty_and_short_sequences() {
    // Sequence 0 has no keys (every row masked), sequence 2 fewer keys than new tokens (its
    // first rows see nothing under causal), the others span several shuffled blocks.
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    check_paged("paged_causal_gqa", &[0, 37, 2, 51], 3, &cfg, false, None);
}

#[test]
fn paged_window_softcap_alibi() {
    let cfg = AttentionConfig { causal: true, window_left: 9, softcap: 3.0, ..Default::default() };
    check_paged("paged_window_softcap_alibi", &[19, 55, 8], 4, &cfg, true, None);
}

#[test]
fn paged_rope_on_read() {
    let mut rope = RopeConfig::new(12, 10000.0);
    rope.interleaved = true;
    let cfg = AttentionConfig { causal: true, rope: Some(rope), ..Default::default() };
    check_paged("paged_rope_on_read", &[23, 3, 47], 3, &cfg, true, Some(RefRope::plain(12, 10000.0, 1.0, true)));
}

#[test]
fn contiguous_cache() {
    let mut rng = Rng::new("contiguous_cache");
    let (b, s_max, sq, hq, hkv, d) = (2, 40, 2, 4, 4, 16);
    let k = rng.tensor(&[b, s_max, hkv, d], -1.0, 1.0);
    let v = rng.tensor(&[b, s_max, hkv, d], -1.0, 1.0);
    let q = rng.tensor(&[b, sq, hq, d], -1.0, 1.0);
    let seqlens = vec![33, 17];
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    let index = CacheIndex::Contiguous { cache_seqlens: seqlens.clone() };
    let o = decode(&q, &k, &v, &index, &cfg, None, &DecodeOptions::default()).unwrap();
    let r = RefOpts { scale: 1.0 / (d as f64).sqrt(), causal: true, window_left: -1, window_right: -1, ..Default::default() };
    let ro: Vec<Tensor> = (0..b)
        .map(|i| {
            let sk = seqlens[i] as usize;
            ref_attention_seq(&q.i(i).unwrap(), &k.i(i).unwrap().narrow(0, 0, sk).unwrap(), &v.i(i).unwrap().narrow(0, 0, sk).unwrap(), &r).unwrap().0
        })
        .collect();
    assert_close("contiguous o", &o, &Tensor::stack(&ro, 0).unwrap(), F32_BOUND);
}

#[test]
fn bad_block_id_is_an_error() {
    let mut rng = Rng::new("bad_block_id_is_an_error");
    let p = paged(&mut rng, &[9], 8, 2, 1, 8, 8);
    let q = rng.tensor(&[1, 1, 1, 8], -1.0, 1.0);
    let mut table = p.block_table.clone();
    table[1] = 1000;
    let index = CacheIndex::Paged { block_table: table, max_blocks: 2, cache_seqlens: vec![9] };
    let err = decode(&q, &p.k, &p.v, &index, &AttentionConfig::default(), None, &DecodeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("block_table"), "{err}");
}
