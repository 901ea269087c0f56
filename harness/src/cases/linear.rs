//! Case files and `check` rows of the linear-attention recurrences: `linear_attention`,
//! `delta_rule` and `rwkv4`.

use crate::case::{allow_only, input, parse_config, Case, Device, Tensors};
use crate::check::{CheckCase, Reference, Rng, Work};
use attn_kernels::linear::cuda::{delta_rule_cuda, linear_attention_cuda, rwkv4_cuda, LinearMode};
use attn_kernels::linear::oracle::{self, OracleOutput};
use attn_kernels::linear::{delta_rule_cpu, linear_attention_cpu, rwkv4_cpu, plan_delta_rule, plan_linear, plan_rwkv4};
use attn_kernels::linear::{DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, RecurrentOutput, Rwkv4Args, Rwkv4Config};
use attn_kernels::tensor::{expect_rank, i32_data, DType, Tensor};
use attn_kernels::{DeviceTensor, Error, Gpu, Result};

fn cu_from(inputs: &Tensors) -> Result<Option<&[i32]>> {
    match inputs.get("cu_seqlens") {
        None => Ok(None),
        Some(t) => {
            expect_rank("cu_seqlens", t, 1, "[N+1]")?;
            Ok(Some(i32_data("cu_seqlens", t)?))
        }
    }
}

fn outputs(o_name: &str, out: RecurrentOutput<Tensor>) -> Tensors {
    let mut m = Tensors::new();
    m.insert(o_name.to_string(), out.o);
    m.insert("final_state".to_string(), out.final_state);
    m
}

/// `linear_attention` arguments from case tensors `q k v g u initial_state cu_seqlens`.
pub fn linear_args(inputs: &Tensors) -> Result<LinearArgs<'_, Tensor>> {
    allow_only(inputs, "linear_attention", &["q", "k", "v", "g", "u", "initial_state", "cu_seqlens"])?;
    Ok(LinearArgs {
        q: input(inputs, "q")?,
        k: input(inputs, "k")?,
        v: input(inputs, "v")?,
        g: inputs.get("g"),
        u: inputs.get("u"),
        initial_state: inputs.get("initial_state"),
        cu_seqlens: cu_from(inputs)?,
    })
}

/// `delta_rule` arguments from case tensors `q k v a b g initial_state cu_seqlens`.
pub fn delta_rule_args(inputs: &Tensors) -> Result<DeltaRuleArgs<'_, Tensor>> {
    allow_only(inputs, "delta_rule", &["q", "k", "v", "a", "b", "g", "initial_state", "cu_seqlens"])?;
    Ok(DeltaRuleArgs {
        q: input(inputs, "q")?,
        k: input(inputs, "k")?,
        v: input(inputs, "v")?,
        a: input(inputs, "a")?,
        b: input(inputs, "b")?,
        g: inputs.get("g"),
        initial_state: inputs.get("initial_state"),
        cu_seqlens: cu_from(inputs)?,
    })
}

/// `rwkv4` arguments from case tensors `k v w u initial_state`.
pub fn rwkv4_args(inputs: &Tensors) -> Result<Rwkv4Args<'_, Tensor>> {
    allow_only(inputs, "rwkv4", &["k", "v", "w", "u", "initial_state"])?;
    Ok(Rwkv4Args {
        k: input(inputs, "k")?,
        v: input(inputs, "v")?,
        w: input(inputs, "w")?,
        u: input(inputs, "u")?,
        initial_state: inputs.get("initial_state"),
    })
}

/// Run a `linear_attention` case (spec section 5): outputs `o`, `final_state`.
pub fn run_linear_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: LinearAttentionConfig = parse_config(config)?;
    let args = linear_args(inputs)?;
    match device {
        Device::Cpu => Ok(outputs("o", linear_attention_cpu(&cfg, &args)?)),
        Device::Cuda(gpu) => run_case_cuda("linear_attention", config, inputs, gpu),
    }
}

/// Run a `delta_rule` case: outputs `o`, `final_state`.
pub fn run_delta_rule_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: DeltaRuleConfig = parse_config(config)?;
    let args = delta_rule_args(inputs)?;
    match device {
        Device::Cpu => Ok(outputs("o", delta_rule_cpu(&cfg, &args)?)),
        Device::Cuda(gpu) => run_case_cuda("delta_rule", config, inputs, gpu),
    }
}

/// Run an `rwkv4` case: outputs `y` (the RWKV name for the output) and `final_state`
/// (`[B, 3, C]`).
pub fn run_rwkv4_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: Rwkv4Config = parse_config(config)?;
    let args = rwkv4_args(inputs)?;
    match device {
        Device::Cpu => Ok(outputs("y", rwkv4_cpu(&cfg, &args)?)),
        Device::Cuda(gpu) => run_case_cuda("rwkv4", config, inputs, gpu),
    }
}

