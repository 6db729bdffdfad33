"""Terminal text: every rendering for a terminal, each a function of the JSON-ready data the
analysis returns (the report, its divergence and variants sections, the diff, the replay).

Agent- and model-produced text (task and trial ids, tool names, arguments, agent names, error
messages) can hold control characters that a terminal would interpret: every such string goes
through `term`, the one terminal escape.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench.analysis.diff import has_significant_point
from bench.analysis.divergence.power import K_LADDER
from bench.analysis.regression import CATEGORIES
from bench.analysis.replay import Mismatch, VerifyResult
from bench.publish.causal import render_causal
from bench.publish.labels import sibling_labels


def term(text: Any, width: int | None = None) -> str:
    """Untrusted text for a terminal: control characters shown escaped, never interpreted; cut
    to `width` characters (the last one an ellipsis) when given."""
    s = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    if width is not None and len(s) > width:
        s = s[: width - 1] + "…"
    return s


# ---------------------------------------------------------------------------- the report
def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1%}"


def _ci(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.3f} [{entry['lo']:.3f}, {entry['hi']:.3f}]"


def _sequential_lines(seq: dict[str, Any] | None) -> list[str]:
    """A sequential run's design, its anytime-valid suite interval and which pass^k is shown."""
    if not seq:
        return []
    d, n, cs = seq["design"], seq["trials_per_task"], seq["suite_pass@1_cs"]
    state = "finished" if seq["finished"] else "UNFINISHED (re-run the command to continue the design)"
    interval = f"[{cs['lo']:.3f}, {cs['hi']:.3f}]" if cs["lo"] is not None else "—"
    return [f"  sequential design: -k {d['k_min']} --k-max {d['k_max']} --until {d['until']} (rounds at n = "
            f"{', '.join(map(str, d['schedule']))}); {len(seq['rounds'])} round(s), {state}",
            f"    trials per task {n['min']}–{n['max']} (mean {n['mean']:.1f}); {seq['expected_trials']} trials against "
            f"{seq['fixed_k_trials']} for fixed k = {d['k_max']}",
            f"    anytime-valid {cs['level']:.0%} suite pass@1 interval {interval} (valid under the stopping rule; "
            "prefer it to the bootstrap interval above)",
            "    unbiased under the stopping rule (each task's first -k trials): "
            + ", ".join(f"pass^{e['k']} {_fmt(e['value'])}" for e in seq["unbiased_pass^k"]),
            f"    {seq['pass^k_estimator']}"]


