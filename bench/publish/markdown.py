"""Markdown: the diff as a pull-request comment, the report (`report --markdown`, with the causal
replays), and `md_escape`, the one Markdown escape.

Everything a run produced (task ids, agent names, tool names and arguments, warnings that quote
them) goes through `md_escape` before it reaches a Markdown document — the diff's comment, the
leaderboard's README, the exported dataset's card — so that it renders as the text it is: no
markup, no HTML, no table break, no control character.
"""

from __future__ import annotations

import html
import re
from typing import Any

from bench.analysis.regression import CATEGORIES
from bench.publish.causal import interval_text, no_return_text
from bench.publish.text import (
    changed_tasks,
    divergence_point,
    error_move,
    fmt_p,
    mde_statement,
    num,
    pp,
    rate,
    sequential_line,
    term,
    tool_change_text,
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")


def md_escape(text: Any) -> str:
    """Untrusted text for Markdown (a table cell, a list item, a line): whitespace folded to
    single spaces, other control characters shown escaped, HTML escaped, markup characters
    backslash-escaped."""
    s = term(" ".join(str(text).split()))
    s = html.escape(s, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def render_diff_markdown(diff: dict[str, Any], max_tasks: int = 30) -> str:
    """A pull-request comment. All run-produced text is escaped."""
    out: list[str] = []
    if diff["forced"]:
        out += ["> [!WARNING]", "> **FORCED comparison: the runs are of different suites. These figures may be meaningless.**", ""]
    out += _head(diff) + _figures(diff) + _tasks(diff, max_tasks) + _tools(diff) + _divergence(diff)
    if diff["forced"]:
        out += ["", "> [!WARNING]", "> **FORCED comparison of different suites.**"]
    return "\n".join(out) + "\n"


def _head(diff: dict[str, Any]) -> list[str]:
    a, b, t = diff["base"], diff["candidate"], diff["test"]
    icon = {1: "🔴", 3: "🟡"}.get(int(diff["exit_code"]), "🟢")
    out = [f"### {icon} trajbench diff: {md_escape(diff['verdict'])}", "",
           *([f"**Sequential gate:** {md_escape(sequential_line(diff['sequential']))}", ""] if diff.get("sequential") else []),
           f"**Gate:** one-sided p = {fmt_p(t['p_value'])} (α = {diff['alpha']}; {md_escape(t['method'])}; "
           f"{t['permutations']} permutations)", "",
           "| | base | candidate |", "|---|---|---|",
           f"| agent | {md_escape(a['agent']['name'])}{' (simulated)' if a['agent']['simulated'] else ''} | "
           f"{md_escape(b['agent']['name'])}{' (simulated)' if b['agent']['simulated'] else ''} |",
           f"| overlay | {md_escape((a['overlay'] or {}).get('name') or '—')} | {md_escape((b['overlay'] or {}).get('name') or '—')} |",
           f"| trials | {a['finished_trials']}/{a['expected_trials']} (k = {a['k']}) | "
           f"{b['finished_trials']}/{b['expected_trials']} (k = {b['k']}) |",
           f"| suite | {md_escape(a['suite']['name'])} `{str(a['suite']['hash'])[:12]}` | "
           f"{md_escape(b['suite']['name'])} `{str(b['suite']['hash'])[:12]}` |",
           ""]
    out += [f"> ⚠️ {md_escape(w)}" for w in diff["warnings"]]
    return out + ([""] if diff["warnings"] else [])


def _figures(diff: dict[str, Any]) -> list[str]:
    k, alpha = diff["k"], diff["alpha"]
    stat_p = {st["name"]: st["p_value"] for st in diff["test"]["statistics"]}
    out = [f"| metric (n = {diff['task_sets']['shared']} tasks) | base | candidate | Δ [95% CI] | one-sided p |",
           "|---|---|---|---|---|"]
    for name in ("pass@1", f"pass^{k}"):
        e = diff["suite"].get(name)
        if e and e["delta"] is not None:
            out.append(f"| {name} | {num(e['base'])} | {num(e['candidate'])} | {num(e['delta'], True)} "
                       f"[{num(e['lo'], True)}, {num(e['hi'], True)}] | {fmt_p(stat_p.get(name))} |")
    out += ["", f"**Minimum detectable effect.** {md_escape(mde_statement(diff))}", ""]
    cats = diff["categories"]
    out.append("**Tasks:** " + ", ".join(f"{c.replace('_', ' ')} {len(cats[c])}" for c in CATEGORIES)
               + f"; significant regressions (BH q ≤ {alpha}): {len(diff['significant_tasks'])}")
    return out


def _tasks(diff: dict[str, Any], max_tasks: int) -> list[str]:
    rows = changed_tasks(diff)
    if not rows:
        return []
    out = ["", "<details><summary>Changed tasks</summary>", "",
           "| task | base | candidate | category | p | q |", "|---|---|---|---|---|---|"]
    for r in rows[:max_tasks]:
        sig = " **⚠**" if r["significant"] else ""
        out.append(f"| {md_escape(r['task'])}{sig} | {r['base']['successes']}/{r['base']['n']} | "
                   f"{r['candidate']['successes']}/{r['candidate']['n']} | {r['category'].replace('_', ' ')} | "
                   f"{fmt_p(r['p'])} | {fmt_p(r['q']) if r['q'] is not None else '—'} |")
    if len(rows) > max_tasks:
        out.append(f"| … {len(rows) - max_tasks} more | | | | | |")
    return out + ["", "</details>"]


def _tools(diff: dict[str, Any]) -> list[str]:
    out: list[str] = []
    tools = diff["tools"]
    if tools["changed"] or tools["added"] or tools["removed"]:
        out += ["", "**Tool changes**", ""]
        out += [f"- {md_escape(tool_change_text(ch))}" for ch in tools["changed"]]
        out += [f"- added {md_escape(x)}" for x in tools["added"]] + [f"- removed {md_escape(x)}" for x in tools["removed"]]
    moved = [r for r in diff["tool_mix"]["tools"] if abs(r["delta_share"]) >= 0.005 or error_move(r)][:12]
    if moved:
        out += ["", "<details><summary>Tool-call mix</summary>", "",
                "| tool | base share | candidate share | Δ | errors base → candidate |", "|---|---|---|---|---|"]
        out += [f"| {md_escape(r['tool'])} | {pp(r['base_share'], False)} | {pp(r['candidate_share'], False)} | "
                f"{pp(r['delta_share'])} | {rate(r['base_error_rate'])} → {rate(r['candidate_error_rate'])} |" for r in moved]
        out += ["", "</details>"]
    return out


def _divergence(diff: dict[str, Any]) -> list[str]:
    dv = diff["divergence"]
    if not (dv["available"] and any(r["change"] != "same" for r in dv["tasks"])):
        return []
    out = ["", "<details><summary>Divergence points that moved or appeared</summary>", "",
           "| task | change | base | candidate |", "|---|---|---|---|"]
    out += [f"| {md_escape(r['task'])} | {r['change']} | {md_escape(divergence_point(r['base']))} | "
            f"{md_escape(divergence_point(r['candidate']))} |" for r in dv["tasks"] if r["change"] != "same"][:20]
    return out + ["", "</details>"]


# ---------------------------------------------------------------------------- `report --markdown`
def _report_point(point: dict[str, Any] | None) -> str:
    """A task's statistical divergence point as the report gives it: step, q, the alternatives."""
    if point is None:
        return "none"
    alts = " vs ".join(f"{'(stops)' if a['end'] else term(a['action'], 60)} {a['successes']}/{a['n']}"
                       for a in point["alternatives"][:3])
    return f"step {point['step']} (q = {point['q']:.2g}): {alts}"


def report_markdown(report: dict[str, Any]) -> str:
    """`trajbench report --markdown`: the suite's figures, each task with its statistical
    divergence point, and the causal verdicts of the run's replays beside them."""
    run, suite = report["run"], report["suite"]

    def figure(entry: dict[str, Any]) -> str:
        return "n/a" if entry.get("mean") is None else f"{entry['mean']:.3f} [{entry['lo']:.3f}, {entry['hi']:.3f}]"

    out = [f"# trajbench report — {md_escape(run['agent']['name'])} on {md_escape(run['suite']['name'])}", "",
           f"k = {run['k']}; {report['completeness']['finished_trials']}/{report['completeness']['expected_trials']} trials. "
           f"pass@1 {figure(suite['pass@1'])}; flip {figure(suite['flip'])}.", "",
           "| task | successes | pass@1 | divergence point | causal verdict |", "|---|---|---|---|---|"]
    points = {r["task"]: r.get("divergence") for r in (report.get("divergence") or {}).get("tasks", [])}
    causal: dict[str, list[str]] = {}
    for r in report.get("causal") or []:
        if "error" not in r:
            causal.setdefault(r["task"], []).append(f"step {r['step']}: {r['verdict']}")
    for row in report["tasks"]:
        out.append(f"| {md_escape(row['task'])} | {row['successes']}/{row['n']} | {rate(row['pass@1'])} | "
                   f"{md_escape(_report_point(points.get(row['task'])))} | {md_escape('; '.join(causal.get(row['task'], [])) or '—')} |")
    out += ["", *causal_markdown(report.get("causal") or [])]
    return "\n".join(out).rstrip() + "\n"


def causal_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The causal section in Markdown: a table per replayed node."""
    if not rows:
        return []
    out = ["## Causal replays", ""]
    for r in rows:
        if "error" in r:
            out += [f"- `{md_escape(r['replay_dir'])}`: not shown: {md_escape(r['error'])}", ""]
            continue
        node = r["node"]
        out += [f"### {md_escape(r['task'])} — node {md_escape(r['trial'])} step {r['step']}: **{r['verdict']}**", "",
                f"m = {r['m']}, {r['continuations']} continuations; {md_escape(r['test'])}. From the node itself: "
                f"{node['successes']}/{node['n']} {interval_text(node['interval'])}.", "",
                "| alternative | success | 95% CI | effect | effect 95% CI | p (Holm) | verdict |",
                "|---|---|---|---|---|---|---|"]
        for a in r["alternatives"]:
            effect = "—" if a["best"] else f"{a['effect']:+.3f}"
            out.append(f"| `{md_escape(a['action'])}` | {a['successes']}/{a['n']} | {interval_text(a['interval'])} | {effect} | "
                       f"{'—' if a['best'] else interval_text(a['effect_interval'])} | {a['p_holm'] if a['p_holm'] is not None else '—'} "
                       f"| {a['verdict']} |")
        out += [""] if r.get("no_return") else []
        out += [f"- {md_escape(no_return_text(row))}" for row in r.get("no_return", [])]
        out.append("")
    return out
