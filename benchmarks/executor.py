"""Local executor against Ray, on this machine: trials/s, executor start-up, and the driver's CPU
per trial (the driver is the single log writer, so its CPU per trial bounds any cluster).

    python benchmarks/executor.py [--latency-trials 24] [--delay 0.05] [--sim-k 4] [--local-model]

Workloads, each run under: local (concurrency 1 and 2) and Ray (1 and 2 workers; a local cluster
the benchmark starts, as `--executor ray` does):

- latency-bound: the openai adapter against a loopback chat-completions server that answers every
  request after `--delay` seconds (tests/servers/fake_chat.py's scripted shop agent, mini suite);
  4 requests per trial, so a trial spends 4 × delay waiting;
- CPU-bound: `sim:oracle` on every retail task, k = `--sim-k`;
- CPU-bound, real model (`--local-model`): smollm2-local on two easy retail tasks, k = 2 — slow
  (the model loads once per actor).

Columns: wall (whole run, start-up included), start-up (until every actor's agent is built),
trials/s after start-up, and driver CPU per trial (time.process_time of this process / trials).
Last, the arithmetic for a 1M-trial run on a cluster from these figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.adapters.spec import AgentSpec, load_agent_file, parse_agent_spec  # noqa: E402
from bench.runs.executor import Executor, LocalExecutor  # noqa: E402
from bench.runs.rundir import read_run  # noqa: E402
from bench.runs.runner import RunConfig, run_benchmark  # noqa: E402
from bench.world.suite import Suite, load_suite  # noqa: E402


class Timed:
    """Wraps an executor to time its start-up (building every agent) apart from the trials."""

    def __init__(self, inner: Executor):
        self.inner, self.startup = inner, 0.0

    def start(self, spec: AgentSpec, trials: int) -> None:
        began = time.perf_counter()
        self.inner.start(spec, trials)
        self.startup = time.perf_counter() - began

    def run(self, *args, **kwargs) -> None:
        self.inner.run(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


def executors() -> list[tuple[str, callable]]:
    from bench.runs.ray_executor import RayExecutor

    return [("local c=1", lambda: LocalExecutor(1)), ("local c=2", lambda: LocalExecutor(2)),
            ("ray w=1", lambda: RayExecutor(workers=1)), ("ray w=2", lambda: RayExecutor(workers=2))]


def measure(suite: Suite, spec: AgentSpec, tasks: list[str] | None, k: int, make: callable) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        executor = Timed(make())
        cpu, began = time.process_time(), time.perf_counter()
        run_benchmark(suite, spec, tasks, RunConfig(k=k, out=Path(tmp) / "r", progress=False), executor)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        summaries = read_run(Path(tmp) / "r").summaries  # read from the log on demand: count here
        trials = len(summaries)
        errors = sum(s["outcome"] == "error" for s in summaries.values())
    return {"trials": trials, "errors": errors, "wall": wall, "startup": executor.startup,
            "rate": trials / max(wall - executor.startup, 1e-9), "driver_cpu_ms": 1000 * cpu / trials}


def table(title: str, rows: list[tuple[str, dict[str, float]]], note: str = "") -> None:
    print(f"\n{title}{note}")
    print(f"{'executor':<11} {'trials':>6} {'errors':>6} {'wall s':>8} {'start s':>8} {'trials/s':>9} "
          f"{'driver CPU ms/trial':>20}")
    for name, r in rows:
        print(f"{name:<11} {r['trials']:>6} {r['errors']:>6} {r['wall']:>8.2f} {r['startup']:>8.2f} "
              f"{r['rate']:>9.2f} {r['driver_cpu_ms']:>20.2f}")


def _slow_shop(delay: float):
    from tests.servers.fake_chat import shop_agent

    def behave(body, n):
        reply = shop_agent(body, n)
        reply.delay_s = delay
        return reply
    return behave


def _serve(delay: float, urls: multiprocessing.Queue) -> None:
    """The loopback server, in its own process so that its CPU is not counted as the driver's."""
    from tests.servers.fake_chat import FakeChatServer

    with FakeChatServer(_slow_shop(delay)) as server:
        urls.put(server.base_url)
        time.sleep(3600)


