"""Steps 5–6 of the divergence analysis, and its entry points: the JSON section.

`analyse` (already-keyed trials) and `analyse_run` (a run) run steps 1–4 and then assemble the
report's `divergence` section from the `Analysis` (schema: bench/schemas/divergence.schema.json):
per task, its branch nodes (the divergence point first), critical steps of failed trials, the
reference (leaving it, survival curves), milestone curves, first-divergence pairs and per-trial
rows; for the suite, where divergence points fall and which tools and actions failure branches
begin with. `divergence_section` is the section alone.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bench.analysis.divergence.keys import (
    Corpus,
    KeyedRun,
    corpora_of_run,
    corpus_of_run,
    corpus_of_tasks,
    key_parsed,
    read_keyed,
    tool_of,
)
from bench.analysis.divergence.options import END, DivergenceOptions, TaskTrials
from bench.analysis.divergence.power import detectable_k, smallest_testable_n
from bench.analysis.divergence.tree import Analysis, BranchTests, analyse_corpus, branch_tests
from bench.analysis.metrics import benjamini_hochberg
from bench.runs.rundir import Manifest, RunLog, gc_paused, suite_of_run
from bench.world.suite import Suite

DIVERGENCE_VERSION = 1


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
    alternatives: list[dict[str, Any]] = []
    for g in range(start, stop):
        n, s = int(a.group_n[g]), int(a.group_s[g])
        key_id = int(a.group_key[g])
        label = _key_label(a, key_id)
        alternatives.append({
            "action": label, "end": key_id == 0, "tool": None if label is None else tool_of(label),
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


@dataclass
class _Context:
    """What every task's row reads, computed once for the suite."""

    a: Analysis
    c: Corpus
    n_groups: np.ndarray
    significant: np.ndarray
    pos_trial: np.ndarray
    tree_nodes_per_task: np.ndarray
    leaves_per_task: np.ndarray
    branch_per_task: np.ndarray
    tested_per_task: np.ndarray
    listed_nodes: dict[int, list[int]]
    trials_by_group: dict[int, list[int]]
    crit_key: np.ndarray  # per trial: key id at its critical step, else -1
    crit_drop: np.ndarray
    trial_order: np.ndarray
    task_bounds: np.ndarray
    pairs: _Pairs


@dataclass
class _Pairs:
    """Success–failure and success–success pairs of trials, split at each prefix-tree node
    (pairs split at node v first diverge at depth(v)); and identical success–success pairs."""

    sf: np.ndarray
    ss: np.ndarray
    ss_identical: np.ndarray  # per task
    split: np.ndarray  # tree nodes with children, grouped by task
    split_bounds: np.ndarray
    leaf: np.ndarray  # tree nodes without children

    @classmethod
    def of(cls, a: Analysis, n_tasks: int) -> _Pairs:
        Tn = a.tree_parent.size
        tf = a.tree_n - a.tree_s
        child_of = a.tree_parent >= 0
        parents = a.tree_parent[child_of]
        sum_sf = np.bincount(parents, weights=(a.tree_s * tf)[child_of], minlength=Tn)
        sum_ss = np.bincount(parents, weights=(a.tree_s * (a.tree_s - 1) / 2)[child_of], minlength=Tn)
        has_children = np.bincount(parents, minlength=Tn) > 0
        sf = np.where(has_children, a.tree_s * tf - sum_sf, 0.0)
        ss = np.where(has_children, a.tree_s * (a.tree_s - 1) / 2 - sum_ss, 0.0)
        leaf = ~has_children
        ss_identical = np.bincount(a.tree_task[leaf], weights=(a.tree_s * (a.tree_s - 1) / 2)[leaf], minlength=n_tasks)
        split = np.flatnonzero(has_children)
        split = split[np.argsort(a.tree_task[split], kind="stable")]
        return cls(sf, ss, ss_identical, split, np.searchsorted(a.tree_task[split], np.arange(n_tasks + 1)), leaf)