def render_report(report: dict[str, Any], max_tasks: int = 60) -> str:
    run, suite, comp = report["run"], report["suite"], report["completeness"]
    agent = run["agent"]
    label = " (SIMULATED agent, not a real one)" if agent.get("simulated") else ""
    lines = [
        f"trajbench report — {run['dir']}",
        f"agent {agent['name']}{label}; suite {run['suite']['name']} (hash {run['suite']['hash'][:12]}); k = {run['k']}",
        f"tasks n = {suite['n_tasks']}; trials {comp['finished_trials']}/{comp['expected_trials']} finished, "
        f"{comp['error_trials']} infrastructure errors (excluded from every figure)",
    ]
    if comp["torn_bytes"]:
        lines.append(f"warning: the log ends in a torn line ({comp['torn_bytes']} bytes), ignored")
    if comp["finished_trials"] < comp["expected_trials"]:
        lines.append("warning: the run is unfinished; re-run the same command to resume it")
    lines += ["", "Suite (means over tasks; 95% intervals from a bootstrap over tasks)",
              f"  pass@1   {_ci(suite['pass@1'])}   (n = {suite['n_tasks']} tasks)"]
    shown = _curve_points(run["k"])
    for entry in (e for e in suite["pass^k"] if e["k"] in shown):
        lines.append(f"  pass^{entry['k']:<3} {_ci(entry)}   (n = {entry['n_tasks']} tasks)")
    pass_at = {e["k"]: e for e in suite["pass@k"]}
    if run["k"] in pass_at:
        lines.append(f"  pass@{run['k']:<3} {_ci(pass_at[run['k']])}")
    lines.append(f"  flip probability (two runs disagree) {_ci(suite['flip'])}")
    lines += _sequential_lines(report.get("sequential"))
    truth = report.get("simulated_truth")
    if truth:
        curve = ", ".join(f"k={e['k']}: {e['value']:.3f}" for e in truth["pass^k"] if e["k"] in shown)
        lines.append(f"  known truth of this simulated agent: pass@1 {truth['pass@1']:.3f}; pass^k {curve}")
    dist = report["trajectory_distance"]
    lines.append(f"  trajectory edit distance within task: successes {_fmt(dist['success'])}, failures {_fmt(dist['failure'])}")
    lines.append(f"  end-state agreement (share of the commonest final state) {_fmt(report['end_state_agreement'])}")
    cv = report["resource_cv"]
    lines.append("  coefficient of variation within task: " + ", ".join(f"{k} {_fmt(v)}" for k, v in cv.items() if v is not None))
    lines += ["", f"Per task (k = {run['k']})",
              f"  {'task':<40} {'succ/n':>7} {'pass@1':>7} {'pass^k':>7} {'flip':>6} {'states':>6}  failing checks"]
    for row in sorted(report["tasks"], key=lambda r: (r["pass@1"] if r["pass@1"] is not None else -1))[:max_tasks]:
        states = row["end_states"]["distinct"] if row["end_states"] else 0
        checks = ", ".join(f"{k}×{v}" for k, v in list(row["failed_checks"].items())[:3])
        err = f" +{row['errors']}err" if row["errors"] else ""
        lines.append(f"  {row['task'][:40]:<40} {row['successes']:>3}/{row['n']:<3} {_pct(row['pass@1']):>7} "
                     f"{_pct(row['pass^k']):>7} {_pct(row['flip']):>6} {states:>6}  {checks}{err}")
    if len(report["tasks"]) > max_tasks:
        lines.append(f"  ... {len(report['tasks']) - max_tasks} more tasks (see --json)")
    if report.get("divergence"):
        lines += ["", render_divergence(report["divergence"])]
    if report.get("variants"):
        lines += ["", *render_variants(report["variants"])]
    if report.get("causal"):
        lines += ["", *render_causal(report["causal"])]
    return "\n".join(lines)


def render_variants(section: dict[str, Any]) -> list[str]:
    k = section["k"]
    lines = ["Input variants (the headline figures above are on the unperturbed input; Δ is paired over the same tasks)",
             f"  {'family':<12} {'tasks':>5} {'pass@1':>7} {f'pass^{k}':>7} {'Δ pass@1 [95% CI]':>26} {'ratio':>6} "
             f"{'noise floor':>11}  verdict"]
    for f in section["families"]:
        d = f["delta_pass@1"]
        delta = "n/a" if d["mean"] is None else f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
        pk = f["pass^k"]["mean"] if f["pass^k"] else None
        ratio = "n/a" if f["hal_ratio"] is None else f"{f['hal_ratio']:.2f}"
        lines.append(f"  {f['family']:<12} {f['n_tasks']:>5} {_pct(f['pass@1']['mean']):>7} {_pct(pk):>7} {delta:>26} "
                     f"{ratio:>6} {_fmt(f['noise_floor_flip']):>11}  {f['verdict']}")
    lines.append("  noise floor = same-input flip rate on the unperturbed input; 'within noise' = the paired interval includes 0")
    return lines


def _curve_points(k: int) -> set[int]:
    """The pass^k curve in the terminal: 1..4, then powers of two, and k itself (--json has all)."""
    return {j for j in range(1, k + 1) if j <= 4 or j & (j - 1) == 0 or j == k}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"



