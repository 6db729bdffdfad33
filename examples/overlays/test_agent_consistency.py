"""Example: consistency and regression assertions in your own test suite.

With trajbench installed, the `trajbench` fixture is available to every pytest run (entry
point `pytest11`). Replace the simulated agents below with your own agent: a spec string
("my_package.agents:support_agent", "path/to/agent.py:Agent?temperature=0.2", a TOML spec),
or the agent object itself (a function `agent(episode)` or an object with `run(episode)`).

    pytest examples/overlays/test_agent_consistency.py -q
    pytest examples/overlays/test_agent_consistency.py -q --trajbench-runs runs/pytest   # keep the runs

See docs/regression.md.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
OVERLAY = HERE / "order-number.toml"
HABIT_AGENT = str(HERE / "habit_agent.py") + ":HabitAgent?p=0.95&slip=0.6"
# tasks that cancel, modify or return orders: the ones the order_id -> order_number rename touches
ORDER_TASKS = ["retail-001-cancel-stated", "retail-005-return-stated", "retail-006-cancel-name-zip",
               "retail-008-order-address-stated", "retail-010-payment-switch-stated", "retail-015-exchange-ask-switch"]


def test_agent_is_consistent(trajbench):
    """pass^k, not pass@1: every one of k runs must succeed."""
    run = trajbench.run("retail", "sim:noisy?p=0.97", k=4, tasks=ORDER_TASKS)
    assert run.pass_at_1 >= 0.8
    trajbench.assert_consistent(run, pass_hat_k_at_least=0.6)


def test_renaming_an_argument_does_not_hurt_a_robust_agent(trajbench):
    """The tool-change A/B: the same agent before and after the overlay, then the diff gate."""
    before = trajbench.run("retail", "sim:noisy?p=0.95", k=8, tasks=ORDER_TASKS, seed=0)
    after = trajbench.run("retail", "sim:noisy?p=0.95", k=8, tasks=ORDER_TASKS, seed=1, overlay=OVERLAY)
    diff = trajbench.assert_no_regression(before, after, alpha=0.05)
    assert {c["tool"] for c in diff["tools"]["changed"]} >= {"cancel_pending_order"}


def test_renaming_an_argument_breaks_an_agent_with_a_habit(trajbench):
    """The same A/B with an agent that slips back to the old argument name: the gate fires
    (here we assert that it does; in your suite you would let assert_no_regression fail)."""
    before = trajbench.run("retail", HABIT_AGENT, k=8, tasks=ORDER_TASKS, seed=0)
    after = trajbench.run("retail", HABIT_AGENT, k=8, tasks=ORDER_TASKS, seed=1, overlay=OVERLAY)
    diff = trajbench.diff(before, after, alpha=0.05)
    assert diff["exit_code"] == 1, diff["verdict"]