def _listed_nodes(a: Analysis, is_branch: np.ndarray, significant: np.ndarray) -> dict[int, list[int]]:
    """The branch nodes listed per task: the divergence point (and the node it climbed from),
    then significant first, by score, shallower first; `max_branches` of them."""
    n_tasks = len(a.task_ids)
    branch_nodes = np.flatnonzero(is_branch)
    order = np.lexsort((a.graph_step[branch_nodes], -np.nan_to_num(a.score[branch_nodes]),
                        ~significant[branch_nodes], a.graph_task[branch_nodes]))
    ranked = branch_nodes[order]
    rank_bounds = np.searchsorted(a.graph_task[ranked], np.arange(n_tasks + 1))
    listed: dict[int, list[int]] = {}
    for t in range(n_tasks):
        first = [int(v) for v in (a.divergence_node[t], a.climbed_from[t]) if v >= 0]
        rest = [v for v in ranked[rank_bounds[t]:rank_bounds[t + 1]][: a.options.max_branches + 2].tolist() if v not in first]
        listed[t] = (first + rest)[: max(a.options.max_branches, len(first))]
    return listed


def _example_trials(a: Analysis, listed: dict[int, list[int]], n_groups: np.ndarray, pos_trial: np.ndarray) -> dict[int, list[int]]:
    """Up to three example trials of every alternative of the listed nodes."""
    groups_wanted = np.zeros(a.group_n.size, dtype=bool)
    group_lo = np.searchsorted(a.group_node, np.arange(a.graph_n.size), side="left")
    for nodes in listed.values():
        for v in nodes:
            groups_wanted[group_lo[v]:group_lo[v] + n_groups[v]] = True
    trials_by_group: dict[int, list[int]] = {}
    sel = np.flatnonzero((a.pos_group >= 0) & groups_wanted[np.maximum(a.pos_group, 0)])
    for g, tr in zip(a.pos_group[sel].tolist(), pos_trial[sel].tolist()):
        lst = trials_by_group.setdefault(g, [])
        if len(lst) < 3:
            lst.append(tr)
    return trials_by_group


def _context(a: Analysis, c: Corpus) -> _Context:
    n_tasks = len(a.task_ids)
    n_groups = np.bincount(a.group_node, minlength=a.graph_n.size)
    is_branch = n_groups >= 2
    significant = a.tested & (a.qvalue <= a.options.alpha)
    pos_trial = np.repeat(np.arange(len(a.trial_ids)), a.lengths)
    pairs = _Pairs.of(a, n_tasks)
    listed = _listed_nodes(a, is_branch, significant)
    crit_flat = a.offsets + np.maximum(a.critical_pos, 0)
    crit_key = np.where(a.critical_pos >= 0, a.flat_keys[crit_flat] if crit_flat.size else a.critical_pos, -1)
    crit_drop = np.where(a.critical_pos >= 0, a.drop[crit_flat] if crit_flat.size else 0.0, 0.0)
    trial_order = np.argsort(a.trial_task, kind="stable")
    return _Context(
        a, c, n_groups, significant, pos_trial,
        tree_nodes_per_task=np.bincount(a.tree_task, minlength=n_tasks),
        leaves_per_task=np.bincount(a.tree_task[pairs.leaf], minlength=n_tasks),
        branch_per_task=np.bincount(a.graph_task[is_branch], minlength=n_tasks),
        tested_per_task=np.bincount(a.graph_task[a.tested], minlength=n_tasks),
        listed_nodes=listed, trials_by_group=_example_trials(a, listed, n_groups, pos_trial),
        crit_key=crit_key, crit_drop=crit_drop, trial_order=trial_order,
        task_bounds=np.searchsorted(a.trial_task[trial_order], np.arange(n_tasks + 1)), pairs=pairs)


@dataclass
class _Tally:
    """The suite-level counts, gathered task by task."""

    depths: Counter[int] = field(default_factory=Counter)
    tools: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    action_tasks: dict[str, list[str]] = field(default_factory=dict)
    sf_medians: list[float] = field(default_factory=list)
    ss_medians: list[float] = field(default_factory=list)
    mixed: int = 0


