"""The measured run: every section on the GPU, through torch. Imported only by the real run.

Per case: draw inputs once on the GPU (bf16 activations from randn, seeded from the clock), write
them to a case file for our CLI, run ours (`run` for the output, `bench` for the time), then each
peer on the very same tensors: one call for its output, check it against ours (or against an
fp32/f64 reference where ours has no answer), and only then time it.
"""

import gc
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

import cases as C
from ours import OursError

DEV = "cuda"
ACT = torch.bfloat16
ACT_NAME = "bf16"


class SkipSection(Exception):
    pass


# ---------------------------------------------------------------------------- timing

class PeerTimer:
    """Median of CUDA-event times with the L2 flushed before each call: triton.testing.do_bench
    when Triton is there, else the same procedure by hand."""

    def __init__(self, warmup_ms=25, rep_ms=200):
        self.warmup_ms = warmup_ms
        self.rep_ms = rep_ms
        try:
            from triton.testing import do_bench

            self._do_bench = do_bench
            self.name = f"triton.testing.do_bench (L2 flushed, warm-up {warmup_ms} ms, {rep_ms} ms of reps, median)"
        except Exception:  # noqa: BLE001
            self._do_bench = None
            self.name = "torch.cuda.Event loop (L2 flushed by a 256 MB write, 5 warm-up, >=20 reps, median)"
        self._flush = None

    def __call__(self, fn):
        if self._do_bench is not None:
            try:
                times = self._do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="all")
            except (TypeError, ValueError, AssertionError):
                t = self._do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median")
                return float(t), float(t), None
            times = [float(t) for t in times]
            return statistics.median(times), min(times), len(times)
        if self._flush is None:
            self._flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=DEV)
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        times = []
        t_end = time.perf_counter() + self.rep_ms * 1e-3
        while len(times) < 20 or time.perf_counter() < t_end:
            self._flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
            if len(times) >= 1000:
                break
        return statistics.median(times), min(times), len(times)


# ---------------------------------------------------------------------------- helpers

def rel_err(x, ref):
    """||x - ref|| / ||ref|| in float64; nan when x has a non-finite element or shapes differ."""
    if x is None or ref is None:
        return float("nan")
    x = x.reshape(-1)
    ref = ref.reshape(-1)
    if x.numel() != ref.numel():
        return float("nan")
    xd, rd = x.double(), ref.double()
    if not bool(torch.isfinite(xd).all()):
        return float("nan")
    n = torch.linalg.vector_norm(rd).item()
    d = torch.linalg.vector_norm(xd - rd).item()
    return d / n if n > 0 else (0.0 if d == 0 else float("inf"))


def first_line(e):
    s = str(e).strip().splitlines()
    s = s[0] if s else type(e).__name__
    return (type(e).__name__ + ": " + s)[:240]