# ---------------------------------------------------------------------------- divergence
def render_divergence(section: dict[str, Any], max_tasks: int = 30) -> str:
    o, suite = section["options"], section["suite"]
    keyed = "state hashes" if o["key"] == "state" else "actions"
    rule = "forks at writes and stops, lookups as context" if o.get("fork", "raw") == "decision" else "raw: forks at every step"
    extras = [w for w, on in (("read-only steps ignored", o["ignore_read_only"]), ("ask_user turns kept", o["include_user"]),
                              ("model turns kept", o["include_model"])) if on]
    lines = [
        f"Divergence — where a task's trials branch into failure (keys: {keyed}, {rule}"
        f"{'; ' + ', '.join(extras) if extras else ''}; "
        f"{o['test']} / exact tests, BH q ≤ {o['alpha']}, nodes with ≥ {o['min_support']} trials)",
        f"  {suite['mixed_tasks']} of {suite['tasks']} tasks have mixed outcomes; {suite['tasks_with_divergence']} have a "
        f"significant divergence point ({suite['tested_nodes']} branch nodes tested, {suite['significant_nodes']} significant)",
    ]
    ref = section.get("reference")
    if ref and not ref.get("available"):
        lines.append(f"  reference analysis skipped: {term(ref.get('reason'))}")
    if suite["depth_distribution"]:
        lines.append("  divergence step (0-based): " + ", ".join(f"step {d['step']}: {d['tasks']}" for d in suite["depth_distribution"]))
    if suite["failure_branch_tools"]:
        lines.append("  failure branches begin most often at: "
                     + ", ".join(f"{term(e['tool'], 30)} ×{e['tasks']}" for e in suite["failure_branch_tools"][:6]))
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
            lines.append(f"  {term(t['task'], 34):<34} {d['step']:>4} {d['q']:>8.2g} {d['score'] or 0:>6.3f}  {_alternatives(d)}")
            lines += _context_lines(t)
        if len(rows) > max_tasks:
            lines.append(f"  ... {len(rows) - max_tasks} more tasks with a divergence point (see --json)")
    return "\n".join(lines + _unresolved_lines(section))


def _alternatives(branch: dict[str, Any]) -> str:
    return _alts_text(branch["alternatives"])


def _alts_text(alternatives: list[dict[str, Any]], width: int = 48) -> str:
    """The first three alternatives with their counts. Same-tool siblings show the argument
    values that tell them apart (`bench.publish.labels.sibling_labels`), not a cut prefix."""
    shown = alternatives[:3]
    keys = [alt["action"] or "<end>" for alt in shown]
    labels = sibling_labels(keys, width)
    tools = Counter(key.partition("(")[0] for key in keys)
    parts = []
    for alt, key, label in zip(shown, keys, labels):
        text = "(stops here)" if alt["end"] else term(label if tools[key.partition("(")[0]] > 1 else key, width)
        parts.append(f"{text} {alt['successes']}/{alt['n']}")
    more = f"  (+{len(alternatives) - 3} more)" if len(alternatives) > 3 else ""
    return "  vs  ".join(parts) + more


def _context_lines(task: dict[str, Any]) -> list[str]:
    """The decision rule's context: the lookups in which the trials parted before (or without) a decision."""
    cx = task.get("context")
    if not cx:
        return []
    alts = _alts_text(cx["alternatives"])
    where = "their lookups already differed" if cx["at"] != "task" else "the trials part only in lookups"
    return [f"      {where} from tool call {cx['tool_call']}: {alts}"]


