"""Results: derived numbers (throughput, % of ceiling, ratio to ours), JSON, markdown, plots.

Pure Python plus optional matplotlib. A row is a dict:
  section, case (label), params (dict), contender, baseline (our row the ratios divide by),
  peer (an outside contender, counted in the headline), status, time_ms, min_ms,
  flops or bytes (the work counted for the throughput), err (rel L2 error), ref (what the
  error was measured against: "ours" or "fp32"), tol, note.
status: "ok" (checked and timed), "noref" (our row when no fp32 reference exists),
"mismatch" (output disagreed: no time kept), "unchecked" (timed, nothing to check against),
"unsupported", "error".
"""

import json
import math
import os

SECTION_TITLES = {
    "ceilings": "Ceilings",
    "attention": "Plain attention (bf16)",
    "alibi": "ALiBi attention (bf16)",
    "rope": "RoPE: fused vs a separate rotation pass (bf16)",
    "diff_attention": "Differential attention v1 (bf16)",
    "decode": "Decode attention (bf16 KV cache)",
    "linear": "Linear recurrences (bf16 activations, f32 gates/state)",
}

TIMED = ("ok", "unchecked", "noref", "WRONG")


def has_time(row):
    return row.get("time_ms") is not None and row.get("status") in TIMED


def finalize(rows, ceilings):
    """Fill value (TFLOP/s or GB/s), pct (of the measured ceiling) and ratio (t_row / t_ours:
    above 1 means ours is faster) for every row that kept a time."""
    ours = {}
    for r in rows:
        if r.get("baseline") and has_time(r):
            ours[(r["section"], r["case"])] = r["time_ms"]
    for r in rows:
        r["value"] = r["pct"] = r["ratio"] = None
        if not has_time(r):
            continue
        t = r["time_ms"] * 1e-3
        if r.get("metric") == "TFLOP/s" and r.get("flops"):
            r["value"] = r["flops"] / t / 1e12
            if ceilings.get("matmul_tflops"):
                r["pct"] = 100.0 * r["value"] / ceilings["matmul_tflops"]
        elif r.get("metric") == "GB/s" and r.get("bytes"):
            r["value"] = r["bytes"] / t / 1e9
            if ceilings.get("copy_gbs"):
                r["pct"] = 100.0 * r["value"] / ceilings["copy_gbs"]
        base = ours.get((r["section"], r["case"]))
        if base:
            r["ratio"] = r["time_ms"] / base
    return rows


def headlines(rows):
    """Per section: geometric mean over cases of (fastest checked peer time / our time).
    Above 1: ours is faster than the best peer by that factor."""
    by_case = {}
    for r in rows:
        if r["section"] == "ceilings":
            continue
        by_case.setdefault((r["section"], r["case"]), []).append(r)
    per_section = {}
    for (sec, case), rs in by_case.items():
        ours = [r for r in rs if r.get("baseline") and has_time(r)]
        peers = [r for r in rs if r.get("peer") and r["status"] == "ok" and r.get("time_ms") is not None]
        if not ours or not peers:
            continue
        best = min(peers, key=lambda r: r["time_ms"])
        per_section.setdefault(sec, []).append((best["time_ms"] / ours[0]["time_ms"], case, best["contender"]))
    out = {}
    for sec, items in per_section.items():
        g = math.exp(sum(math.log(x) for x, _, _ in items) / len(items))
        out[sec] = {"geomean_best_peer_over_ours": g, "cases": len(items),
                    "per_case": [{"case": c, "best_peer": p, "best_peer_time_over_ours": x} for x, c, p in items]}
    return out


def _fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) >= 100:
            return f"{x:.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.{nd}f}"
    return str(x)


def _err(r):
    if r.get("err") is None:
        return "-"
    e = r["err"]
    s = "nan" if e != e else f"{e:.1e}"
    return f"{s} vs {r.get('ref', '?')} (tol {r.get('tol') or 0:.2g})"


