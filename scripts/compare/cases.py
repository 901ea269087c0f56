"""What the comparison measures: shapes, op configs, FLOP and byte counts, tolerances.

Pure Python (no numpy, no torch), so the dry run on a machine without a GPU checks it too.
Every contender in one case runs on the same tensors; this module only describes the cases.
"""

import math

# ---------------------------------------------------------------------------- tolerances

# Spec section 0: rel L2 error against the float64 evaluation of the same rounded inputs.
SPEC_TOL = {"f32": 1e-5, "f16": 3e-3, "bf16": 1.5e-2}


def spec_tol(dtype, op="attention"):
    """The spec's bound for one implementation against the exact result."""
    t = SPEC_TOL[dtype]
    return 2 * t if op == "diff_attention" else t


def cross_tol(dtype, op="attention"):
    """Bound for a contender against OUR output: both may sit `spec_tol` from the exact
    result, so by the triangle inequality they may differ by twice that."""
    return 2 * spec_tol(dtype, op)


# ---------------------------------------------------------------------------- ALiBi

def alibi_slopes(n):
    """Press et al.'s slopes for n heads (spec section 1), as Python floats."""

    def pow2_series(c):
        return [2.0 ** (-8.0 * h / c) for h in range(1, c + 1)]

    c = 2 ** int(math.floor(math.log2(n)))
    slopes = pow2_series(c)
    if c < n:
        # every other slope of the 2c series: 2^(-4(2k-1)/c), k = 1..n-c
        slopes += [2.0 ** (-4.0 * (2 * k - 1) / c) for k in range(1, n - c + 1)]
    return slopes


# ---------------------------------------------------------------------------- RoPE

def rope_config(head_dim, theta=10000.0, max_pos=131072):
    """A plain (Llama-2 style) RoPE config in the spec's JSON form: full rotary dim, NeoX layout."""
    return {
        "rotary_dim": head_dim,
        "theta": theta,
        "interleaved": False,
        "max_position_embeddings": max_pos,
        "scaling": None,
    }