def _divergence(ctx: _Context, t: int, branches: list[dict[str, Any]], tally: _Tally) -> dict[str, Any] | None:
    """The task's divergence point (one of its listed branches), with its failure branches:
    the alternatives that succeed less often than the node does."""
    a = ctx.a
    dv = int(a.divergence_node[t])
    d = next((b for b, v in zip(branches, ctx.listed_nodes[t]) if v == dv), None) if dv >= 0 else None
    if d is None:
        return None
    if a.climbed_from[t] >= 0:
        d["top_scoring_step"] = int(a.graph_step[a.climbed_from[t]])
    tally.depths[d["step"]] += 1
    worse = [alt for alt in d["alternatives"] if alt["successes"] * d["n"] < d["successes"] * alt["n"]]
    for alt in worse:
        label = alt["action"] if alt["action"] is not None else END
        tally.tools[alt["tool"] or END] += 1
        tally.actions[label] += 1
        tally.action_tasks.setdefault(label, []).append(a.task_ids[t])
    d["failure_branches"] = [alt["action"] if alt["action"] is not None else END for alt in worse]
    return d


def _critical_steps(ctx: _Context, idx: np.ndarray) -> list[dict[str, Any]]:
    """The critical steps of the task's failed trials, grouped by (step, action)."""
    a = ctx.a
    crit: dict[tuple[int, int], list[Any]] = {}
    failed = idx[a.critical_pos[idx] >= 0]
    for tr, cp, key_id, dr in zip(failed.tolist(), a.critical_pos[failed].tolist(), ctx.crit_key[failed].tolist(),
                                  ctx.crit_drop[failed].tolist()):
        entry = crit.get((cp, key_id))
        if entry is None:
            entry = crit[(cp, key_id)] = [0, 0.0, []]
        entry[0] += 1
        entry[1] += dr
        if len(entry[2]) < 3:
            entry[2].append(a.trial_ids[tr])
    return sorted(
        ({"step": cp, "action": _key_label(a, k), "end": k == 0, "failed_trials": cnt,
          "mean_drop": _f(total / cnt), "examples": ex}
         for (cp, k), (cnt, total, ex) in crit.items()),
        key=lambda e: (-e["failed_trials"], e["step"]))


def _reference(ctx: _Context, t: int, idx: np.ndarray) -> dict[str, Any] | None:
    """Leaving the reference: trials that followed it exactly, survival curves by outcome."""
    a, ref = ctx.a, ctx.c.references[t]
    if ref is None:
        return None
    leave = a.leave_ref[idx]
    return {
        "length": len(ref),
        "followed_exactly": {"success": int(((leave == -1) & a.success[idx]).sum()),
                             "failure": int(((leave == -1) & ~a.success[idx]).sum())},
        "survival": _survival(leave, a.success[idx], len(ref) + 1),
    }


def _first_divergence(ctx: _Context, t: int, tally: _Tally) -> dict[str, Any]:
    """The median step at which success–failure and success–success pairs first diverge."""
    p = ctx.pairs
    nodes = p.split[p.split_bounds[t]:p.split_bounds[t + 1]]
    depths = ctx.a.tree_depth[nodes].astype(float)
    sf_w, ss_w = p.sf[nodes], p.ss[nodes]
    sf_med, ss_med = _weighted_median(depths, sf_w), _weighted_median(depths, ss_w)
    if sf_med is not None:
        tally.sf_medians.append(sf_med)
    if ss_med is not None:
        tally.ss_medians.append(ss_med)
    return {
        "success_failure": {"pairs": int(round(sf_w.sum())), "median_step": sf_med},
        "success_success": {"pairs": int(round(ss_w.sum() + p.ss_identical[t])), "identical": int(round(p.ss_identical[t])),
                            "median_step": ss_med},
    }