def latency_bound(args: argparse.Namespace, tmp: Path) -> list[tuple[str, dict[str, float]]]:
    urls: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(args.delay, urls), daemon=True)
    server.start()
    try:
        spec_path = tmp / "slow.toml"
        spec_path.write_text(f'name = "slow"\nadapter = "openai"\n[options]\nbase_url = "{urls.get(timeout=30)}"\n'
                             'model = "fake-model"\nmax_concurrency = 4\n')
        spec = load_agent_file(spec_path)
        suite = load_suite(ROOT / "tests" / "fixtures" / "mini")
        rows = [(name, measure(suite, spec, ["cancel-pending"], args.latency_trials, make)) for name, make in executors()]
    finally:
        server.kill()
    ideal = 1 / (4 * args.delay)
    table("latency-bound: openai adapter, loopback server in another process", rows,
          f" ({args.delay * 1000:.0f} ms per request, 4 requests per trial: {ideal:.2f} trials/s per parallel trial)")
    return rows


def cpu_bound(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    suite = load_suite(ROOT / "tasks" / "retail")
    spec = parse_agent_spec("sim:oracle")
    rows = [(name, measure(suite, spec, None, args.sim_k, make)) for name, make in executors()]
    table("CPU-bound: sim:oracle, every retail task", rows)
    return rows


def local_model() -> None:
    suite = load_suite(ROOT / "tasks" / "retail")
    spec = parse_agent_spec("smollm2-local")
    tasks = [t.id for t in suite.tasks if "easy" in t.tags][:2]
    rows = [(name, measure(suite, spec, tasks, 2, make)) for name, make in executors() if name != "local c=2"]
    table("CPU-bound: smollm2-local (real model), two easy retail tasks", rows)


def overheads(latency: list[tuple[str, dict[str, float]]], delay: float) -> None:
    """Harness overhead per trial in the latency-bound rows: time per trial per parallel slot,
    less the 4 × delay the trial spends waiting for the model."""
    print("\nharness overhead per latency-bound trial (1 / (trials/s per slot) − 4 × delay):")
    for name, r in latency:
        slots = int(name.split("=")[1])
        print(f"  {name:<11} {1000 * (slots / r['rate'] - 4 * delay):8.0f} ms")


def cluster_arithmetic(latency: list[tuple[str, dict[str, float]]], cpu: list[tuple[str, dict[str, float]]],
                       delay: float) -> None:
    ray_lat, ray_cpu = dict(latency)["ray w=2"], dict(cpu)["ray w=2"]
    trials = 1_000_000
    driver_ms = ray_cpu["driver_cpu_ms"]  # sim trials come back as fast as the driver takes them
    driver_cap = 1000 / driver_ms
    per_worker = ray_lat["rate"] / 2
    print("\n1M trials on a cluster, on paper (from the ray w=2 rows):")
    print(f"- the driver receives and writes every record: {driver_ms:.2f} ms CPU per trial (sim row; the "
          f"latency rows add Ray's idle background CPU, proportional to wall time) → at most {driver_cap:,.0f} "
          "trials/s from one driver core, whatever the cluster size")
    print(f"- 1M sim trials ≥ 1e6 × {driver_ms:.2f} ms = {trials * driver_ms / 1000 / 60:.0f} min on any cluster; the "
          f"local executor did {dict(cpu)['local c=2']['rate']:.0f} trials/s here: sim needs no cluster")
    print(f"- latency-bound: {per_worker:.2f} trials/s per worker (4 × {delay * 1000:.0f} ms of model latency per "
          f"trial) → W workers give {per_worker:.2f} × W trials/s until W = {driver_cap / per_worker:,.0f} saturates "
          f"the driver; W = 100 → 1M trials in {trials / (per_worker * 100) / 3600:.1f} h")
    slow = 8.0  # a hosted model: 4 requests of 2 s per trial
    print(f"- a real endpoint at 2 s per request ({slow:.0f} s per trial): W = 100 → {trials * slow / 100 / 3600:.1f} h "
          f"with the driver at {100 / slow / driver_cap:.1%} of a core; W = 1,000 → {trials * slow / 1000 / 3600:.1f} h "
          f"({1000 / slow / driver_cap:.0%}) — past that, the endpoint's rate limit, not trajbench, decides")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-trials", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per model request (default 0.05)")
    parser.add_argument("--sim-k", type=int, default=4)
    parser.add_argument("--local-model", action="store_true", help="also the real SmolLM2 model (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        latency = latency_bound(args, Path(tmp))
    cpu = cpu_bound(args)
    if args.local_model:
        local_model()
    overheads(latency, args.delay)
    cluster_arithmetic(latency, cpu, args.delay)


if __name__ == "__main__":
    main()
