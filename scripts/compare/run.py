#!/usr/bin/env python3
"""Side-by-side comparison of attn-kernels with the kernels people use today, in one run.

On the GPU machine (repository root, bundle built):
    python3 scripts/compare/run.py --bin gpu-bundle/bin/attn-kernels --out $OUT/compare [--quick]
Without a GPU (no torch needed):
    python3 scripts/compare/run.py --dry-run [--bin target/release/attn-kernels]

See benches/results/README.md for what is measured and how to read the results.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts (the tree is not ignoring it)
REPO = os.path.dirname(os.path.dirname(HERE))

import cases as C  # noqa: E402
import report as R  # noqa: E402

SECTIONS = ("attention", "alibi", "rope", "diff_attention", "decode", "linear")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="gpu-bundle/bin/attn-kernels", help="our CLI binary")
    ap.add_argument("--out", default=None,
                    help="results folder (default benches/results/<date>-<gpu>; dry run: a scratch folder)")
    ap.add_argument("--quick", action="store_true", help="fewer, smaller shapes (a smoke run)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: write and check tiny case files, run them on the CPU if --bin exists, "
                         "and format a table from FAKE timings")
    ap.add_argument("--seed", type=int, default=None, help="torch seed (default: from the clock; printed)")
    ap.add_argument("--ours-warmup", type=int, default=10)
    ap.add_argument("--ours-iters", type=int, default=50)
    ap.add_argument("--warmup-ms", type=float, default=25, help="do_bench warm-up for peers (ms)")
    ap.add_argument("--rep-ms", type=float, default=200, help="do_bench repetition time for peers (ms)")
    ap.add_argument("--mask-gib", type=float, default=20,
                    help="largest dense ALiBi mask built for SDPA (GiB); larger cases are skipped")
    ap.add_argument("--decode-op", default="decode_attention", help="our op name for KV-cache decode")
    ap.add_argument("--tmpdir", default=None, help="where case files go (default: system temp)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds allowed per CLI call")
    ap.add_argument("--budget-s", type=float, default=540,
                    help="start no new case after this many seconds (the device allows 600 s a command); 0: none")
    ap.add_argument("--render", nargs="+", metavar="RESULTS_JSON", default=None,
                    help="no GPU: merge results.json files of one GPU (e.g. two commands' sections) and write "
                         "results.json, results.md and plots to --out")
    return ap.parse_args(argv)


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def git_commit():
    """ATTN_KERNELS_COMMIT if set, else git (when .git travelled), else the bundle's COMMIT file."""
    if os.environ.get("ATTN_KERNELS_COMMIT"):
        return os.environ["ATTN_KERNELS_COMMIT"]
    c = sh(["git", "-C", REPO, "rev-parse", "HEAD"])
    if c:
        dirty = sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
        return c + ("-dirty" if dirty else "")
    for f in ("gpu-bundle/COMMIT", "COMMIT"):
        p = os.path.join(REPO, f)
        if os.path.exists(p):
            return open(p).read().strip()
    return "unknown"


