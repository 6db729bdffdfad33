"""Steps 2–4 of the divergence analysis (docs/divergence.md), vectorised over the whole suite.

From a keyed `Corpus` to an `Analysis`, in the phases of `analyse_corpus`:

2. the **prefix tree** of each task's trials over their keys (one `np.unique` per depth); with
   `key="state"` the statistics run on a state graph instead (trials reaching the same state by
   different orders are pooled, each counted once per state);
3. the **scores** of branch nodes (information gain, and the task information
   (N_v/N_task)·IG_mle(v) that ranks them) and their exact **tests**, with Tarone's screening
   and Benjamini–Hochberg across the suite's tested nodes;
4. each task's **divergence point**, each failed trial's **critical step**, and where each
   trial **leaves the reference**.

The JSON section is assembled from the `Analysis` afterwards (`bench.analysis.divergence.section`).
On 100k trials × 10 steps the analysis takes about 2.5 s of CPU beyond reading the log, half of
it in the exact tests (benchmarks/divergence.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from bench.analysis.divergence.keys import Corpus
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.exact import binary_entropy, boschloo_test, exact_test
from bench.analysis.metrics import benjamini_hochberg


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
    section: dict[str, Any] = field(default_factory=dict)  # the JSON section, filled by `section.build_section`

    def task_trials(self, t: int) -> np.ndarray:
        return np.flatnonzero(self.trial_task == t)


@dataclass
class _Flat:
    """The corpus's keys laid out flat: one position per (trial, i), i = 0..len(keys), the last
    being `<end>` (key id 0), trials in order."""

    n_tasks: int
    n_keys: int  # vocabulary size + 1: combined ids are node * n_keys + key
    trial_task: np.ndarray
    success: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    flat_keys: np.ndarray
    flat_steps: np.ndarray
    pos_trial: np.ndarray
    pos_index: np.ndarray

    @property
    def n_trials(self) -> int:
        return int(self.lengths.size)

    @property
    def n_positions(self) -> int:
        return int(self.flat_keys.size)


def _flatten(c: Corpus) -> _Flat:
    T = len(c.trial_ids)
    if c.flat is not None:  # a corpus of a run: its keys already flat
        n_keys, keys, steps = c.flat
        lengths = n_keys.astype(np.int64) + 1
    else:
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
        if c.flat is not None:
            flat_keys[body], flat_steps[body] = keys, steps
        else:
            flat_keys[body] = np.fromiter(chain.from_iterable(c.keys), dtype=np.int64, count=int(body.sum()))
            flat_steps[body] = np.fromiter(chain.from_iterable(c.steps), dtype=np.int64, count=int(body.sum()))
    return _Flat(len(c.task_ids), len(c.labels) + 1, np.array(c.trial_task, dtype=np.int64), np.array(c.success, dtype=bool),
                 lengths, offsets, flat_keys, flat_steps, pos_trial, pos_index)


@dataclass
class _Tree:
    parent: np.ndarray
    key: np.ndarray
    depth: np.ndarray
    task: np.ndarray
    n: np.ndarray
    s: np.ndarray
    node_at: np.ndarray  # tree node reached by taking the key at each position


def _prefix_tree(f: _Flat) -> _Tree:
    """The prefix tree, level by level (one np.unique per depth); roots are the tasks."""
    n_tasks, M, trial_task, success = f.n_tasks, f.n_keys, f.trial_task, f.success
    parent = [np.full(n_tasks, -1, dtype=np.int64)]
    tkey = [np.full(n_tasks, -1, dtype=np.int64)]
    depth = [np.zeros(n_tasks, dtype=np.int64)]
    ttask = [np.arange(n_tasks, dtype=np.int64)]
    tn = [np.bincount(trial_task, minlength=n_tasks)]
    ts = [np.bincount(trial_task, weights=success, minlength=n_tasks).astype(np.int64)]
    node_at = np.zeros(f.n_positions, dtype=np.int64)
    cur = trial_task.copy()
    by_len = np.argsort(-f.lengths, kind="stable")
    sorted_len = f.lengths[by_len]
    next_id = n_tasks
    max_len = int(f.lengths.max()) if f.n_trials else 0
    for d in range(max_len):
        count = int(np.searchsorted(-sorted_len, -d, side="left"))  # trials with length > d
        active = by_len[:count]
        pos = f.offsets[active] + d
        combo = cur[active] * M + f.flat_keys[pos]
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
    return _Tree(np.concatenate(parent), np.concatenate(tkey), np.concatenate(depth), np.concatenate(ttask),
                 np.concatenate(tn), np.concatenate(ts), node_at)


@dataclass
class _Graph:
    """The nodes the statistics run on (the tree's, or states with key="state"), and the
    alternative groups (node, key) leaving them."""

    before: np.ndarray  # graph node each position departs from
    n: np.ndarray
    s: np.ndarray
    task: np.ndarray
    step: np.ndarray  # typical step of a node: the (lower) median position at which trials leave it
    label: list[str] | None  # state-graph node labels (None in tree mode)
    group_node: np.ndarray
    group_key: np.ndarray
    group_n: np.ndarray
    group_s: np.ndarray
    pos_group: np.ndarray  # group of each position (-1 for revisits in a state graph)
    kept_idx: np.ndarray  # positions counted (a trial counts once per state)

    @property
    def size(self) -> int:
        return int(self.n.size)


def _departures(f: _Flat, tree: _Tree) -> np.ndarray:
    """The tree node each position departs from (its task's root for a trial's first key)."""
    prev_node = np.empty(f.n_positions, dtype=np.int64)
    if f.n_positions:
        prev_node[1:] = tree.node_at[:-1]
        prev_node[f.offsets] = f.trial_task
    return prev_node


def _state_nodes(f: _Flat, vocab: list[str]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Graph nodes as (task, state reached by the previous key), the root being the start state;
    each trial keeps only its first visit of a state. Returns (node departed from at each
    position, node task, node labels, kept positions mask)."""
    P, M = f.n_positions, f.n_keys
    prev_key = np.empty(P, dtype=np.int64)
    if P:
        prev_key[1:] = f.flat_keys[:-1]
        prev_key[f.offsets] = -1
    combo = f.trial_task[f.pos_trial] * (M + 1) + (prev_key + 1)
    uniq_state, graph_before = np.unique(combo, return_inverse=True)
    graph_before = graph_before.ravel()
    labels = ["(start)" if k == 0 else vocab[k - 1] for k in (uniq_state % (M + 1)).tolist()]
    visit = f.pos_trial.astype(np.int64) * uniq_state.size + graph_before
    _, first_visit = np.unique(visit, return_index=True)
    kept = np.zeros(P, dtype=bool)
    kept[first_visit] = True
    return graph_before, uniq_state // (M + 1), labels, kept


def _graph(f: _Flat, tree: _Tree, o: DivergenceOptions, vocab: list[str]) -> _Graph:
    label: list[str] | None = None
    if o.key == "state":
        before, task, label, kept = _state_nodes(f, vocab)
    else:
        before, task, kept = _departures(f, tree), tree.task, np.ones(f.n_positions, dtype=bool)
    G, M = task.size, f.n_keys
    kept_idx = np.flatnonzero(kept)
    guniq, ginv = np.unique(before[kept_idx] * M + f.flat_keys[kept_idx], return_inverse=True)
    ginv = ginv.ravel()
    group_node, group_key = guniq // M, guniq % M
    group_n = np.bincount(ginv, minlength=guniq.size)
    group_s = np.bincount(ginv, weights=f.success[f.pos_trial[kept_idx]], minlength=guniq.size).astype(np.int64)
    pos_group = np.full(f.n_positions, -1, dtype=np.int64)
    pos_group[kept_idx] = ginv
    graph_n = np.bincount(group_node, weights=group_n, minlength=G).astype(np.int64)
    graph_s = np.bincount(group_node, weights=group_s, minlength=G).astype(np.int64)
    return _Graph(before, graph_n, graph_s, task, _typical_steps(f, before, kept_idx, G), label,
                  group_node, group_key, group_n, group_s, pos_group, kept_idx)


def _typical_steps(f: _Flat, before: np.ndarray, kept_idx: np.ndarray, G: int) -> np.ndarray:
    """Per graph node: the (lower) median position at which trials leave it (-1: none do)."""
    order = np.lexsort((f.pos_index[kept_idx], before[kept_idx]))
    nodes_sorted = before[kept_idx][order]
    starts = np.searchsorted(nodes_sorted, np.arange(G), side="left")
    counts = np.bincount(nodes_sorted, minlength=G)
    step = np.full(G, -1, dtype=np.int64)
    has = counts > 0
    step[has] = f.pos_index[kept_idx][order][starts[has] + (counts[has] - 1) // 2]
    return step


def _smoothed(g: _Graph) -> tuple[np.ndarray, np.ndarray]:
    """V = (S+1)/(N+2) of every graph node and of every alternative group."""
    return (g.s + 1) / (g.n + 2), (g.group_s + 1) / (g.group_n + 2)


def _scores(f: _Flat, g: _Graph) -> tuple[np.ndarray, np.ndarray]:
    """Per graph node (nan where not a branch): the smoothed information gain of its split, and
    the task information (N_v/N_task)·IG_mle(v), bits per trial of the task."""
    G = g.size
    n_groups = np.bincount(g.group_node, minlength=G)
    v_node, v_group = _smoothed(g)
    h = binary_entropy
    with np.errstate(divide="ignore", invalid="ignore"):
        child_h = np.bincount(g.group_node, weights=g.group_n * h(v_group), minlength=G)
        ig = np.where(n_groups >= 2, h(v_node) - child_h / np.maximum(g.n, 1), np.nan)
        mle_node = np.where(g.n > 0, g.s / np.maximum(g.n, 1), 0.0)
        mi = g.n * h(mle_node) - np.bincount(g.group_node, weights=g.group_n * h(g.group_s / g.group_n), minlength=G)
        task_n = np.bincount(f.trial_task, minlength=f.n_tasks)
        score = np.where(n_groups >= 2, mi / np.maximum(task_n[g.task], 1), np.nan)
    return ig, np.where(np.isnan(score), np.nan, np.maximum(score, 0.0))


@dataclass
class _Tests:
    pvalue: np.ndarray
    pmin: np.ndarray
    method: list[str | None]
    tested: np.ndarray
    qvalue: np.ndarray

    def significant(self, alpha: float) -> np.ndarray:
        return self.tested & (self.qvalue <= alpha)


@dataclass
class BranchTests:
    """The exact tests of a corpus's candidate nodes (`branch_tests`): what a chunk of a run
    keeps between the two passes of `bench.analysis.divergence.section` — the suite-wide
    Benjamini–Hochberg step needs every chunk's p-values before any chunk's q-values exist."""

    nodes: np.ndarray  # the candidate graph nodes, ascending
    pvalue: np.ndarray
    pmin: np.ndarray  # nan: none given by the test
    method: list[str]

    def family(self, alpha: float) -> np.ndarray:
        """The p-values of the nodes in the BH family (Tarone's screening), in node order."""
        return self.pvalue[~(self.pmin > alpha)]


def _candidate_tests(g: _Graph, o: DivergenceOptions) -> BranchTests:
    """The exact test of every branch node with enough support and both outcomes."""
    G = g.size
    n_groups = np.bincount(g.group_node, minlength=G)
    candidates = np.flatnonzero((n_groups >= 2) & (g.n >= o.min_support) & (g.s > 0) & (g.s < g.n))
    pvalue, pmin = np.full(candidates.size, np.nan), np.full(candidates.size, np.nan)
    method: list[str] = []
    group_start = np.searchsorted(g.group_node, np.arange(G), side="left")
    pm: float | None
    for i, v in enumerate(candidates.tolist()):
        a, b = group_start[v], group_start[v] + n_groups[v]
        sizes, succ = g.group_n[a:b], g.group_s[a:b]
        if o.test == "boschloo" and b - a == 2 and g.n[v] <= o.boschloo_max_n:
            (p, pm), how = boschloo_test(sizes, succ), "boschloo"
        else:
            p, pm, how = exact_test(sizes, succ, permutations=o.permutations, seed=o.seed)
        pvalue[i] = p
        pmin[i] = np.nan if pm is None else pm
        method.append(how)
    return BranchTests(candidates, pvalue, pmin, method)


def _branch_tests(g: _Graph, o: DivergenceOptions, given: BranchTests | None = None,
                  family_q: np.ndarray | None = None) -> _Tests:
    """The candidates' tests (`given`, or run now); Tarone's screening (a node whose smallest
    attainable p exceeds alpha can never be significant: it is left out of the family, its
    margins carry no information about the association); BH over the family, or the family's
    q-values from a suite-wide BH (`family_q`)."""
    G = g.size
    bt = given if given is not None else _candidate_tests(g, o)
    pvalue, pmin = np.full(G, np.nan), np.full(G, np.nan)
    pvalue[bt.nodes], pmin[bt.nodes] = bt.pvalue, bt.pmin
    method: list[str | None] = [None] * G
    for v, how in zip(bt.nodes.tolist(), bt.method):
        method[v] = how
    tested = np.zeros(G, dtype=bool)
    tested[bt.nodes] = ~(bt.pmin > o.alpha)
    qvalue = np.full(G, np.nan)
    family = np.flatnonzero(tested)
    qvalue[family] = benjamini_hochberg(pvalue[family]) if family_q is None else family_q
    return _Tests(pvalue, pmin, method, tested, qvalue)


def branch_tests(c: Corpus, o: DivergenceOptions) -> BranchTests:
    """The first pass over a chunk of a run: its tree, graph and candidates' tests only."""
    f = _flatten(c)
    tree = _prefix_tree(f)
    return _candidate_tests(_graph(f, tree, o, c.labels), o)


def _divergence_points(f: _Flat, tree: _Tree, g: _Graph, score: np.ndarray, significant: np.ndarray,
                       o: DivergenceOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per task: the significant node of highest task information (ties: shallower first), or
    -1; and the top-scoring node when a shallower ancestor was reported instead, or -1."""
    divergence_node = np.full(f.n_tasks, -1, dtype=np.int64)
    sig_nodes = np.flatnonzero(significant)
    if sig_nodes.size:
        order = np.lexsort((g.step[sig_nodes], -score[sig_nodes], g.task[sig_nodes]))
        ranked = sig_nodes[order]
        tasks_of = g.task[ranked]
        first = np.unique(tasks_of, return_index=True)[1]
        divergence_node[tasks_of[first]] = ranked[first]
    climbed_from = np.full(f.n_tasks, -1, dtype=np.int64)
    if o.key == "action":
        # The failure region may open earlier than its most informative split: a wrong turn
        # at step s from which some trials later recover shows as a branch at s *and* a
        # cleaner recover/not split below it. Report the shallowest significant ancestor whose
        # branch toward the top node succeeds less often than the ancestor itself.
        for t in np.flatnonzero(divergence_node >= 0).tolist():
            top = int(divergence_node[t])
            child, u = top, int(tree.parent[top])
            best = top
            while u >= 0:
                if significant[u] and tree.s[child] * tree.n[u] < tree.s[u] * tree.n[child]:
                    best = u
                child, u = u, int(tree.parent[u])
            if best != top:
                climbed_from[t] = top
                divergence_node[t] = best
    return divergence_node, climbed_from


def _critical_steps(f: _Flat, g: _Graph) -> tuple[np.ndarray, np.ndarray]:
    """Per position, V(node departed) − V(alternative taken) (-inf for revisits); per trial,
    the position of its critical step — where its estimate drops most, first maximum — for
    failed trials, else -1."""
    v_node, v_group = _smoothed(g)
    drop = np.full(f.n_positions, -np.inf)
    drop[g.kept_idx] = v_node[g.before[g.kept_idx]] - v_group[g.pos_group[g.kept_idx]]
    critical_pos = np.full(f.n_trials, -1, dtype=np.int64)
    if f.n_positions and f.n_trials:
        seg_max = np.maximum.reduceat(drop, f.offsets)
        at_max = drop == np.repeat(seg_max, f.lengths)
        critical_pos = np.where(~f.success, _seg_first(at_max, f.offsets, f.lengths), -1)
    return drop, critical_pos


def _leaving_reference(c: Corpus, f: _Flat, tree: _Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per trial, the position where it leaves its task's reference (-1 never, -2 no reference);
    per tree node, whether it is on the reference path and the reference's next key there."""
    n_tasks, T, P = f.n_tasks, f.n_trials, f.n_positions
    leave_ref = np.full(T, -2, dtype=np.int64)
    tree_on_ref = np.zeros(tree.parent.size, dtype=bool)
    tree_ref_next = np.full(tree.parent.size, -1, dtype=np.int64)
    has_ref = np.array([r is not None for r in c.references], dtype=bool)
    if not (T and has_ref.any()):
        return leave_ref, tree_on_ref, tree_ref_next
    refs = [(r if r is not None else []) + [0] for r in c.references]
    ref_len = np.array([len(r) for r in refs], dtype=np.int64)
    ref_off = np.zeros(n_tasks, dtype=np.int64)
    ref_off[1:] = np.cumsum(ref_len)[:-1]
    ref_flat = np.fromiter(chain.from_iterable(refs), dtype=np.int64, count=int(ref_len.sum()))
    ptask = f.trial_task[f.pos_trial]
    inside = f.pos_index < ref_len[ptask]
    ref_at = np.full(P, -7, dtype=np.int64)
    ref_at[inside] = ref_flat[ref_off[ptask[inside]] + f.pos_index[inside]]
    first_off = _seg_first(f.flat_keys != ref_at, f.offsets, f.lengths)
    leave_ref = np.where(has_ref[f.trial_task], first_off, -2)
    on = (leave_ref[f.pos_trial] == -1) | (leave_ref[f.pos_trial] > f.pos_index)
    tree_on_ref[tree.node_at[on]] = True
    tree_on_ref[:n_tasks] = has_ref
    nxt = tree_on_ref & (tree.depth < ref_len[tree.task])
    tree_ref_next[nxt] = ref_flat[ref_off[tree.task[nxt]] + tree.depth[nxt]]
    return leave_ref, tree_on_ref, tree_ref_next


def analyse_corpus(c: Corpus, o: DivergenceOptions, given: BranchTests | None = None,
                   family_q: np.ndarray | None = None) -> Analysis:
    """Steps 2–4 on a keyed corpus; the result's `section` is left empty. A chunk of a run
    passes its tests from the first pass (`branch_tests`) and its family's q-values from the
    suite-wide BH step."""
    f = _flatten(c)
    tree = _prefix_tree(f)
    vocab = c.labels
    g = _graph(f, tree, o, vocab)
    ig, score = _scores(f, g)
    tests = _branch_tests(g, o, given, family_q)
    divergence_node, climbed_from = _divergence_points(f, tree, g, score, tests.significant(o.alpha), o)
    drop, critical_pos = _critical_steps(f, g)
    leave_ref, tree_on_ref, tree_ref_next = _leaving_reference(c, f, tree)
    return Analysis(
        options=o, task_ids=c.task_ids, vocab=vocab, trial_ids=c.trial_ids, trial_task=f.trial_task,
        success=f.success, offsets=f.offsets, lengths=f.lengths, flat_keys=f.flat_keys, flat_steps=f.flat_steps,
        tree_parent=tree.parent, tree_key=tree.key, tree_depth=tree.depth, tree_task=tree.task, tree_n=tree.n,
        tree_s=tree.s, node_at=tree.node_at, tree_on_ref=tree_on_ref, tree_ref_next=tree_ref_next,
        graph_before=g.before, graph_n=g.n, graph_s=g.s, graph_task=g.task, graph_step=g.step, graph_label=g.label,
        group_node=g.group_node, group_key=g.group_key, group_n=g.group_n, group_s=g.group_s, pos_group=g.pos_group,
        drop=drop, ig=ig, score=score, pvalue=tests.pvalue, pmin=tests.pmin, method=tests.method,
        qvalue=tests.qvalue, tested=tests.tested, divergence_node=divergence_node, climbed_from=climbed_from,
        critical_pos=critical_pos, leave_ref=leave_ref)
