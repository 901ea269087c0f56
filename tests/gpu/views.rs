//! Borrowed device memory on the caller's stream: every op run on views of one engine-style
//! buffer (fused QKV, an interleaved paged KV cache, outputs inside padded buffers, a state pool
//! the engine owns) with a handle on a stream the test made, against the same op on packed owned
//! tensors, bit for bit (the same kernel, so the same arithmetic). Bytes of the buffers outside
//! the output views stay as they were (poison or the original data).

use super::common::{gpu, randn, uniform};
use attn_kernels::attention::cuda::attention_cuda_into;
use attn_kernels::attention::{AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{append_kv_cuda, merge_states_cuda, merge_states_cuda_into, DecodeLaunch};
use attn_kernels::decode::{DecodeOptions, KvCacheMut, KvCacheRef};
use attn_kernels::diff_attention::cuda::{diff_attention_cuda, diff_attention_cuda_into};
use attn_kernels::diff_attention::{DiffAttentionArgs, DiffAttentionConfig, DiffAttentionOutput};
use attn_kernels::linear::cuda::{linear_attention_cuda, linear_attention_cuda_into, LinearMode, SlotsLaunch, StatePool};
use attn_kernels::linear::{LinearArgs, LinearAttentionConfig, RecurrentOutput};
use attn_kernels::rope::cuda::RopeLaunch;
use attn_kernels::rope::{rope_cpu, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::{DType, DeviceRead, DeviceTensor, DeviceView, DeviceViewMut, Gpu, Tensor, TensorInfo};
use attn_kernels_harness::check::Rng;

/// A read-only view of `t` from element `offset`.
fn view<'a>(t: &'a DeviceTensor, offset: usize, shape: &[usize], strides: &[usize]) -> DeviceView<'a> {
    let size = t.dtype().size();
    let addr = t.view().parts().addr + (offset * size) as u64;
    // SAFETY: `t` is a live allocation of this device that outlives the view; from_raw checks that
    // the layout stays inside the bytes from `offset` to the end of `t`.
    unsafe { DeviceView::from_raw(addr, t.byte_len() - offset * size, t.dtype(), shape, strides) }.expect("view")
}

/// A writable view of `t` from element `offset`.
fn view_mut<'a>(t: &'a mut DeviceTensor, offset: usize, shape: &[usize], strides: &[usize]) -> DeviceViewMut<'a> {
    let size = t.dtype().size();
    let addr = t.view().parts().addr + (offset * size) as u64;
    // SAFETY: as in `view`; the mutable borrow of `t` keeps every other use out while it lives.
    unsafe { DeviceViewMut::from_raw(addr, t.byte_len() - offset * size, t.dtype(), shape, strides) }.expect("view")
}

/// Packed row-major strides of `shape`.
fn packed(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The elements of `shape` at `strides` from `offset` in `data`, packed.
fn gather(data: &[f32], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut at = offset;
            for d in (0..shape.len()).rev() {
                at += (i % shape[d]) * strides[d];
                i /= shape[d];
            }
            data[at]
        })
        .collect()
}

/// Every element of `shape` at `strides` from `offset` in `data`, as a bit pattern; the rest.
fn split_bits(t: &Tensor, offset: usize, shape: &[usize], strides: &[usize]) -> (Vec<u32>, Vec<u32>) {
    let all: Vec<u32> = t.to_f32_vec().iter().map(|x| x.to_bits()).collect();
    let n: usize = shape.iter().product();
    let mut inside = vec![false; all.len()];
    let picked = (0..n)
        .map(|mut i| {
            let mut at = offset;
            for d in (0..shape.len()).rev() {
                at += (i % shape[d]) * strides[d];
                i /= shape[d];
            }
            inside[at] = true;
            all[at]
        })
        .collect();
    let rest = all.iter().zip(&inside).filter(|(_, &i)| !i).map(|(&b, _)| b).collect();
    (picked, rest)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32_vec().iter().map(|x| x.to_bits()).collect()
}

