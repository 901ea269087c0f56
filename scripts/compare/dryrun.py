"""The dry run: everything the comparison does that needs no GPU and no torch.

- writes a case file for every section at tiny shapes (numpy + our small safetensors writer), reads
  each back and checks names, dtypes, shapes and the `config` JSON against the spec;
- if our binary is given, runs each case on the CPU (`attn-kernels run --device cpu`) and checks
  its output against float64 numpy evaluations of the spec written here (the same maths the GPU
  run's references use), so the case-file contract is exercised end to end;
- checks the FLOP/byte accounting on hand-computed cases;
- formats the table and plots from FAKE timings, clearly marked, into a scratch folder that is
  never benches/results.
"""

import json
import math
import os
import random
import subprocess
import tempfile

import numpy as np

import cases as C
import report as R
import stfile
from ours import classify

rng = np.random.default_rng()


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def bf16(x):
    return stfile.round_to(x, "BF16")


def logsigmoid(x):
    return -np.logaddexp(0.0, -x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------- float64 references

def attention_ref(q, k, v, causal, slopes=None, scale=None):
    """Spec section 1 for Sq <= Sk, BSHD, MHA or GQA."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, Sq, H, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = scale or 1.0 / math.sqrt(D)
    g = H // Hkv
    o = np.zeros((B, Sq, H, v.shape[-1]))
    P = np.arange(Sq)[:, None] + Sk - Sq
    j = np.arange(Sk)[None, :]
    for h in range(H):
        s = scale * np.einsum("bid,bjd->bij", q[:, :, h], k[:, :, h // g])
        if slopes is not None:
            s = s - slopes[h] * np.abs(P - j)[None]
        if causal:
            s = np.where((j <= P)[None], s, -np.inf)
        m = s.max(-1, keepdims=True)
        w = np.exp(s - m)
        w /= w.sum(-1, keepdims=True)
        o[:, :, h] = np.einsum("bij,bjd->bid", w, v[:, :, h // g])
    return o


def rope_ref(x, rope, offset=0):
    x = np.asarray(x, np.float64).copy()
    d = rope["rotary_dim"]
    inv = np.array(C.rope_inv_freq(d, rope["theta"]))
    pos = np.arange(x.shape[1]) + offset
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    x1, x2 = x[..., : d // 2].copy(), x[..., d // 2: d].copy()
    x[..., : d // 2] = x1 * c - x2 * s
    x[..., d // 2: d] = x2 * c + x1 * s
    return x


def diff_ref(q, k, v, lam, weight, lambda_init, eps, causal):
    a1 = attention_ref(q[:, :, 0::2], k[:, :, 0::2], v, causal)
    a2 = attention_ref(q[:, :, 1::2], k[:, :, 1::2], v, causal)
    o = a1 - np.asarray(lam, np.float64)[None, None, :, None] * a2
    o = o / np.sqrt((o ** 2).mean(-1, keepdims=True) + eps)
    return o * np.asarray(weight, np.float64) * (1 - lambda_init)


def linear_ref(family, t, scale):
    q, k, v = (np.asarray(t[n], np.float64) for n in "qkv")
    B, T, H, K = q.shape
    V = v.shape[-1]
    g = np.asarray(t["g"], np.float64)
    if g.ndim == 3:
        g = np.broadcast_to(g[..., None], (B, T, H, K))
    S = np.zeros((B, H, K, V))
    o = np.zeros((B, T, H, V))
    for s in range(T):
        kv = k[:, s, :, :, None] * v[:, s, :, None, :]
        if family == "rwkv6":
            o[:, s] = scale * np.einsum("bhk,bhkv->bhv", q[:, s], S + np.asarray(t["u"], np.float64)[None, :, :, None] * kv)
        aS = np.einsum("bhk,bhkv->bhv", t["a"][:, s], S) if family == "rwkv7" else None
        S = np.exp(g[:, s])[..., None] * S
        if aS is not None:
            S = S + np.asarray(t["b"][:, s], np.float64)[..., None] * aS[:, :, None, :]
        S = S + kv
        if family != "rwkv6":
            o[:, s] = scale * np.einsum("bhk,bhkv->bhv", q[:, s], S)
    return o, S


def rel(x, ref):
    x, ref = np.asarray(x, np.float64).reshape(-1), np.asarray(ref, np.float64).reshape(-1)
    if x.size != ref.size or not np.isfinite(x).all():
        return float("nan")
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


# ---------------------------------------------------------------------------- tiny cases

def tiny_cases(decode_op):
    """(section, label, config, tensors {name: (dtype, array)}, output name, reference, tol)."""
    out = []
    tol = C.spec_tol("bf16")
    for causal in (False, True):
        p = {"B": 2, "S": 70, "H": 4, "Hkv": 4, "D": 64, "causal": causal}
        q, k, v = (bf16(randn(2, 70, 4, 64)) for _ in range(3))
        ref = attention_ref(q, k, v, causal)
        out.append(("attention", C.shape_label(p), C.attention_config(p),
                    {"q": ("BF16", q), "k": ("BF16", k), "v": ("BF16", v)}, "o", ref, tol))
        slopes = np.array(C.alibi_slopes(4), np.float32)
        out.append(("alibi", C.shape_label(p), C.attention_config(p),
                    {"q": ("BF16", q), "k": ("BF16", k), "v": ("BF16", v), "alibi_slopes": ("F32", slopes)},
                    "o", attention_ref(q, k, v, causal, slopes=slopes), tol))
    p = {"B": 2, "S": 70, "H": 4, "Hkv": 4, "D": 128, "causal": True}
    rope = C.rope_config(128)
    q, k, v = (bf16(randn(2, 70, 4, 128)) for _ in range(3))
    out.append(("rope", C.shape_label(p) + " fused", C.attention_config(p, rope),
                {"q": ("BF16", q), "k": ("BF16", k), "v": ("BF16", v)}, "o",
                attention_ref(rope_ref(q, rope), rope_ref(k, rope), v, True), tol))
    out.append(("rope", "rope op x [2,70,4,128]", C.rope_op_config(rope),
                {"x": ("BF16", q)}, "y", rope_ref(q, rope), tol))
    p = {"B": 2, "S": 40, "H": 2, "Hkv": 2, "d": 32, "causal": True}
    q, k = bf16(randn(2, 40, 4, 32)), bf16(randn(2, 40, 4, 32))
    v = bf16(randn(2, 40, 2, 64))
    li = C.diff_lambda_init(12)
    lam = (li + 0.05 * randn(2)).astype(np.float32)
    w = (1 + 0.1 * randn(64)).astype(np.float32)
    out.append(("diff_attention", C.shape_label(p), C.diff_config(p, li),
                {"q": ("BF16", q), "k": ("BF16", k), "v": ("BF16", v), "lambda": ("F32", lam),
                 "norm_weight": ("F32", w)},
                "o", diff_ref(q, k, v, lam, w, li, 1e-5, True), C.spec_tol("bf16", "diff_attention")))
    p = {"B": 3, "L": 77, "H": 8, "Hkv": 2, "D": 64}
    q = bf16(randn(3, 1, 8, 64))
    kc, vc = bf16(randn(3, 77, 2, 64)), bf16(randn(3, 77, 2, 64))
    out.append(("decode", C.shape_label(p), C.decode_config(decode_op),
                {"q": ("BF16", q), "k_cache": ("BF16", kc), "v_cache": ("BF16", vc),
                 "cache_seqlens": ("I32", np.full(3, 77, np.int32))},
                "o", attention_ref(q, kc, vc, False), tol))
    for family in C.LINEAR_FAMILIES:
        p = {"B": 2, "T": 37, "H": 2, "K": 16, "V": 24}
        op, cfg, spec = C.linear_case(family, p)
        t = {n: randn(*shape) for n, (shape, _) in spec.items()}
        if family in ("gla", "simple_gla"):
            t["g"] = logsigmoid(t["g"]) / 16
        elif family == "rwkv6":
            t["g"] = -np.exp(-2.5 + t["g"])
            t["u"] = 0.5 * t["u"]
        else:
            t["g"] = -0.6065306597126334 * sigmoid(t["g"])
            kk = t["a"] / np.linalg.norm(t["a"], axis=-1, keepdims=True)
            t["a"], t["b"] = -kk, kk * sigmoid(t["b"])
        typed = {}
        for n, (shape, kind) in spec.items():
            dt = "F32" if kind == "f32" else "BF16"
            typed[n] = (dt, stfile.round_to(t[n].astype(np.float32), dt))
        o, _ = linear_ref(family, {n: a for n, (_, a) in typed.items()}, cfg.get("scale", p["K"] ** -0.5))
        out.append(("linear", C.shape_label(dict(p, family=family)), cfg, typed, "o", o, tol))
    return out


def check_accounting():
    """FLOP/byte counts against hand arithmetic."""
    p = {"B": 2, "S": 1024, "H": 16, "Hkv": 16, "D": 128, "causal": False}
    assert C.attention_flops(p) == 4 * 2 * 16 * 1024 * 1024 * 128
    assert C.attention_flops(dict(p, causal=True)) == 2 * 2 * 16 * 1024 * 1024 * 128
    assert C.attention_bytes(p) == 2 * 2 * 1024 * (4 * 16 * 128)
    d = {"B": 2, "S": 1024, "H": 16, "Hkv": 16, "d": 64, "causal": True}
    # two attentions, each QK^T (2*S*S*d) + PV (2*S*S*2d), halved for causal
    assert C.diff_flops(d) == 2 * (2 * 2 * 16 * 1024 * 1024 * (64 + 128)) / 2
    dp = {"B": 4, "L": 1000, "H": 32, "Hkv": 8, "D": 128}
    assert C.decode_bytes(dp) == 2 * 4 * 1000 * 8 * 128 * 2 + 2 * 4 * 32 * 128 * 2
    lp = {"B": 1, "T": 10, "H": 2, "K": 4, "V": 8}
    # gla: q k (bf16) v (bf16) g (f32) in, o (bf16) and final state (f32) out
    assert C.linear_bytes("gla", lp) == 2 * (2 * 80 + 160) + 4 * 80 + 2 * 160 + 4 * (2 * 4 * 8)
    assert C.alibi_slopes(8) == [2 ** (-h) for h in range(1, 9)]
    s12 = C.alibi_slopes(12)
    assert s12[:8] == [2 ** (-h) for h in range(1, 9)] and s12[8:] == [2 ** (-0.5 - 1 * k) for k in range(4)]
    # plan sizes: batch * seqlen = 16k tokens, heads * D = 2048
    for p in C.plain_attention_plan():
        assert p["B"] * p["S"] == 16384 and p["H"] * p["D"] == 2048
    return "FLOP/byte accounting, ALiBi slopes and plan shapes: ok"


def fake_rows():
    """Rows shaped exactly like the GPU run's, with made-up times (never written to benches/results)."""
    rnd = random.Random(0)
    rows = []

    def add(section, p, contender, metric, work, t, status="ok", baseline=False, peer=True, err=None, note=""):
        rows.append({"section": section, "case": C.shape_label(p), "params": dict(p), "contender": contender,
                     "metric": metric, "flops" if metric == "TFLOP/s" else "bytes": work, "status": status,
                     "time_ms": t, "min_ms": t * 0.97 if t else None, "err": err, "ref": "ours" if err else None,
                     "tol": 3e-2 if err else None, "note": note, "baseline": baseline, "peer": peer})

    for p in C.plain_attention_plan():
        f = C.attention_flops(p)
        base = f / 500e12 * 1e3
        add("attention", p, "ours", "TFLOP/s", f, base, status="ok", baseline=True, peer=False, err=4e-3)
        for name in ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient"):
            add("attention", p, name, "TFLOP/s", f, base * rnd.uniform(0.7, 1.6), err=5e-3)
    for p in C.feature_plan():
        f = C.attention_flops(p)
        base = f / 450e12 * 1e3
        add("alibi", p, "ours", "TFLOP/s", f, base, baseline=True, peer=False, err=4e-3)
        add("alibi", p, "ours (no ALiBi)", "TFLOP/s", f, base * 0.95, status="noref", peer=False)
        add("alibi", p, "sdpa-flash +bf16 mask", "TFLOP/s", f, None, status="unsupported",
            note="RuntimeError: No available kernel")
        add("alibi", p, "sdpa-efficient +bf16 mask", "TFLOP/s", f, base * rnd.uniform(2, 5), err=6e-3)
    for p in C.diff_plan():
        f = C.diff_flops(p)
        base = f / 400e12 * 1e3
        add("diff_attention", p, "ours", "TFLOP/s", f, base, baseline=True, peer=False, err=8e-3)
        add("diff_attention", p, "official 2-call sdpa-efficient", "TFLOP/s", f, base * rnd.uniform(1.2, 2.5), err=1e-2)
        add("diff_attention", p, "4-call (vLLM) sdpa-flash", "TFLOP/s", f, None, status="mismatch", err=9e-2)
    for p in C.decode_plan():
        b = C.decode_bytes(p)
        base = b / 2.5e12 * 1e3
        add("decode", p, "ours", "GB/s", b, base, baseline=True, peer=False, err=3e-3)
        add("decode", p, "sdpa-flash (enable_gqa)", "GB/s", b, base * rnd.uniform(0.9, 2.0), err=4e-3)
    for fam in C.LINEAR_FAMILIES:
        for p0 in C.linear_plan():
            p = dict(p0, family=fam)
            b = C.linear_bytes(fam, p0)
            base = b / 1.0e12 * 1e3
            add("linear", p, "ours", "GB/s", b, base, baseline=True, peer=False, err=6e-3)
            add("linear", p, f"fla chunk_{fam}", "GB/s", b, base * rnd.uniform(0.5, 2.0), err=8e-3)
            add("linear", p, f"fla fused_recurrent_{fam}", "GB/s", b, base * rnd.uniform(1.0, 4.0), err=7e-3)
    return rows


def run(args, repo_root):
    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    log("DRY RUN: no GPU, no torch; nothing here is a measurement and nothing is written to benches/results.")
    log(check_accounting())
    scratch = args.out or tempfile.mkdtemp(prefix="attn-compare-dry-")
    real = os.path.realpath(scratch)
    if real.startswith(os.path.realpath(os.path.join(repo_root, "benches", "results"))):
        raise SystemExit("refusing: a dry run never writes under benches/results")
    os.makedirs(scratch, exist_ok=True)
    case_dir = os.path.join(scratch, "cases")
    os.makedirs(case_dir, exist_ok=True)

    binary = args.bin if args.bin and os.path.exists(args.bin) else None
    if args.bin and not binary:
        log(f"(binary {args.bin} not found: case files are written and read back, not run)")
    results = []
    bench_checked = False
    for i, (section, label, cfg, tensors, out_name, ref, tol) in enumerate(tiny_cases(args.decode_op)):
        path = os.path.join(case_dir, f"{i:02d}-{section}.safetensors")
        stfile.write(path, tensors, {"config": json.dumps(cfg)})
        back, meta = stfile.read(path)
        assert json.loads(meta["config"]) == cfg, "config did not round-trip"
        for n, (dt, a) in tensors.items():
            assert back[n][0] == dt and list(back[n][1].shape) == list(np.shape(a)), n
            assert np.array_equal(back[n][1], stfile.round_to(a, dt)), n
        status = "written"
        if binary:
            opath = path.replace(".safetensors", ".out.safetensors")
            r = subprocess.run([binary, "run", "--input", path, "--output", opath, "--device", "cpu"],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                e = classify(r.returncode, r.stderr, r.stdout)
                status = f"{e.kind}: {e.message[:150]}"
            else:
                outs, ometa = stfile.read(opath)
                if out_name not in outs:
                    status = f"FAIL: no `{out_name}` in output (has {sorted(outs)})"
                else:
                    err = rel(outs[out_name][1], ref)
                    ok = err == err and err <= tol
                    status = f"{'ok' if ok else 'FAIL'}: rel err {err:.2e} (tol {tol:.2g}) vs f64 numpy; " \
                             f"device={ometa.get('device', '?')}"
        if binary and status.startswith("ok") and not bench_checked:
            # the bench contract (one JSON line); CPU wall time, thrown away
            from ours import Ours, OursError
            try:
                b = Ours(binary, "cpu", warmup=1, iters=3).bench(path)
                log(f"  bench contract on {section}: JSON keys {sorted(b)} (CPU wall time, discarded)")
            except OursError as e:
                log(f"  bench contract on {section}: {e.kind}: {e.message[:200]}")
            bench_checked = True
        results.append((section, label, status))
        log(f"  case {section:<15} {label:<44} {status}")
    log(f"case files: {case_dir}")

    rows = fake_rows()
    ceilings = {"copy_gbs": 3000.0, "matmul_tflops": 790.0}
    R.finalize(rows, ceilings)
    heads = R.headlines(rows)
    meta = {"fake": True, "gpu": "FAKE-GPU (dry run)", "date": "dry run", "commit": "n/a", "driver": "n/a",
            "torch": "n/a", "triton": "n/a", "fla": "n/a", "cuda": "n/a", "ours_warmup": args.ours_warmup,
            "ours_iters": args.ours_iters, "peer_timer": "n/a (fake)",
            "skipped": [{"section": "linear", "reason": "example of a skip line (fake)"}]}
    md = R.markdown(rows, meta, ceilings, heads)
    with open(os.path.join(scratch, "FAKE-results.md"), "w") as f:
        f.write(md)
    R.write_json(os.path.join(scratch, "FAKE-results.json"), rows, meta, ceilings, heads)
    written, note = R.plots(rows, meta, scratch, prefix="FAKE-", ceilings=ceilings)
    log(f"fake report and plots in {scratch}: {[os.path.basename(w) for w in written]} {note}")
    log("")
    print(md)
    bad = [r for r in results if r[2].startswith("FAIL")]
    return 1 if bad else 0
