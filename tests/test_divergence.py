"""Divergence analysis (bench/analysis/divergence/) against hand-computed trees, scipy and brute force."""

import itertools
import json
import math
import shutil
from collections import Counter, defaultdict
from dataclasses import replace

import jsonschema
import numpy as np
import orjson
import pytest
from scipy import stats

from bench.adapters.spec import parse_agent_spec
from bench.analysis import exact as exact_tests
from bench.analysis.divergence import section as section_module
from bench.analysis.divergence.keys import Keyer, read_keyed, step_keys
from bench.analysis.divergence.options import END, DivergenceOptions, TaskTrials, TrialPath
from bench.analysis.divergence.packed import AttemptKeys, PackedAttempts
from bench.analysis.divergence.section import analyse, analyse_run, divergence_section
from bench.analysis.exact import boschloo_test, exact_test, information_gain
from bench.analysis.metrics import benjamini_hochberg
from bench.canonical import step_key
from bench.cli_parser import add_divergence_arguments, divergence_options
from bench.publish.text import render_divergence as render_divergence_text
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.task import load_schema
from tests.conftest import MINI, read_log, write_log


def h(p):
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def tv(s, n):  # the smoothed estimate, written out here on purpose
    return (s + 1) / (n + 2)


# A hand-built task: six trials over actions a, b, c, d, e (reference a b c).
#   t1, t2, t5: a b c  success      t3, t6: a b d  failure      t4: a e  failure
HAND = [("t1", True, "abc"), ("t2", True, "abc"), ("t3", False, "abd"), ("t4", False, "ae"),
        ("t5", True, "abc"), ("t6", False, "abd")]


def hand_task(**kw):
    trials = [TrialPath(tid, ok, [f"{ch}()" for ch in seq]) for tid, ok, seq in HAND]
    return TaskTrials("hand", trials, reference=["a()", "b()", "c()"], **kw)


def node_of(a, prefix, task=0):
    """The tree node reached by a prefix of keys (walking the analysis' arrays)."""
    v = task
    for key in prefix:
        kid = a.vocab.index(key) if key != END else 0
        (match,) = np.flatnonzero((a.tree_parent == v) & (a.tree_key == kid))
        v = int(match)
    return v


def test_hand_tree_counts_estimates_and_information_gain():
    a = analyse([hand_task()], DivergenceOptions(min_support=2))
    expect = {(): (6, 3), ("a()",): (6, 3), ("a()", "b()"): (5, 3), ("a()", "e()"): (1, 0),
              ("a()", "b()", "c()"): (3, 3), ("a()", "b()", "d()"): (2, 0)}
    for prefix, (n, s) in expect.items():
        v = node_of(a, prefix)
        assert (a.tree_n[v], a.tree_s[v]) == (n, s), prefix
    # 1 root + a, b, e, c, d + three ends = 9 nodes; 3 distinct trajectories
    row = a.section["tasks"][0]
    assert row["nodes"] == 9 and row["distinct_trajectories"] == 3 and row["branch_nodes"] == 2
    ig_a = h(tv(3, 6)) - (5 / 6 * h(tv(3, 5)) + 1 / 6 * h(tv(0, 1)))
    ig_b = h(tv(3, 5)) - (3 / 5 * h(tv(3, 3)) + 2 / 5 * h(tv(0, 2)))
    assert a.ig[node_of(a, ["a()"])] == pytest.approx(ig_a, abs=1e-12)
    assert a.ig[node_of(a, ["a()", "b()"])] == pytest.approx(ig_b, abs=1e-12)
    assert information_gain(5, 3, [(3, 3), (2, 0)]) == pytest.approx(ig_b, abs=1e-12)
    # the task score: (N_v / N_task) × empirical IG = mutual information in bits per trial
    mi_b = 5 / 6 * (h(3 / 5) - 0.0)
    assert a.score[node_of(a, ["a()", "b()"])] == pytest.approx(mi_b, abs=1e-12)
    assert information_gain(5, 3, [(3, 3), (2, 0)], smoothed=False) == pytest.approx(h(3 / 5), abs=1e-12)


