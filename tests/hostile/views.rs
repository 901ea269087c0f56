//! Hostile borrowed views: raw parts that do not describe a tensor (null, misaligned, short, a
//! non-unit last stride, a rank mismatch, an output whose elements share addresses) are refused
//! by `from_raw`; views that are valid tensors but wrong for an op (16-byte misalignment where
//! the kernels load 16 bytes, a strided tensor where the kernel takes packed ones, an output
//! overlapping an input or another output) are refused at the launch, naming the argument, and
//! nothing runs: the poisoned outputs stay poisoned.

use crate::common::{expect_err, gpu, ErrKind};
use attn_kernels::attention::cuda::attention_cuda_into;
use attn_kernels::attention::{AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{append_kv_cuda, decode_cuda_with_index, merge_states_cuda_into, DeviceKvIndex};
use attn_kernels::decode::{DecodeOptions, KvCacheMut, KvCacheRef};
use attn_kernels::linear::cuda::{linear_attention_cuda_into, LinearMode};
use attn_kernels::linear::{LinearArgs, LinearAttentionConfig, RecurrentOutput};
use attn_kernels::rope::cuda::rope_cuda_into;
use attn_kernels::rope::{RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::{DType, DeviceRead, DeviceTensor, DeviceView, DeviceViewMut, Gpu, Tensor, TensorInfo};

fn addr(t: &DeviceTensor) -> u64 {
    t.view().parts().addr
}

/// A view of `t` from element `offset` (panics if the parts are refused: these are valid views).
fn view<'a>(t: &'a DeviceTensor, offset: usize, shape: &[usize], strides: &[usize]) -> DeviceView<'a> {
    let size = t.dtype().size();
    // SAFETY: inside `t`, which outlives the view (from_raw checks the extent).
    unsafe { DeviceView::from_raw(addr(t) + (offset * size) as u64, t.byte_len() - offset * size, t.dtype(), shape, strides) }.expect("a valid view")
}

fn view_mut<'a>(t: &'a DeviceTensor, offset: usize, shape: &[usize], strides: &[usize]) -> DeviceViewMut<'a> {
    let size = t.dtype().size();
    // SAFETY: inside `t`, which outlives the view; the tests that make writable views of memory
    // another view reads expect the op to refuse them before any launch.
    unsafe { DeviceViewMut::from_raw(addr(t) + (offset * size) as u64, t.byte_len() - offset * size, t.dtype(), shape, strides) }
        .expect("a valid view")
}

fn packed(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn filled(gpu: &Gpu, dtype: DType, shape: &[usize]) -> DeviceTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    gpu.upload(&Tensor::from_f32(dtype, shape, &v).unwrap()).unwrap()
}

/// Every element of `t` is still the poison NaN: nothing was written.
fn untouched(gpu: &Gpu, t: &DeviceTensor, what: &str) {
    let host = gpu.download(t).unwrap();
    assert!(host.to_f32_vec().iter().all(|x| x.is_nan()), "{what}: the output was written although the call was refused");
}

#[test]
fn raw_parts_that_are_not_a_tensor_are_refused() {
    let Some(gpu) = gpu(concat!(module_path!(), "::raw_parts_that_are_not_a_tensor_are_refused")) else { return };
    let t = filled(&gpu, DType::BF16, &[4, 8, 64]);
    let (a, len) = (addr(&t), t.byte_len());
    let p = packed(&[4, 8, 64]);
    // SAFETY (all below): the parts describe memory inside `t` or are refused before any use.
    let raw = |a: u64, len: usize, shape: &[usize], strides: &[usize]| unsafe { DeviceView::from_raw(a, len, DType::BF16, shape, strides) };
    expect_err(raw(0, len, &[4, 8, 64], &p), ErrKind::Invalid, "ptr", "null");
    expect_err(raw(a + 1, len - 1, &[4, 8, 64], &p), ErrKind::Invalid, "ptr", "odd address for bf16");
    expect_err(raw(a, len - 2, &[4, 8, 64], &p), ErrKind::Invalid, "len_bytes", "one element short");
    expect_err(raw(a, len, &[4, 8, 64], &[512, 64, 2]), ErrKind::Invalid, "strides", "last stride 2");
    expect_err(raw(a, len, &[4, 8, 64], &[512, 64]), ErrKind::Invalid, "strides", "rank mismatch");
    expect_err(raw(a, len, &[1, 1, 1, 1, 1, 1, 1], &[1; 7]), ErrKind::Invalid, "shape", "rank 7");
    expect_err(raw(a, len, &[4, 8, 64], &[usize::MAX / 2, 64, 1]), ErrKind::Invalid, "strides", "stride overflow");
    // Empty views need no memory; a null one is fine.
    raw(0, 0, &[0, 8, 64], &p).expect("an empty view");
    // SAFETY: as above.
    let raw_mut = |shape: &[usize], strides: &[usize]| unsafe { DeviceViewMut::from_raw(a, len, DType::BF16, shape, strides) };
    expect_err(raw_mut(&[4, 8, 64], &[0, 64, 1]), ErrKind::Invalid, "strides", "output with a zero batch stride");
    expect_err(raw_mut(&[4, 8, 64], &[64, 32, 1]), ErrKind::Invalid, "strides", "output rows overlapping");
    // The same strides are fine for a read-only view (a broadcast).
    raw(a, len, &[4, 8, 64], &[0, 64, 1]).expect("a broadcast input");
}

