"""Drives our library through its command-line tool (spec section 5 plus the `bench` subcommand).

    attn-kernels run   --input IN.safetensors --output OUT.safetensors --device cuda
    attn-kernels bench --input IN.safetensors --device cuda --warmup 10 --iters 50
        -> one JSON line {"op", "median_ms", "min_ms", "times_ms", "device", ...}

A failing call raises OursError with `kind` "unknown" (the CLI does not know the op or the
subcommand: the section is skipped with that reason), "unsupported" (the op exists but not for
this device, shape or option: the case is recorded as unsupported) or "failed" (anything else:
recorded as a failure).
"""

import json
import re
import subprocess

# The op is not there at all (not registered, or the CLI lacks the subcommand): skip the section.
_UNKNOWN = re.compile(r"unknown op|unrecognized subcommand|unknown subcommand|unexpected argument 'bench'",
                      re.IGNORECASE)
# The op exists but not for this device / shape / option: record the case as unsupported.
_UNSUPPORTED = re.compile(
    r"unsupported|not supported|not implemented|no cuda path|KernelsNotCompiled|kernels? (were|was|are) not compiled",
    re.IGNORECASE,
)


class OursError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _first_lines(text, n=3):
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def classify(returncode, stderr, stdout=""):
    text = (stderr or "") + "\n" + (stdout or "")
    if _UNKNOWN.search(text):
        kind = "unknown"
    elif _UNSUPPORTED.search(text):
        kind = "unsupported"
    else:
        kind = "failed"
    return OursError(kind, f"exit {returncode}: {_first_lines(text)}")


class Ours:
    def __init__(self, binary, device="cuda", warmup=10, iters=50, timeout=300):
        self.binary = binary
        self.device = device
        self.warmup = warmup
        self.iters = iters
        self.timeout = timeout

    def _call(self, args):
        try:
            r = subprocess.run([self.binary] + args, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise OursError("failed", f"timed out after {self.timeout} s: {' '.join(args[:2])}")
        except OSError as e:
            raise OursError("failed", f"cannot start {self.binary}: {e}")
        if r.returncode != 0:
            raise classify(r.returncode, r.stderr, r.stdout)
        return r.stdout

    def info(self):
        """`attn-kernels info` verbatim (build, kernels, GPU), or the error text."""
        try:
            return self._call(["info"]).strip()
        except OursError as e:
            return f"(info failed: {e.message})"

    def run(self, case_path, out_path):
        self._call(["run", "--input", str(case_path), "--output", str(out_path), "--device", self.device])

    def bench(self, case_path):
        out = self._call(["bench", "--input", str(case_path), "--device", self.device,
                          "--warmup", str(self.warmup), "--iters", str(self.iters)])
        return parse_bench(out)


def parse_bench(stdout):
    """The last stdout line that is a JSON object with `median_ms`."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "median_ms" in obj:
            return obj
    raise OursError("failed", f"bench printed no JSON line with median_ms: {_first_lines(stdout)}")