def is_unsupported(e):
    t = str(e).lower()
    return any(w in t for w in ("no available kernel", "not supported", "unsupported", "not implemented",
                                "no kernel", "only supports", "is not supported"))


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    out = [("sdpa-flash", SDPBackend.FLASH_ATTENTION)]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        out.append(("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION))
    out.append(("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION))
    return out


def sdpa_ctx(backend):
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backend)


def bhsd(x):
    """BSHD -> BHSD view (no copy): what an engine holding BSHD activations passes to SDPA."""
    return x.transpose(1, 2)


def free():
    gc.collect()
    torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the run

class Run:
    def __init__(self, ours, args, log=print):
        self.ours = ours
        self.args = args
        self.log = log
        self.rows = []
        self.skipped = []
        self.timer = PeerTimer(args.warmup_ms, args.rep_ms)
        self.ceilings = {}
        self.tmp = tempfile.mkdtemp(prefix="attn-compare-", dir=args.tmpdir)
        self.notes = {}
        self.t_start = time.time()
        self.on_progress = None
        self._last_save = 0.0

    def check_budget(self):
        """Stop starting new cases once --budget-s is spent, so a run always ends with its files."""
        if self.args.budget_s and time.time() - self.t_start > self.args.budget_s:
            raise SkipSection(f"time budget of {self.args.budget_s} s spent before this case (run the section "
                              f"on its own with --sections)")

    # -- bookkeeping

    def add(self, row):
        self.rows.append(row)
        if self.on_progress and time.time() - self._last_save > 15:
            self._last_save = time.time()
            self.on_progress()
        t = row.get("time_ms")
        err = row.get("err")
        self.log(f"    {row['contender']:<34} {row['status']:<12} "
                 f"{'-' if t is None else f'{t:.4f} ms':>12}  err={'-' if err is None else f'{err:.2e}'}"
                 f"{'  ' + row['note'] if row.get('note') else ''}")
        return row

    def row(self, section, p, contender, metric, work, **kw):
        r = {"section": section, "case": C.shape_label(p), "params": dict(p), "contender": contender,
             "metric": metric, "status": "error", "time_ms": None, "min_ms": None, "err": None, "ref": None,
             "tol": None, "note": ""}
        r["flops" if metric == "TFLOP/s" else "bytes"] = work
        r.update(kw)
        return r

    def case_path(self, name):
        return os.path.join(self.tmp, name)

    # -- ours

    def write_case(self, path, config, tensors):
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path,
                  metadata={"config": json.dumps(config)})

    def ours_outputs(self, config, tensors, tag):
        """Run one case through our CLI. Returns (output tensors on the GPU, path of the case file,
        which the caller benches and then removes). Raises OursError (the case file is then gone)."""
        from safetensors.torch import load_file

        cpath, opath = self.case_path(tag + ".in.safetensors"), self.case_path(tag + ".out.safetensors")
        self.write_case(cpath, config, tensors)
        try:
            self.ours.run(cpath, opath)
            out = load_file(opath)
            return {k: v.to(DEV) for k, v in out.items()}, cpath
        except BaseException:
            if os.path.exists(cpath):
                os.remove(cpath)
            raise
        finally:
            if os.path.exists(opath):
                os.remove(opath)

    def ours_row(self, section, p, config, tensors, metric, work, out_name="o", ref=None, ref_tol=None,
                 contender="ours", baseline=True):
        """Our output and time for one case. Returns (row, outputs): outputs only when they exist and
        passed the reference check (or there was none), so that peers may be checked against them.
        Raises SkipSection when the CLI does not know the op or the subcommand."""
        r = self.row(section, p, contender, metric, work, peer=False, baseline=baseline)
        tag = f"{section}-{len(self.rows)}"
        outs, cpath, trusted = None, None, False
        try:
            outs, cpath = self.ours_outputs(config, tensors, tag)
            if out_name not in outs:
                names = ", ".join(sorted(outs))
                outs = None
                raise OursError("failed", f"output has no tensor `{out_name}` (has: {names})")
            if ref is not None:
                r["err"] = rel_err(outs[out_name], ref)
                r["ref"] = "fp32" if ref.dtype == torch.float32 else "f64"
                r["tol"] = ref_tol
                trusted = r["err"] == r["err"] and r["err"] <= ref_tol
                r["status"] = "ok" if trusted else "WRONG"
                if not trusted:
                    r["note"] = "OUR OUTPUT FAILS THE REFERENCE CHECK"
            else:
                trusted = True
                r["status"] = "noref"
            b = self.ours.bench(cpath)
            r["time_ms"] = float(b["median_ms"])
            r["min_ms"] = float(b.get("min_ms", b["median_ms"]))
            r["bench"] = {k: v for k, v in b.items() if k != "times_ms"}
        except OursError as e:
            if e.kind == "unknown":
                raise SkipSection(f"our CLI does not know this op or subcommand: {e.message}")
            if e.kind == "unsupported" and ("`device`" in e.message or "not compiled" in e.message):
                raise SkipSection(f"our op has no CUDA path in this build: {e.message}")
            r["time_ms"] = None
            if outs is None:
                r["status"] = "unsupported" if e.kind == "unsupported" else "error"
                r["note"] = e.message[:300]
            else:  # `run` worked, `bench` did not: keep the output (if trusted) for checking peers
                r["status"] = "error"
                r["note"] = ((r["note"] + "; ") if r["note"] else "") + "bench: " + e.message[:300]
        finally:
            if cpath and os.path.exists(cpath):
                os.remove(cpath)
        self.add(r)
        return r, (outs if trusted else None)

    # -- peers

    def peer_row(self, section, p, name, fn, check, tol, metric, work, extract=None, check_name="ours",
                 peer=True, note=""):
        """Run a peer once, check its output, then time it. `check` is what it must match (ours, or a
        reference when ours has no answer); None leaves it unchecked but timed."""
        r = self.row(section, p, name, metric, work, peer=peer, note=note)
        caught = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn()
                torch.cuda.synchronize()
            y = extract(out) if extract else out
        except Exception as e:  # noqa: BLE001 - a peer that raises is a recorded result
            r["status"] = "unsupported" if is_unsupported(e) else "error"
            why = [(str(w.message).strip().splitlines() or [""])[0] for w in caught]
            r["note"] = (note + "; " if note else "") + first_line(e) + ("; " + " / ".join(why[:3]) if why else "")
            r["note"] = r["note"][:400]
            free()
            return self.add(r)
        if check is not None:
            errs = [rel_err(a, b) for a, b in zip(y, check)] if isinstance(check, (list, tuple)) else [rel_err(y, check)]
            r["err"] = max(errs, key=lambda e: float("inf") if e != e else e)
            if len(errs) > 1:
                r["errs"] = errs
            r["ref"] = check_name
            r["tol"] = tol
            if not (r["err"] == r["err"] and r["err"] <= tol):
                r["status"] = "mismatch"
                del out, y
                free()
                return self.add(r)
            r["status"] = "ok"
        else:
            r["status"] = "unchecked"
            r["note"] = (note + "; " if note else "") + "nothing to check against"
        del out, y
        try:
            r["time_ms"], r["min_ms"], r["reps"] = self.timer(fn)
        except Exception as e:  # noqa: BLE001
            r["status"] = "error"
            r["note"] = (note + "; " if note else "") + "timing: " + first_line(e)
            r["time_ms"] = None
        free()
        return self.add(r)

    @staticmethod
    def pick_check(ours_out, ref, tol_cross, tol_ref, ref_name="fp32"):
        """What peers are checked against: our output when it exists and passed its own check,
        else the reference, else nothing."""
        if ours_out is not None:
            return ours_out, tol_cross, "ours"
        if ref is not None:
            return ref, tol_ref, ref_name
        return None, None, None

    # ------------------------------------------------------------------------ ceilings

    def ceilings_section(self):
        n = (256 if self.args.quick else 1024) * 1024 * 1024  # bf16 elements: 512 MiB or 2 GiB
        src = torch.randn(n, dtype=ACT, device=DEV)
        dst = torch.empty_like(src)
        t, tmin, _ = self.timer(lambda: dst.copy_(src))
        self.ceilings["copy_gbs"] = 2 * n * 2 / (t * 1e-3) / 1e9
        self.ceilings["copy_bytes"] = 2 * n * 2
        self.ceilings["copy_ms"] = t
        del src, dst
        free()
        m = 8192
        a = torch.randn(m, m, dtype=ACT, device=DEV)
        b = torch.randn(m, m, dtype=ACT, device=DEV)
        c = torch.empty(m, m, dtype=ACT, device=DEV)
        t, tmin, _ = self.timer(lambda: torch.mm(a, b, out=c))
        self.ceilings["matmul_tflops"] = 2 * m ** 3 / (t * 1e-3) / 1e12
        self.ceilings["matmul_ms"] = t
        del a, b, c
        free()
        self.log(f"  copy {self.ceilings['copy_gbs']:.0f} GB/s, bf16 matmul {self.ceilings['matmul_tflops']:.0f} TFLOP/s")

    # ------------------------------------------------------------------------ plain attention

    def attention_ref(self, q, k, v, causal, mask=None):
        """fp32 reference through SDPA's memory-efficient kernel on upcast inputs."""
        from torch.nn.attention import SDPBackend

        try:
            with sdpa_ctx(SDPBackend.EFFICIENT_ATTENTION):
                o = F.scaled_dot_product_attention(bhsd(q.float()), bhsd(k.float()), bhsd(v.float()),
                                                   attn_mask=mask, is_causal=causal and mask is None)
            return bhsd(o).contiguous()
        except Exception as e:  # noqa: BLE001
            self.log(f"    (no fp32 reference: {first_line(e)})")
            return None

    def attention_section(self):
        tol_ref, tol_cross = C.spec_tol(ACT_NAME), C.cross_tol(ACT_NAME)
        for p in C.plain_attention_plan(self.args.quick):
            self.check_budget()
            self.log(f"  attention {C.shape_label(p)}")
            B, S, H, D = p["B"], p["S"], p["H"], p["D"]
            q, k, v = (torch.randn(B, S, H, D, dtype=ACT, device=DEV) for _ in range(3))
            flops = C.attention_flops(p)
            ref = self.attention_ref(q, k, v, p["causal"])
            orow, oout = self.ours_row("attention", p, C.attention_config(p), {"q": q, "k": k, "v": v},
                                       "TFLOP/s", flops, ref=ref, ref_tol=tol_ref)
            chk, tol, cname = self.pick_check(oout and oout["o"], ref, tol_cross, tol_ref)
            for name, backend in sdpa_backends():
                with sdpa_ctx(backend):
                    self.peer_row("attention", p, name,
                                  lambda: F.scaled_dot_product_attention(bhsd(q), bhsd(k), bhsd(v), is_causal=p["causal"]),
                                  chk, tol, "TFLOP/s", flops, extract=bhsd, check_name=cname)
            del q, k, v, ref, oout, chk
            free()

    # ------------------------------------------------------------------------ ALiBi

    def alibi_mask(self, slopes, S, causal, dtype):
        """The engine way: a dense [1, H, S, S] additive bias -m_h |i - j| (-inf above the diagonal
        when causal), built head by head to bound the temporary."""
        H = slopes.numel()
        idx = torch.arange(S, device=DEV, dtype=torch.float32)
        dist = (idx[None, :] - idx[:, None]).abs_()
        m = torch.empty(1, H, S, S, dtype=dtype, device=DEV)
        for h in range(H):
            m[0, h] = dist * (-slopes[h].item())
        del dist
        if causal:
            upper = torch.ones(S, S, dtype=torch.bool, device=DEV).triu_(1)
            m.masked_fill_(upper, float("-inf"))
            del upper
        return m

    def alibi_section(self):
        tol_ref, tol_cross = C.spec_tol(ACT_NAME), C.cross_tol(ACT_NAME)
        cap = self.args.mask_gib * 2 ** 30
        for p in C.feature_plan(self.args.quick):
            self.check_budget()
            self.log(f"  alibi {C.shape_label(p)}")
            B, S, H, D = p["B"], p["S"], p["H"], p["D"]
            q, k, v = (torch.randn(B, S, H, D, dtype=ACT, device=DEV) for _ in range(3))
            slopes = torch.tensor(C.alibi_slopes(H), dtype=torch.float32, device=DEV)
            flops = C.attention_flops(p)
            ref = None
            if H * S * S * 4 <= cap:
                m32 = self.alibi_mask(slopes, S, p["causal"], torch.float32)
                ref = self.attention_ref(q, k, v, p["causal"], mask=m32)
                del m32
                free()
            orow, oout = self.ours_row("alibi", p, C.attention_config(p),
                                       {"q": q, "k": k, "v": v, "alibi_slopes": slopes},
                                       "TFLOP/s", flops, ref=ref, ref_tol=tol_ref)
            self.ours_row("alibi", p, C.attention_config(p), {"q": q, "k": k, "v": v}, "TFLOP/s", flops,
                          contender="ours (no ALiBi)", baseline=False)
            chk, tol, cname = self.pick_check(oout and oout["o"], ref, tol_cross, tol_ref)
            if H * S * S * 2 > cap:
                for name, _ in sdpa_backends():
                    self.add(self.row("alibi", p, name + " +bf16 mask", "TFLOP/s", flops, status="skipped",
                                      note=f"mask of {H * S * S * 2 / 2**30:.1f} GiB over --mask-gib"))
            else:
                mask = self.alibi_mask(slopes, S, p["causal"], ACT)
                for name, backend in sdpa_backends():
                    with sdpa_ctx(backend):
                        self.peer_row("alibi", p, name + " +bf16 mask",
                                      lambda: F.scaled_dot_product_attention(bhsd(q), bhsd(k), bhsd(v), attn_mask=mask),
                                      chk, tol, "TFLOP/s", flops, extract=bhsd, check_name=cname,
                                      note="dense [1,H,S,S] bias, built outside the timing")
                del mask
            del q, k, v, ref, oout, chk
            free()

    # ------------------------------------------------------------------------ RoPE

    def rope_tables(self, S, D, theta):
        """HF transformers' way: inv_freq and positions in f32, cos/sin cast to the activation dtype."""
        inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64, device=DEV).float() / D))
        pos = torch.arange(S, device=DEV, dtype=torch.float32)
        freqs = pos[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(ACT)[None, :, None, :], emb.sin().to(ACT)[None, :, None, :]

    @staticmethod
    def rotate_hf(x, cos, sin):
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def rope_exact(self, x, theta):
        """Exact (f64 angles) NeoX rotation of all D dims, positions = row index (the spec's P(i) for
        Sq = Sk, and j for keys)."""
        S, D = x.shape[1], x.shape[-1]
        inv = torch.tensor(C.rope_inv_freq(D, theta), dtype=torch.float64, device=DEV)
        ang = torch.arange(S, dtype=torch.float64, device=DEV)[:, None] * inv[None, :]
        c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
        xd = x.double()
        x1, x2 = xd[..., : D // 2], xd[..., D // 2:]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    def ours_rope_op(self, rope, x, tag):
        """Our standalone rope op on x: (output y, median ms)."""
        outs, cpath = self.ours_outputs(C.rope_op_config(rope), {"x": x}, tag)
        try:
            if "y" not in outs:
                raise OursError("failed", f"rope output has no `y` (has {', '.join(sorted(outs))})")
            b = self.ours.bench(cpath)
        finally:
            os.remove(cpath)
        return outs["y"], float(b["median_ms"])

    def rope_section(self):
        tol_ref, tol_cross = C.spec_tol(ACT_NAME), C.cross_tol(ACT_NAME)
        theta = 10000.0
        for p in C.feature_plan(self.args.quick, causal_both=False):
            self.check_budget()
            self.log(f"  rope {C.shape_label(p)}")
            B, S, H, D = p["B"], p["S"], p["H"], p["D"]
            rope = C.rope_config(D, theta)
            q, k, v = (torch.randn(B, S, H, D, dtype=ACT, device=DEV) for _ in range(3))
            flops = C.attention_flops(p)
            qr, kr = self.rope_exact(q, theta).float(), self.rope_exact(k, theta).float()
            ref = self.attention_ref(qr, kr, v, p["causal"])
            del qr, kr
            orow, oout = self.ours_row("rope", p, C.attention_config(p, rope), {"q": q, "k": k, "v": v},
                                       "TFLOP/s", flops, ref=ref, ref_tol=tol_ref, contender="ours (fused RoPE)")
            self.ours_row("rope", p, C.attention_config(p), {"q": q, "k": k, "v": v}, "TFLOP/s", flops,
                          contender="ours (no RoPE)", baseline=False)
            chk, tol, cname = self.pick_check(oout and oout["o"], ref, tol_cross, tol_ref)
            # ours, unfused: rope op on q, rope op on k, then attention without RoPE
            r = self.row("rope", p, "ours rope op x2 + ours attention", "TFLOP/s", flops, peer=False)
            try:
                yq, tq = self.ours_rope_op(rope, q, f"rope-q-{len(self.rows)}")
                yk, tk = self.ours_rope_op(rope, k, f"rope-k-{len(self.rows)}")
                cfg = C.attention_config(p)
                outs, cpath = self.ours_outputs(cfg, {"q": yq, "k": yk, "v": v}, f"rope-attn-{len(self.rows)}")
                try:
                    b = self.ours.bench(cpath)
                finally:
                    os.remove(cpath)
                ta = float(b["median_ms"])
                if chk is not None:
                    r["err"], r["ref"], r["tol"] = rel_err(outs["o"], chk), cname, tol
                    r["status"] = "ok" if (r["err"] == r["err"] and r["err"] <= tol) else "mismatch"
                else:
                    r["status"] = "unchecked"
                if r["status"] != "mismatch":
                    r["time_ms"] = tq + tk + ta
                r["note"] = f"rope(q) {tq:.4f} + rope(k) {tk:.4f} + attention {ta:.4f} ms (medians, separate processes)"
                del yq, yk, outs
            except OursError as e:
                r["status"] = "unsupported" if e.kind in ("unknown", "unsupported") else "error"
                r["note"] = e.message[:300]
            self.add(r)
            cos, sin = self.rope_tables(S, D, theta)

            def torch_unfused():
                qq, kk = self.rotate_hf(q, cos, sin), self.rotate_hf(k, cos, sin)
                return F.scaled_dot_product_attention(bhsd(qq), bhsd(kk), bhsd(v), is_causal=p["causal"])

            self.peer_row("rope", p, "torch rotate (HF) + SDPA default", torch_unfused, chk, tol, "TFLOP/s", flops,
                          extract=bhsd, check_name=cname, note="cos/sin tables built outside the timing")
            for name, backend in sdpa_backends():
                with sdpa_ctx(backend):
                    self.peer_row("rope", p, f"torch rotate (HF) + {name}", torch_unfused, chk, tol, "TFLOP/s",
                                  flops, extract=bhsd, check_name=cname)
            del q, k, v, ref, oout, chk, cos, sin
            free()

    # ------------------------------------------------------------------------ differential attention

    @staticmethod
    def diff_tail(a1, a2, lam, weight, lambda_init, eps, dtype):
        """After the two attentions ([B, H, S, 2d] each): subtract, RMSNorm, scale, in f32."""
        H = a1.shape[1]
        o = a1.float() - lam.view(1, H, 1, 1) * a2.float()
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps)
        o = o * weight * (1.0 - lambda_init)
        return o.to(dtype)

    def diff_two_call(self, q, k, v, lam, weight, lambda_init, eps, causal):
        """The official recipe (Diff-Transformer multihead_flashdiff_1): two attentions with 2d-wide V."""
        B, S, H2, d = q.shape
        H, Hkv = H2 // 2, k.shape[2] // 2
        q5, k5 = q.view(B, S, H, 2, d), k.view(B, -1, Hkv, 2, d)
        q1, q2 = bhsd(q5[:, :, :, 0]), bhsd(q5[:, :, :, 1])
        k1, k2 = bhsd(k5[:, :, :, 0]), bhsd(k5[:, :, :, 1])
        vt = bhsd(v)
        a1 = F.scaled_dot_product_attention(q1, k1, vt, is_causal=causal)
        a2 = F.scaled_dot_product_attention(q2, k2, vt, is_causal=causal)
        return self.diff_tail(a1, a2, lam, weight, lambda_init, eps, q.dtype)

    def diff_four_call(self, q, k, v, lam, weight, lambda_init, eps, causal):
        """The four-call recipe (vLLM's differential flash attention): V split in two d-wide halves."""
        B, S, H2, d = q.shape
        H, Hkv = H2 // 2, k.shape[2] // 2
        q5, k5 = q.view(B, S, H, 2, d), k.view(B, -1, Hkv, 2, d)
        q1, q2 = bhsd(q5[:, :, :, 0]), bhsd(q5[:, :, :, 1])
        k1, k2 = bhsd(k5[:, :, :, 0]), bhsd(k5[:, :, :, 1])
        v1, v2 = bhsd(v[..., :d]), bhsd(v[..., d:])
        sd = F.scaled_dot_product_attention
        a1 = torch.cat([sd(q1, k1, v1, is_causal=causal), sd(q1, k1, v2, is_causal=causal)], dim=-1)
        a2 = torch.cat([sd(q2, k2, v1, is_causal=causal), sd(q2, k2, v2, is_causal=causal)], dim=-1)
        return self.diff_tail(a1, a2, lam, weight, lambda_init, eps, q.dtype)

    def diff_section(self):
        from torch.nn.attention import SDPBackend

        tol_ref, tol_cross = C.spec_tol(ACT_NAME, "diff_attention"), C.cross_tol(ACT_NAME, "diff_attention")
        lambda_init, eps = C.diff_lambda_init(12), 1e-5
        for p in C.diff_plan(self.args.quick):
            self.check_budget()
            self.log(f"  diff_attention {C.shape_label(p)}")
            B, S, H, d = p["B"], p["S"], p["H"], p["d"]
            q = torch.randn(B, S, 2 * H, d, dtype=ACT, device=DEV)
            k = torch.randn(B, S, 2 * H, d, dtype=ACT, device=DEV)
            v = torch.randn(B, S, H, 2 * d, dtype=ACT, device=DEV)
            lam = (lambda_init + 0.05 * torch.randn(H, device=DEV)).float()
            weight = (1.0 + 0.1 * torch.randn(2 * d, device=DEV)).float()
            flops = C.diff_flops(p)
            ref = None
            try:
                with sdpa_ctx(SDPBackend.EFFICIENT_ATTENTION):
                    ref = bhsd(self.diff_two_call(q.float(), k.float(), v.float(), lam, weight, lambda_init, eps,
                                                  p["causal"])).contiguous()
            except Exception as e:  # noqa: BLE001
                self.log(f"    (no fp32 reference: {first_line(e)})")
            orow, oout = self.ours_row("diff_attention", p, C.diff_config(p, lambda_init, eps),
                                       {"q": q, "k": k, "v": v, "lambda": lam, "norm_weight": weight},
                                       "TFLOP/s", flops, ref=ref, ref_tol=tol_ref)
            chk, tol, cname = self.pick_check(oout and oout["o"], ref, tol_cross, tol_ref)
            for recipe, fn in (("official 2-call", self.diff_two_call), ("4-call (vLLM)", self.diff_four_call)):
                for name, backend in sdpa_backends():
                    with sdpa_ctx(backend):
                        self.peer_row("diff_attention", p, f"{recipe} {name}",
                                      lambda: fn(q, k, v, lam, weight, lambda_init, eps, p["causal"]),
                                      chk, tol, "TFLOP/s", flops, extract=bhsd, check_name=cname)
            del q, k, v, ref, oout, chk
            free()

    # ------------------------------------------------------------------------ decode

    def decode_section(self):
        tol_ref, tol_cross = C.spec_tol(ACT_NAME), C.cross_tol(ACT_NAME)
        for p in C.decode_plan(self.args.quick):
            self.check_budget()
            self.log(f"  decode {C.shape_label(p)}")
            B, L, H, Hkv, D = p["B"], p["L"], p["H"], p["Hkv"], p["D"]
            q = torch.randn(B, 1, H, D, dtype=ACT, device=DEV)
            kc = torch.randn(B, L, Hkv, D, dtype=ACT, device=DEV)
            vc = torch.randn(B, L, Hkv, D, dtype=ACT, device=DEV)
            lens = torch.full((B,), L, dtype=torch.int32, device=DEV)
            nbytes = C.decode_bytes(p)
            # fp32 reference, a few sequences at a time (expanded KV)
            ref = torch.empty(B, 1, H, D, dtype=torch.float32, device=DEV)
            g = H // Hkv
            for b0 in range(0, B, 4):
                sl = slice(b0, min(B, b0 + 4))
                kk = kc[sl].float().repeat_interleave(g, dim=2)
                vv = vc[sl].float().repeat_interleave(g, dim=2)
                s = torch.einsum("bqhd,bkhd->bhqk", q[sl].float(), kk) / math.sqrt(D)
                ref[sl] = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), vv)
                del kk, vv, s
            orow, oout = self.ours_row("decode", p, C.decode_config(self.args.decode_op),
                                       {"q": q, "k_cache": kc, "v_cache": vc, "cache_seqlens": lens},
                                       "GB/s", nbytes, ref=ref, ref_tol=tol_ref)
            chk, tol, cname = self.pick_check(oout and oout["o"], ref, tol_cross, tol_ref)
            for name, backend in sdpa_backends():
                with sdpa_ctx(backend):
                    self.peer_row("decode", p, name + " (enable_gqa)",
                                  lambda: F.scaled_dot_product_attention(bhsd(q), bhsd(kc), bhsd(vc), enable_gqa=True),
                                  chk, tol, "GB/s", nbytes, extract=bhsd, check_name=cname,
                                  note="all cache lengths equal, dense cache")
            del q, kc, vc, lens, ref, oout, chk
            free()

    # ------------------------------------------------------------------------ linear recurrences

    def linear_inputs(self, family, p):
        """Inputs in the spec's parameterisation, drawn the way each model family makes them."""
        B, T, H, K, V = p["B"], p["T"], p["H"], p["K"], p["V"]
        _, cfg, spec = C.linear_case(family, p)
        q = torch.randn(B, T, H, K, dtype=ACT, device=DEV)
        k = torch.randn(B, T, H, K, dtype=ACT, device=DEV)
        v = torch.randn(B, T, H, V, dtype=ACT, device=DEV)
        t = {"q": q, "k": k, "v": v}
        if family == "gla":  # GLA layer: logsigmoid(x) / 16 per key channel
            t["g"] = F.logsigmoid(torch.randn(B, T, H, K, device=DEV)) / 16
        elif family == "simple_gla":  # one gate per head and step
            t["g"] = F.logsigmoid(torch.randn(B, T, H, device=DEV)) / 16
        elif family == "rwkv6":  # w = exp(-exp(x)) -> g = -exp(x)
            t["g"] = -torch.exp(-2.5 + torch.randn(B, T, H, K, device=DEV))
            t["u"] = 0.5 * torch.randn(H, K, device=DEV)
        elif family == "rwkv7":  # g = -0.6065 sigmoid(x); a = -kk, b = kk * alpha with kk unit per head
            t["g"] = -0.6065306597126334 * torch.sigmoid(torch.randn(B, T, H, K, device=DEV))
            kk = F.normalize(torch.randn(B, T, H, K, device=DEV), dim=-1)
            alpha = torch.sigmoid(torch.randn(B, T, H, K, device=DEV))
            t["a"] = (-kk).to(ACT)
            t["b"] = (kk * alpha).to(ACT)
        for name, (shape, kind) in spec.items():
            assert list(t[name].shape) == shape, (name, t[name].shape, shape)
            t[name] = t[name].to(torch.float32 if kind == "f32" else ACT).contiguous()
        return cfg, t

    @staticmethod
    def linear_ref(family, t, scale):
        """Float64 recurrence straight from spec section 4 (step by step; independent of both contenders)."""
        q, k, v = t["q"].double(), t["k"].double(), t["v"].double()
        B, T, H, K = q.shape
        V = v.shape[-1]
        g = t["g"].double()
        if g.dim() == 3:
            g = g[..., None].expand(B, T, H, K)
        S = torch.zeros(B, H, K, V, dtype=torch.float64, device=q.device)
        o = torch.empty(B, T, H, V, dtype=torch.float64, device=q.device)
        u = t["u"].double() if "u" in t else None
        a = t["a"].double() if "a" in t else None
        b = t["b"].double() if "b" in t else None
        for s in range(T):
            kv = k[:, s, :, :, None] * v[:, s, :, None, :]
            if u is not None:
                o[:, s] = scale * torch.einsum("bhk,bhkv->bhv", q[:, s], S + u[None, :, :, None] * kv)
            S = torch.exp(g[:, s])[..., None] * S if a is None else (
                torch.exp(g[:, s])[..., None] * S
                + b[:, s, :, :, None] * torch.einsum("bhk,bhkv->bhv", a[:, s], S)[:, :, None, :])
            S = S + kv
            if u is None:
                o[:, s] = scale * torch.einsum("bhk,bhkv->bhv", q[:, s], S)
        return o, S

    def fla_calls(self, family, t, scale):
        """flash-linear-attention's kernels for the family, with the spec -> FLA parameter mapping:
        GLA gk = g, simple GLA g = g ([B,T,H]), RWKV-6 w = g (log decay) and u = u,
        RWKV-7 w = g, a = a, b = b (FLA: S = (diag(exp w) + b a^T) S + k^T v, as the spec)."""
        q, k, v = t["q"], t["k"], t["v"]
        calls = []
        if family == "gla":
            from fla.ops.gla import chunk_gla, fused_recurrent_gla

            calls.append(("fla chunk_gla", lambda gg: chunk_gla(q, k, v, gg, scale=scale, output_final_state=True)))
            calls.append(("fla fused_recurrent_gla",
                          lambda gg: fused_recurrent_gla(q, k, v, gk=gg, scale=scale, output_final_state=True)))
        elif family == "simple_gla":
            from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

            calls.append(("fla chunk_simple_gla",
                          lambda gg: chunk_simple_gla(q, k, v, g=gg, scale=scale, output_final_state=True)))
            calls.append(("fla fused_recurrent_simple_gla",
                          lambda gg: fused_recurrent_simple_gla(q, k, v, g=gg, scale=scale, output_final_state=True)))
        elif family == "rwkv6":
            from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

            u = t["u"]
            calls.append(("fla chunk_rwkv6",
                          lambda gg: chunk_rwkv6(q, k, v, gg, u, scale=scale, output_final_state=True)))
            calls.append(("fla fused_recurrent_rwkv6",
                          lambda gg: fused_recurrent_rwkv6(q, k, v, gg, u, scale=scale, output_final_state=True)))
        elif family == "rwkv7":
            from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7

            a, b = t["a"], t["b"]
            calls.append(("fla chunk_rwkv7",
                          lambda gg: chunk_rwkv7(q, gg, k, v, a, b, scale=scale, output_final_state=True)))
            calls.append(("fla fused_recurrent_rwkv7",
                          lambda gg: fused_recurrent_rwkv7(q, gg, k, v, a, b, scale=scale, output_final_state=True)))
        return calls

    def linear_section(self):
        try:
            import fla  # noqa: F401

            self.notes["fla"] = getattr(fla, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            self.notes["fla"] = None
            fla_missing = f"fla-core not importable ({first_line(e)}); carry .whl (scripts/compare/fetch_wheels.sh)"
        else:
            fla_missing = None
        tol_ref, tol_cross = C.spec_tol(ACT_NAME), C.cross_tol(ACT_NAME)
        for family in C.LINEAR_FAMILIES:
            try:
                for p0 in C.linear_plan(self.args.quick):
                    self.linear_case(family, p0, fla_missing, tol_ref, tol_cross)
            except SkipSection as e:
                self.skipped.append({"section": "linear", "reason": f"{family}: {e}"})
                self.log(f"  SKIPPED {family}: {e}")
            free()

    def linear_case(self, family, p0, fla_missing, tol_ref, tol_cross):
        p = dict(p0, family=family)
        self.check_budget()
        self.log(f"  linear {C.shape_label(p)}")
        cfg, t = self.linear_inputs(family, p0)
        scale = cfg.get("scale", p0["K"] ** -0.5)
        nbytes = C.linear_bytes(family, p0)
        o_ref, s_ref = self.linear_ref(family, t, scale)
        r, outs = self.ours_row("linear", p, cfg, t, "GB/s", nbytes, ref=o_ref, ref_tol=tol_ref)
        if outs is not None and "final_state" in outs:
            r["err_state"] = rel_err(outs["final_state"], s_ref)
            chk, tol, cname = [outs["o"], outs["final_state"]], tol_cross, "ours"
        else:
            chk, tol, cname = [o_ref, s_ref], tol_ref, "f64"
        if fla_missing:
            self.add(self.row("linear", p, "fla (all)", "GB/s", nbytes, status="skipped", note=fla_missing))
            return
        for name, call in self.fla_calls(family, t, scale):
            g32 = t["g"]
            rr = self.peer_row("linear", p, name, lambda: call(g32), chk, tol, "GB/s", nbytes,
                               extract=lambda out: list(out[:2]), check_name=cname)
            if rr["status"] in ("error", "unsupported"):
                # FLA may want gates in the activation dtype: retry once, and say so
                gact = t["g"].to(ACT)
                self.rows = [x for x in self.rows if x is not rr]
                self.peer_row("linear", p, name, lambda: call(gact), chk, tol, "GB/s", nbytes,
                              extract=lambda out: list(out[:2]), check_name=cname,
                              note="g cast to bf16 (with f32 g: " + rr["note"][:160] + ")")

    # ------------------------------------------------------------------------ driver

    SECTIONS = ("attention", "alibi", "rope", "diff_attention", "decode", "linear")

    def run_sections(self, names, on_progress=None):
        self.on_progress = on_progress
        self.log("== ceilings")
        with torch.no_grad():
            self.ceilings_section()
        for name in names:
            t0 = time.time()
            self.log(f"== {name}")
            fn = {"attention": self.attention_section, "alibi": self.alibi_section, "rope": self.rope_section,
                  "diff_attention": self.diff_section, "decode": self.decode_section,
                  "linear": self.linear_section}[name]
            try:
                with torch.no_grad():
                    fn()
            except SkipSection as e:
                self.skipped.append({"section": name, "reason": str(e)})
                self.log(f"  SKIPPED: {e}")
            except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
                import traceback

                traceback.print_exc()
                self.skipped.append({"section": name, "reason": f"section aborted: {first_line(e)}"})
            free()
            self.log(f"  ({time.time() - t0:.1f} s)")
            if on_progress:
                on_progress()
        shutil.rmtree(self.tmp, ignore_errors=True)