#[test]
fn views_wrong_for_an_op_are_refused_before_any_launch() {
    let Some(gpu) = gpu(concat!(module_path!(), "::views_wrong_for_an_op_are_refused_before_any_launch")) else { return };
    let (b, s, h, d) = (1usize, 9usize, 2usize, 64usize);
    let shape = [b, s, h, d];
    let p = packed(&shape);
    // One buffer with room to shift views by a few elements.
    let buf = filled(&gpu, DType::BF16, &[b * s * h * d + 64]);
    let k = filled(&gpu, DType::BF16, &shape);
    let v = filled(&gpu, DType::BF16, &shape);
    let cfg = AttentionConfig::default();
    let out = gpu.alloc_poisoned(DType::BF16, &[b * s * h * d + 64]).unwrap();
    let (kv, vv) = (k.view(), v.view());

    // Attention: q 4 bytes off 16-byte alignment (rows of 128 bytes are loaded 16 bytes at a time).
    let q_off = view(&buf, 2, &shape, &p);
    let mut o = view_mut(&out, 0, &shape, &p);
    let r = attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q_off, &kv, &vv), &mut o, None);
    expect_err(r, ErrKind::Invalid, "q", "attention q misaligned");
    // A row stride that is not a multiple of 16 bytes.
    let q_rows = view(&buf, 0, &shape, &[s * (h * d + 4), h * d + 4, d, 1]);
    let r = attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q_rows, &kv, &vv), &mut o, None);
    expect_err(r, ErrKind::Invalid, "q", "attention q row stride of 136 bytes");
    // The output over the input.
    let q_out = view(&out, 0, &shape, &p);
    let r = attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q_out, &kv, &vv), &mut o, None);
    expect_err(r, ErrKind::Invalid, "o", "attention o overlapping q");
    // The output over an input it reads (k), and lse over o.
    let q = view(&buf, 0, &shape, &p);
    let mut o_k = view_mut(&k, 0, &shape, &p);
    let r = attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &kv, &vv), &mut o_k, None);
    expect_err(r, ErrKind::Invalid, "o", "attention o over k");
    let lse_shape = [b, h, s];
    // SAFETY: f32 parts over the start of `out`, refused by the op before any use.
    let mut lse_on_o = unsafe { DeviceViewMut::from_raw(addr(&out), out.byte_len(), DType::F32, &lse_shape, &packed(&lse_shape)) }.unwrap();
    let r = attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &kv, &vv), &mut o, Some(&mut lse_on_o));
    expect_err(r, ErrKind::Invalid, "lse", "attention lse over o");
    untouched(&gpu, &out, "attention");

    // RoPE: a rank-4 tensor whose batch stride is not S x the row stride, and y over x.
    let rope = RopeOpConfig { rope: RopeConfig::new(d, 10000.0), position_offset: 0 };
    let two = [2, 4, h, d];
    let gapped = view(&buf, 0, &two, &[5 * h * d, h * d, d, 1]);
    let mut y = view_mut(&out, 0, &two, &packed(&two));
    expect_err(rope_cuda_into(&gpu, &rope, &RopeArgs { x: &gapped, position_ids: None, cu_seqlens: None }, &mut y), ErrKind::Invalid, "x", "rope batch stride");
    let x_on_y = view(&out, 0, &two, &packed(&two));
    expect_err(rope_cuda_into(&gpu, &rope, &RopeArgs { x: &x_on_y, position_ids: None, cu_seqlens: None }, &mut y), ErrKind::Invalid, "y", "rope y over x");
    untouched(&gpu, &out, "rope");

    // Decode: q must be packed; an output over the cache.
    let cache_k = filled(&gpu, DType::BF16, &[1, 16, 1, d]);
    let cache_v = filled(&gpu, DType::BF16, &[1, 16, 1, d]);
    let (ck, cv) = (cache_k.view(), cache_v.view());
    let lens = [9i32];
    let cache = KvCacheRef::Contiguous { k: &ck, v: &cv, cache_seqlens: &lens };
    let index = DeviceKvIndex::new(&gpu, &cache).unwrap();
    let q_strided = view(&buf, 0, &[1, 1, h, d], &[4 * h * d, 4 * h * d, 2 * d, 1]);
    let dl = gpu.alloc_poisoned(DType::F32, &[1, h, 1]).unwrap();
    let mut o_dec = view_mut(&out, 0, &[1, 1, h, d], &packed(&[1, 1, h, d]));
    let mut lse_dec = view_mut(&dl, 0, &[1, h, 1], &[h, 1, 1]);
    let opts = DecodeOptions::default();
    let r = decode_cuda_with_index(&gpu, &cfg, &q_strided, &cache, &index, None, &opts, &mut o_dec, &mut lse_dec);
    expect_err(r, ErrKind::Invalid, "q", "decode q strided");
    let q_dec = view(&buf, 0, &[1, 1, h, d], &packed(&[1, 1, h, d]));
    let mut o_on_cache = view_mut(&cache_k, 0, &[1, 1, h, d], &packed(&[1, 1, h, d]));
    let r = decode_cuda_with_index(&gpu, &cfg, &q_dec, &cache, &index, None, &opts, &mut o_on_cache, &mut lse_dec);
    expect_err(r, ErrKind::Invalid, "o", "decode o over the cache");
    untouched(&gpu, &dl, "decode lse");

    // Append: new keys that are the cache itself.
    let kc = view_mut(&cache_k, 0, &[1, 16, 1, d], &packed(&[1, 16, 1, d]));
    let vc = view_mut(&cache_v, 0, &[1, 16, 1, d], &packed(&[1, 16, 1, d]));
    let (mut kc, mut vc) = (kc, vc);
    let k_new = view(&cache_k, 9 * d, &[1, 2, 1, d], &packed(&[1, 2, 1, d]));
    let v_new = view(&buf, 0, &[1, 2, 1, d], &packed(&[1, 2, 1, d]));
    let mut m = KvCacheMut::Contiguous { k: &mut kc, v: &mut vc, cache_seqlens: &lens };
    expect_err(append_kv_cuda(&gpu, &mut m, &k_new, &v_new, None), ErrKind::Invalid, "k_cache", "append k_new inside the cache");

    // merge_states: an output over an input.
    let ms = [1, 1, h, d];
    let o_a = view(&buf, 0, &ms, &packed(&ms));
    let l_a = view(&dl, 0, &[1, h, 1], &[h, 1, 1]);
    let mut o_m = view_mut(&buf, 0, &ms, &packed(&ms));
    let lm_buf = gpu.alloc_poisoned(DType::F32, &[1, h, 1]).unwrap();
    let mut l_m = view_mut(&lm_buf, 0, &[1, h, 1], &[h, 1, 1]);
    expect_err(merge_states_cuda_into(&gpu, &o_a, &l_a, &o_a, &l_a, &mut o_m, &mut l_m), ErrKind::Invalid, "o", "merge o over o_a");
    untouched(&gpu, &lm_buf, "merge lse");

    // Linear attention takes packed tensors only.
    let ls = [1, 5, h, 32];
    let lq = view(&buf, 0, &ls, &[5 * 4 * 32, 4 * 32, 32, 1]);
    let lk = view(&buf, 0, &ls, &packed(&ls));
    let lo_buf = gpu.alloc_poisoned(DType::BF16, &ls).unwrap();
    let ls_buf = gpu.alloc_poisoned(DType::F32, &[1, h, 32, 32]).unwrap();
    let mut lout = RecurrentOutput { o: view_mut(&lo_buf, 0, &ls, &packed(&ls)), final_state: view_mut(&ls_buf, 0, &[1, h, 32, 32], &packed(&[1, h, 32, 32])) };
    let r = linear_attention_cuda_into(&gpu, &LinearAttentionConfig::default(), &LinearArgs::new(&lq, &lk, &lk), LinearMode::Recurrent, &mut lout);
    expect_err(r, ErrKind::Invalid, "q", "linear q strided");
    untouched(&gpu, &lo_buf, "linear o");
    untouched(&gpu, &ls_buf, "linear state");
}