def _unresolved_lines(section: dict[str, Any]) -> list[str]:
    """Every mixed task without a significant divergence point, with its best candidate branch
    (exploratory when k is too small for any test) and the k that would detect such a split."""
    unresolved = [t for t in section["tasks"] if t["mixed"] and t["divergence"] is None]
    if not unresolved:
        return []
    testable_from = section["suite"].get("testable_from_k")
    lines = [f"  {len(unresolved)} mixed task(s) without a significant branch (too few trials, or the paths do not "
             "separate the outcomes); best candidate branch of each:"]
    if testable_from and any(not (t.get("candidate") or {}).get("testable", True) for t in unresolved):
        lines.append(f"  (no branch of fewer than {testable_from} trials can reach p ≤ {section['options']['alpha']}: "
                     "candidates at such k are exploratory, not findings)")
    for t in unresolved:
        c = t.get("candidate")
        if c is None:
            none = "no fork in writes or stops" if section["options"].get("fork") == "decision" else "the trials do not part"
            lines.append(f"  {term(t['task'], 34):<34}    - {none}")
        else:
            at = ""
            if c.get("detectable_at_k") is not None:
                at = f"; detectable (80% power) at k ≈ {c['detectable_at_k']}"
            elif not c.get("testable", True):
                at = f"; not detectable with 80% power even at k = {K_LADDER[-1]}"
            lines.append(f"  {term(t['task'], 34):<34} {c['step']:>4}  [{c['label']}{at}]  {_alternatives(c)}")
        lines += _context_lines(t)
    return lines



# ---------------------------------------------------------------------------- the diff
def pp(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:+.1f} pp" if signed else f"{x * 100:.1f}%"


def num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def fmt_p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4f}" if x >= 0.0001 else f"{x:.1e}"



def _agent(brief: dict[str, Any]) -> str:
    sim = " (SIMULATED)" if brief["agent"]["simulated"] else ""
    overlay = brief.get("overlay")
    ov = f", overlay {overlay.get('name') or overlay.get('source')} ({str(overlay.get('hash'))[:12]})" if overlay else ""
    return (f"{brief['agent']['name']}{sim}{ov}; k = {brief['k']}, seed {brief['base_seed']}, "
            f"{brief['finished_trials']}/{brief['expected_trials']} trials")


def gate_line(diff: dict[str, Any]) -> str:
    if diff.get("sequential"):
        return sequential_line(diff["sequential"])
    t = diff["test"]
    if t["significant_regression"]:
        return f"SIGNIFICANT REGRESSION: p = {fmt_p(t['p_value'])} ≤ α = {diff['alpha']} (exit 1)"
    return f"no significant regression: p = {fmt_p(t['p_value'])} > α = {diff['alpha']} (exit 0)"


def sequential_line(g: dict[str, Any]) -> str:
    """The sequential gate's verdict in one line (docs/sequential.md)."""
    evidence = (f"e-value {g['e_value']:.3g} vs 1/α = {g['threshold']:.3g}; {g['worse']} paired trials worse, "
                f"{g['better']} better of {g['pairs']}")
    if g["outcome"] == "regressed":
        return f"REGRESSED (sequential gate, α = {g['alpha']} at every look): {evidence} (exit 1)"
    extra = g["extra_trials_per_task"]
    need = (f"about {extra} more trials per task would decide if the observed balance held" if extra is not None
            else "the data so far show no drop to chase")
    if g["outcome"] == "not yet decided":
        return f"NOT YET DECIDED (sequential gate): {evidence}; {need} (exit 3)"
    return f"no regression detected within the candidate's budget (sequential gate): {evidence}; {need} (exit 0)"


def mde_statement(diff: dict[str, Any]) -> str:
    """One readable sentence: what this diff could and could not have detected."""
    m = diff["mde"]
    k = diff["k"]
    n = m["n_tasks"]
    head = f"With n = {n} tasks and k = {m['trials_base']}/{m['trials_candidate']} trials (base/candidate), "
    if m["drop"] is None:
        return head + "no drop in success rate, however large, would be detected with 80% power: add tasks or trials."
    parts = []
    if m["pass@1"] is not None:
        parts.append(f"pass@1 {pp(m['pass@1']['delta'])} (a drop of {m['pass@1']['drop'] * 100:.1f} pp on every task)")
    pk = m.get(f"pass^{k}")
    if pk is not None:
        parts.append(f"pass^{k} {num(pk['delta'], True)} (a drop of {pk['drop'] * 100:.1f} pp on every task)")
    text = (head + "this diff detects, with 80% power at α = " + f"{m['alpha']}" + ", a change of " + " or ".join(parts)
            + ". Smaller regressions can pass unnoticed: \"no significant regression\" is not \"no regression\".")
    single = m.get("single_task")
    if single and single["flagged_at_or_below"] is not None:
        text += (f" A single task that was {single['base']} is flagged on its own only if it falls to "
                 f"{single['flagged_at_or_below']}/{single['of']} or below.")
    if m["with_double_trials"] is not None:
        text += f" Twice the trials would detect a uniform drop of {m['with_double_trials'] * 100:.1f} pp"
        if m["with_double_tasks"] is not None:
            text += f"; twice the tasks, {m['with_double_tasks'] * 100:.1f} pp"
        text += "."
    return text