def test_hand_tree_tests_critical_steps_reference_and_pairs():
    a = analyse([hand_task()], DivergenceOptions(min_support=2, test="fisher"))
    b = node_of(a, ["a()", "b()"])
    assert a.pvalue[b] == pytest.approx(stats.fisher_exact([[3, 0], [0, 2]]).pvalue)  # = 0.1
    # Tarone: with margins (3, 2) and 3 successes the best attainable p is 0.1 > 0.05: untested
    assert not a.tested[b] and a.section["tasks"][0]["divergence"] is None
    # critical steps: t3 drops most on d (position 2), t4 on e (position 1)
    rows = {r["trial"]: r for r in a.section["tasks"][0]["trials"]}
    drops_t3 = [tv(3, 6) - tv(3, 6), tv(3, 6) - tv(3, 5), tv(3, 5) - tv(0, 2), 0.0]
    assert rows["t3"]["critical_step"] == int(np.argmax(drops_t3)) == 2 and rows["t3"]["critical_action"] == "d()"
    assert rows["t4"]["critical_step"] == 1 and rows["t4"]["critical_action"] == "e()"
    assert rows["t1"]["critical_step"] is None
    assert [rows[t]["leaves_reference_at"] for t in ("t1", "t3", "t4")] == [None, 2, 1]
    ref = a.section["tasks"][0]["reference"]
    assert ref["followed_exactly"] == {"success": 3, "failure": 0}
    assert ref["survival"]["success"] == [1.0, 1.0, 1.0, 1.0]
    assert ref["survival"]["failure"] == pytest.approx([1.0, 2 / 3, 0.0, 0.0], abs=1e-4)
    # first divergence by brute force over pairs: LCP of the key sequences
    seqs = {tid: list(seq) + ["$"] for tid, _, seq in HAND}
    ok = {tid: o for tid, o, _ in HAND}

    def lcp(x, y):
        return next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
    sf = [lcp(seqs[x], seqs[y]) for x, y in itertools.combinations(seqs, 2) if ok[x] != ok[y]]
    fd = a.section["tasks"][0]["first_divergence"]
    assert fd["success_failure"] == {"pairs": len(sf), "median_step": float(np.median(sf))}
    assert fd["success_success"] == {"pairs": 3, "identical": 3, "median_step": None}


def test_significant_branch_is_the_divergence_point_and_alternatives_are_reported():
    # 10 trials a b c succeed, 6 trials a x … fail: the branch after a is decisive
    trials = [TrialPath(f"s{i}", True, ["a()", "b()", "c()"]) for i in range(10)]
    trials += [TrialPath(f"f{i}", False, ["a()", "x()", "c()"]) for i in range(6)]
    a = analyse([TaskTrials("t", trials, reference=["a()", "b()", "c()"])])
    d = a.section["tasks"][0]["divergence"]
    assert d["step"] == 1 and d["n"] == 16 and d["successes"] == 10 and d["significant"]
    assert d["p"] == pytest.approx(stats.boschloo_exact([[10, 0], [0, 6]]).pvalue, rel=1e-5)
    assert d["test"] == "boschloo" and d["on_reference_path"] is True and d["prefix"] == ["a()"]
    alts = {alt["action"]: alt for alt in d["alternatives"]}
    assert (alts["b()"]["n"], alts["b()"]["successes"], alts["b()"]["on_reference"]) == (10, 10, True)
    assert (alts["x()"]["n"], alts["x()"]["successes"], alts["x()"]["on_reference"]) == (6, 0, False)
    assert alts["x()"]["examples"] == ["f0", "f1", "f2"]
    assert d["failure_branches"] == ["x()"]
    suite = a.section["suite"]
    assert suite["depth_distribution"] == [{"step": 1, "tasks": 1}]
    assert suite["failure_branch_tools"] == [{"tool": "x", "tasks": 1}]