def gpu_meta():
    import torch

    props = torch.cuda.get_device_properties(0)
    meta = {
        "gpu": torch.cuda.get_device_name(0),
        "sm_count": props.multi_processor_count,
        "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "capability": f"{props.major}.{props.minor}",
        "driver": sh(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines()[0:1],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    meta["driver"] = meta["driver"][0] if meta["driver"] else "unknown"
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        meta["triton"] = None
    try:
        import fla

        meta["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        meta["fla"] = f"not importable ({type(e).__name__})"
    return meta


def slug(s):
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "gpu"


def real_run(args):
    try:
        import torch
    except ImportError:
        raise SystemExit("torch is not importable: run this on the GPU machine, or use --dry-run")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch: run this on the GPU machine, or use --dry-run")
    import gpu
    from ours import Ours

    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    for n in names:
        if n not in SECTIONS:
            raise SystemExit(f"unknown section {n!r} (known: {', '.join(SECTIONS)})")
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        raise SystemExit(f"our binary {args.bin} is missing or not executable (build the GPU bundle first)")
    seed = args.seed if args.seed is not None else int(time.time())
    torch.manual_seed(seed)
    meta = gpu_meta()
    now = datetime.datetime.now(datetime.timezone.utc)
    meta.update({
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "seed": seed,
        "host": platform.node(),
        "python": platform.python_version(),
        "quick": args.quick,
        "sections": names,
        "ours_bin": args.bin,
        "ours_warmup": args.ours_warmup,
        "ours_iters": args.ours_iters,
        "decode_op": args.decode_op,
        "tolerances": {"ours_vs_reference": C.SPEC_TOL, "peer_vs_ours": "2x the spec's bound",
                       "diff_attention": "twice the above"},
        "skipped": [],
    })
    out = args.out or os.path.join(REPO, "benches", "results", f"{now:%Y-%m-%d}-{slug(meta['gpu'])}")
    os.makedirs(out, exist_ok=True)
    ours = Ours(args.bin, "cuda", args.ours_warmup, args.ours_iters, args.timeout)
    meta["ours_info"] = ours.info()
    logf = open(os.path.join(out, "run.log"), "w")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    log(f"seed {seed}; {meta['gpu']}, driver {meta['driver']}, torch {meta['torch']}, triton {meta['triton']}, "
        f"fla {meta['fla']}; commit {meta['commit']}; results -> {out}")
    log("ours: " + meta["ours_info"].replace("\n", "\n      "))

    run = gpu.Run(ours, args, log=log)
    meta["peer_timer"] = run.timer.name

    def save():
        meta["skipped"] = run.skipped
        for r in run.rows:  # what our bench says about itself (e.g. whether transfers are timed)
            if r.get("bench"):
                meta["ours_bench_fields"] = {k: v for k, v in r["bench"].items()
                                             if k not in ("op", "median_ms", "min_ms", "times_ms")}
                break
        R.finalize(run.rows, run.ceilings)
        heads = R.headlines(run.rows)
        R.write_json(os.path.join(out, "results.json"), run.rows, meta, run.ceilings, heads)
        md = R.markdown(run.rows, meta, run.ceilings, heads)
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(md + "\n")
        return md

    t0 = time.time()
    run.run_sections(names, on_progress=save)
    meta["wall_s"] = round(time.time() - t0, 1)
    md = save()
    written, note = R.plots(run.rows, meta, out, ceilings=run.ceilings)
    if note:
        log(note)
    log(f"wrote {out}: results.json results.md run.log {' '.join(os.path.basename(w) for w in written)} "
        f"({meta['wall_s']} s)")
    logf.close()
    print()
    print(md)
    return 0


def render(args):
    """Merge the results of several commands (same GPU) and write the report again."""
    if not args.out:
        raise SystemExit("--render needs --out")
    meta, ceilings, rows, skipped = None, None, [], []
    for path in args.render:
        with open(path) as f:
            d = json.load(f)
        m = d["meta"]
        if m.get("fake"):
            raise SystemExit(f"{path} holds FAKE dry-run numbers: refusing to render it as results")
        if meta is None:
            meta, ceilings = dict(m), dict(d["ceilings"])
            meta["merged_from"] = []
        elif m.get("gpu") != meta.get("gpu"):
            raise SystemExit(f"{path} was measured on {m.get('gpu')}, not {meta.get('gpu')}: not mergeable")
        else:
            # keep each run's own ceilings on record; the table uses the first run's
            meta.setdefault("other_ceilings", []).append(d["ceilings"])
            meta["sections"] = list(meta.get("sections", [])) + [x for x in m.get("sections", [])]
        meta["merged_from"].append({"file": path, "date": m.get("date"), "commit": m.get("commit"),
                                    "seed": m.get("seed"), "sections": m.get("sections")})
        rows += d["rows"]
        skipped += m.get("skipped", [])
    commits = {x["commit"] for x in meta["merged_from"]}
    if len(commits) > 1:
        print(f"warning: merging runs of different commits: {sorted(commits)}")
    meta["skipped"] = skipped
    os.makedirs(args.out, exist_ok=True)
    R.finalize(rows, ceilings)
    heads = R.headlines(rows)
    R.write_json(os.path.join(args.out, "results.json"), rows, meta, ceilings, heads)
    md = R.markdown(rows, meta, ceilings, heads)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n")
    written, note = R.plots(rows, meta, args.out, ceilings=ceilings)
    print(note or f"plots: {' '.join(os.path.basename(w) for w in written)}")
    print(md)
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        return render(args)
    if args.dry_run:
        import dryrun

        return dryrun.run(args, REPO)
    return real_run(args)


if __name__ == "__main__":
    sys.exit(main())
