"""The Ray executor on a real local Ray cluster this test starts (2 CPUs): a sim run on Ray is
trial for trial the run the local executor makes (outcomes, seeds, step keys, state hashes)."""

import os

import pytest
import ray

from bench.adapters.spec import parse_agent_spec
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from tests.conftest import run_cli, trials_logged

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
AGENT = "sim:noisy?p=0.5&noise=0.5"


def _fingerprint(run_dir):
    """Everything about a trial that must not depend on where it ran."""
    run = read_run(run_dir)
    return {trial: (s["outcome"], s["seed"], s["steps"], s["final_state_hash"],
                    [(st["step"], st["kind"], st.get("tool"), st.get("args"), st.get("state_hash"))
                     for st in run.trial_steps(trial)])
            for trial, s in run.summaries.items()}


@pytest.mark.slow
def test_sim_run_on_ray_matches_the_local_run(mini_suite, tmp_path):
    from bench.runs.ray_executor import RayExecutor

    spec = parse_agent_spec(AGENT)
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_benchmark(mini_suite, spec, None, RunConfig(k=4, out=local, progress=False))
    run_benchmark(mini_suite, spec, None, RunConfig(k=4, out=remote, progress=False), RayExecutor(workers=2))
    assert not ray.is_initialized()  # the executor stops the cluster it started
    expected = _fingerprint(local)
    assert len(expected) == 4 * len(mini_suite.tasks)
    assert _fingerprint(remote) == expected


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_and_its_trial_recorded_once(mini_suite, tmp_path):
    from bench.runs.ray_executor import RayExecutor

    spec = parse_agent_spec(f"tests.agents.toy:DiesOnce?marker={tmp_path / 'died'}")
    out = tmp_path / "r"
    run_benchmark(mini_suite, spec, None, RunConfig(k=2, out=out, progress=False), RayExecutor(workers=1))
    run = read_run(out)
    assert (tmp_path / "died").exists()  # the worker process really died once
    assert len(run.summaries) == 2 * len(mini_suite.tasks)
    assert not run.duplicate_summaries and not run.orphan_attempts
    assert all(s["outcome"] != "error" for s in run.summaries.values())


def test_an_unknown_executor_is_one_clear_error(mini_suite, tmp_path):
    result = run_cli("run", str(mini_suite.path), "--agent", AGENT, "--executor", "dask", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "--executor must be local or ray[=ADDRESS]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_trial_whose_worker_keeps_dying_is_an_infrastructure_error(mini_suite, tmp_path):
    """The worker dies every time it plays cancel-pending: after WORKER_DEATHS deaths that trial is
    recorded once, as an error (not the agent's failure), and the other trials still run."""
    from bench.runs.ray_executor import WORKER_DEATHS, RayExecutor

    spec = parse_agent_spec("tests.agents.toy:DiesOn?task=cancel-pending")
    out = tmp_path / "r"
    run_benchmark(mini_suite, spec, None, RunConfig(k=1, out=out, progress=False), RayExecutor(workers=1))
    run = read_run(out)
    assert len(run.summaries) == len(mini_suite.tasks) and not run.duplicate_summaries
    lost = [s for s in run.summaries.values() if s["task"] == "cancel-pending"]
    assert [s["outcome"] for s in lost] == ["error"]
    assert f"died {WORKER_DEATHS} times" in lost[0]["reason"]
    assert all(s["outcome"] != "error" for s in run.summaries.values() if s["task"] != "cancel-pending")


@pytest.mark.slow
@pytest.mark.parametrize("max_concurrency", [1, 2])
def test_the_endpoint_limit_holds_across_workers(mini_suite, tmp_path, max_concurrency):
    """Two Ray workers share the openai adapter's max_concurrency: the loopback server never sees
    more requests at once than the limit — and does see the limit (the workers do overlap)."""
    from bench.adapters.spec import load_agent_file
    from bench.runs.ray_executor import RayExecutor
    from tests.servers.fake_chat import FakeChatServer, shop_agent
    from tests.test_adapter_openai import spec_file

    def slow_shop(body, n):
        reply = shop_agent(body, n)
        reply.delay_s = 0.2
        return reply

    with FakeChatServer(slow_shop) as server:
        spec = load_agent_file(spec_file(tmp_path, server.base_url, max_concurrency=max_concurrency))
        run_benchmark(mini_suite, spec, ["cancel-pending"], RunConfig(k=6, out=tmp_path / "r", progress=False),
                      RayExecutor(workers=2))
    assert all(s["outcome"] != "error" for s in read_run(tmp_path / "r").summaries.values())
    assert server.max_in_flight == max_concurrency


def test_resources_the_cluster_cannot_give_are_one_clear_error(mini_suite, tmp_path):
    spec_path = tmp_path / "gpu.toml"
    spec_path.write_text('name = "gpu"\nadapter = "sim"\n[resources]\nnum_gpus = 64\n')
    result = run_cli("run", str(mini_suite.path), "--agent", str(spec_path), "--executor", "ray", "--workers", "1",
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert "num_gpus = 64 per worker" in result.stderr and "resources.num_gpus" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "r").glob("trajectories.*"))


def test_the_limiter_gives_back_a_dead_workers_slots_and_pauses_on_429():
    """EndpointLimiter's logic, without Ray: a slot is held per worker; `forget` returns a dead
    worker's slots; `pause` holds every acquire until the pause ends."""
    import asyncio
    import time

    from bench.runs.ray_executor import EndpointLimiter

    async def scenario():
        limiter = EndpointLimiter(1)
        await limiter.acquire("dead")
        waiting = asyncio.ensure_future(limiter.acquire("alive"))
        await asyncio.sleep(0.05)
        assert not waiting.done()          # the only slot is held
        await limiter.forget("dead")       # its worker died holding it
        await asyncio.wait_for(waiting, 1)
        await limiter.release("alive")
        await limiter.pause(0.3)
        began = time.monotonic()
        await limiter.acquire("alive")
        return time.monotonic() - began

    assert asyncio.run(scenario()) >= 0.25


@pytest.mark.slow
def test_the_driver_killed_mid_run_resumes_with_no_lost_and_no_duplicated_trial(mini_suite, tmp_path):
    """`trajbench run --executor ray` killed with SIGKILL (its whole process group: the driver and
    the local cluster it started) once trials are being written; the same command again finishes
    the grid: every trial once, none lost."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    out, k = tmp_path / "r", 12
    cmd = [sys.executable, "-m", "bench", "run", str(mini_suite.path), "--agent", "tests.agents.toy:napper",
           "-k", str(k), "--out", str(out), "--quiet", "--executor", "ray", "--workers", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if trials_logged(out) >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_run(out).summaries)
    assert 4 <= partial < k * len(mini_suite.tasks)
    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    run = read_run(out)
    assert set(run.summaries) == {f"{t.id}/base/{i}" for t in mini_suite.tasks for i in range(k)}
    assert not run.duplicate_summaries and run.torn_bytes == 0