def test_stopping_early_is_an_alternative():
    trials = [TrialPath(f"s{i}", True, ["a()", "b()"]) for i in range(8)]
    trials += [TrialPath(f"f{i}", False, ["a()"]) for i in range(8)]
    d = analyse([TaskTrials("t", trials)]).section["tasks"][0]["divergence"]
    assert d["step"] == 1
    stop = next(alt for alt in d["alternatives"] if alt["end"])
    assert stop["action"] is None and (stop["n"], stop["successes"]) == (8, 0)


def test_reported_point_climbs_to_the_first_failing_turn():
    """A wrong turn at step 1 from which some trials recover at step 2: the recover/not split
    below it separates the outcomes perfectly and may carry more information, but the failure
    region opens at step 1, which is what is reported."""
    ok = [TrialPath(f"r{i}", True, ["a()", "b()", "c()"]) for i in range(8)]
    bad = [TrialPath(f"w{i}", False, ["a()", "w()", "c()"]) for i in range(6)]
    rec = [TrialPath(f"v{i}", True, ["a()", "w()", "b()", "c()"]) for i in range(3)]
    a = analyse([TaskTrials("t", ok + bad + rec)])
    row = a.section["tasks"][0]
    w = node_of(a, ["a()", "w()"])
    first = node_of(a, ["a()"])
    assert a.score[w] > a.score[first]  # the deeper split is the more informative one
    assert row["divergence"]["step"] == 1 and row["divergence"]["top_scoring_step"] == 2


def test_exact_test_matches_scipy_and_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n1, n2 = (int(x) for x in rng.integers(1, 40, size=2))
        s1, s2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
        if s1 + s2 in (0, n1 + n2):
            continue
        p, pmin, how = exact_test([n1, n2], [s1, s2])
        assert how == "fisher"
        assert p == pytest.approx(stats.fisher_exact([[s1, s2], [n1 - s1, n2 - s2]]).pvalue, rel=1e-9)
        S = s1 + s2
        every = [stats.fisher_exact([[x, S - x], [n1 - x, n2 - S + x]]).pvalue
                 for x in range(max(0, S - n2), min(n1, S) + 1)]
        assert pmin == pytest.approx(min(every), rel=1e-9)
    # three or more alternatives: Freeman–Halton by brute-force enumeration of the tables
    for sizes, succ in (([3, 4, 5], [0, 2, 5]), ([2, 2, 2, 3], [2, 0, 1, 0]), ([6, 1, 4], [6, 0, 1])):
        N, S = sum(sizes), sum(succ)

        def prob(xs):
            return math.prod(math.comb(n, x) for n, x in zip(sizes, xs)) / math.comb(N, S)
        tables = [xs for xs in itertools.product(*(range(n + 1) for n in sizes)) if sum(xs) == S]
        obs = prob(succ)
        expect = sum(prob(xs) for xs in tables if prob(xs) <= obs * (1 + 1e-7))
        p, pmin, how = exact_test(sizes, succ)
        assert how == "exact" and p == pytest.approx(expect, rel=1e-9)
        low = min(prob(xs) for xs in tables)
        assert pmin == pytest.approx(sum(prob(xs) for xs in tables if prob(xs) <= low * (1 + 1e-7)), rel=1e-9)