fn upload_opt(gpu: &Gpu, t: Option<&Tensor>) -> Result<Option<DeviceTensor>> {
    t.map(|t| gpu.upload(t)).transpose()
}

fn download_outputs(gpu: &Gpu, o_name: &str, out: RecurrentOutput<DeviceTensor>) -> Result<Tensors> {
    let mut m = Tensors::new();
    m.insert(o_name.to_string(), gpu.download(&out.o)?);
    m.insert("final_state".to_string(), gpu.download(&out.final_state)?);
    Ok(m)
}

/// The `--device cuda` arm of the `run_*_case` functions: uploads the case's tensors, runs the op
/// here and downloads `o` (rwkv4: `y`) and `final_state`. Inputs are validated on the host
/// first with the same plan functions, so bad cases fail before any upload.
fn run_case_cuda(op: &str, config: &serde_json::Value, inputs: &Tensors, gpu: &Gpu) -> Result<Tensors> {
    let cu = match inputs.get("cu_seqlens") {
        None => None,
        Some(t) => {
            expect_rank("cu_seqlens", t, 1, "[N+1]")?;
            Some(i32_data("cu_seqlens", t)?)
        }
    };
    match op {
        "linear_attention" => {
            let cfg: LinearAttentionConfig = parse_config(config)?;
            allow_only(inputs, op, &["q", "k", "v", "g", "u", "initial_state", "cu_seqlens"])?;
            let host = LinearArgs {
                q: input(inputs, "q")?,
                k: input(inputs, "k")?,
                v: input(inputs, "v")?,
                g: inputs.get("g"),
                u: inputs.get("u"),
                initial_state: inputs.get("initial_state"),
                cu_seqlens: cu,
            };
            plan_linear(&cfg, &host)?;
            let (q, k, v) = (gpu.upload(host.q)?, gpu.upload(host.k)?, gpu.upload(host.v)?);
            let (g, u, s0) = (upload_opt(gpu, host.g)?, upload_opt(gpu, host.u)?, upload_opt(gpu, host.initial_state)?);
            let args = LinearArgs { q: &q, k: &k, v: &v, g: g.as_ref(), u: u.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
            download_outputs(gpu, "o", linear_attention_cuda(gpu, &cfg, &args, LinearMode::Auto)?)
        }
        "delta_rule" => {
            let cfg: DeltaRuleConfig = parse_config(config)?;
            allow_only(inputs, op, &["q", "k", "v", "a", "b", "g", "initial_state", "cu_seqlens"])?;
            let host = DeltaRuleArgs {
                q: input(inputs, "q")?,
                k: input(inputs, "k")?,
                v: input(inputs, "v")?,
                a: input(inputs, "a")?,
                b: input(inputs, "b")?,
                g: inputs.get("g"),
                initial_state: inputs.get("initial_state"),
                cu_seqlens: cu,
            };
            plan_delta_rule(&cfg, &host)?;
            let (q, k, v) = (gpu.upload(host.q)?, gpu.upload(host.k)?, gpu.upload(host.v)?);
            let (a, b) = (gpu.upload(host.a)?, gpu.upload(host.b)?);
            let (g, s0) = (upload_opt(gpu, host.g)?, upload_opt(gpu, host.initial_state)?);
            let args = DeltaRuleArgs { q: &q, k: &k, v: &v, a: &a, b: &b, g: g.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
            download_outputs(gpu, "o", delta_rule_cuda(gpu, &cfg, &args)?)
        }
        "rwkv4" => {
            let cfg: Rwkv4Config = parse_config(config)?;
            allow_only(inputs, op, &["k", "v", "w", "u", "initial_state"])?;
            let host = Rwkv4Args {
                k: input(inputs, "k")?,
                v: input(inputs, "v")?,
                w: input(inputs, "w")?,
                u: input(inputs, "u")?,
                initial_state: inputs.get("initial_state"),
            };
            plan_rwkv4(&cfg, &host)?;
            let (k, v, w, u) = (gpu.upload(host.k)?, gpu.upload(host.v)?, gpu.upload(host.w)?, gpu.upload(host.u)?);
            let s0 = upload_opt(gpu, host.initial_state)?;
            let args = Rwkv4Args { k: &k, v: &v, w: &w, u: &u, initial_state: s0.as_ref() };
            download_outputs(gpu, "y", rwkv4_cuda(gpu, &cfg, &args)?)
        }
        other => Err(Error::config("op", format!("`{other}` is not a linear-attention op"))),
    }
}

fn reference(o_name: &str, out: OracleOutput) -> Reference {
    Reference::from([(o_name.to_string(), out.o), ("final_state".to_string(), out.final_state)])
}

/// The float64 oracle of a `linear_attention` case (for `attn-kernels check`).
pub fn linear_attention_oracle_case(case: &Case) -> Result<Reference> {
    let cfg: LinearAttentionConfig = parse_config(&case.config)?;
    let args = linear_args(&case.inputs)?;
    Ok(reference("o", oracle::linear_attention(&cfg, &args)?))
}

/// The float64 oracle of a `delta_rule` case.
pub fn delta_rule_oracle_case(case: &Case) -> Result<Reference> {
    let cfg: DeltaRuleConfig = parse_config(&case.config)?;
    let args = delta_rule_args(&case.inputs)?;
    Ok(reference("o", oracle::delta_rule(&cfg, &args)?))
}

/// The float64 oracle of an `rwkv4` case.
pub fn rwkv4_oracle_case(case: &Case) -> Result<Reference> {
    let cfg: Rwkv4Config = parse_config(&case.config)?;
    let args = rwkv4_args(&case.inputs)?;
    Ok(reference("y", oracle::rwkv4(&cfg, &args)?))
}

fn tensor(dtype: DType, shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_f32(dtype, shape, values).expect("check case: shape matches the values")
}

/// Unit-norm rows of length `kd` (DeltaNet / RWKV-7 normalise their keys).
fn normalized(x: &[f32], kd: usize) -> Vec<f32> {
    x.chunks(kd)
        .flat_map(|row| {
            let n = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
            row.iter().map(move |a| a / n)
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `attn-kernels check` rows for the three recurrences: model-like shapes and parameterisations
/// (GLA, RWKV-6, Mamba-2-style varlen, RWKV-7, gated DeltaNet, RWKV-4).
pub fn check_cases() -> Vec<CheckCase> {
    let mut rng = Rng::from_time();
    let mut cases = Vec::new();
    let lin_flops = |rows: usize, h: usize, kd: usize, vd: usize| Work::Flops((4 * rows * h * kd * vd) as f64);

    // GLA: per-key decay logsigmoid(x)/16, initial state, default scale.
    {
        let (b, t, h, kd, vd, dt) = (2, 2048, 8, 64, 64, DType::BF16);
        let n = b * t * h * kd;
        let g: Vec<f32> = rng.normal_vec(n).iter().map(|&x| -(1.0 + (-x).exp()).ln() / 16.0).collect();
        let case = Case::new(serde_json::json!({"op": "linear_attention"}))
            .with("q", tensor(dt, &[b, t, h, kd], &rng.normal_vec(n)))
            .with("k", tensor(dt, &[b, t, h, kd], &rng.normal_vec(n)))
            .with("v", tensor(dt, &[b, t, h, vd], &rng.normal_vec(b * t * h * vd)))
            .with("g", tensor(DType::F32, &[b, t, h, kd], &g))
            .with("initial_state", tensor(DType::F32, &[b, h, kd, vd], &rng.normal_vec(b * h * kd * vd)));
        cases.push(CheckCase {
            op: "linear_attention",
            shape: format!("GLA q[{b},{t},{h},{kd}] v{vd}"),
            dtype: dt,
            case,
            work: lin_flops(b * t, h, kd, vd),
            tol_factor: 1.0,
            oracle: linear_attention_oracle_case,
        });
    }
    // RWKV-6: decay exp(-exp(x)) per key, bonus u, scale 1.
    {
        let (b, t, h, kd, vd, dt) = (2, 2048, 8, 64, 64, DType::BF16);
        let n = b * t * h * kd;
        let g: Vec<f32> = rng.uniform_vec(n, -6.0, 0.0).iter().map(|&x| -x.exp()).collect();
        let k: Vec<f32> = rng.normal_vec(n).iter().map(|x| 0.2 * x).collect();
        let case = Case::new(serde_json::json!({"op": "linear_attention", "scale": 1.0}))
            .with("q", tensor(dt, &[b, t, h, kd], &rng.normal_vec(n)))
            .with("k", tensor(dt, &[b, t, h, kd], &k))
            .with("v", tensor(dt, &[b, t, h, vd], &rng.normal_vec(b * t * h * vd)))
            .with("g", tensor(dt, &[b, t, h, kd], &g))
            .with("u", tensor(DType::F32, &[h, kd], &rng.normal_vec(h * kd)));
        cases.push(CheckCase {
            op: "linear_attention",
            shape: format!("RWKV-6 q[{b},{t},{h},{kd}] v{vd}"),
            dtype: dt,
            case,
            work: lin_flops(b * t, h, kd, vd),
            tol_factor: 1.0,
            oracle: linear_attention_oracle_case,
        });
    }
    // Mamba-2-style scalar decay per token and head, varlen with an empty sequence.
    {
        let (total, h, kd, vd, dt) = (4096, 8, 64, 64, DType::F16);
        let cu = [0i32, 1000, 1000, 3001, 4096];
        let n = total * h * kd;
        let g: Vec<f32> = rng.uniform_vec(total * h, -0.2, 0.0);
        let case = Case::new(serde_json::json!({"op": "linear_attention"}))
            .with("q", tensor(dt, &[1, total, h, kd], &rng.normal_vec(n)))
            .with("k", tensor(dt, &[1, total, h, kd], &rng.normal_vec(n)))
            .with("v", tensor(dt, &[1, total, h, vd], &rng.normal_vec(total * h * vd)))
            .with("g", tensor(DType::F32, &[1, total, h], &g))
            .with("cu_seqlens", Tensor::from_i32(&[cu.len()], &cu).expect("check case: cu_seqlens"));
        cases.push(CheckCase {
            op: "linear_attention",
            shape: format!("varlen N={} q[1,{total},{h},{kd}] v{vd}", cu.len() - 1),
            dtype: dt,
            case,
            work: lin_flops(total, h, kd, vd),
            tol_factor: 1.0,
            oracle: linear_attention_oracle_case,
        });
    }
    // RWKV-7: a = -kk, b = kk * alpha, decay exp(-0.6065 sigmoid(x)), scale 1.
    // DeltaNet (gated): a = -k, b = beta k, v fed as beta v, scalar decay per token.
    for rwkv7 in [true, false] {
        let (b, t, h, kd, vd) = (1, 1024, 4, 64, 64);
        let dt = if rwkv7 { DType::BF16 } else { DType::F32 };
        let n = b * t * h * kd;
        let kk = normalized(&rng.normal_vec(n), kd);
        let mut v = rng.normal_vec(b * t * h * vd);
        let (a, bb, g, g_shape): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>) = if rwkv7 {
            let alpha = rng.uniform_vec(n, 0.0, 1.0);
            let g = rng.normal_vec(n).iter().map(|&x| -0.606531 * sigmoid(x)).collect();
            (kk.iter().map(|x| -x).collect(), kk.iter().zip(&alpha).map(|(x, al)| x * al).collect(), g, vec![b, t, h, kd])
        } else {
            let beta = rng.uniform_vec(b * t * h, 0.0, 1.0);
            for (i, x) in v.iter_mut().enumerate() {
                *x *= beta[i / vd];
            }
            let g = rng.uniform_vec(b * t * h, -0.1, 0.0);
            (kk.iter().map(|x| -x).collect(), kk.iter().enumerate().map(|(i, x)| x * beta[i / kd]).collect(), g, vec![b, t, h])
        };
        let config = if rwkv7 {
            serde_json::json!({"op": "delta_rule", "scale": 1.0})
        } else {
            serde_json::json!({"op": "delta_rule"})
        };
        let case = Case::new(config)
            .with("q", tensor(dt, &[b, t, h, kd], &rng.normal_vec(n)))
            .with("k", tensor(dt, &[b, t, h, kd], &kk))
            .with("v", tensor(dt, &[b, t, h, vd], &v))
            .with("a", tensor(dt, &[b, t, h, kd], &a))
            .with("b", tensor(dt, &[b, t, h, kd], &bb))
            .with("g", tensor(DType::F32, &g_shape, &g))
            .with("initial_state", tensor(DType::F32, &[b, h, kd, vd], &rng.normal_vec(b * h * kd * vd)));
        cases.push(CheckCase {
            op: "delta_rule",
            shape: format!("{} q[{b},{t},{h},{kd}] v{vd}", if rwkv7 { "RWKV-7" } else { "GDN" }),
            dtype: dt,
            case,
            work: Work::Flops((6 * b * t * h * kd * vd) as f64),
            tol_factor: 1.0,
            oracle: delta_rule_oracle_case,
        });
    }
    // RWKV-4: w = -exp(time_decay), large-ish k.
    {
        let (b, t, c, dt) = (2, 1024, 1024, DType::BF16);
        let w: Vec<f32> = rng.uniform_vec(c, -3.0, 1.0).iter().map(|&x| -x.exp()).collect();
        let k: Vec<f32> = rng.normal_vec(b * t * c).iter().map(|x| 3.0 * x).collect();
        let case = Case::new(serde_json::json!({"op": "rwkv4"}))
            .with("k", tensor(dt, &[b, t, c], &k))
            .with("v", tensor(dt, &[b, t, c], &rng.normal_vec(b * t * c)))
            .with("w", tensor(DType::F32, &[c], &w))
            .with("u", tensor(DType::F32, &[c], &rng.uniform_vec(c, -1.0, 1.0)));
        cases.push(CheckCase {
            op: "rwkv4",
            shape: format!("k[{b},{t},{c}]"),
            dtype: dt,
            case,
            work: Work::Bytes((3 * b * t * c * dt.size()) as f64),
            tol_factor: 1.0,
            oracle: rwkv4_oracle_case,
        });
    }
    cases
}