/// A handle on a stream the test made itself, as an engine hands its own stream in.
fn callers_stream(gpu: &Gpu) -> (std::sync::Arc<cudarc::driver::CudaStream>, Gpu) {
    let stream = gpu.stream().context().new_stream().expect("stream");
    // SAFETY: `stream` is a live stream of this device's primary context; the test keeps it (the
    // returned Arc) alive for as long as the handle is used.
    let handle = unsafe { gpu.with_raw_stream(stream.cu_stream()) };
    (stream, handle)
}

#[test]
fn attention_reads_a_fused_qkv_buffer_and_writes_inside_a_padded_output_on_the_callers_stream() {
    let Some(gpu) = gpu(concat!(module_path!(), "::attention_reads_a_fused_qkv_buffer_and_writes_inside_a_padded_output_on_the_callers_stream")) else { return };
    let mut rng = Rng::from_time();
    let (b, s, hq, hk, d) = (2usize, 77usize, 4usize, 2usize, 64usize);
    let w = hq + 2 * hk;
    let host = randn(&mut rng, DType::BF16, &[b, s, w, d]);
    let qkv = gpu.upload(&host).unwrap();
    let st = [s * w * d, w * d, d, 1];
    let (qs, ks) = ([b, s, hq, d], [b, s, hk, d]);
    let (q, k, v) = (view(&qkv, 0, &qs, &st), view(&qkv, hq * d, &ks, &st), view(&qkv, (hq + hk) * d, &ks, &st));
    // The output inside [B, S, Hq, 2D] (the left half), lse owned.
    let mut o_buf = gpu.alloc_poisoned(DType::BF16, &[b, s, hq, 2 * d]).unwrap();
    let mut lse = gpu.alloc_poisoned(DType::F32, &[b, hq, s]).unwrap();
    let o_st = [s * hq * 2 * d, hq * 2 * d, 2 * d, 1];
    let cfg = AttentionConfig { causal: true, ..AttentionConfig::default() };
    let (_stream, caller) = callers_stream(&gpu);
    gpu.synchronize().unwrap(); // the engine orders its own uploads before handing the buffers over
    {
        let mut o = view_mut(&mut o_buf, 0, &qs, &o_st);
        let mut l = lse.view_mut();
        attention_cuda_into(&caller, &cfg, &AttentionArgs::new(&q, &k, &v), &mut o, Some(&mut l)).unwrap();
    }
    caller.synchronize().unwrap();
    // The same call on packed owned tensors.
    let all = host.to_f32_vec();
    let packed_of = |off: usize, shape: &[usize]| gpu.upload(&Tensor::from_f32(DType::BF16, shape, &gather(&all, off, shape, &st)).unwrap()).unwrap();
    let (q2, k2, v2) = (packed_of(0, &qs), packed_of(hq * d, &ks), packed_of((hq + hk) * d, &ks));
    let want = attention_cuda_into_owned(&gpu, &cfg, &q2, &k2, &v2);
    let (inside, rest) = split_bits(&gpu.download(&o_buf).unwrap(), 0, &qs, &o_st);
    assert_eq!(inside, bits(&want.0), "o through views differs from o on packed tensors (seed {})", rng.seed);
    assert!(rest.iter().all(|&x| f32::from_bits(x).is_nan()), "a kernel wrote outside the o view (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&lse).unwrap()), bits(&want.1), "lse (seed {})", rng.seed);
}

fn attention_cuda_into_owned(gpu: &Gpu, cfg: &AttentionConfig, q: &DeviceTensor, k: &DeviceTensor, v: &DeviceTensor) -> (Tensor, Tensor) {
    let out = attn_kernels::attention::cuda::attention_cuda(gpu, cfg, &AttentionArgs::new(q, k, v)).unwrap();
    (gpu.download(&out.o).unwrap(), gpu.download(&out.lse).unwrap())
}

#[test]
fn decode_and_append_work_in_an_interleaved_paged_cache() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_and_append_work_in_an_interleaved_paged_cache")) else { return };
    let mut rng = Rng::from_time();
    let (b, hq, hk, d, bs, nb, mb) = (2usize, 4usize, 2usize, 128usize, 16usize, 7usize, 4usize);
    // The engine's cache: [blocks, block, 2 (k, v), Hkv, D]; k and v are views with row stride 2 Hkv D.
    let host = randn(&mut rng, DType::BF16, &[nb, bs, 2, hk, d]);
    let kv = gpu.upload(&host).unwrap();
    let cst = [bs * 2 * hk * d, 2 * hk * d, d, 1];
    let cshape = [nb, bs, hk, d];
    let all = host.to_f32_vec();
    let mut packed_k = gpu.upload(&Tensor::from_f32(DType::BF16, &cshape, &gather(&all, 0, &cshape, &cst)).unwrap()).unwrap();
    let mut packed_v = gpu.upload(&Tensor::from_f32(DType::BF16, &cshape, &gather(&all, hk * d, &cshape, &cst)).unwrap()).unwrap();
    let mut ids: Vec<i32> = (0..nb as i32).collect();
    super::common::shuffle(&mut rng, &mut ids);
    // After the append the sequences hold 39 and 52 keys: 3 and 4 of the 7 blocks, all distinct.
    let table = vec![ids[0], ids[1], ids[2], 0, ids[3], ids[4], ids[5], ids[6]];
    let lens = [37i32, 50];
    // Append two rotated tokens per sequence into both caches.
    let k_new = gpu.upload(&randn(&mut rng, DType::BF16, &[b, 2, hk, d])).unwrap();
    let v_new = gpu.upload(&randn(&mut rng, DType::BF16, &[b, 2, hk, d])).unwrap();
    let rope = RopeConfig::new(d, 10000.0);
    let (_stream, caller) = callers_stream(&gpu);
    gpu.synchronize().unwrap(); // the engine orders its own uploads before handing the buffers over
    let (kvbase, vvoff) = (0usize, hk * d);
    let new_lens = {
        let size = 2;
        let base = kv.view().parts().addr;
        let len = kv.byte_len();
        // SAFETY: two views of disjoint interleaved halves of `kv`, alive only in this block, in
        // which nothing else touches `kv`.
        let (mut kc, mut vc) = unsafe {
            (
                DeviceViewMut::from_raw(base + (kvbase * size) as u64, len - kvbase * size, DType::BF16, &cshape, &cst).unwrap(),
                DeviceViewMut::from_raw(base + (vvoff * size) as u64, len - vvoff * size, DType::BF16, &cshape, &cst).unwrap(),
            )
        };
        let mut cache = KvCacheMut::Paged { k: &mut kc, v: &mut vc, block_table: &table, max_blocks: mb, cache_seqlens: &lens };
        append_kv_cuda(&caller, &mut cache, &k_new.view(), &v_new.view(), Some(&rope)).unwrap()
    };
    let mut owned = KvCacheMut::Paged { k: &mut packed_k, v: &mut packed_v, block_table: &table, max_blocks: mb, cache_seqlens: &lens };
    let owned_lens = append_kv_cuda(&gpu, &mut owned, &k_new, &v_new, Some(&rope)).unwrap();
    assert_eq!(new_lens, owned_lens);
    caller.synchronize().unwrap();
    let kv_now = gpu.download(&kv).unwrap().to_f32_vec();
    let bits_of = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits_of(gather(&kv_now, 0, &cshape, &cst)), bits(&gpu.download(&packed_k).unwrap()), "k after append (seed {})", rng.seed);
    assert_eq!(bits_of(gather(&kv_now, hk * d, &cshape, &cst)), bits(&gpu.download(&packed_v).unwrap()), "v after append (seed {})", rng.seed);
    // Decode over the views (planned once, launched on the caller's stream) and over the owned caches.
    let q = gpu.upload(&randn(&mut rng, DType::BF16, &[b, 1, hq, d])).unwrap();
    let cfg = AttentionConfig { rope: Some(rope.clone()), ..AttentionConfig::default() };
    let opts = DecodeOptions { cache_keys_rotated: true, ..DecodeOptions::default() };
    let (kview, vview) = (view(&kv, 0, &cshape, &cst), view(&kv, hk * d, &cshape, &cst));
    let qv = q.view();
    let cache = KvCacheRef::Paged { k: &kview, v: &vview, block_table: &table, max_blocks: mb, cache_seqlens: &new_lens };
    let mut launch = DecodeLaunch::new(&caller, &cfg, &qv, &cache, None, &opts).unwrap();
    let mut o = gpu.alloc_poisoned(DType::BF16, &[b, 1, hq, d]).unwrap();
    let mut lse = gpu.alloc_poisoned(DType::F32, &[b, hq, 1]).unwrap();
    gpu.synchronize().unwrap();
    launch.launch(&caller, &qv, [&kview, &vview], None, &mut o.view_mut(), &mut lse.view_mut()).unwrap();
    caller.synchronize().unwrap();
    let owned_cache = KvCacheRef::Paged { k: &packed_k, v: &packed_v, block_table: &table, max_blocks: mb, cache_seqlens: &new_lens };
    let want = attn_kernels::decode::cuda::decode_cuda(&gpu, &cfg, &q, &owned_cache, None, &opts).unwrap();
    assert_eq!(bits(&gpu.download(&o).unwrap()), bits(&gpu.download(&want.o).unwrap()), "decode o (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&lse).unwrap()), bits(&gpu.download(&want.lse).unwrap()), "decode lse (seed {})", rng.seed);
    // merge_states of the two results through views equals the owned call.
    let (mo, ml) = merge_states_cuda(&gpu, &o, &lse, &want.o, &want.lse).unwrap();
    let mut o2 = gpu.alloc_poisoned(DType::BF16, &[b, 1, hq, d]).unwrap();
    let mut l2 = gpu.alloc_poisoned(DType::F32, &[b, hq, 1]).unwrap();
    gpu.synchronize().unwrap();
    merge_states_cuda_into(&caller, &o.view(), &lse.view(), &want.o.view(), &want.lse.view(), &mut o2.view_mut(), &mut l2.view_mut()).unwrap();
    caller.synchronize().unwrap();
    assert_eq!(bits(&gpu.download(&o2).unwrap()), bits(&gpu.download(&mo).unwrap()), "merge o (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&l2).unwrap()), bits(&gpu.download(&ml).unwrap()), "merge lse (seed {})", rng.seed);
}

#[test]
fn rope_rotates_the_q_heads_of_a_fused_qkv_buffer_in_place() {
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_rotates_the_q_heads_of_a_fused_qkv_buffer_in_place")) else { return };
    let mut rng = Rng::from_time();
    let (b, s, hq, w, d) = (2usize, 19usize, 3usize, 7usize, 64usize);
    let host = randn(&mut rng, DType::F16, &[b, s, w, d]);
    let mut qkv = gpu.upload(&host).unwrap();
    let st = [s * w * d, w * d, d, 1];
    let qs = [b, s, hq, d];
    let op = RopeOpConfig { rope: RopeConfig::new(48, 10000.0), position_offset: 3 };
    let (_stream, caller) = callers_stream(&gpu);
    gpu.synchronize().unwrap(); // the engine orders its own uploads before handing the buffers over
    {
        let mut q = view_mut(&mut qkv, 0, &qs, &st);
        let launch = RopeLaunch::new(&caller, &op, &RopeArgs { x: &q, position_ids: None, cu_seqlens: None }).unwrap();
        launch.launch_inplace(&caller, &mut q).unwrap();
    }
    caller.synchronize().unwrap();
    let all = host.to_f32_vec();
    let q_host = Tensor::from_f32(DType::F16, &qs, &gather(&all, 0, &qs, &st)).unwrap();
    let want = rope_cpu(&op, &RopeArgs { x: &q_host, position_ids: None, cu_seqlens: None }).unwrap();
    let got = gpu.download(&qkv).unwrap();
    let (inside, rest) = split_bits(&got, 0, &qs, &st);
    let got_q = Tensor::from_f32(DType::F16, &qs, &inside.iter().map(|&x| f32::from_bits(x)).collect::<Vec<_>>()).unwrap();
    let err = attn_kernels::tensor::rel_error(&got_q.to_f64_vec(), &want.to_f64_vec());
    assert!(err <= DType::F16.rel_tolerance(), "rope through a view: rel {err:e} (seed {})", rng.seed);
    let (_, rest_before) = split_bits(&host, 0, &qs, &st);
    assert_eq!(rest, rest_before, "rope wrote outside the q heads (seed {})", rng.seed);
}

#[test]
fn diff_attention_reads_strided_heads_and_writes_a_padded_output() {
    let Some(gpu) = gpu(concat!(module_path!(), "::diff_attention_reads_strided_heads_and_writes_a_padded_output")) else { return };
    let mut rng = Rng::from_time();
    // v1: q, k [B, S, 2H, d], v [B, S, H, 2d], o [B, S, H, 2d]; here q and k share one buffer.
    let (b, s, h, d) = (1usize, 45usize, 2usize, 64usize);
    let host = randn(&mut rng, DType::BF16, &[b, s, 4 * h, d]);
    let qk = gpu.upload(&host).unwrap();
    let st = [s * 4 * h * d, 4 * h * d, d, 1];
    let hs = [b, s, 2 * h, d];
    let (q, k) = (view(&qk, 0, &hs, &st), view(&qk, 2 * h * d, &hs, &st));
    let v = gpu.upload(&randn(&mut rng, DType::BF16, &[b, s, h, 2 * d])).unwrap();
    let lambda = gpu.upload(&uniform(&mut rng, DType::F32, &[h], 0.1, 0.6)).unwrap();
    let cfg: DiffAttentionConfig = serde_json::from_value(serde_json::json!({ "causal": true, "lambda_init": 0.2 })).unwrap();
    let os = [b, s, h, 2 * d];
    let mut o_buf = gpu.alloc_poisoned(DType::BF16, &[b, s, h, 4 * d]).unwrap();
    let o_st = [s * h * 4 * d, h * 4 * d, 4 * d, 1];
    let mut lse1 = gpu.alloc_poisoned(DType::F32, &[b, h, s]).unwrap();
    let mut lse2 = gpu.alloc_poisoned(DType::F32, &[b, h, s]).unwrap();
    let (_stream, caller) = callers_stream(&gpu);
    gpu.synchronize().unwrap(); // the engine orders its own uploads before handing the buffers over
    {
        let (vv, lv) = (v.view(), lambda.view());
        let args = DiffAttentionArgs::new(&q, &k, &vv, &lv);
        let mut out = DiffAttentionOutput { o: view_mut(&mut o_buf, 2 * d, &os, &o_st), lse1: lse1.view_mut(), lse2: lse2.view_mut() };
        diff_attention_cuda_into(&caller, &cfg, &args, &mut out).unwrap();
    }
    caller.synchronize().unwrap();
    let all = host.to_f32_vec();
    let up = |off: usize| gpu.upload(&Tensor::from_f32(DType::BF16, &hs, &gather(&all, off, &hs, &st)).unwrap()).unwrap();
    let (q2, k2) = (up(0), up(2 * h * d));
    let want = diff_attention_cuda(&gpu, &cfg, &DiffAttentionArgs::new(&q2, &k2, &v, &lambda)).unwrap();
    let (inside, rest) = split_bits(&gpu.download(&o_buf).unwrap(), 2 * d, &os, &o_st);
    assert_eq!(inside, bits(&gpu.download(&want.o).unwrap()), "diff o through views (seed {})", rng.seed);
    assert!(rest.iter().all(|&x| f32::from_bits(x).is_nan()), "diff wrote outside the o view (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&lse1).unwrap()), bits(&gpu.download(&want.lse1).unwrap()), "lse1 (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&lse2).unwrap()), bits(&gpu.download(&want.lse2).unwrap()), "lse2 (seed {})", rng.seed);
}