def test_exact_test_of_a_large_node_in_bounded_memory():
    """A node of thousands of trials in three alternatives is enumerated exactly in a few MB
    (it held 1.1 GB: every partial table met every count of the last child at once); the
    p-value equals a direct sum over the tables (the last child's count fixed by the total)."""
    import tracemalloc

    sizes, succ = (180, 95, 1200), (60, 50, 1100)
    N, S = sum(sizes), sum(succ)
    lognorm = math.lgamma(N + 1) - math.lgamma(S + 1) - math.lgamma(N - S + 1)

    def logp(xs):
        return sum(math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) for n, x in zip(sizes, xs)) - lognorm
    obs = logp(succ)
    expect = sum(math.exp(lp) for x1 in range(sizes[0] + 1) for x2 in range(sizes[1] + 1)
                 if 0 <= S - x1 - x2 <= sizes[2] and (lp := logp((x1, x2, S - x1 - x2))) <= obs + math.log1p(1e-7))
    exact_tests._exact_cached.cache_clear()
    tracemalloc.start()
    try:
        p, _, how = exact_test(list(sizes), list(succ))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert how == "exact" and p == pytest.approx(expect, rel=1e-6)
    assert peak < 64e6


def test_permutation_fallback_agrees_with_exact_enumeration(monkeypatch):
    sizes, succ = [5, 4, 6, 3], [5, 1, 2, 0]
    exact, _, _ = exact_test(sizes, succ)
    monkeypatch.setattr(exact_tests, "_ENUM_LIMIT", 3)
    exact_tests._exact_cached.cache_clear()
    try:
        p, pmin, how = exact_test(sizes, succ, permutations=20_000, seed=1)
        again = exact_test(sizes, succ, permutations=20_000, seed=1)
    finally:
        exact_tests._exact_cached.cache_clear()
    assert how == "permutation" and pmin is None and again[0] == p  # seeded: reproducible
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4