def markdown(rows, meta, ceilings, heads):
    L = []
    if meta.get("fake"):
        L.append("> **DRY RUN: every time below is FAKE (made up to exercise the formatting). Not a measurement.**")
        L.append("")
    L.append(f"# Side-by-side comparison: {meta.get('gpu', '?')}")
    L.append("")
    L.append(f"- date: {meta.get('date')}; commit: {meta.get('commit')}; driver: {meta.get('driver')}; "
             f"torch: {meta.get('torch')}; triton: {meta.get('triton')}; fla-core: {meta.get('fla')}; "
             f"CUDA (torch): {meta.get('cuda')}")
    L.append(f"- ceilings (measured in this run): copy {_fmt(ceilings.get('copy_gbs'))} GB/s (bytes read + written), "
             f"bf16 8192^3 matmul {_fmt(ceilings.get('matmul_tflops'))} TFLOP/s")
    L.append(f"- ours: CLI `bench` (CUDA events, warm-up {meta.get('ours_warmup')}, {meta.get('ours_iters')} iters, median"
             f"{'; it reports ' + json.dumps(meta['ours_bench_fields']) if meta.get('ours_bench_fields') else ''}); "
             f"peers: {meta.get('peer_timer')}")
    bf = meta.get("ours_bench_fields")
    if bf is not None and not bf.get("resident"):
        L.append("- **WARNING**: our CLI `bench` did not report `\"resident\": true`, i.e. it did not state that "
                 "inputs stay on the device and outputs are preallocated; if it uploads inputs or downloads "
                 "outputs inside the timed loop, our times include host<->device copies and the ratios below "
                 "understate ours.")
    L.append("- `t/ours` = contender time / our time (above 1: ours is faster). A contender keeps its time only "
             "if its output matched ours (rel L2 error within 2x the spec's tolerance); `mismatch` rows keep none.")
    L.append("")
    if heads:
        L.append("## Headline: best checked peer time / our time (geometric mean over cases)")
        L.append("")
        L.append("| section | best peer / ours | cases |")
        L.append("|---|---|---|")
        for sec, h in heads.items():
            L.append(f"| {SECTION_TITLES.get(sec, sec)} | {h['geomean_best_peer_over_ours']:.2f}x | {h['cases']} |")
        L.append("")
    sections = []
    for r in rows:
        if r["section"] != "ceilings" and r["section"] not in sections:
            sections.append(r["section"])
    for sec in sections:
        L.append(f"## {SECTION_TITLES.get(sec, sec)}")
        L.append("")
        skipped = [s for s in meta.get("skipped", []) if s["section"] == sec]
        for s in skipped:
            L.append(f"_skipped_: {s['reason']}")
            L.append("")
        rs = [r for r in rows if r["section"] == sec]
        if not rs:
            continue
        L.append("| case | contender | time ms | TFLOP/s or GB/s | % of ceiling | t/ours | check | status |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in rs:
            val = "-" if r.get("value") is None else f"{_fmt(r['value'])} {r.get('metric', '')}"
            status = r["status"] + (f": {r['note']}" if r.get("note") else "")
            L.append(f"| {r['case']} | {r['contender']} | {_fmt(r.get('time_ms'))} | {val} | {_fmt(r.get('pct'), 1)} "
                     f"| {_fmt(r.get('ratio'), 2)} | {_err(r)} | {status.replace('|', '/')} |")
        L.append("")
    for s in meta.get("skipped", []):
        if s["section"] not in sections:
            L.append(f"## {SECTION_TITLES.get(s['section'], s['section'])}")
            L.append("")
            L.append(f"_skipped_: {s['reason']}")
            L.append("")
    if meta.get("fake"):
        L.append("> **DRY RUN: every time above is FAKE. Not a measurement.**")
    return "\n".join(L)


def write_json(path, rows, meta, ceilings, heads):
    with open(path, "w") as f:
        json.dump({"meta": meta, "ceilings": ceilings, "headlines": heads, "rows": rows}, f, indent=1, default=str)


# ---------------------------------------------------------------------------- plots

PLOT_GROUPS = [
    ("attention.png", ["attention"]),
    ("features.png", ["alibi", "rope", "diff_attention"]),
    ("memory_bound.png", ["decode", "linear"]),
]


def plots(rows, meta, outdir, prefix="", ceilings=None):
    """Throughput vs sequence length per contender (line plots), or bars where shapes do not
    vary in S. Returns (written files, note)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001 - any import failure means no plots
        return [], f"plots skipped: matplotlib unavailable ({e})"
    stamp = (f"{meta.get('gpu')} | driver {meta.get('driver')} | torch {meta.get('torch')} | "
             f"commit {str(meta.get('commit'))[:12]} | {meta.get('date')}")
    if meta.get("fake"):
        stamp = "FAKE TIMINGS (dry run) | " + stamp
    written = []
    for fname, sections in PLOT_GROUPS:
        panels = []  # (title, rows)
        for sec in sections:
            rs = [r for r in rows if r["section"] == sec and r.get("value") is not None]
            if not rs:
                continue
            groups = {}
            for r in rs:
                p = r["params"]
                key = " ".join(f"{k}={v}" for k, v in sorted(p.items()) if k not in ("S", "B", "family")) \
                    if "S" in p else ""
                if "family" in p:
                    key = p["family"]
                groups.setdefault(key, []).append(r)
            for key, g in groups.items():
                panels.append((f"{SECTION_TITLES.get(sec, sec)}\n{key}", g))
        if not panels:
            continue
        n = len(panels)
        cols = min(3, n)
        rows_n = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(6 * cols, 4.2 * rows_n), squeeze=False)
        for ax, (title, g) in zip(axes.flat, panels):
            metric = g[0].get("metric", "")
            contenders = []
            for r in g:
                if r["contender"] not in contenders:
                    contenders.append(r["contender"])
            if all("S" in r["params"] for r in g):
                for c in contenders:
                    pts = sorted((r["params"]["S"], r["value"]) for r in g if r["contender"] == c)
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                            linewidth=2.5 if c == "ours" else 1.2, label=c)
                ax.set_xscale("log", base=2)
                ax.set_xlabel("sequence length")
            else:
                cases = []
                for r in g:
                    if r["case"] not in cases:
                        cases.append(r["case"])
                w = 0.8 / max(1, len(contenders))
                for i, c in enumerate(contenders):
                    ys = []
                    for case in cases:
                        v = [r["value"] for r in g if r["contender"] == c and r["case"] == case]
                        ys.append(v[0] if v else 0.0)
                    ax.bar([j + i * w for j in range(len(cases))], ys, width=w, label=c)
                ax.set_xticks([j + 0.4 - w / 2 for j in range(len(cases))])
                ax.set_xticklabels([c.replace(" ", "\n", 2) for c in cases], fontsize=7)
            ceil = (ceilings or {}).get("matmul_tflops" if metric == "TFLOP/s" else "copy_gbs")
            if ceil:
                ax.axhline(ceil, color="gray", linestyle="--", linewidth=1,
                           label="bf16 matmul" if metric == "TFLOP/s" else "copy bandwidth")
            ax.set_ylabel(metric)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(stamp, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = os.path.join(outdir, prefix + fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written, ""
