"""The long fuzz campaign (issue 15, item 7): hostile inputs on every surface, fed to every
command, until a time budget runs out; the counts go in the issue's closing note.

Cases are drawn from `tests/fuzzing.generate` with a seeded random.Random, round-robin over the
surfaces (task files, suite.toml, misbehaving domain code, agent specs, run directories, CLI
arguments), after the corpus of crash reproducers (tests/fixtures/fuzz_corpus/). Every call
runs in-process through `bench.cli.main --debug` (calls that may hang, `run` and `replay` with
hostile arguments, in a subprocess with a deadline) and is held to tests/fuzzing.py's rules.
Printed: inputs tried and calls per surface, exit codes, tracebacks (must be 0), distinct
harness crash sites (must be 0) and every other violation, with one reproducer each (the
case as JSON: put it in the corpus to keep it fixed).

    python benchmarks/fuzz.py                     # 8 minutes, seed 0
    python benchmarks/fuzz.py --seconds 60 --seed 3
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fuzzing  # noqa: E402 - the harness lives with the tests that share it


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=480.0, help="time budget (default 480)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    inputs: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    codes: dict[str, Counter[int]] = defaultdict(Counter)
    violations: dict[str, dict] = {}  # kind -> first reproducer
    violation_counts: Counter[str] = Counter()
    sites: dict[str, dict] = {}
    tracebacks = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trajbench-fuzz-") as tmp:
        ws = fuzzing.Workspace(Path(tmp))
        cases = iter(fuzzing.corpus())
        n = 0
        while time.perf_counter() - started < args.seconds:
            case = next(cases, None) or fuzzing.generate(fuzzing.SURFACES[n % len(fuzzing.SURFACES)], rng)
            n += 1
            surface = case["surface"]
            inputs[surface] += 1
            for r in fuzzing.run_case(case, ws):
                calls[surface] += 1
                codes[surface][r.code] += 1
                for v in r.violations:
                    kind = v.split(":")[0] if not v.startswith("harness crash site") else "harness crash site"
                    violation_counts[kind] += 1
                    tracebacks += kind == "a traceback escaped"
                    violations.setdefault(kind, {"case": r.case, "argv": r.argv, "detail": v[:300]})
                if r.crash_site:
                    sites.setdefault(r.crash_site, {"case": r.case, "argv": r.argv})
    elapsed = time.perf_counter() - started
    print(f"trajbench fuzz campaign: seed {args.seed}, {elapsed:.0f} s, {sum(inputs.values())} inputs, {sum(calls.values())} CLI calls\n")
    print("| surface | inputs | calls | exit 0 | exit 1 | exit 2 | other |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in fuzzing.SURFACES:
        c = codes[s]
        other = sum(v for k, v in c.items() if k not in (0, 1, 2))
        print(f"| {s} | {inputs[s]} | {calls[s]} | {c[0]} | {c[1]} | {c[2]} | {other} |")
    print(f"\ntracebacks: {tracebacks}")
    print(f"distinct harness crash sites: {len(sites)}")
    for site, repro in sorted(sites.items()):
        print(f"  {site}: {json.dumps(repro['case'], ensure_ascii=True)[:300]}")
    print(f"violations: {sum(violation_counts.values())}")
    for kind, count in violation_counts.most_common():
        print(f"  {count} × {kind}: e.g. {violations[kind]['detail'][:200]}")
        print(f"      case {json.dumps(violations[kind]['case'], ensure_ascii=True)[:300]}")
    return 1 if violation_counts else 0


if __name__ == "__main__":
    sys.exit(main())