def tool_change_text(change: dict[str, Any]) -> str:
    name = change["tool"]
    if change["base_name"] != change["candidate_name"]:
        name = f"{change['base_name']} → {change['candidate_name']}"
    notes = change["candidate_overlay_changes"] or change["base_overlay_changes"]
    side = "" if change["candidate_overlay_changes"] else (" (base overlay)" if change["base_overlay_changes"] else "")
    detail = "; ".join(notes) if notes else "schema hash differs"
    return f"{name}: {detail}{side}"


def changed_tasks(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks whose counts moved, most significant first (both renderings list these)."""
    rows = [r for r in diff["tasks"] if r["category"] != "stable" or r["delta_pass@1"] != 0]
    return sorted(rows, key=lambda r: (r["p"], r["delta_pass@1"]))


CATEGORY_TEXT = {
    "newly_broken": "newly broken (was all-pass, now fails most runs)",
    "newly_flaky": "newly flaky (was all-pass, now mixed)",
    "fixed": "fixed (now all-pass, was failing)",
    "still_mixed": "failing at times in both runs (all-pass in neither)",
    "stable": "stable (all-pass in both, or all-fail in both)",
}
_FORCED_BANNER = "!!! FORCED: the runs are of DIFFERENT SUITES; these figures may be meaningless !!!"


def render_diff(diff: dict[str, Any], max_tasks: int = 40) -> str:
    lines = [_FORCED_BANNER] if diff["forced"] else []
    lines += _diff_head(diff) + _diff_suite(diff) + _diff_tasks(diff, max_tasks) + _diff_tools(diff) + _diff_divergence(diff)
    lines += ["", f"verdict: {gate_line(diff)}"]
    if diff["forced"]:
        lines.append(_FORCED_BANNER)
    return "\n".join(lines)


def _diff_head(diff: dict[str, Any]) -> list[str]:
    a, b = diff["base"], diff["candidate"]
    lines = [
        f"trajbench diff — {term(a['dir'])} → {term(b['dir'])}",
        f"  base       {term(_agent(a))}",
        f"  candidate  {term(_agent(b))}",
        f"  suite {term(a['suite']['name'])} (hash {str(a['suite']['hash'])[:12]})"
        + ("" if diff["forced"] else ", the same in both runs")
        + f"; paired over n = {diff['task_sets']['shared']} shared tasks",
    ]
    return lines + [f"  warning: {term(w)}" for w in diff["warnings"]]


def _diff_suite(diff: dict[str, Any]) -> list[str]:
    k, s, t = diff["k"], diff["suite"], diff["test"]
    lines = ["", "Suite (candidate − base; 95% intervals from a paired bootstrap over tasks)"]
    stat_p = {st["name"]: st["p_value"] for st in t["statistics"]}
    for name in ("pass@1", f"pass^{k}"):
        e = s.get(name)
        if not e or e["delta"] is None:
            continue
        p = f"   one-sided p = {fmt_p(stat_p[name])}" if name in stat_p else ""
        lines.append(f"  {name:<8} {num(e['base'])} → {num(e['candidate'])}   Δ {num(e['delta'], True)} "
                     f"[{num(e['lo'], True)}, {num(e['hi'], True)}]   (n = {e['n_tasks']} tasks){p}")
    worst = next(r for r in diff["tasks"] if r["task"] == t["worst_task"])
    lines.append(f"  worst task {term(worst['task'], 48)} ({worst['base']['successes']}/{worst['base']['n']} → "
                 f"{worst['candidate']['successes']}/{worst['candidate']['n']}, Boschloo p = {fmt_p(worst['p'])}): "
                 f"as the worst of {len(diff['tasks'])} tasks, one-sided p = {fmt_p(stat_p['worst task'])}")
    return lines + [f"  gate: {t['method']}; {t['permutations']} permutations",
                    f"  → {gate_line(diff)}", "", "Minimum detectable effect", "  " + mde_statement(diff)]


def _diff_tasks(diff: dict[str, Any], max_tasks: int) -> list[str]:
    k, alpha, cats = diff["k"], diff["alpha"], diff["categories"]
    lines = ["", f"Tasks (one-sided Boschloo per task; Benjamini–Hochberg over the {diff['tested_tasks']} tasks that "
                 f"can reach significance; * = q ≤ {alpha})"]
    chance = diff["categories_expected_by_chance"]
    for c in CATEGORIES:
        if cats[c] or c in chance:
            listed = ", ".join(term(x) for x in cats[c][:12]) + (f", … {len(cats[c]) - 12} more" if len(cats[c]) > 12 else "")
            expect = f" (≈{chance[c]:.1f} by chance alone)" if c in chance else ""
            lines.append(f"  {CATEGORY_TEXT[c]}: {len(cats[c])}{expect}" + (f" — {listed}" if cats[c] and c != "stable" else ""))
    lines.append(f"  significant regressions (q ≤ {alpha}): {len(diff['significant_tasks'])}"
                 + (" — " + ", ".join(term(x) for x in diff["significant_tasks"][:12]) if diff["significant_tasks"] else ""))
    changed = changed_tasks(diff)
    if changed:
        lines.append(f"  {'task':<44} {'base':>6} {'cand':>6} {'pass^' + str(k):>13} {'p':>8} {'q':>8}")
        for r in changed[:max_tasks]:
            pk = f"{num(r['base']['pass^k'])}→{num(r['candidate']['pass^k'])}" if r["base"]["pass^k"] is not None else "n/a"
            mark = "*" if r["significant"] else " "
            lines.append(f" {mark}{term(r['task'], 44):<44} {r['base']['successes']:>3}/{r['base']['n']:<2} "
                         f"{r['candidate']['successes']:>3}/{r['candidate']['n']:<2} {pk:>13} {fmt_p(r['p']):>8} "
                         f"{fmt_p(r['q']) if r['q'] is not None else '-':>8}")
        if len(changed) > max_tasks:
            lines.append(f"  … {len(changed) - max_tasks} more changed tasks (see --json)")
    return lines


def _diff_tools(diff: dict[str, Any]) -> list[str]:
    tools, mix = diff["tools"], diff["tool_mix"]
    lines = ["", "Tools"]
    if not tools["available"]:
        lines.append("  a run's manifest has no tool_schema_hashes: tool changes cannot be shown")
    elif not (tools["changed"] or tools["added"] or tools["removed"]):
        lines.append(f"  no tool changed ({tools['unchanged']} tools with identical schemas)")
    lines += [f"  changed  {term(tool_change_text(ch))}" for ch in tools["changed"]]
    lines += [f"  added    {term(name)}" for name in tools["added"]]
    lines += [f"  removed  {term(name)}" for name in tools["removed"]]
    lines.append(f"  tool calls per trial: {num(mix['base_calls_per_trial'])} → {num(mix['candidate_calls_per_trial'])}; "
                 "share of calls by tool (largest moves first, and every tool whose error rate moved):")
    shown = [r for i, r in enumerate(mix["tools"]) if i < 8 or error_move(r)]
    for r in shown[:20]:
        label = r["tool"] if r["candidate_name"] == r["tool"] else f"{r['tool']} (now {r['candidate_name']})"
        lines.append(f"    {term(label, 44):<44} {pp(r['base_share'], False):>6} → {pp(r['candidate_share'], False):>6}"
                     f"  ({pp(r['delta_share'])})" + error_move(r))
    return lines


def _diff_divergence(diff: dict[str, Any]) -> list[str]:
    dv = diff["divergence"]
    lines = ["", "Divergence points (the branch into failure, per task)"]
    if not dv["available"]:
        return lines + [f"  not shown: {term(dv['reason'])}"]
    c = dv["counts"]
    sig = Counter(r["change"] for r in dv["tasks"] if has_significant_point(r))
    lines.append(f"  appeared {c['appeared']}, moved {c['moved']}, resolved {c['resolved']}, unchanged {c['same']} "
                 f"(of which involve a significant divergence point: {sig['appeared']}, {sig['moved']}, {sig['resolved']}, "
                 f"{sig['same']})")
    lines.append("  (significant divergence points, or else the top-scoring branch, marked n.s.)")
    for r in [r for r in dv["tasks"] if r["change"] != "same"][:15]:
        lines.append(f"  {r['change']:<9} {term(r['task'], 40)}: {divergence_point(r['base'])} → {divergence_point(r['candidate'])}")
    return lines


def rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def error_move(row: dict[str, Any]) -> str:
    """'; errors 0% → 47% of calls' when a tool's error rate moved by 5 points or more."""
    a, b = row["base_error_rate"], row["candidate_error_rate"]
    if a is None or b is None or abs(b - a) < 0.05:
        return ""
    return f"; errors {a:.0%} → {b:.0%} of its calls"


def divergence_point(point: dict[str, Any] | None, width: int = 48) -> str:
    if point is None:
        return "none"
    rate = "" if point.get("rate") is None else f" ({point['rate']:.0%} pass)"
    ns = "" if point["significant"] else " n.s."
    return f"step {point['step']} {term(point['action'], width)}{rate}{ns}"



# ---------------------------------------------------------------------------- the replay
def render_verify(result: VerifyResult, max_per_trial: int = 5, max_lines: int = 200) -> str:
    lines = [f"trajbench verify — {term(result.run_dir, 200)}",
             f"agent {term(result.agent, 200)}; suite {term(result.suite_name, 120)} (hash {result.suite_hash[:12]})"
             + (f" replayed from {result.suite_path}" if result.suite_path else "")]
    by_trial: dict[str | None, list[Mismatch]] = defaultdict(list)
    for m in result.mismatches:
        by_trial[m.trial].append(m)
    shown = 0
    for trial, items in by_trial.items():
        for m in items[:max_per_trial] if trial is not None else items:
            if shown >= max_lines:
                break
            lines.append("  " + term(str(m), 240))
            shown += 1
        if trial is not None and len(items) > max_per_trial and shown < max_lines:
            lines.append(f"  trial {trial}: ... {len(items) - max_per_trial} more mismatch(es) in this trial")
    if shown >= max_lines and len(result.mismatches) > shown:
        lines.append(f"  ... {len(result.mismatches) - shown} more (use --json for all)")
    for note in result.notes[:20]:
        lines.append(f"  note: {term(note, 240)}")
    if len(result.notes) > 20:
        lines.append(f"  ... {len(result.notes) - 20} more notes (use --json)")
    what = f"{result.trials} trials ({result.error_trials} infrastructure errors), {result.steps_replayed} tool calls replayed in {result.seconds:.2f} s"
    if result.ok:
        lines.append(f"verified: {what}; every observation, state hash, check, outcome and figure matches the log")
        lines.append(f"run digest (sha256, the value to sign): {result.digest}")
    else:
        lines.append(f"FAILED: {len(result.mismatches)} mismatch(es) in {result.trials_with_mismatches} trial(s); {what}")
    return "\n".join(lines)