def _trial_rows(ctx: _Context, idx: np.ndarray) -> list[dict[str, Any]]:
    """Per-trial rows: failed trials first, then in order, `max_trials_listed` of them."""
    a = ctx.a
    listed = np.concatenate([idx[~a.success[idx]], idx[a.success[idx]]])[: a.options.max_trials_listed]
    return [
        {"trial": a.trial_ids[tr], "outcome": "success" if ok else "failure", "length": ln - 1,
         "critical_step": cp if cp >= 0 else None, "critical_action": a.vocab[ck] if cp >= 0 and ck > 0 else None,
         "leaves_reference_at": lr if lr >= 0 else None}
        for tr, ok, ln, cp, ck, lr in zip(listed.tolist(), a.success[listed].tolist(), a.lengths[listed].tolist(),
                                          a.critical_pos[listed].tolist(), ctx.crit_key[listed].tolist(),
                                          a.leave_ref[listed].tolist())]


def _task_row(ctx: _Context, t: int, tally: _Tally) -> dict[str, Any]:
    a = ctx.a
    idx = ctx.trial_order[ctx.task_bounds[t]:ctx.task_bounds[t + 1]]
    n, s = int(idx.size), int(a.success[idx].sum())
    mixed = 0 < s < n
    tally.mixed += mixed
    row: dict[str, Any] = {
        "task": a.task_ids[t], "n": n, "successes": s, "mixed": bool(mixed),
        "nodes": int(ctx.tree_nodes_per_task[t]), "distinct_trajectories": int(ctx.leaves_per_task[t]),
        "branch_nodes": int(ctx.branch_per_task[t]), "tested_nodes": int(ctx.tested_per_task[t]),
    }
    listed = ctx.listed_nodes[t]
    headline = int(a.divergence_node[t]) if a.divergence_node[t] >= 0 else (listed[0] if listed else -1)
    branches = [_branch(a, v, ctx.trials_by_group, with_prefix=(v == headline)) for v in listed]
    row["divergence"] = _divergence(ctx, t, branches, tally)
    row["branches"] = branches
    row["candidate"] = _candidate(ctx, n, branches) if mixed and row["divergence"] is None else None
    row["context"] = _lookup_context(ctx, idx, headline, "divergence" if row["divergence"] else
                                     "candidate" if row["candidate"] else "task") if mixed else None
    row["critical_steps"] = _critical_steps(ctx, idx)
    row["reference"] = _reference(ctx, t, idx)
    row["milestones"] = _milestone_curves(ctx.c, t, idx, a.success)
    row["first_divergence"] = _first_divergence(ctx, t, tally)
    row["trials"] = _trial_rows(ctx, idx)
    return row