def rope_inv_freq(rotary_dim, theta):
    """Base frequencies t_i = theta^(-2i/d) (no scaling), as Python floats."""
    return [theta ** (-2.0 * i / rotary_dim) for i in range(rotary_dim // 2)]


# ---------------------------------------------------------------------------- attention shapes

def attention_shape(seqlen, head_dim, tokens=16384, hidden=2048, causal=False, hkv=None):
    """batch * seqlen = tokens, heads * head_dim = hidden (the FlashAttention benchmark convention)."""
    heads = hidden // head_dim
    return {
        "B": max(1, tokens // seqlen),
        "S": seqlen,
        "H": heads,
        "Hkv": hkv or heads,
        "D": head_dim,
        "causal": causal,
    }


def shape_label(p):
    keys = [k for k in ("B", "S", "T", "L", "H", "Hkv", "D", "d", "K", "V") if k in p]
    s = " ".join(f"{k}={p[k]}" for k in keys)
    if "family" in p:
        s = f"{p['family']} {s}"
    if "causal" in p:
        s += " causal" if p["causal"] else " full"
    return s


def attention_flops(p, d_qk=None, d_v=None):
    """Forward FLOPs of softmax attention: 2*S*S*D for QK^T plus 2*S*S*Dv for PV, per (batch, head);
    causal counts half (the FlashAttention benchmark convention)."""
    d_qk = d_qk or p["D"]
    d_v = d_v or p["D"]
    f = 2.0 * p["B"] * p["H"] * p["S"] * p["S"] * (d_qk + d_v)
    return f / 2 if p["causal"] else f


def attention_bytes(p, elt=2):
    """Fewest bytes: q, k, v read once, o written once."""
    return elt * p["B"] * p["S"] * (2 * p["H"] * p["D"] + 2 * p["Hkv"] * p["D"])


def plain_attention_plan(quick=False):
    seqlens = [1024, 4096] if quick else [1024, 2048, 4096, 8192, 16384]
    dims = [128] if quick else [64, 128]
    tokens = 4096 if quick else 16384
    out = []
    for d in dims:
        for causal in (False, True):
            for s in seqlens:
                if s > tokens:
                    continue
                out.append(attention_shape(s, d, tokens=tokens, causal=causal))
    return out


def feature_plan(quick=False, causal_both=True):
    """Shapes for the ALiBi / RoPE sections: head dim 128, a few sequence lengths."""
    seqlens = [1024, 4096] if quick else [1024, 4096, 16384]
    tokens = 4096 if quick else 16384
    causals = (False, True) if causal_both else (True,)
    return [attention_shape(s, 128, tokens=tokens, causal=c) for c in causals for s in seqlens]


# ---------------------------------------------------------------------------- configs (spec section 5)

def attention_config(p, rope=None):
    cfg = {"op": "attention", "causal": bool(p["causal"])}
    if rope is not None:
        cfg["rope"] = rope
    return cfg


def rope_op_config(rope, position_offset=0):
    """Config of the standalone `rope` op: the RoPE dict under `rope` (as in fused attention)."""
    return {"op": "rope", "rope": dict(rope), "position_offset": position_offset}


# ---------------------------------------------------------------------------- differential attention

def diff_lambda_init(layer_index):
    """The paper's lambda_init for a 0-based layer index."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


def diff_shape(seqlen, tokens=16384, hidden=2048, half_dim=64, causal=True):
    """Official layout for hidden 2048: H = hidden / (2 d) heads of two d-wide halves."""
    heads = hidden // (2 * half_dim)
    return {"B": max(1, tokens // seqlen), "S": seqlen, "H": heads, "Hkv": heads, "d": half_dim,
            "causal": causal}


def diff_plan(quick=False):
    seqlens = [1024, 4096] if quick else [1024, 4096, 16384]
    tokens = 4096 if quick else 16384
    return [diff_shape(s, tokens=tokens) for s in seqlens]


def diff_config(p, lambda_init, eps=1e-5):
    return {"op": "diff_attention", "variant": "v1", "causal": bool(p["causal"]),
            "lambda_init": lambda_init, "eps": eps}


def diff_flops(p):
    """Two attentions of (d-wide QK, 2d-wide V) per head."""
    q = dict(p, D=p["d"])
    return 2 * attention_flops(q, d_qk=p["d"], d_v=2 * p["d"])


# ---------------------------------------------------------------------------- decode

def decode_plan(quick=False):
    """Llama-3-8B-like heads (32 query, 8 kv, D 128); all cache lengths equal so that SDPA
    can run the same problem."""
    pairs = [(8, 2048)] if quick else [(1, 32768), (8, 8192), (32, 4096), (64, 4096)]
    return [{"B": b, "L": l, "H": 32, "Hkv": 8, "D": 128} for b, l in pairs]


def decode_config(op_name="decode_attention"):
    return {"op": op_name}


def decode_bytes(p, elt=2):
    """K and V of the valid cache rows read once, q read and o written once."""
    kv = 2 * p["B"] * p["L"] * p["Hkv"] * p["D"] * elt
    qo = 2 * p["B"] * p["H"] * p["D"] * elt
    return kv + qo


def decode_flops(p):
    return 4.0 * p["B"] * p["H"] * p["L"] * p["D"]


# ---------------------------------------------------------------------------- linear recurrences

LINEAR_FAMILIES = ("gla", "simple_gla", "rwkv6", "rwkv7")


def linear_plan(quick=False):
    """batch * T = 16k tokens, heads * K = 2048 (K = V)."""
    if quick:
        return [{"B": 2, "T": 1024, "H": 8, "K": 64, "V": 64}]
    return [{"B": 8, "T": 2048, "H": 32, "K": 64, "V": 64},
            {"B": 8, "T": 2048, "H": 16, "K": 128, "V": 128}]


def linear_case(family, p):
    """Our op name, its config and the input tensors it takes (name -> (shape, kind)),
    kind being 'act' (activation dtype) or 'f32'."""
    B, T, H, K, V = p["B"], p["T"], p["H"], p["K"], p["V"]
    t = {"q": ([B, T, H, K], "act"), "k": ([B, T, H, K], "act"), "v": ([B, T, H, V], "act")}
    if family == "gla":
        t["g"] = ([B, T, H, K], "f32")
        return "linear_attention", {"op": "linear_attention", "scale": K ** -0.5}, t
    if family == "simple_gla":
        t["g"] = ([B, T, H], "f32")
        return "linear_attention", {"op": "linear_attention", "scale": K ** -0.5}, t
    if family == "rwkv6":
        t["g"] = ([B, T, H, K], "f32")
        t["u"] = ([H, K], "f32")
        return "linear_attention", {"op": "linear_attention", "scale": 1.0}, t
    if family == "rwkv7":
        t["g"] = ([B, T, H, K], "f32")
        t["a"] = ([B, T, H, K], "act")
        t["b"] = ([B, T, H, K], "act")
        return "delta_rule", {"op": "delta_rule", "scale": 1.0}, t
    raise ValueError(family)


def linear_bytes(family, p, act=2):
    """Inputs read once, o and the f32 final state written once."""
    _, _, tensors = linear_case(family, p)
    n = 0
    for shape, kind in tensors.values():
        n += math.prod(shape) * (4 if kind == "f32" else act)
    n += p["B"] * p["T"] * p["H"] * p["V"] * act  # o
    n += p["B"] * p["H"] * p["K"] * p["V"] * 4  # final_state
    return n


def linear_flops(family, p):
    """Recurrent-form FLOPs: state decay+update (3 K V) and readout (2 K V) per step and head;
    the delta rule adds a^T S and b (a^T S) (4 K V)."""
    per = 5.0 if family != "rwkv7" else 9.0
    return per * p["B"] * p["T"] * p["H"] * p["K"] * p["V"]
