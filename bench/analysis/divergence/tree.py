"""Divergence: where the k runs of a task branch apart, and which branch leads to failure.

DESIGN.md "Divergence — the heart of the product" and shared/reference/metrics.md §4.4.
docs/divergence.md explains every figure; in short, per task:

1. Every logged step gets a canonical **key**: `tool(canonical JSON of its arguments)`
   (`bench.canonical.step_key`). Options (`DivergenceOptions`): drop read-only steps; key on
   the state hash after the step instead (`key="state"`); keep `ask_user` turns and model turns
   as keys (by default they are not); a read-only step that repeats the previous key on an
   unchanged state is a no-op and is dropped (`collapse_repeats`, on by default). Every
   trajectory ends in a pseudo-key `<end>`, so stopping early is an alternative like any other.
2. The **prefix tree** of the task's trials over their keys. Each node: trials through it N,
   successes S, smoothed estimate V = (S+1)/(N+2) (a uniform Beta(1, 1) prior). With
   `key="state"` nodes are *states* instead of prefixes: trials that reach the same state by
   different orders are pooled (a state graph; each trial counts once per state).
3. **Branch nodes** (≥ 2 alternatives) are scored by the information gain of the split on the
   outcome, IG(v) = h(V(v)) − Σ_u (N_u/N_v) h(V(u)) with h the binary entropy, and tested with
   an exact conditional test of alternatives × outcome: Fisher's for two alternatives (or
   Boschloo's, `test="boschloo"`), the Freeman–Halton extension by full enumeration beyond two,
   and a seeded Monte-Carlo permutation test when the enumeration is too large. Only nodes with
   at least `min_support` trials (default 4) and both outcomes are tested; of those, nodes
   whose smallest attainable p-value exceeds alpha can never be significant and are left out
   of the family (Tarone). Benjamini–Hochberg controls the false-discovery rate across all the
   suite's tested nodes.
4. The task's **divergence point** is the significant branch node with the highest *task
   information*: IG weighted by the share of the task's trials that reach the node,
   (N_v/N_task)·IG_mle(v) — the mutual information (bits per trial) between the task's outcome
   and the choice made at v. Ties: shallower first. The **critical step** of a failed trial is
   where its estimate drops most along its path (V(parent) − V(child), first maximum).
5. Against the task's reference actions (when the run's suite can be loaded and its hash
   matches): the first step where each trial leaves the reference, survival curves by outcome,
   and milestone curves (share of trials that reached each milestone by tool call s).
6. Suite: distribution of divergence steps, tools and actions at which failure branches begin,
   median first-divergence step of success–failure vs success–success pairs.

Steps are 0-based positions in the key sequence (not raw log indices, which also count
dropped steps and model turns; the raw index of each example step is kept for the viewer).

Everything is vectorised over the whole suite (numpy): on 100k trials × 10 steps the analysis
takes about 2.5 s of CPU beyond reading the log, half of it in the exact tests
(benchmarks/divergence.py).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from bench.canonical import canonical_json, derive_seed, digest, step_key
from bench.run.rundir import RunLog, gc_paused, read_run
from bench.analysis.metrics import benjamini_hochberg
from bench.world.variants import BASE

__all__ = [
    "END",
    "DIVERGENCE_VERSION",
    "DivergenceOptions",
    "TrialPath",
    "TaskTrials",
    "Analysis",
    "trial_keys",
    "information_gain",
    "exact_test",
    "boschloo_test",
    "benjamini_hochberg",
    "analyse",
    "KeyedRun",
    "read_keyed",
    "key_parsed",
    "analyse_run",
    "divergence_section",
    "render_divergence_text",
    "add_cli_arguments",
    "options_from_args",
    "DIVERGENCE_SCHEMA",
]

END = "<end>"
DIVERGENCE_VERSION = 1
_LOG1P_TOL = math.log1p(1e-7)  # scipy's relative tolerance for "as or less likely" tables
_ENUM_LIMIT = 200_000  # largest number of tables enumerated exactly; beyond: permutations


# ---------------------------------------------------------------------------------------
# Options and inputs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DivergenceOptions:
    """How steps are keyed and branches tested. Every field is recorded in the output."""

    key: str = "action"  # "action": tool + canonical args; "state": state hash after the step
    ignore_read_only: bool = False
    include_user: bool = False  # ask_user turns as keys
    include_model: bool = False  # model turns as keys (keyed by a digest of their output)
    pool_variants: bool = False  # also pool trials on perturbed input variants (default: base inputs only)
    collapse_repeats: bool = True  # drop a read-only step repeating the previous key
    alpha: float = 0.05  # false-discovery rate (Benjamini–Hochberg over the suite's tested nodes)
    min_support: int = 4  # fewest trials through a node for it to be tested
    test: str = "boschloo"  # two alternatives: "boschloo" (more powerful at small k) or "fisher"
    boschloo_max_n: int = 128  # Boschloo for nodes with at most this many trials; Fisher above
    permutations: int = 10_000  # Monte-Carlo permutations when exact enumeration is too large
    seed: int = 0
    max_branches: int = 5  # branch nodes listed per task (best first)
    max_trials_listed: int = 100  # per-trial rows listed per task (failed trials first)

    def __post_init__(self) -> None:
        if self.key not in ("action", "state"):
            raise ValueError(f"key must be 'action' or 'state', got {self.key!r}")
        if self.test not in ("fisher", "boschloo"):
            raise ValueError(f"test must be 'fisher' or 'boschloo', got {self.test!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_support < 2:
            raise ValueError(f"min_support must be at least 2, got {self.min_support}")
        if self.permutations < 100:
            raise ValueError(f"permutations must be at least 100, got {self.permutations}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialPath:
    """One trial, already keyed. `steps[i]` is the position in the trial's logged events of
    the step behind `keys[i]` (for showing its details); `milestones` maps a milestone name to
    the tool-call index at which it was reached (or None)."""

    trial: str
    success: bool
    keys: list[str]
    steps: list[int] | None = None
    milestones: dict[str, int | None] | None = None
    tool_calls: int | None = None


@dataclass
class TaskTrials:
    task: str
    trials: list[TrialPath]
    reference: list[str] | None = None  # the reference actions, keyed like the trials
    milestones: list[str] = field(default_factory=list)  # milestone names, in task order


def _tool_of(key: str) -> str | None:
    if key == END or key.startswith("state:") or key.startswith("model:"):
        return None
    tool, paren, _ = key.partition("(")
    return tool if paren else key


_DUMPS_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class _TrialKeys:
    """The keys of one attempt, built event by event."""

    __slots__ = ("keys", "where", "calls", "actions", "last_state", "events")

    def __init__(self) -> None:
        self.keys: list[int] = []  # key ids
        self.where: list[int] = []  # position of each key's event among the attempt's events
        self.calls: list[int] = []  # step index of every tool/user call (for milestones)
        self.actions: list[int] = []  # action key id of every tool call, none dropped (the report's sequence)
        self.last_state: Any = None
        self.events = 0


class _Keyer:
    """Keys logged step events into ids of a shared vocabulary. The key of each (tool, raw
    arguments) is cached, so that a repeated call costs one orjson.dumps and a dict lookup."""

    def __init__(self, options: DivergenceOptions, vocab: dict[str, int]):
        self.vocab = vocab
        self.attempts: dict[str, _TrialKeys] = {}  # filled by `feed_record`
        self._cache: dict[tuple[str, bytes], int] = {}
        self.state_mode = options.key == "state"
        self.ignore_read_only = options.ignore_read_only
        self.include_user = options.include_user
        self.include_model = options.include_model
        self.collapse = options.collapse_repeats

    def intern(self, key: str) -> int:
        i = self.vocab.get(key)
        if i is None:
            i = self.vocab[key] = len(self.vocab)
        return i

    def action_id(self, tool: str, args: Any) -> int:
        try:
            raw = orjson.dumps(args, option=_DUMPS_OPT)
        except TypeError:
            raw = repr(args).encode()
        i = self._cache.get((tool, raw))
        if i is None:
            try:
                label = step_key(tool, args)
            except TypeError:
                label = step_key(tool, repr(args))
            # kept as a compact copy: the bytes orjson returns hold on to its ~4 KB write buffer
            i = self._cache[(tool, bytes(memoryview(raw)))] = self.intern(label)
        return i

    def feed_record(self, ev: dict[str, Any]) -> None:
        """Add a step record of the log (records of each attempt must come in step order)."""
        tk = self.attempts.get(ev["attempt"])
        if tk is None:
            tk = self.attempts[ev["attempt"]] = _TrialKeys()
        self.feed(tk, ev)

    def feed(self, tk: _TrialKeys, ev: dict[str, Any]) -> None:
        """Add one logged event of the attempt (events must come in step order)."""
        pos = tk.events
        tk.events += 1
        kind = ev.get("kind")
        if kind == "tool":
            tk.calls.append(ev.get("step", pos))
            key = self._tool_key(tk, ev)
        elif kind == "user":
            tk.calls.append(ev.get("step", pos))
            key = self.action_id("ask_user", ev.get("args")) if self.include_user else None
        elif kind == "model" and self.include_model and not self.state_mode:
            key = self.intern("model:" + digest(canonical_json(_jsonable(ev.get("output"))))[:16])
        else:
            return
        if key is not None:
            tk.keys.append(key)
            tk.where.append(pos)

    def _tool_key(self, tk: _TrialKeys, ev: dict[str, Any]) -> int | None:
        """The key of a tool call, or None when the options make it no node."""
        action = self.action_id(str(ev.get("tool")), ev.get("args"))
        tk.actions.append(action)
        read_only = ev.get("read_only")
        if read_only and self.ignore_read_only:
            return None
        if self.state_mode:
            state = ev.get("state_hash")
            changed = not read_only and ev.get("error") is None and state != tk.last_state
            tk.last_state = state
            return self.intern("state:" + str(state)) if changed and state is not None else None
        if read_only and self.collapse and tk.keys and tk.keys[-1] == action:
            return None  # a no-op: the same read again on the same state
        return action

    def keys(self, events: Sequence[dict[str, Any]]) -> _TrialKeys:
        tk = _TrialKeys()
        for ev in events:
            self.feed(tk, ev)
        return tk


def _jsonable(value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return repr(value)


def trial_keys(events: Sequence[dict[str, Any]], options: DivergenceOptions | None = None) -> list[str]:
    """The canonical keys of one trial's logged step events (see the module docstring)."""
    vocab: dict[str, int] = {}
    tk = _Keyer(options or DivergenceOptions(), vocab).keys(events)
    labels = list(vocab)
    return [labels[i] for i in tk.keys]


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def _h(p: np.ndarray | float) -> np.ndarray:
    """Binary entropy in bits (0 at p = 0 or 1)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where((p <= 0) | (p >= 1), 0.0, out)


def information_gain(n: int, s: int, children: Sequence[tuple[int, int]], smoothed: bool = True) -> float:
    """IG of splitting a node (n trials, s successes) into children [(n_u, s_u), ...]:
    h(V(v)) − Σ (n_u/n) h(V(u)), with V = (S+1)/(N+2) when `smoothed`, else S/N (then IG is
    the empirical mutual information between outcome and child, ≥ 0)."""
    est = (lambda a, b: (b + 1) / (a + 2)) if smoothed else (lambda a, b: b / a)
    total = float(_h(est(n, s)))
    for nu, su in children:
        total -= nu / n * float(_h(est(nu, su)))
    return total


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln  # scipy is imported on first use: `import bench.analysis.divergence.tree` stays light

    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


_LOG_FACT = np.array([math.lgamma(i + 1) for i in range(4097)])


def _log_comb_row(n: int) -> np.ndarray:
    """log C(n, x) for x = 0..n."""
    if n < _LOG_FACT.size:
        return _LOG_FACT[n] - _LOG_FACT[: n + 1] - _LOG_FACT[n::-1]
    x = np.arange(n + 1, dtype=np.float64)
    return _log_comb(np.float64(n), x)


def _enumerate_log_weights(sizes: tuple[int, ...], total: int) -> np.ndarray | None:
    """log Π C(n_i, x_i) for every table with Σ x_i = total, 0 ≤ x_i ≤ n_i (None if there
    are more than _ENUM_LIMIT partial tables)."""
    sizes = tuple(sorted(sizes, reverse=True))  # big children first: fewer partial tables
    cap_after = [sum(sizes[i + 1:]) for i in range(len(sizes))]  # room left in later children
    sums = np.zeros(1, dtype=np.int64)
    logw = np.zeros(1)
    for i, n in enumerate(sizes):
        x = np.arange(n + 1)
        lc = _log_comb_row(n)
        new_s = (sums[:, None] + x[None, :]).ravel()
        keep = (new_s <= total) & (new_s + cap_after[i] >= total)
        if int(keep.sum()) > _ENUM_LIMIT:
            return None
        logw = (logw[:, None] + lc[None, :]).ravel()[keep]
        sums = new_s[keep]
    return logw


@lru_cache(maxsize=200_000)
def _exact_cached(table: tuple[tuple[int, int], ...], permutations: int, seed: int) -> tuple[float, float | None, str]:
    sizes = tuple(n for n, _ in table)
    succ = tuple(s for _, s in table)
    N, S = sum(sizes), sum(succ)
    if S == 0 or S == N or len(sizes) < 2:
        return 1.0, 1.0, "trivial"
    lognorm = float(_log_comb(np.float64(N), np.float64(S)))
    obs = float(np.sum(_log_comb(np.array(sizes, float), np.array(succ, float))))
    if len(sizes) == 2:  # the hypergeometric support directly
        n1, n2 = sizes
        lo, hi = max(0, S - n2), min(n1, S)
        logw = _log_comb_row(n1)[lo:hi + 1] + _log_comb_row(n2)[S - hi:S - lo + 1][::-1]
    else:
        logw = _enumerate_log_weights(sizes, S)
    if logw is not None:
        logp = logw - lognorm
        prob = np.exp(logp)
        p = float(min(1.0, prob[logp <= obs - lognorm + _LOG1P_TOL].sum()))
        pmin = float(min(1.0, prob[logp <= logp.min() + _LOG1P_TOL].sum()))
        return p, pmin, "fisher" if len(sizes) == 2 else "exact"
    # Monte Carlo: random tables with the same margins (a permutation of the outcomes),
    # drawn child by child from the hypergeometric; statistic = the table's probability.
    rng = np.random.default_rng(derive_seed("divergence-permutation", seed, table))
    good = np.full(permutations, S, dtype=np.int64)
    left = N
    logw_sim = np.zeros(permutations)
    for n in sizes[:-1]:
        bad = left - good
        x = rng.hypergeometric(np.maximum(good, 0), np.maximum(bad, 0), n) if n > 0 else np.zeros(permutations, np.int64)
        logw_sim += _log_comb(np.float64(n), x.astype(np.float64))
        good = good - x
        left -= n
    logw_sim += _log_comb(np.float64(sizes[-1]), good.astype(np.float64))
    hits = int(np.sum(logw_sim <= obs + _LOG1P_TOL))
    return (1 + hits) / (permutations + 1), None, "permutation"


def exact_test(sizes: Sequence[int], successes: Sequence[int], *, permutations: int = 10_000,
               seed: int = 0) -> tuple[float, float | None, str]:
    """Conditional exact test of independence between alternative and outcome (an r × 2 table
    with fixed margins). Returns (p-value, smallest p-value attainable with these margins or
    None when unknown, method). The p-value sums the probabilities of all tables as or less
    likely than the observed one (Fisher's two-sided test for r = 2; Freeman–Halton for r > 2),
    by full enumeration when there are at most 200k tables, else a seeded Monte-Carlo
    permutation test, (1 + hits)/(B + 1)."""
    table = tuple(sorted(zip((int(n) for n in sizes), (int(s) for s in successes))))
    return _exact_cached(table, int(permutations), int(seed))


_PI_GRID = np.linspace(0.0, 1.0, 401)[1:-1]
_LOG_PI, _LOG_1MPI = np.log(_PI_GRID), np.log1p(-_PI_GRID)


@lru_cache(maxsize=512)
def _bernstein_basis(N: int) -> np.ndarray:
    """π^j (1−π)^(N−j) on the coarse grid of π (rows) for j = 0..N (columns)."""
    j = np.arange(N + 1)
    return np.exp(j[None, :] * _LOG_PI[:, None] + (N - j)[None, :] * _LOG_1MPI[:, None])


@lru_cache(maxsize=2048)
def _boschloo_space(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For groups of n1 and n2 trials: every table's one-sided Fisher p-values ('less' for
    group 1's successes, 'greater'), the binomial weights C(n1,x1)·C(n2,x2), and x1 + x2."""
    x1 = np.arange(n1 + 1)[:, None]
    x2 = np.arange(n2 + 1)[None, :]
    k = x1 + x2
    N = n1 + n2
    from scipy import stats

    less = stats.hypergeom.cdf(x1, N, k, n1)
    greater = stats.hypergeom.cdf(x2, N, k, n2)
    logw = _log_comb(np.float64(n1), x1.astype(float)) + _log_comb(np.float64(n2), x2.astype(float))
    return less, greater, logw, k


def _log_bernstein(logc: np.ndarray, j: np.ndarray, N: int, pi: np.ndarray) -> np.ndarray:
    """log Σ_j c_j π^j (1−π)^(N−j) for each π (0 < π < 1)."""
    terms = logc[None, :] + j[None, :] * np.log(pi)[:, None] + (N - j)[None, :] * np.log1p(-pi)[:, None]
    m = terms.max(axis=1)
    return m + np.log(np.exp(terms - m[:, None]).sum(axis=1))


def _sup_over_pi(mask: np.ndarray, logw: np.ndarray, k: np.ndarray, N: int) -> float:
    """sup over π of P(the table falls in `mask`) when both groups are Binomial(n, π):
    P(π) = Σ_j c_j π^j (1−π)^(N−j), c_j = Σ_{x1+x2=j, mask} C(n1,x1) C(n2,x2). Evaluated on a
    grid of 399 values of π, then twice on a 65-point grid around the best (resolution ~1e-7;
    P is a smooth polynomial, so the sup is found to ~1e-12 relative)."""
    if not mask.any():
        return 0.0
    lw = logw[mask]
    top = lw.max()
    c = np.bincount(k[mask], weights=np.exp(lw - top), minlength=N + 1)
    j = np.flatnonzero(c > 0)
    logc = np.log(c[j]) + top
    best = -np.inf
    if c[0] > 0:  # π → 0 and π → 1: the all-failure / all-success tables alone
        best = max(best, float(np.log(c[0]) + top))
    if c[N] > 0:
        best = max(best, float(np.log(c[N]) + top))
    with np.errstate(divide="ignore"):
        values = np.log(_bernstein_basis(N)[:, j] @ np.exp(logc - top)) + top
    grid = _PI_GRID
    for step in range(3):
        if step:
            values = _log_bernstein(logc, j, N, grid)
        i = int(np.argmax(values))
        best = max(best, float(values[i]))
        lo = grid[i - 1] if i > 0 else grid[i] / 2
        hi = grid[i + 1] if i + 1 < grid.size else (1 + grid[i]) / 2
        grid = np.linspace(lo, hi, 65)
    return float(min(1.0, np.exp(best)))


@lru_cache(maxsize=200_000)
def _boschloo_cached(n1: int, s1: int, n2: int, s2: int) -> float:
    less, greater, logw, k = _boschloo_space(n1, n2)
    N = n1 + n2
    p_less = _sup_over_pi(less <= less[s1, s2] * (1 + 1e-13), logw, k, N)
    p_greater = _sup_over_pi(greater <= greater[s1, s2] * (1 + 1e-13), logw, k, N)
    return float(min(1.0, 2 * min(p_less, p_greater)))


def boschloo_test(sizes: Sequence[int], successes: Sequence[int]) -> tuple[float, float]:
    """Boschloo's exact unconditional test for two alternatives, two-sided as in scipy
    (twice the smaller one-sided p-value; the nuisance success rate is maximised over a grid
    of 399 values plus a local refinement, instead of scipy's 32-point shgo). Returns
    (p-value, smallest p-value attainable with the same group sizes and total successes)."""
    (n1, n2), (s1, s2) = (int(sizes[0]), int(sizes[1])), (int(successes[0]), int(successes[1]))
    if (n1, s1) > (n2, s2):
        n1, s1, n2, s2 = n2, s2, n1, s1
    S = s1 + s2
    p = _boschloo_cached(n1, s1, n2, s2)
    pmin = min(_boschloo_cached(n1, a, n2, S - a) for a in {min(n1, S), max(0, S - n2)})
    return p, pmin


# ---------------------------------------------------------------------------------------
# The analysis (vectorised over the whole suite)
# ---------------------------------------------------------------------------------------


def _seg_first(mask: np.ndarray, seg_start: np.ndarray, seg_len: np.ndarray) -> np.ndarray:
    """For each (non-empty) segment, the offset from its start of the first True in `mask`,
    or -1 when there is none."""
    n = mask.size
    big = np.iinfo(np.int64).max
    out = np.full(seg_start.size, -1, dtype=np.int64)
    if n:
        idx = np.where(mask, np.arange(n) - np.repeat(seg_start, seg_len), big)
        first = np.minimum.reduceat(idx, seg_start)
        out = np.where(first == big, -1, first)
    return out


@dataclass
class Analysis:
    """The vectorised result behind the JSON section (also used by the viewer).

    Positions: one per (trial, i) for i = 0..len(keys) (the last is `<end>`), flat, trials in
    order. Tree nodes are prefixes (roots: one per task); graph nodes are the nodes the
    statistics are computed on (= tree nodes, or states with key="state").
    """

    options: DivergenceOptions
    task_ids: list[str]
    vocab: list[str]
    trial_ids: list[str]
    trial_task: np.ndarray
    success: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    flat_keys: np.ndarray
    flat_steps: np.ndarray
    # prefix tree
    tree_parent: np.ndarray
    tree_key: np.ndarray
    tree_depth: np.ndarray
    tree_task: np.ndarray
    tree_n: np.ndarray
    tree_s: np.ndarray
    node_at: np.ndarray  # tree node reached by taking the key at each position
    tree_on_ref: np.ndarray  # prefix is a prefix of the reference (False where no reference)
    tree_ref_next: np.ndarray  # the reference's next key id at nodes on its path, else -1
    # graph used for the statistics
    graph_before: np.ndarray  # graph node each position departs from
    graph_n: np.ndarray
    graph_s: np.ndarray
    graph_task: np.ndarray
    graph_step: np.ndarray
    graph_label: list[str] | None  # state-graph node labels (None in tree mode)
    group_node: np.ndarray  # alternative groups: (graph node, key)
    group_key: np.ndarray
    group_n: np.ndarray
    group_s: np.ndarray
    pos_group: np.ndarray  # group of each position (-1 for revisits in a state graph)
    drop: np.ndarray  # per position: V(node departed) − V(alternative taken); -inf for revisits
    ig: np.ndarray  # per graph node (nan where not a branch)
    score: np.ndarray
    pvalue: np.ndarray
    pmin: np.ndarray
    method: list[str | None]
    qvalue: np.ndarray
    tested: np.ndarray
    divergence_node: np.ndarray  # per task: graph node of the divergence point, or -1
    climbed_from: np.ndarray  # per task: the top-scoring node when an ancestor was reported, or -1
    critical_pos: np.ndarray  # per trial: position of the critical step (failed trials), else -1
    leave_ref: np.ndarray  # per trial: position where it leaves the reference; -1 never; -2 unknown
    section: dict[str, Any] = field(default_factory=dict)

    def task_trials(self, t: int) -> np.ndarray:
        return np.flatnonzero(self.trial_task == t)


class _Corpus:
    def __init__(self) -> None:
        self.vocab: dict[str, int] = {END: 0}
        self.task_ids: list[str] = []
        self.references: list[list[int] | None] = []
        self.milestones: list[list[str]] = []
        self.trial_ids: list[str] = []
        self.trial_task: list[int] = []
        self.success: list[bool] = []
        self.keys: list[list[int]] = []
        self.steps: list[list[int]] = []
        self.trial_milestones: list[dict[str, int | None] | None] = []
        self.tool_calls: list[int] = []
        self._ids: dict[int, int] = {0: 0}  # keyer id -> corpus id (`renumber`); END is 0 in both

    def renumber(self, keys: list[int]) -> list[int]:
        """Keyer ids as corpus ids, numbered in order of first appearance in the corpus (task by
        task, reference first; `adopt_labels` then names them). Ties between equal nodes fall
        to the lower id, so this keeps the analysis independent of the order in which the log
        lists its steps (concurrent trials interleave) and of keys the corpus leaves out."""
        ids = self._ids
        return [ids.setdefault(k, len(ids)) for k in keys]

    def adopt_labels(self, keyer_vocab: dict[str, int]) -> None:
        """Name the corpus ids (`renumber`) with the keyer's labels."""
        labels = list(keyer_vocab)
        self.vocab = {labels[old]: new for old, new in self._ids.items()}

    def intern(self, keys: Sequence[str]) -> list[int]:
        vocab = self.vocab
        out = []
        for k in keys:
            i = vocab.get(k)
            if i is None:
                i = vocab[k] = len(vocab)
            out.append(i)
        return out


def analyse(tasks: Sequence[TaskTrials], options: DivergenceOptions | None = None) -> Analysis:
    """Divergence analysis of already-keyed trials (see `divergence_section` for a run)."""
    corpus = _Corpus()
    for task in tasks:
        t = len(corpus.task_ids)
        corpus.task_ids.append(task.task)
        corpus.references.append(None if task.reference is None else corpus.intern(task.reference))
        corpus.milestones.append(list(task.milestones))
        for trial in task.trials:
            corpus.trial_ids.append(trial.trial)
            corpus.trial_task.append(t)
            corpus.success.append(bool(trial.success))
            corpus.keys.append(corpus.intern(trial.keys))
            corpus.steps.append(list(trial.steps) if trial.steps is not None else list(range(len(trial.keys))))
            corpus.trial_milestones.append(trial.milestones)
            corpus.tool_calls.append(trial.tool_calls if trial.tool_calls is not None else len(trial.keys))
    return _analyse_corpus(corpus, options or DivergenceOptions())


def _analyse_corpus(c: _Corpus, o: DivergenceOptions) -> Analysis:
    T = len(c.trial_ids)
    n_tasks = len(c.task_ids)
    M = len(c.vocab) + 1
    trial_task = np.array(c.trial_task, dtype=np.int64)
    success = np.array(c.success, dtype=bool)
    lengths = np.fromiter(map(len, c.keys), dtype=np.int64, count=T) + 1
    offsets = np.zeros(T, dtype=np.int64)
    if T:
        offsets[1:] = np.cumsum(lengths)[:-1]
    P = int(lengths.sum())
    flat_keys = np.zeros(P, dtype=np.int64)  # END (0) at every trial's last position
    flat_steps = np.full(P, -1, dtype=np.int64)
    pos_trial = np.repeat(np.arange(T), lengths)
    pos_index = np.arange(P) - np.repeat(offsets, lengths)
    if T:
        body = pos_index < np.repeat(lengths - 1, lengths)
        flat_keys[body] = np.fromiter(chain.from_iterable(c.keys), dtype=np.int64, count=int(body.sum()))
        flat_steps[body] = np.fromiter(chain.from_iterable(c.steps), dtype=np.int64, count=int(body.sum()))

    # ---- prefix tree, level by level (one np.unique per depth) ------------------------
    parent = [np.full(n_tasks, -1, dtype=np.int64)]
    tkey = [np.full(n_tasks, -1, dtype=np.int64)]
    depth = [np.zeros(n_tasks, dtype=np.int64)]
    ttask = [np.arange(n_tasks, dtype=np.int64)]
    tn = [np.bincount(trial_task, minlength=n_tasks)]
    ts = [np.bincount(trial_task, weights=success, minlength=n_tasks).astype(np.int64)]
    node_at = np.zeros(P, dtype=np.int64)
    cur = trial_task.copy()
    by_len = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[by_len]
    next_id = n_tasks
    max_len = int(lengths.max()) if T else 0
    for d in range(max_len):
        count = int(np.searchsorted(-sorted_len, -d, side="left"))  # trials with length > d
        active = by_len[:count]
        pos = offsets[active] + d
        combo = cur[active] * M + flat_keys[pos]
        uniq, inv = np.unique(combo, return_inverse=True)
        inv = inv.ravel()
        child = next_id + inv
        node_at[pos] = child
        cur[active] = child
        parent.append(uniq // M)
        tkey.append(uniq % M)
        depth.append(np.full(uniq.size, d + 1, dtype=np.int64))
        ttask.append(trial_task[active][np.unique(inv, return_index=True)[1]])
        tn.append(np.bincount(inv, minlength=uniq.size))
        ts.append(np.bincount(inv, weights=success[active], minlength=uniq.size).astype(np.int64))
        next_id += uniq.size
    tree_parent = np.concatenate(parent)
    tree_key = np.concatenate(tkey)
    tree_depth = np.concatenate(depth)
    tree_task = np.concatenate(ttask)
    tree_n = np.concatenate(tn)
    tree_s = np.concatenate(ts)

    # ---- the graph the statistics run on ---------------------------------------------
    first_pos = np.zeros(P, dtype=bool)
    first_pos[offsets] = True
    prev_node = np.empty(P, dtype=np.int64)
    if P:
        prev_node[1:] = node_at[:-1]
        prev_node[first_pos] = trial_task
    graph_label: list[str] | None = None
    if o.key == "state":
        # node = (task, state reached by the previous key); the task root is the start state
        prev_key = np.empty(P, dtype=np.int64)
        if P:
            prev_key[1:] = flat_keys[:-1]
        prev_key[first_pos] = -1
        combo = trial_task[pos_trial] * (M + 1) + (prev_key + 1)
        uniq_state, graph_before = np.unique(combo, return_inverse=True)
        graph_before = graph_before.ravel()
        graph_task = uniq_state // (M + 1)
        vocab_list = list(c.vocab)
        graph_label = ["(start)" if k == 0 else vocab_list[k - 1] for k in (uniq_state % (M + 1)).tolist()]
        G = uniq_state.size
        # each trial counts once per state: keep its first visit
        visit = pos_trial.astype(np.int64) * G + graph_before
        _, first_visit = np.unique(visit, return_index=True)
        kept = np.zeros(P, dtype=bool)
        kept[first_visit] = True
    else:
        graph_before = prev_node
        G = tree_parent.size
        graph_task = tree_task
        kept = np.ones(P, dtype=bool)
    kept_idx = np.flatnonzero(kept)
    gcombo = graph_before[kept_idx] * M + flat_keys[kept_idx]
    guniq, ginv = np.unique(gcombo, return_inverse=True)
    ginv = ginv.ravel()
    group_node = guniq // M
    group_key = guniq % M
    group_n = np.bincount(ginv, minlength=guniq.size)
    group_s = np.bincount(ginv, weights=success[pos_trial[kept_idx]], minlength=guniq.size).astype(np.int64)
    pos_group = np.full(P, -1, dtype=np.int64)
    pos_group[kept_idx] = ginv
    graph_n = np.bincount(group_node, weights=group_n, minlength=G).astype(np.int64)
    graph_s = np.bincount(group_node, weights=group_s, minlength=G).astype(np.int64)
    # the typical step of a graph node: the (lower) median position at which trials leave it
    order = np.lexsort((pos_index[kept_idx], graph_before[kept_idx]))
    nodes_sorted = graph_before[kept_idx][order]
    starts = np.searchsorted(nodes_sorted, np.arange(G), side="left")
    counts = np.bincount(nodes_sorted, minlength=G)
    graph_step = np.full(G, -1, dtype=np.int64)
    has = counts > 0
    graph_step[has] = pos_index[kept_idx][order][starts[has] + (counts[has] - 1) // 2]

    # ---- scores ------------------------------------------------------------------------
    n_groups = np.bincount(group_node, minlength=G)
    v_node = (graph_s + 1) / (graph_n + 2)
    v_group = (group_s + 1) / (group_n + 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        child_h = np.bincount(group_node, weights=group_n * _h(v_group), minlength=G)
        ig = np.where(n_groups >= 2, _h(v_node) - child_h / np.maximum(graph_n, 1), np.nan)
        mle_node = np.where(graph_n > 0, graph_s / np.maximum(graph_n, 1), 0.0)
        mi = graph_n * _h(mle_node) - np.bincount(group_node, weights=group_n * _h(group_s / group_n), minlength=G)
        task_n = np.bincount(trial_task, minlength=n_tasks)
        score = np.where(n_groups >= 2, mi / np.maximum(task_n[graph_task], 1), np.nan)
    score = np.where(np.isnan(score), np.nan, np.maximum(score, 0.0))

    # ---- tests -------------------------------------------------------------------------
    candidates = np.flatnonzero((n_groups >= 2) & (graph_n >= o.min_support) & (graph_s > 0) & (graph_s < graph_n))
    pvalue = np.full(G, np.nan)
    pmin = np.full(G, np.nan)
    method: list[str | None] = [None] * G
    group_start = np.searchsorted(group_node, np.arange(G), side="left")
    for v in candidates.tolist():
        a, b = group_start[v], group_start[v] + n_groups[v]
        sizes, succ = group_n[a:b], group_s[a:b]
        if o.test == "boschloo" and b - a == 2 and graph_n[v] <= o.boschloo_max_n:
            (p, pm), how = boschloo_test(sizes, succ), "boschloo"
        else:
            p, pm, how = exact_test(sizes, succ, permutations=o.permutations, seed=o.seed)
        pvalue[v] = p
        pmin[v] = np.nan if pm is None else pm
        method[v] = how
    # Tarone: a node whose smallest attainable p exceeds alpha can never be significant; it
    # is left out of the family (its margins carry no information about the association).
    tested = np.zeros(G, dtype=bool)
    tested[candidates] = ~(pmin[candidates] > o.alpha)
    qvalue = np.full(G, np.nan)
    family = np.flatnonzero(tested)
    qvalue[family] = benjamini_hochberg(pvalue[family])
    significant = tested & (qvalue <= o.alpha)

    # ---- divergence point per task -----------------------------------------------------
    divergence_node = np.full(n_tasks, -1, dtype=np.int64)
    sig_nodes = np.flatnonzero(significant)
    if sig_nodes.size:
        order = np.lexsort((graph_step[sig_nodes], -score[sig_nodes], graph_task[sig_nodes]))
        ranked = sig_nodes[order]
        tasks_of = graph_task[ranked]
        first = np.unique(tasks_of, return_index=True)[1]
        divergence_node[tasks_of[first]] = ranked[first]
    climbed_from = np.full(n_tasks, -1, dtype=np.int64)
    if o.key == "action":
        # The failure region may open earlier than its most informative split: a wrong turn
        # at step s from which some trials later recover shows as a branch at s *and* a
        # cleaner recover/not split below it. Report the shallowest significant ancestor whose
        # branch toward the top node succeeds less often than the ancestor itself.
        for t in np.flatnonzero(divergence_node >= 0).tolist():
            top = int(divergence_node[t])
            child, u = top, int(tree_parent[top])
            best = top
            while u >= 0:
                if significant[u] and tree_s[child] * tree_n[u] < tree_s[u] * tree_n[child]:
                    best = u
                child, u = u, int(tree_parent[u])
            if best != top:
                climbed_from[t] = top
                divergence_node[t] = best

    # ---- critical step of each failed trial ------------------------------------------------
    drop = np.full(P, -np.inf)
    drop[kept_idx] = v_node[graph_before[kept_idx]] - v_group[ginv]
    critical_pos = np.full(T, -1, dtype=np.int64)
    if P and T:
        seg_max = np.maximum.reduceat(drop, offsets)
        at_max = drop == np.repeat(seg_max, lengths)
        first_max = _seg_first(at_max, offsets, lengths)
        critical_pos = np.where(~success, first_max, -1)

    # ---- leaving the reference ---------------------------------------------------------
    leave_ref = np.full(T, -2, dtype=np.int64)
    tree_on_ref = np.zeros(tree_parent.size, dtype=bool)
    tree_ref_next = np.full(tree_parent.size, -1, dtype=np.int64)
    has_ref = np.array([r is not None for r in c.references], dtype=bool)
    if T and has_ref.any():
        refs = [(r if r is not None else []) + [0] for r in c.references]
        ref_len = np.array([len(r) for r in refs], dtype=np.int64)
        ref_off = np.zeros(n_tasks, dtype=np.int64)
        ref_off[1:] = np.cumsum(ref_len)[:-1]
        ref_flat = np.fromiter(chain.from_iterable(refs), dtype=np.int64, count=int(ref_len.sum()))
        ptask = trial_task[pos_trial]
        inside = pos_index < ref_len[ptask]
        ref_at = np.full(P, -7, dtype=np.int64)
        ref_at[inside] = ref_flat[ref_off[ptask[inside]] + pos_index[inside]]
        off_ref = flat_keys != ref_at
        first_off = _seg_first(off_ref, offsets, lengths)
        leave_ref = np.where(has_ref[trial_task], first_off, -2)
        # tree nodes on the reference path, and the reference's next key there
        on = (leave_ref[pos_trial] == -1) | (leave_ref[pos_trial] > pos_index)
        tree_on_ref[node_at[on]] = True
        tree_on_ref[:n_tasks] = has_ref
        nxt = tree_on_ref & (tree_depth < ref_len[tree_task])
        tree_ref_next[nxt] = ref_flat[ref_off[tree_task[nxt]] + tree_depth[nxt]]

    analysis = Analysis(
        options=o, task_ids=c.task_ids, vocab=list(c.vocab), trial_ids=c.trial_ids, trial_task=trial_task,
        success=success, offsets=offsets, lengths=lengths, flat_keys=flat_keys, flat_steps=flat_steps,
        tree_parent=tree_parent, tree_key=tree_key, tree_depth=tree_depth, tree_task=tree_task, tree_n=tree_n,
        tree_s=tree_s, node_at=node_at, tree_on_ref=tree_on_ref, tree_ref_next=tree_ref_next, graph_before=graph_before, graph_n=graph_n, graph_s=graph_s,
        graph_task=graph_task, graph_step=graph_step, graph_label=graph_label, group_node=group_node,
        group_key=group_key, group_n=group_n, group_s=group_s, pos_group=pos_group, drop=drop, ig=ig, score=score,
        pvalue=pvalue, pmin=pmin, method=method, qvalue=qvalue, tested=tested,
        divergence_node=divergence_node, climbed_from=climbed_from, critical_pos=critical_pos, leave_ref=leave_ref)
    analysis.section = _section(analysis, c)
    return analysis


# ---------------------------------------------------------------------------------------
# The JSON section
# ---------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 6) -> float | None:
    """A JSON number to `digits` significant digits (None for nan/inf)."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else float(f"{x:.{digits}g}")


def _key_label(a: Analysis, key_id: int) -> str | None:
    return None if key_id == 0 else a.vocab[key_id]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float | None:
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if not values.size:
        return None
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cum = np.cumsum(weights)
    total = cum[-1]
    lo = values[np.searchsorted(cum, total / 2, side="left")]
    hi = values[np.searchsorted(cum, total / 2, side="right")] if total % 2 == 0 else lo
    return float(lo + hi) / 2


def _prefix_keys(a: Analysis, v: int) -> list[str]:
    """The keys leading to a tree node (tree mode only)."""
    keys = []
    while a.tree_key[v] >= 0:
        keys.append(a.vocab[int(a.tree_key[v])])
        v = int(a.tree_parent[v])
    return keys[::-1]


def _branch(a: Analysis, v: int, trials_by_group: dict[int, list[int]], with_prefix: bool) -> dict[str, Any]:
    o = a.options
    start = int(np.searchsorted(a.group_node, v, side="left"))
    stop = int(np.searchsorted(a.group_node, v, side="right"))
    tree_mode = a.graph_label is None
    has_ref = tree_mode and bool(a.tree_on_ref[int(a.graph_task[v])])
    on_path = bool(a.tree_on_ref[v]) if has_ref else None
    ref_next = int(a.tree_ref_next[v]) if has_ref else None
    alternatives = []
    for g in range(start, stop):
        n, s = int(a.group_n[g]), int(a.group_s[g])
        key_id = int(a.group_key[g])
        label = _key_label(a, key_id)
        alternatives.append({
            "action": label, "end": key_id == 0, "tool": None if label is None else _tool_of(label),
            "n": n, "successes": s, "rate": _f(s / n), "estimate": _f((s + 1) / (n + 2)),
            "on_reference": None if ref_next is None else key_id == ref_next,
            "examples": [a.trial_ids[t] for t in trials_by_group.get(g, [])[:3]],
        })
    alternatives.sort(key=lambda alt: (-alt["n"], alt["action"] or ""))
    n, s = int(a.graph_n[v]), int(a.graph_s[v])
    out: dict[str, Any] = {
        "step": int(a.graph_step[v]), "n": n, "successes": s, "estimate": _f((s + 1) / (n + 2)),
        "ig": _f(a.ig[v]), "score": _f(a.score[v]), "p": _f(a.pvalue[v]), "q": _f(a.qvalue[v]),
        "test": a.method[v], "tested": bool(a.tested[v]),
        "significant": bool(a.tested[v] and a.qvalue[v] <= o.alpha),
        "on_reference_path": on_path,
        "alternatives": alternatives,
    }
    if not tree_mode:
        out["state"] = a.graph_label[v]  # type: ignore[index]
    elif with_prefix:
        out["prefix"] = _prefix_keys(a, v)
    return out


def _section(a: Analysis, c: _Corpus) -> dict[str, Any]:
    o = a.options
    n_tasks = len(a.task_ids)
    G = a.graph_n.size
    n_groups = np.bincount(a.group_node, minlength=G)
    is_branch = n_groups >= 2
    significant = a.tested & (a.qvalue <= o.alpha)
    pos_trial = np.repeat(np.arange(len(a.trial_ids)), a.lengths)

    # first-divergence pairs from the prefix tree: pairs split at node v diverge at depth(v)
    Tn = a.tree_parent.size
    tf = a.tree_n - a.tree_s
    child_of = a.tree_parent >= 0
    parents = a.tree_parent[child_of]
    sum_sf = np.bincount(parents, weights=(a.tree_s * tf)[child_of], minlength=Tn)
    sum_ss = np.bincount(parents, weights=(a.tree_s * (a.tree_s - 1) / 2)[child_of], minlength=Tn)
    has_children = np.bincount(parents, minlength=Tn) > 0
    sf_pairs = np.where(has_children, a.tree_s * tf - sum_sf, 0.0)
    ss_pairs = np.where(has_children, a.tree_s * (a.tree_s - 1) / 2 - sum_ss, 0.0)
    leaf = ~has_children
    ss_identical = np.bincount(a.tree_task[leaf], weights=(a.tree_s * (a.tree_s - 1) / 2)[leaf], minlength=n_tasks)
    tree_nodes_per_task = np.bincount(a.tree_task, minlength=n_tasks)
    leaves_per_task = np.bincount(a.tree_task[leaf], minlength=n_tasks)
    branch_per_task = np.bincount(a.graph_task[is_branch], minlength=n_tasks)
    tested_per_task = np.bincount(a.graph_task[a.tested], minlength=n_tasks)
    split = np.flatnonzero(has_children)
    split = split[np.argsort(a.tree_task[split], kind="stable")]
    split_bounds = np.searchsorted(a.tree_task[split], np.arange(n_tasks + 1))

    # the branch nodes listed per task: significant first, then by score, shallower first
    branch_nodes = np.flatnonzero(is_branch)
    order = np.lexsort((a.graph_step[branch_nodes], -np.nan_to_num(a.score[branch_nodes]),
                        ~significant[branch_nodes], a.graph_task[branch_nodes]))
    ranked = branch_nodes[order]
    rank_bounds = np.searchsorted(a.graph_task[ranked], np.arange(n_tasks + 1))
    listed_nodes: dict[int, list[int]] = {}
    for t in range(n_tasks):
        first = [int(v) for v in (a.divergence_node[t], a.climbed_from[t]) if v >= 0]
        rest = [v for v in ranked[rank_bounds[t]:rank_bounds[t + 1]][: o.max_branches + 2].tolist() if v not in first]
        listed_nodes[t] = (first + rest)[: max(o.max_branches, len(first))]
    groups_wanted = np.zeros(a.group_n.size, dtype=bool)
    group_lo = np.searchsorted(a.group_node, np.arange(G), side="left")
    for nodes in listed_nodes.values():
        for v in nodes:
            groups_wanted[group_lo[v]:group_lo[v] + n_groups[v]] = True
    trials_by_group: dict[int, list[int]] = {}
    sel = np.flatnonzero((a.pos_group >= 0) & groups_wanted[np.maximum(a.pos_group, 0)])
    for g, tr in zip(a.pos_group[sel].tolist(), pos_trial[sel].tolist()):
        lst = trials_by_group.setdefault(g, [])
        if len(lst) < 3:
            lst.append(tr)

    vocab = a.vocab
    crit_pos_all = a.critical_pos
    crit_flat = a.offsets + np.maximum(crit_pos_all, 0)
    crit_key_all = np.where(crit_pos_all >= 0, a.flat_keys[crit_flat] if crit_flat.size else crit_pos_all, -1)
    crit_drop_all = np.where(crit_pos_all >= 0, a.drop[crit_flat] if crit_flat.size else 0.0, 0.0)
    tasks_out = []
    depth_counter: Counter[int] = Counter()
    tool_counter: Counter[str] = Counter()
    action_counter: Counter[str] = Counter()
    action_tasks: dict[str, list[str]] = {}
    sf_medians, ss_medians = [], []
    n_mixed = 0
    trial_order = np.argsort(a.trial_task, kind="stable")
    task_bounds = np.searchsorted(a.trial_task[trial_order], np.arange(n_tasks + 1))
    for t in range(n_tasks):
        idx = trial_order[task_bounds[t]:task_bounds[t + 1]]
        n = int(idx.size)
        s = int(a.success[idx].sum())
        mixed = 0 < s < n
        n_mixed += mixed
        row: dict[str, Any] = {
            "task": a.task_ids[t], "n": n, "successes": s, "mixed": bool(mixed),
            "nodes": int(tree_nodes_per_task[t]), "distinct_trajectories": int(leaves_per_task[t]),
            "branch_nodes": int(branch_per_task[t]), "tested_nodes": int(tested_per_task[t]),
        }
        branches = [_branch(a, v, trials_by_group, with_prefix=(v == a.divergence_node[t])) for v in listed_nodes[t]]
        dv = int(a.divergence_node[t])
        row["divergence"] = next((b for b, v in zip(branches, listed_nodes[t]) if v == dv), None) if dv >= 0 else None
        row["branches"] = branches
        if row["divergence"] is not None:
            d = row["divergence"]
            if a.climbed_from[t] >= 0:
                d["top_scoring_step"] = int(a.graph_step[a.climbed_from[t]])
            depth_counter[d["step"]] += 1
            # failure branches: the alternatives that succeed less often than the node does
            worse = [alt for alt in d["alternatives"] if alt["successes"] * d["n"] < d["successes"] * alt["n"]]
            for alt in worse:
                label = alt["action"] if alt["action"] is not None else END
                tool_counter[alt["tool"] or END] += 1
                action_counter[label] += 1
                action_tasks.setdefault(label, []).append(a.task_ids[t])
            d["failure_branches"] = [alt["action"] if alt["action"] is not None else END for alt in worse]

        # critical steps of failed trials, grouped by (step, action)
        crit: dict[tuple[int, int], list[Any]] = {}
        failed = idx[crit_pos_all[idx] >= 0]
        for tr, cp, key_id, dr in zip(failed.tolist(), crit_pos_all[failed].tolist(), crit_key_all[failed].tolist(),
                                      crit_drop_all[failed].tolist()):
            entry = crit.get((cp, key_id))
            if entry is None:
                entry = crit[(cp, key_id)] = [0, 0.0, []]
            entry[0] += 1
            entry[1] += dr
            if len(entry[2]) < 3:
                entry[2].append(a.trial_ids[tr])
        row["critical_steps"] = sorted(
            ({"step": cp, "action": _key_label(a, k), "end": k == 0, "failed_trials": cnt,
              "mean_drop": _f(total / cnt), "examples": ex}
             for (cp, k), (cnt, total, ex) in crit.items()),
            key=lambda e: (-e["failed_trials"], e["step"]))

        # the reference: leaving it, survival curves; milestone curves
        ref = c.references[t]
        if ref is not None:
            leave = a.leave_ref[idx]
            row["reference"] = {
                "length": len(ref),
                "followed_exactly": {"success": int(((leave == -1) & a.success[idx]).sum()),
                                     "failure": int(((leave == -1) & ~a.success[idx]).sum())},
                "survival": _survival(leave, a.success[idx], len(ref) + 1),
            }
        else:
            row["reference"] = None
        row["milestones"] = _milestone_curves(c, t, idx, a.success)

        # first divergence of success–failure and success–success pairs
        nodes = split[split_bounds[t]:split_bounds[t + 1]]
        depths = a.tree_depth[nodes].astype(float)
        sf_w, ss_w = sf_pairs[nodes], ss_pairs[nodes]
        sf_med = _weighted_median(depths, sf_w)
        ss_med = _weighted_median(depths, ss_w)
        row["first_divergence"] = {
            "success_failure": {"pairs": int(round(sf_w.sum())), "median_step": sf_med},
            "success_success": {"pairs": int(round(ss_w.sum() + ss_identical[t])), "identical": int(round(ss_identical[t])),
                                "median_step": ss_med},
        }
        if sf_med is not None:
            sf_medians.append(sf_med)
        if ss_med is not None:
            ss_medians.append(ss_med)

        # per-trial rows: failed trials first, then in order
        listed = np.concatenate([idx[~a.success[idx]], idx[a.success[idx]]])[: o.max_trials_listed]
        row["trials"] = [
            {"trial": a.trial_ids[tr], "outcome": "success" if ok else "failure", "length": ln - 1,
             "critical_step": cp if cp >= 0 else None, "critical_action": vocab[ck] if cp >= 0 and ck > 0 else None,
             "leaves_reference_at": lr if lr >= 0 else None}
            for tr, ok, ln, cp, ck, lr in zip(listed.tolist(), a.success[listed].tolist(), a.lengths[listed].tolist(),
                                              crit_pos_all[listed].tolist(), crit_key_all[listed].tolist(),
                                              a.leave_ref[listed].tolist())]
        tasks_out.append(row)

    both = [(t["first_divergence"]["success_failure"]["median_step"], t["first_divergence"]["success_success"]["median_step"])
            for t in tasks_out]
    both = [(x, y) for x, y in both if x is not None and y is not None]
    suite = {
        "tasks": n_tasks, "mixed_tasks": n_mixed, "trials": len(a.trial_ids),
        "steps": int(a.lengths.sum() - a.lengths.size),
        "branch_nodes": int(is_branch.sum()), "tested_nodes": int(a.tested.sum()),
        "significant_nodes": int(significant.sum()),
        "tasks_with_divergence": int((a.divergence_node >= 0).sum()),
        "depth_distribution": [{"step": d, "tasks": k} for d, k in sorted(depth_counter.items())],
        "failure_branch_tools": [{"tool": k, "tasks": v} for k, v in tool_counter.most_common(10)],
        "failure_branch_actions": [{"action": k, "tasks": v, "task_ids": action_tasks[k][:5]}
                                   for k, v in action_counter.most_common(10)],
        "first_divergence": {
            "success_failure_median_step": float(np.median(sf_medians)) if sf_medians else None,
            "success_success_median_step": float(np.median(ss_medians)) if ss_medians else None,
            "tasks_compared": len(both),
            "tasks_sf_earlier": sum(x < y for x, y in both),
        },
    }
    return {"version": DIVERGENCE_VERSION, "options": o.as_dict(), "suite": suite, "tasks": tasks_out}


def _survival(leave: np.ndarray, success: np.ndarray, L: int) -> dict[str, Any]:
    """Share of trials still on the reference at step s (s = 0..L−1, the last being the
    reference's end): a trial is on it at s if its first s+1 keys match the reference's."""
    steps = np.arange(L)
    out: dict[str, Any] = {"step": steps.tolist()}
    never = np.iinfo(np.int64).max
    eff = np.where(leave == -1, never, leave)
    for name, mask in (("success", success), ("failure", ~success), ("all", np.ones_like(success))):
        if mask.sum() == 0:
            out[name] = None
            continue
        out[name] = [_f(x, 4) for x in (eff[mask][:, None] > steps[None, :]).mean(axis=0)]
    return out


def _milestone_curves(c: _Corpus, t: int, idx: np.ndarray, success: np.ndarray) -> dict[str, Any] | None:
    names = list(c.milestones[t])
    reached = [c.trial_milestones[tr] for tr in idx.tolist()]
    if not names:
        names = sorted({m for r in reached if r for m in r})
    if not names:
        return None
    horizon = max([c.tool_calls[tr] for tr in idx.tolist()] + [1])
    steps = np.arange(horizon)
    out: dict[str, Any] = {"step": steps.tolist(), "curves": {}}
    for name in names:
        at = np.array([(r or {}).get(name) if (r or {}).get(name) is not None else -1 for r in reached], dtype=np.int64)
        hit = np.where(at >= 0, at, np.iinfo(np.int64).max)
        curves = {}
        for label, mask in (("success", success[idx]), ("failure", ~success[idx])):
            curves[label] = [_f(x, 4) for x in (hit[mask][:, None] <= steps[None, :]).mean(axis=0)] if mask.any() else None
        out["curves"][name] = curves
    return out


# ---------------------------------------------------------------------------------------
# From a run directory
# ---------------------------------------------------------------------------------------


def _load_suite_for(manifest: dict[str, Any]) -> tuple[Any, str | None]:
    """The run's suite, if it can be found and still has the run's content hash."""
    info = manifest.get("suite") or {}
    try:
        from bench.world.suite import load_suite
    except ImportError:  # pragma: no cover
        return None, "the suite loader is unavailable"
    candidates = [p for p in (info.get("path"), info.get("name")) if p]
    reasons = []
    for cand in candidates:
        try:
            suite = load_suite(cand)
        except Exception as exc:  # noqa: BLE001 - any failure only disables the reference analysis
            reasons.append(f"the suite {cand!r} cannot be loaded ({exc})")
            continue
        if info.get("hash") and suite.content_hash != info["hash"]:
            reasons.insert(0, f"the suite at {suite.path} has changed since the run "
                              f"(hash {suite.content_hash[:12]}, run {str(info['hash'])[:12]})")
            continue
        from bench.world.overlay import apply_run_overlay

        return apply_run_overlay(suite, manifest), None  # the reference spelled as the run's agent saw the tools
    return None, (reasons[0] if reasons else "the run's manifest names no suite")


def _reference_keys(suite: Any, task: Any, keyer: _Keyer) -> list[int]:
    """The task's reference actions keyed like the trials (replayed, for read-only flags and
    state hashes)."""
    tk = _TrialKeys()
    world = suite.new_world(task)
    for i, action in enumerate(task.reference_actions):
        if action.tool == "ask_user":
            keyer.feed(tk, {"kind": "user", "step": i, "tool": "ask_user", "args": action.args, "read_only": True,
                            "state_hash": world.state_hash})
            continue
        outcome = world.execute(action.tool, action.args)
        keyer.feed(tk, {"kind": "tool", "step": i, "tool": action.tool, "args": action.args,
                        "read_only": outcome.read_only, "state_hash": outcome.state_hash})
    return tk.keys


def _build_corpus(run: KeyedRun, suite: Any, pool_variants: bool = False) -> _Corpus:
    """Group the valid trials by task (manifest order), with each trial's keys and the task's
    reference from the suite. Like the report's headline figures, only trials on the
    unperturbed inputs count unless `pool_variants`."""
    c = _Corpus()
    by_task: dict[str, list[dict[str, Any]]] = {t: [] for t in run.log.manifest.get("tasks", [])}
    for summary in run.log.summaries.values():
        if not pool_variants and summary.get("variant_family", BASE) != BASE:
            continue
        if summary.get("outcome") in ("success", "failure"):
            by_task.setdefault(summary["task"], []).append(summary)
    for task_id, rows in by_task.items():
        if not rows:
            continue
        rows.sort(key=lambda s: (str(s.get("variant", "")), s.get("index", 0), s["trial"]))
        t = len(c.task_ids)
        c.task_ids.append(task_id)
        ref = None
        names: list[str] = []
        if suite is not None:
            try:
                task = suite.task(task_id)
            except Exception:  # noqa: BLE001 - the task left the suite: no reference for it
                task = None
            if task is not None:
                ref = c.renumber(_reference_keys(suite, task, run.keyer))
                names = [m["name"] for m in task.milestones]
        c.references.append(ref)
        c.milestones.append(names)
        for summary in rows:
            tk = run.keys(summary)
            c.trial_ids.append(summary["trial"])
            c.trial_task.append(t)
            c.success.append(summary["outcome"] == "success")
            c.keys.append(c.renumber(tk.keys))
            c.steps.append(tk.where)
            c.tool_calls.append(len(tk.calls))
            reached = summary.get("milestones")
            if reached:
                # the tool-call index of the event that reached each milestone
                reached = {name: (None if at is None else bisect_left(tk.calls, int(at))) for name, at in reached.items()}
            c.trial_milestones.append(reached or None)
    c.adopt_labels(run.keyer.vocab)
    return c


@dataclass
class KeyedRun:
    """A run with the steps of each attempt keyed (`read_keyed`, `key_parsed`): all that the
    report and the divergence analysis need of the steps."""

    log: RunLog  # from `read_keyed`, without step records: they were keyed as read, then dropped
    options: DivergenceOptions
    keyer: _Keyer

    def keys(self, summary: dict[str, Any]) -> _TrialKeys:
        """The keys of the attempt behind a trial summary (none if it logged no steps)."""
        return self.keyer.attempts.get(summary["attempt"]) or _TrialKeys()

    def actions(self, summary: dict[str, Any]) -> list[int]:
        """The trial's tool calls as key ids (equal calls, equal ids), in log order."""
        return self.keys(summary).actions


def read_keyed(run_dir: str | Path, options: DivergenceOptions | None = None) -> KeyedRun:
    """Read a run directory in one pass, keying each step as it is read and keeping none
    (`bench.run.rundir.read_run`'s reading rules: a torn last line is skipped, the first summary of a
    trial counts, steps of attempts without a summary are ignored). Memory grows with the
    number of steps, not with the log's size; nothing is parsed or keyed twice."""
    o = options or DivergenceOptions()
    keyer = _Keyer(o, {END: 0})
    return KeyedRun(read_run(run_dir, on_step=keyer.feed_record), o, keyer)


def key_parsed(log: RunLog, options: DivergenceOptions | None = None) -> KeyedRun:
    """Key the steps of a run already read with `read_run`."""
    o = options or DivergenceOptions()
    keyer = _Keyer(o, {END: 0})
    keyer.attempts = {attempt: keyer.keys(events) for attempt, events in log.steps.items()}
    return KeyedRun(log, o, keyer)


def _reference_suite(manifest: dict[str, Any], suite: Any, load_reference: bool) -> tuple[Any, str | None]:
    """The suite for the reference analysis, or None and the reason it is skipped."""
    if suite is not None:
        return suite, None
    if not load_reference:
        return None, "reference analysis not requested"
    return _load_suite_for(manifest)


@gc_paused()  # a large run's keys are millions of objects the collector need not rescan
def analyse_run(run: Any, options: DivergenceOptions | None = None, *, suite: Any = None,
                load_reference: bool = True) -> Analysis:
    """Divergence analysis of a run: a run directory (read with `read_keyed`, which needs far
    less memory than `read_run`), a parsed `RunLog`, or a `KeyedRun` (analysed with the options
    it was keyed with). The reference analysis needs the run's suite: pass it, or it is loaded
    from the manifest's path (or built-in name) when its content hash still matches;
    otherwise that part is skipped and the reason recorded."""
    if isinstance(run, KeyedRun):
        if options is not None and options != run.options:
            raise ValueError("a KeyedRun is analysed with the options it was keyed with")
        options = run.options
    o = options or DivergenceOptions()
    if isinstance(run, RunLog):
        run = key_parsed(run, o)
    elif not isinstance(run, KeyedRun):
        run = read_keyed(run, o)
    found, reason = _reference_suite(run.log.manifest, suite, load_reference)
    corpus = _build_corpus(run, found, o.pool_variants)
    analysis = _analyse_corpus(corpus, o)
    analysis.section["reference"] = {"available": found is not None, "reason": reason}
    return analysis


def divergence_section(run: Any, options: DivergenceOptions | None = None, *, suite: Any = None,
                       load_reference: bool = True, **option_fields: Any) -> dict[str, Any]:
    """The report's `divergence` section (JSON-serialisable; see DIVERGENCE_SCHEMA)."""
    if option_fields:
        base = asdict(options) if options is not None else {}
        options = DivergenceOptions(**{**base, **option_fields})
    return analyse_run(run, options, suite=suite, load_reference=load_reference).section


# ---------------------------------------------------------------------------------------
# Command-line options (shared by `trajbench report` and `trajbench view`)
# ---------------------------------------------------------------------------------------


def add_cli_arguments(parser: Any) -> None:
    """Add the divergence options to an argparse parser (see `options_from_args`)."""
    group = parser.add_argument_group("divergence analysis (docs/divergence.md)")
    group.add_argument("--divergence-key", choices=("action", "state"), default="action",
                       help="key steps on the action (tool + arguments; default) or on the state hash after the step")
    group.add_argument("--ignore-read-only", action="store_true", help="leave read-only tool calls out of the tree")
    group.add_argument("--include-user", action="store_true", help="make ask_user turns branch points")
    group.add_argument("--include-model", action="store_true", help="make model turns branch points")
    group.add_argument("--pool-variants", action="store_true",
                       help="also analyse trials on perturbed input variants (default: unperturbed inputs only)")
    group.add_argument("--branch-test", choices=("boschloo", "fisher"), default="boschloo",
                       help="exact test for two alternatives (default boschloo)")
    group.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate across the suite's branches (default 0.05)")
    group.add_argument("--min-support", type=int, default=4, help="fewest trials through a node for it to be tested (default 4)")


def options_from_args(args: Any) -> DivergenceOptions:
    """DivergenceOptions from parsed `add_cli_arguments` options; bad values are a BenchError."""
    from bench.errors import BenchError

    try:
        return DivergenceOptions(key=args.divergence_key, ignore_read_only=args.ignore_read_only,
                                 include_user=args.include_user, include_model=args.include_model,
                                 pool_variants=args.pool_variants,
                                 test=args.branch_test, alpha=args.alpha, min_support=args.min_support)
    except ValueError as exc:
        raise BenchError(str(exc), field="arguments") from None


# ---------------------------------------------------------------------------------------
# Terminal rendering
# ---------------------------------------------------------------------------------------


def _safe(text: Any, width: int | None = None) -> str:
    """Agent-produced text for a terminal: control characters shown escaped, cut to width."""
    s = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    if width is not None and len(s) > width:
        s = s[: width - 1] + "…"
    return s


def _alt_text(alt: dict[str, Any], width: int = 48) -> str:
    label = "(stops here)" if alt["end"] else _safe(alt["action"], width)
    return f"{label} {alt['successes']}/{alt['n']}"


def render_divergence_text(section: dict[str, Any], max_tasks: int = 30) -> str:
    o, suite = section["options"], section["suite"]
    keyed = "state hashes" if o["key"] == "state" else "actions"
    extras = [w for w, on in (("read-only steps ignored", o["ignore_read_only"]), ("ask_user turns kept", o["include_user"]),
                              ("model turns kept", o["include_model"])) if on]
    lines = [
        f"Divergence — where a task's trials branch into failure (keys: {keyed}{'; ' + ', '.join(extras) if extras else ''}; "
        f"{o['test']} / exact tests, BH q ≤ {o['alpha']}, nodes with ≥ {o['min_support']} trials)",
        f"  {suite['mixed_tasks']} of {suite['tasks']} tasks have mixed outcomes; {suite['tasks_with_divergence']} have a "
        f"significant divergence point ({suite['tested_nodes']} branch nodes tested, {suite['significant_nodes']} significant)",
    ]
    ref = section.get("reference")
    if ref and not ref.get("available"):
        lines.append(f"  reference analysis skipped: {_safe(ref.get('reason'))}")
    if suite["depth_distribution"]:
        lines.append("  divergence step (0-based): " + ", ".join(f"step {d['step']}: {d['tasks']}" for d in suite["depth_distribution"]))
    if suite["failure_branch_tools"]:
        lines.append("  failure branches begin most often at: "
                     + ", ".join(f"{_safe(e['tool'], 30)} ×{e['tasks']}" for e in suite["failure_branch_tools"][:6]))
    fd = suite["first_divergence"]
    if fd["success_failure_median_step"] is not None or fd["success_success_median_step"] is not None:
        def med(x: Any) -> str:
            return "n/a" if x is None else f"{x:g}"
        ss = fd["success_success_median_step"]
        lines.append(f"  first divergence, median over tasks: success–failure pairs step {med(fd['success_failure_median_step'])}, "
                     f"success–success pairs {'step ' + med(ss) if ss is not None else 'never diverge'}"
                     + (f" (success–failure pairs part earlier in {fd['tasks_sf_earlier']} of {fd['tasks_compared']} tasks)"
                        if fd["tasks_compared"] else ""))
    rows = [t for t in section["tasks"] if t["divergence"] is not None]
    rows.sort(key=lambda t: (t["divergence"]["q"] if t["divergence"]["q"] is not None else 1.0, t["task"]))
    if rows:
        lines.append(f"  {'task':<34} {'step':>4} {'q':>8} {'bits':>6}  alternatives (successes/trials)")
        for t in rows[:max_tasks]:
            d = t["divergence"]
            alts = "  vs  ".join(_alt_text(alt) for alt in d["alternatives"][:3])
            more = f"  (+{len(d['alternatives']) - 3} more)" if len(d["alternatives"]) > 3 else ""
            lines.append(f"  {_safe(t['task'], 34):<34} {d['step']:>4} {d['q']:>8.2g} {d['score'] or 0:>6.3f}  {alts}{more}")
        if len(rows) > max_tasks:
            lines.append(f"  ... {len(rows) - max_tasks} more tasks with a divergence point (see --json)")
    unresolved = [t["task"] for t in section["tasks"] if t["mixed"] and t["divergence"] is None]
    if unresolved:
        shown = ", ".join(_safe(x, 40) for x in unresolved[:8])
        lines.append(f"  mixed outcomes but no significant branch (too few trials, or the paths do not separate the outcomes): "
                     f"{shown}{' …' if len(unresolved) > 8 else ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# JSON Schema of the section (to be referenced from report.schema.json)
# ---------------------------------------------------------------------------------------

_NUM = {"type": ["number", "null"]}
_ALT = {
    "type": "object",
    "required": ["action", "end", "tool", "n", "successes", "rate", "estimate", "examples"],
    "properties": {
        "action": {"type": ["string", "null"], "description": "The step key; null for the end of the trajectory."},
        "end": {"type": "boolean"}, "tool": {"type": ["string", "null"]},
        "n": {"type": "integer"}, "successes": {"type": "integer"}, "rate": _NUM, "estimate": _NUM,
        "on_reference": {"type": ["boolean", "null"]}, "examples": {"type": "array", "items": {"type": "string"}},
    },
}
_BRANCH = {
    "type": "object",
    "required": ["step", "n", "successes", "estimate", "ig", "score", "p", "q", "test", "tested", "significant", "alternatives"],
    "properties": {
        "step": {"type": "integer", "description": "0-based position of the alternatives in the key sequence."},
        "n": {"type": "integer"}, "successes": {"type": "integer"}, "estimate": _NUM,
        "ig": {**_NUM, "description": "h(V(v)) − Σ (N_u/N_v) h(V(u)), V = (S+1)/(N+2)."},
        "score": {**_NUM, "description": "Task information: (N_v/N_task) × empirical IG, bits per trial."},
        "p": _NUM, "q": {**_NUM, "description": "Benjamini–Hochberg adjusted over the suite's tested nodes."},
        "test": {"type": ["string", "null"]}, "tested": {"type": "boolean"}, "significant": {"type": "boolean"},
        "alternatives": {"type": "array", "items": _ALT},
        "prefix": {"type": "array", "items": {"type": "string"}},
        "failure_branches": {"type": "array", "items": {"type": "string"},
                             "description": "Alternatives that succeed less often than the node (the divergence point only)."},
    },
}
DIVERGENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where each task's trials branch into failure (bench/divergence.py, docs/divergence.md).",
    "required": ["version", "options", "suite", "tasks"],
    "properties": {
        "version": {"const": DIVERGENCE_VERSION},
        "options": {"type": "object"},
        "reference": {"type": "object", "properties": {"available": {"type": "boolean"}, "reason": {"type": ["string", "null"]}}},
        "suite": {
            "type": "object",
            "required": ["tasks", "mixed_tasks", "tested_nodes", "significant_nodes", "tasks_with_divergence",
                         "depth_distribution", "failure_branch_tools", "failure_branch_actions", "first_divergence"],
        },
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["task", "n", "successes", "mixed", "divergence", "branches", "critical_steps",
                             "reference", "milestones", "first_divergence", "trials"],
                "properties": {
                    "task": {"type": "string"},
                    "divergence": {"oneOf": [{"type": "null"}, _BRANCH]},
                    "branches": {"type": "array", "items": _BRANCH},
                    "critical_steps": {"type": "array"},
                    "reference": {"type": ["object", "null"]},
                    "milestones": {"type": ["object", "null"]},
                    "trials": {"type": "array"},
                },
            },
        },
    },
}