def _candidate(ctx: _Context, n_task: int, branches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A mixed task's best branch when none is significant, labelled for what it is: exploratory
    when the task has too few trials for any test, else not significant. At too small a k it
    also says which k would detect such a split (`power.detectable_k`, with the observed rates)."""
    if not branches:
        return None
    o = ctx.a.options
    b = dict(branches[0])
    testable_from = smallest_testable_n(o.alpha, o.test)
    b["testable"] = n_task >= testable_from
    b["label"] = "not significant" if b["testable"] else f"exploratory — not testable at k = {n_task}"
    b["detectable_at_k"] = None if b["testable"] else _detectable_at(b, n_task, o)
    return b


def _detectable_at(b: dict[str, Any], n_task: int, o: DivergenceOptions) -> int | None:
    """The task's k at which a split like this branch's (its worst alternative against the rest,
    at the observed rates, on the same share of the task's trials) is detected with 80% power."""
    worst = min(b["alternatives"], key=lambda alt: (alt["successes"] / alt["n"], -alt["n"]))
    rest_n, rest_s = b["n"] - worst["n"], b["successes"] - worst["successes"]
    if rest_n <= 0:
        return None
    k_node = detectable_k(worst["n"] / b["n"], rest_s / rest_n, worst["successes"] / worst["n"], o.alpha, o.test)
    return None if k_node is None else math.ceil(k_node * n_task / b["n"])


def _lookup_context(ctx: _Context, idx: np.ndarray, v: int, at: str) -> dict[str, Any] | None:
    """Where the trials through node v (all the task's trials when v = -1) first part in their
    tool calls, lookups included, when that fork is in lookups the decision rule left out (in a
    task with writes) — its context ("their lookups already differed from tool call 2"). None
    with fork="raw" (the tree then holds the lookups itself), or when their calls part at a
    decision first."""
    a, c = ctx.a, ctx.c
    if not c.has_raw():
        return None
    if v >= 0 and idx.size:  # the trials with a position departing from v
        lo, last = int(idx.min()), int(idx.max())
        span = slice(int(a.offsets[lo]), int(a.offsets[last] + a.lengths[last]))
        through = np.unique(ctx.pos_trial[span][a.graph_before[span] == v])
        idx = idx[np.isin(idx, through)]
    trials = idx.tolist()
    if len(trials) < 2:
        return None
    seqs = _raw_matrix(c, trials)  # one row per trial: its raw calls, 0 (<end>), then -1
    agree = (seqs == seqs[0]).all(axis=0) & (seqs[0] >= 0)
    d = int(np.argmin(agree)) if not agree.all() else seqs.shape[1]
    if d >= seqs.shape[1] or (seqs[0, :d] == 0).any():
        return None  # identical calls to the end
    column = seqs[:, d].tolist()
    groups: dict[int, list[int]] = {}
    for tr, key in zip(trials, column):
        groups.setdefault(key, []).append(tr)
    if not (c.writes[int(a.trial_task[trials[0]])] and all(k in c.read_only for k in groups)):
        return None  # a fork at a decision: a write or a stop is one of its ways (or, in a task
        # without writes, lookups are decisions)
    ranked = sorted(groups.items(), key=lambda g: (-len(g[1]), _key_label(a, g[0]) or ""))
    alternatives = [{"action": _key_label(a, k), "end": k == 0, "read_only": k in c.read_only,
                     "n": len(members), "successes": int(a.success[members].sum())} for k, members in ranked]
    return {"at": at, "tool_call": d, "trials": len(trials), "alternatives": alternatives}


def _raw_matrix(c: Corpus, trials: list[int]) -> np.ndarray:
    """The trials' raw sequences (`Corpus.raw_of`) and their <end> (0) as rows, padded with -1."""
    if c.raw_flat is None:
        offsets = np.cumsum([0] + [len(c.raw[tr]) for tr in trials])
        flat = np.fromiter(chain.from_iterable(c.raw[tr] for tr in trials), dtype=np.int64, count=int(offsets[-1]))
        starts = offsets[:-1]
    else:
        offsets_all, flat = c.raw_flat
        starts = offsets_all[trials]
    rows = np.asarray(trials)
    lens = (np.diff(offsets) if c.raw_flat is None else c.raw_flat[0][rows + 1] - starts).astype(np.int64)
    out = np.full((len(trials), int(lens.max()) + 1), -1, dtype=np.int64)
    row = np.repeat(np.arange(len(trials)), lens)
    col = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out[row, col] = flat[np.repeat(starts, lens) + col]
    out[np.arange(len(trials)), lens] = 0
    return out


@dataclass
class _Totals:
    """The suite row's counts, summed over the chunks of a run."""

    tasks: int = 0
    trials: int = 0
    steps: int = 0
    branch_nodes: int = 0
    tested_nodes: int = 0
    significant_nodes: int = 0
    tasks_with_divergence: int = 0

    def add(self, ctx: _Context) -> None:
        a = ctx.a
        self.tasks += len(a.task_ids)
        self.trials += len(a.trial_ids)
        self.steps += int(a.lengths.sum() - a.lengths.size)
        self.branch_nodes += int((ctx.n_groups >= 2).sum())
        self.tested_nodes += int(a.tested.sum())
        self.significant_nodes += int(ctx.significant.sum())
        self.tasks_with_divergence += int((a.divergence_node >= 0).sum())


def _suite_row(o: DivergenceOptions, totals: _Totals, tasks: list[dict[str, Any]], tally: _Tally) -> dict[str, Any]:
    both = [(t["first_divergence"]["success_failure"]["median_step"], t["first_divergence"]["success_success"]["median_step"])
            for t in tasks]
    both = [(x, y) for x, y in both if x is not None and y is not None]
    return {
        "tasks": totals.tasks, "mixed_tasks": tally.mixed, "trials": totals.trials,
        "steps": totals.steps,
        "branch_nodes": totals.branch_nodes, "tested_nodes": totals.tested_nodes,
        "significant_nodes": totals.significant_nodes,
        "tasks_with_divergence": totals.tasks_with_divergence,
        "testable_from_k": smallest_testable_n(o.alpha, o.test),
        "depth_distribution": [{"step": d, "tasks": k} for d, k in sorted(tally.depths.items())],
        "failure_branch_tools": [{"tool": k, "tasks": v} for k, v in tally.tools.most_common(10)],
        "failure_branch_actions": [{"action": k, "tasks": v, "task_ids": tally.action_tasks[k][:5]}
                                   for k, v in tally.actions.most_common(10)],
        "first_divergence": {
            "success_failure_median_step": float(np.median(tally.sf_medians)) if tally.sf_medians else None,
            "success_success_median_step": float(np.median(tally.ss_medians)) if tally.ss_medians else None,
            "tasks_compared": len(both),
            "tasks_sf_earlier": sum(x < y for x, y in both),
        },
    }


def build_section(a: Analysis, c: Corpus) -> dict[str, Any]:
    """The JSON section of an analysis (steps 5–6)."""
    return _section(a.options, iter([(a, c)]))


def _section(o: DivergenceOptions, parts: Iterator[tuple[Analysis, Corpus]]) -> dict[str, Any]:
    """The JSON section of a run analysed in chunks of whole tasks, one chunk at a time: the
    tasks' rows are each chunk's, the suite row sums them."""
    tally, totals = _Tally(), _Totals()
    tasks: list[dict[str, Any]] = []
    for a, c in parts:
        ctx = _context(a, c)
        totals.add(ctx)
        tasks.extend(_task_row(ctx, t, tally) for t in range(len(a.task_ids)))
    return {"version": DIVERGENCE_VERSION, "options": o.as_dict(), "suite": _suite_row(o, totals, tasks, tally), "tasks": tasks}


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


def _milestone_curves(c: Corpus, t: int, idx: np.ndarray, success: np.ndarray) -> dict[str, Any] | None:
    names, table = c.milestone_table(t, idx)
    if not names:
        return None
    horizon = max(int(np.max(np.asarray(c.tool_calls)[idx])) if idx.size else 0, 1)
    steps = np.arange(horizon)
    out: dict[str, Any] = {"step": steps.tolist(), "curves": {}}
    for j, name in enumerate(names):
        at = table[:, j]
        hit = np.where(at >= 0, at, np.iinfo(np.int64).max)
        curves = {}
        for label, mask in (("success", success[idx]), ("failure", ~success[idx])):
            curves[label] = [_f(x, 4) for x in (hit[mask][:, None] <= steps[None, :]).mean(axis=0)] if mask.any() else None
        out["curves"][name] = curves
    return out



def analyse(tasks: Sequence[TaskTrials], options: DivergenceOptions | None = None) -> Analysis:
    """Divergence analysis of already-keyed trials (see `divergence_section` for a run)."""
    o = options or DivergenceOptions()
    corpus = corpus_of_tasks(tasks, decisions=o.fork == "decision")
    analysis = analyse_corpus(corpus, o)
    analysis.section = build_section(analysis, corpus)
    return analysis


def _reference_suite(manifest: Manifest, suite: Suite | None, load_reference: bool) -> tuple[Suite | None, str | None]:
    """The suite for the reference analysis, or None and the reason it is skipped."""
    if suite is not None:
        return suite, None
    if not load_reference:
        return None, "reference analysis not requested"
    found, missing = suite_of_run(manifest)
    return found, None if missing is None else str(missing)


def _keyed(run: str | Path | RunLog | KeyedRun, options: DivergenceOptions | None) -> KeyedRun:
    if isinstance(run, KeyedRun):
        if options is not None and options != run.options:
            raise ValueError("a KeyedRun is analysed with the options it was keyed with")
        return run
    o = options or DivergenceOptions()
    return key_parsed(run, o) if isinstance(run, RunLog) else read_keyed(run, o)


@gc_paused()  # a large run's keys are millions of objects the collector need not rescan
def analyse_run(run: str | Path | RunLog | KeyedRun, options: DivergenceOptions | None = None, *,
                suite: Suite | None = None, load_reference: bool = True) -> Analysis:
    """Divergence analysis of a run, whole (the viewer walks its arrays): a run directory
    (read with `read_keyed`, which needs far less memory than `read_run`), a parsed `RunLog`,
    or a `KeyedRun` (analysed with the options it was keyed with). The reference analysis
    needs the run's suite: pass it, or it is reopened from the manifest
    (`bench.runs.rundir.suite_of_run`: the same content hash); otherwise that part is skipped
    and the reason recorded. For the section alone, `divergence_section` holds less."""
    keyed = _keyed(run, options)
    found, reason = _reference_suite(keyed.log.manifest, suite, load_reference)
    corpus = corpus_of_run(keyed, found, keyed.options.pool_variants)
    analysis = analyse_corpus(corpus, keyed.options)
    analysis.section = build_section(analysis, corpus)
    analysis.section["reference"] = {"available": found is not None, "reason": reason}
    return analysis


CHUNK_TRIALS = 20_000  # trials per chunk of `divergence_section` (whole tasks)
KEEP_KEYS = 2_000_000  # the first pass's chunks are kept for the second while they hold at most this many keys (~60 MB)


@gc_paused()
def divergence_section(run: str | Path | RunLog | KeyedRun, options: DivergenceOptions | None = None, *,
                       suite: Suite | None = None, load_reference: bool = True, **option_fields: Any) -> dict[str, Any]:
    """The report's `divergence` section (JSON-serialisable; bench/schemas/divergence.schema.json),
    equal to `analyse_run(...).section` but holding one chunk of tasks at a time
    (`CHUNK_TRIALS`): a first pass tests each chunk's branch nodes and keeps only their
    p-values; Benjamini–Hochberg runs over the suite's family; a second pass writes each chunk's
    tasks' rows, from the first pass's chunks while they hold at most `KEEP_KEYS` keys together
    (building them is a fifth of the analysis), else building each again. A run of one chunk is
    analysed once."""
    if option_fields:
        base = asdict(options) if options is not None else {}
        options = DivergenceOptions(**{**base, **option_fields})
    keyed = _keyed(run, options)
    o = keyed.options
    found, reason = _reference_suite(keyed.log.manifest, suite, load_reference)

    def chunks() -> Iterator[Corpus]:
        return corpora_of_run(keyed, found, o.pool_variants, CHUNK_TRIALS)

    first_pass = chunks()
    first = next(first_pass)
    second = next(first_pass, None)
    if second is None:  # one chunk: the whole analysis at once
        a = analyse_corpus(first, o)
        section = _section(o, iter([(a, first)]))
    else:
        tests: list[BranchTests] = []
        kept: list[Corpus] | None = []
        held = 0
        for c in chain([first, second], first_pass):
            tests.append(branch_tests(c, o))
            held += c.n_keys()
            kept = kept + [c] if kept is not None and held <= KEEP_KEYS else None  # past it: built again
        del first, second
        families = [bt.family(o.alpha) for bt in tests]
        q = benjamini_hochberg(np.concatenate(families)) if families else np.array([])
        bounds = np.cumsum([0] + [f.size for f in families])
        again = iter(kept) if kept is not None else chunks()
        parts = ((analyse_corpus(c, o, bt, q[lo:hi]), c) for c, bt, lo, hi in zip(again, tests, bounds[:-1], bounds[1:]))
        section = _section(o, parts)
    section["reference"] = {"available": found is not None, "reason": reason}
    return section