def test_boschloo_matches_scipy():
    rng = np.random.default_rng(11)
    for _ in range(40):
        n1, n2 = (int(x) for x in rng.integers(1, 30, size=2))
        s1, s2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
        expect = stats.boschloo_exact([[s1, s2], [n1 - s1, n2 - s2]], alternative="two-sided").pvalue
        p, _ = boschloo_test([n1, n2], [s1, s2])
        assert p == pytest.approx(expect, rel=1e-6, abs=1e-12)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, size=50) ** 2
    assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"))
    # by hand: q_(i) = min_{j ≥ i} m p_(j) / j
    assert benjamini_hochberg([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_bh_family_spans_the_suite():
    # the same moderately strong branch in one task is significant alone, not among 40 null nodes
    strong = [TrialPath(f"s{i}", True, ["a()", "b()"]) for i in range(9)] + \
             [TrialPath(f"f{i}", i == 0, ["a()", "x()"]) for i in range(4)]
    alone = analyse([TaskTrials("t", strong)], DivergenceOptions(test="fisher"))
    v = node_of(alone, ["a()"])
    assert alone.qvalue[v] == pytest.approx(alone.pvalue[v])
    null = []
    rng = np.random.default_rng(0)
    for t in range(40):
        null.append(TaskTrials(f"n{t}", [TrialPath(f"n{t}-{i}", bool(rng.random() < 0.5), ["a()", "b()" if i % 2 else "c()"])
                                          for i in range(12)]))
    crowd = analyse([TaskTrials("t", strong)] + null, DivergenceOptions(test="fisher"))
    v = node_of(crowd, ["a()"])
    m = int(crowd.tested.sum())
    ps = crowd.pvalue[crowd.tested]
    assert m > 20
    assert crowd.qvalue[v] == pytest.approx(stats.false_discovery_control(ps, method="bh")[list(np.flatnonzero(crowd.tested)).index(v)])


EVENTS = [
    {"step": 0, "kind": "model", "output": "thinking"},
    {"step": 1, "kind": "tool", "tool": "find", "args": {"b": 2.0, "a": "x  y"}, "read_only": True, "state_hash": "s0"},
    {"step": 2, "kind": "tool", "tool": "find", "args": {"a": "x y", "b": 2}, "read_only": True, "state_hash": "s0"},
    {"step": 3, "kind": "user", "tool": "ask_user", "args": {"question": "id?"}, "read_only": True, "state_hash": "s0"},
    {"step": 4, "kind": "tool", "tool": "write", "args": {"v": 1}, "read_only": False, "state_hash": "s1"},
    {"step": 5, "kind": "tool", "tool": "write", "args": {"v": 1}, "read_only": False, "state_hash": "s1"},
    {"step": 6, "kind": "tool", "tool": "find", "args": {"a": "x y", "b": 2}, "read_only": True, "state_hash": "s1"},
]


def test_step_keys_and_options():
    find = step_key("find", {"a": "x y", "b": 2})
    write = step_key("write", {"v": 1})
    assert find == 'find({"a":"x y","b":2})'
    # the decision rule (default): lookups make no key; raw: canonical args (key order, 2.0 = 2,
    # folded whitespace); a repeated read collapses; a repeated write does not; ask_user and
    # model turns are not keys by default
    assert step_keys(EVENTS) == [write, write]
    raw = DivergenceOptions(fork="raw")
    assert step_keys(EVENTS, raw) == [find, write, write, find]
    assert step_keys(EVENTS, replace(raw, collapse_repeats=False)) == [find, find, write, write, find]
    assert step_keys(EVENTS, replace(raw, ignore_read_only=True)) == [write, write]
    assert step_keys(EVENTS, replace(raw, include_user=True)) == [
        find, step_key("ask_user", {"question": "id?"}), write, write, find]
    assert step_keys(EVENTS, DivergenceOptions(include_user=True)) == [step_key("ask_user", {"question": "id?"}), write, write]
    with_model = step_keys(EVENTS, replace(raw, include_model=True))
    assert with_model[0].startswith("model:") and with_model[1:] == [find, write, write, find]
    # state keys: only steps that change the state make a node
    assert step_keys(EVENTS, DivergenceOptions(key="state")) == ["state:s1"]
    failed_write = [{"step": 0, "kind": "tool", "tool": "write", "args": {}, "read_only": False, "error": "no", "state_hash": "s0"},
                    {"step": 1, "kind": "tool", "tool": "write", "args": {}, "read_only": False, "error": None, "state_hash": "s2"}]
    assert step_keys(failed_write, DivergenceOptions(key="state")) == ["state:s2"]
    with pytest.raises(ValueError):
        DivergenceOptions(key="tool")
    with pytest.raises(ValueError):
        DivergenceOptions(fork="first")


def test_state_keys_pool_different_orders():
    """Two orders of the same two writes reach the same state: keyed by state, trials of both
    orders pool in the final state's node."""
    def trial(tid, ok, order):
        states = {"xy": ["sx", "sxy"], "yx": ["sy", "sxy"]}[order]
        return TrialPath(tid, ok, [f"state:{s}" for s in states])
    trials = [trial(f"a{i}", True, "xy") for i in range(5)] + [trial(f"b{i}", True, "yx") for i in range(5)]
    trials += [TrialPath(f"c{i}", False, ["state:sx", "state:bad"]) for i in range(5)]
    a = analyse([TaskTrials("t", trials)], DivergenceOptions(key="state"))
    labels = a.graph_label
    final = labels.index("state:sxy")
    assert (a.graph_n[final], a.graph_s[final]) == (10, 10)  # both orders pooled
    sx = labels.index("state:sx")
    assert (a.graph_n[sx], a.graph_s[sx]) == (10, 5)
    d = a.section["tasks"][0]["divergence"]
    assert d["state"] == "state:sx" and {alt["action"] for alt in d["alternatives"]} == {"state:sxy", "state:bad"}


# ------------------------------------------------------------------ on real runs of the harness


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    from bench.world.suite import load_suite

    out = tmp_path_factory.mktemp("div") / "run"
    config = RunConfig(k=12, out=out, progress=False, retry_backoff_s=0.0)
    run_benchmark(load_suite(MINI), parse_agent_spec("sim:noisy?p=0.5&noise=0.4"), None, config)
    return out


def _independent_trees(run_dir, decisions):
    """Each task's prefix tree recomputed from the raw log lines, with plain dicts (with
    `decisions`, over the writes only: the decision rule)."""
    lines = [orjson.loads(x) for x in read_log(run_dir).splitlines()]
    summaries = {r["trial"]: r for r in lines if r["type"] == "trial"}
    steps = defaultdict(list)
    for r in lines:
        if r["type"] == "step":
            steps[r["attempt"]].append(r)
    trees = defaultdict(Counter)
    writes = {s["task"] for s in summaries.values()
              if any(ev["kind"] == "tool" and not ev["read_only"] for ev in steps[s["attempt"]])}
    for s in summaries.values():
        keys = []
        for ev in sorted(steps[s["attempt"]], key=lambda e: e["step"]):
            if ev["kind"] != "tool":
                continue
            key = step_key(ev["tool"], ev["args"])
            if ev["read_only"] and ((decisions and s["task"] in writes) or (keys and keys[-1] == key)):
                continue
            keys.append(key)
        keys.append(END)
        for depth in range(len(keys) + 1):
            trees[s["task"]][(tuple(keys[:depth]), "n")] += 1
            trees[s["task"]][(tuple(keys[:depth]), "s")] += s["outcome"] == "success"
    return trees, summaries


@pytest.mark.parametrize("fork", ["decision", "raw"])
def test_run_section_matches_an_independent_tree(noisy_run, fork):
    section = divergence_section(noisy_run, fork=fork)
    jsonschema.validate(section, load_schema("divergence.schema.json"))
    json.dumps(section)  # plain JSON
    trees, summaries = _independent_trees(noisy_run, fork == "decision")
    assert section["suite"]["trials"] == len(summaries)
    for row in section["tasks"]:
        tree = trees[row["task"]]
        assert row["nodes"] == len({p for p, _ in tree})
        for b in row["branches"]:
            if "prefix" in b:
                prefix = tuple(b["prefix"])
                assert (b["n"], b["successes"]) == (tree[(prefix, "n")], tree[(prefix, "s")])
                for alt in b["alternatives"]:
                    key = prefix + ((alt["action"] or END),)
                    assert (alt["n"], alt["successes"]) == (tree[(key, "n")], tree[(key, "s")])
    # the mini suite's reference is found (path in the manifest, same hash)
    assert section["reference"] == {"available": True, "reason": None}
    cancel = next(r for r in section["tasks"] if r["task"] == "cancel-pending")
    assert cancel["reference"]["length"] == (1 if fork == "decision" else 3)  # keyed like the trials: its one write
    assert cancel["milestones"]["curves"]["identified"]["success"][0] == 1.0


def test_streaming_and_parsed_log_agree(noisy_run):
    assert orjson.dumps(divergence_section(noisy_run)) == orjson.dumps(divergence_section(read_run(noisy_run)))


@pytest.mark.parametrize("options", [DivergenceOptions(), DivergenceOptions(fork="raw"), DivergenceOptions(key="state")],
                         ids=["decision", "raw", "state"])
def test_a_run_analysed_in_chunks_reads_as_analysed_whole(noisy_run, monkeypatch, options):
    # the chunked section (two passes, one BH over the suite) is the whole analysis's, byte for byte
    whole = analyse_run(noisy_run, options).section
    assert whole["suite"]["tested_nodes"] > 0 and whole["suite"]["tasks"] >= 3
    monkeypatch.setattr(section_module, "CHUNK_TRIALS", 13)  # 12 trials a task: one task, sometimes two, a chunk
    chunked = divergence_section(noisy_run, options)  # the first pass's chunks kept for the second
    assert orjson.dumps(chunked) == orjson.dumps(whole)
    monkeypatch.setattr(section_module, "KEEP_KEYS", 0)  # each chunk built again for the second pass
    assert orjson.dumps(divergence_section(noisy_run, options)) == orjson.dumps(whole)


def test_packed_attempts_gather_as_their_lists(noisy_run):
    """`PackedAttempts.gather` (numpy over the packed array) gives each attempt's sequences as
    its unpacked lists do, with attempts without steps and attempts held unpacked among them."""
    run = read_keyed(noisy_run, DivergenceOptions(key="state"))
    packed = run.keyer.attempts
    assert isinstance(packed, PackedAttempts)
    attempts = sorted(packed)[:40]
    loose = AttemptKeys()
    loose.keys, loose.where, loose.calls, loose.actions = [1, 2], [0, 5], [3, 2 ** 40], [7]
    packed._loose["beyond-int32"] = loose
    for handles in ([packed.handle_of(a) for a in attempts] + [None],
                    [packed.handle_of(a) for a in attempts[:5]] + ["beyond-int32", None]):
        got = packed.gather(handles)
        want = [packed[h] if isinstance(h, str) else (AttemptKeys() if h is None else packed._unpack(h)) for h in handles]
        for name, lengths in (("keys", got.n_keys), ("where", got.n_keys), ("calls", got.n_calls), ("actions", got.n_actions)):
            flat = getattr(got, name).tolist()
            cut = np.cumsum([0] + lengths.tolist())
            assert [flat[cut[i]:cut[i + 1]] for i in range(len(handles))] == [getattr(tk, name) for tk in want]
        assert [list(packed.actions_of(h)) for h in handles] == [tk.actions for tk in want]


def test_packed_keys_of_interleaved_attempts_read_as_built_whole(noisy_run):
    # a log written before one write per attempt interleaves attempts: a packed attempt reopens
    events = [ev for a in sorted(read_run(noisy_run).steps.items()) for ev in a[1]][:400]
    interleaved = events[::2] + events[1::2]
    interleaved.sort(key=lambda ev: (ev["step"], ev["attempt"]))  # step order within each attempt, attempts mixed
    for options in (DivergenceOptions(), DivergenceOptions(key="state")):
        keyer = Keyer(options, {END: 0})
        for ev in interleaved:
            keyer.feed_record(ev)
        keyer.finish()
        whole = Keyer(options, {END: 0})
        by_attempt: dict[str, list] = defaultdict(list)
        for ev in interleaved:
            by_attempt[ev["attempt"]].append(ev)
        for attempt, evs in by_attempt.items():
            got, want = keyer.attempts[attempt], whole.keys(evs)
            assert (got.keys, got.where, got.calls, got.actions) == (want.keys, want.where, want.calls, want.actions)
        assert len(keyer.attempts) == len(by_attempt) > 10


def test_a_keyed_run_is_analysed_with_the_options_it_was_keyed_with(noisy_run):
    state = DivergenceOptions(key="state")
    keyed = read_keyed(noisy_run, state)
    assert keyed.log.steps == {}  # keyed as read, not kept
    assert orjson.dumps(divergence_section(keyed)) == orjson.dumps(divergence_section(noisy_run, state))
    with pytest.raises(ValueError, match="keyed with"):
        divergence_section(keyed, DivergenceOptions())


def test_sim_truth_failures_branch_where_the_sim_corrupted(noisy_run):
    """Every failed trial of the sim agent leaves the reference at or before the step the sim
    corrupted (recorded in its summary), and succeeding trials never leave it."""
    log = read_run(noisy_run)
    section = divergence_section(log)
    for row in section["tasks"]:
        for tr in row["trials"]:
            info = log.summaries[tr["trial"]]["agent_info"]["sim"]
            if tr["outcome"] == "success":
                assert tr["leaves_reference_at"] is None
            else:
                assert tr["leaves_reference_at"] is not None and tr["critical_step"] is not None
                assert info["intended"] == "failure"


def test_reference_skipped_gracefully_when_the_suite_is_gone(noisy_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(noisy_run, copy)
    manifest = orjson.loads((copy / "run.json").read_bytes())
    manifest["suite"]["path"] = str(tmp_path / "nowhere")
    manifest["suite"]["name"] = "no-such-suite"
    (copy / "run.json").write_bytes(orjson.dumps(manifest))
    section = divergence_section(copy)
    assert section["reference"]["available"] is False and "cannot be loaded" in section["reference"]["reason"]
    assert all(r["reference"] is None for r in section["tasks"])
    assert "reference analysis skipped" in render_divergence_text(section)


def test_changed_suite_is_not_used_as_reference(noisy_run, tmp_path, mini_copy):
    copy = tmp_path / "run"
    shutil.copytree(noisy_run, copy)
    manifest = orjson.loads((copy / "run.json").read_bytes())
    (mini_copy / "policy.md").write_text("changed\n")
    manifest["suite"]["path"] = str(mini_copy)
    (copy / "run.json").write_bytes(orjson.dumps(manifest))
    reason = divergence_section(copy)["reference"]["reason"]
    assert "changed since the run" in reason


def test_torn_last_line_and_orphan_attempts_are_ignored(noisy_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(noisy_run, copy)
    orphan = {"type": "step", "trial": "cancel-pending/base/0", "attempt": "cancel-pending/base/0@dead", "step": 0,
              "kind": "tool", "tool": "cancel_order", "args": {"order_id": "O9"}, "read_only": False, "state_hash": "x"}
    write_log(copy, read_log(copy) + orjson.dumps(orphan) + b"\n" + b'{"type": "step", "trial": "can')
    assert orjson.dumps(divergence_section(copy)) == orjson.dumps(divergence_section(noisy_run))


def test_text_rendering_names_the_divergence_and_escapes_control_characters():
    trials = [TrialPath(f"s{i}", True, ["a()", "b()"]) for i in range(10)]
    trials += [TrialPath(f"f{i}", False, ["a()", 'x({"v":"\x1b[31mred"})']) for i in range(6)]
    section = analyse([TaskTrials("task-\x07bell", trials)]).section
    text = render_divergence_text(section)
    assert "task-\\x07bell" in text and "\x1b" not in text and "\x07" not in text
    assert "1 have a significant divergence point" in text
    assert "b() 10/10" in text


def test_cli_options_round_trip():
    import argparse

    from bench.errors import BenchError

    parser = argparse.ArgumentParser()
    add_divergence_arguments(parser)
    o = divergence_options(parser.parse_args(["--divergence-key", "state", "--ignore-read-only", "--alpha", "0.1",
                                                "--branch-test", "fisher", "--min-support", "6", "--divergence", "raw"]))
    assert (o.key, o.ignore_read_only, o.alpha, o.test, o.min_support, o.fork) == ("state", True, 0.1, "fisher", 6, "raw")
    assert divergence_options(parser.parse_args([])) == DivergenceOptions()
    with pytest.raises(BenchError, match="alpha"):
        divergence_options(parser.parse_args(["--alpha", "2"]))


def test_only_unperturbed_inputs_unless_pooled(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "run"
    proc = run_cli("run", str(MINI), "--agent", "sim:noisy?p=0.5", "-k", "6", "--variants", "typos",
                   "--tasks", "cancel-pending", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    log = read_run(out)
    families = Counter(s.get("variant_family", "base") for s in log.summaries.values())
    assert families["base"] == 6 and sum(families.values()) > 6
    base = divergence_section(log)
    pooled = divergence_section(log, DivergenceOptions(pool_variants=True))
    assert base["suite"]["trials"] == 6 and pooled["suite"]["trials"] == sum(families.values())


def test_keys_given_as_a_plain_mapping_read_as_packed(noisy_run):
    """A keyer whose attempts are a plain mapping (keys given, not packed while read) gives the
    section the packed keys give."""
    packed = read_keyed(noisy_run)
    want = orjson.dumps(divergence_section(packed))
    plain = read_keyed(noisy_run)
    plain.keyer.attempts = {a: plain.keyer.attempts[a] for a in plain.keyer.attempts}
    assert orjson.dumps(divergence_section(plain)) == want