#[test]
fn linear_attention_and_a_borrowed_state_pool() {
    let Some(gpu) = gpu(concat!(module_path!(), "::linear_attention_and_a_borrowed_state_pool")) else { return };
    let mut rng = Rng::from_time();
    let (b, t, h, kd, vd) = (2usize, 21usize, 2usize, 32usize, 32usize);
    // q, k, v packed one after another in one engine buffer.
    let n = b * t * h * kd;
    let host = randn(&mut rng, DType::F16, &[3, b, t, h, kd]);
    let buf = gpu.upload(&host).unwrap();
    let shape = [b, t, h, kd];
    let p = packed(&shape);
    let (q, k, v) = (view(&buf, 0, &shape, &p), view(&buf, n, &shape, &p), view(&buf, 2 * n, &shape, &p));
    let g = gpu.upload(&uniform(&mut rng, DType::F32, &[b, t, h], -0.5, -0.01)).unwrap();
    let gv = g.view();
    let cfg = LinearAttentionConfig::default();
    let (_stream, caller) = callers_stream(&gpu);
    gpu.synchronize().unwrap(); // the engine orders its own uploads before handing the buffers over
    let mut o = gpu.alloc_poisoned(DType::F16, &[b, t, h, vd]).unwrap();
    let mut fs = gpu.alloc_poisoned(DType::F32, &[b, h, kd, vd]).unwrap();
    gpu.synchronize().unwrap();
    {
        let mut out = RecurrentOutput { o: o.view_mut(), final_state: fs.view_mut() };
        linear_attention_cuda_into(&caller, &cfg, &LinearArgs::new(&q, &k, &v).with_g(&gv), LinearMode::Recurrent, &mut out).unwrap();
    }
    caller.synchronize().unwrap();
    let split = |i: usize| gpu.upload(&Tensor::from_f32(DType::F16, &shape, &host.to_f32_vec()[i * n..(i + 1) * n]).unwrap()).unwrap();
    let (q2, k2, v2) = (split(0), split(1), split(2));
    let want = linear_attention_cuda(&gpu, &cfg, &LinearArgs::new(&q2, &k2, &v2).with_g(&g), LinearMode::Recurrent).unwrap();
    assert_eq!(bits(&gpu.download(&o).unwrap()), bits(&gpu.download(&want.o).unwrap()), "o (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&fs).unwrap()), bits(&gpu.download(&want.final_state).unwrap()), "final_state (seed {})", rng.seed);
    // A serving step over a pool the engine owns (slots 3 and 0 of 4), against an owned pool.
    let init = uniform(&mut rng, DType::F32, &[4, h, kd, vd], -0.5, 0.5);
    let mut engine_pool = gpu.upload(&init).unwrap();
    let mut owned_pool = StatePool::from_tensor(gpu.upload(&init).unwrap()).unwrap();
    let slots = [3, 0];
    let args = LinearArgs::new(&q, &k, &v).with_g(&gv);
    let step = SlotsLaunch::linear(&caller, &cfg, &args, 4, &slots).unwrap();
    let mut o_step = gpu.alloc_poisoned(DType::F16, &[b, t, h, vd]).unwrap();
    gpu.synchronize().unwrap();
    {
        let mut pool = StatePool::from_tensor(engine_pool.view_mut()).unwrap();
        step.launch_linear(&caller, &args, &mut pool, &mut o_step.view_mut()).unwrap();
    }
    caller.synchronize().unwrap();
    let o_owned = attn_kernels::linear::cuda::linear_attention_cuda_slots(&gpu, &cfg, &LinearArgs::new(&q2, &k2, &v2).with_g(&g), &mut owned_pool, &slots).unwrap();
    assert_eq!(bits(&gpu.download(&o_step).unwrap()), bits(&gpu.download(&o_owned).unwrap()), "slot o (seed {})", rng.seed);
    assert_eq!(bits(&gpu.download(&engine_pool).unwrap()), bits(&gpu.download(&owned_pool.state).unwrap()), "pool (seed {})", rng.seed);
}
