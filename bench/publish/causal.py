"""Text for causal replays (bench.analysis.replays): the result of `trajbench
replay`, and the causal section of `trajbench report` (each replay of the run: per replayed
node, per alternative the continuation success rate with its interval, the effect, the
verdict, and the points of no return)."""

from __future__ import annotations

from typing import Any


def interval_text(interval: list[float | None]) -> str:
    lo, hi = interval
    return "[n/a]" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"


def _alternative(alt: dict[str, Any]) -> str:
    effect = "" if alt["best"] else f", effect {alt['effect']:+.3f} {interval_text(alt['effect_interval'])}, p_holm {alt['p_holm']}"
    return f"{alt['verdict']:>13}  {alt['successes']}/{alt['n']} CI {interval_text(alt['interval'])}{effect}  {alt['action']}"


def no_return_text(row: dict[str, Any]) -> str:
    point = row["point_of_no_return"]
    where = f"step {point}" if point is not None else "none (continuations from its last prefix can still succeed)"
    return f"point of no return of {row['trial']}: {where} (upper 95% bound < {row['threshold']})"


def render_replay(result: dict[str, Any]) -> str:
    """`trajbench replay`'s answer."""
    node = result["node"]
    lines = [f"{result['task']}: node {result['trial']} step {result['step']}: {result['verdict']} "
             f"(m = {result['m']}; {result['continuations']} continuations; {result['test']})",
             f"  stored in {result['replay_dir']} (report, view, export and verify read it)",
             f"  from the node itself: {node['successes']}/{node['n']} succeed, 95% CI {interval_text(node['interval'])}"]
    lines += [f"  {_alternative(alt)}" for alt in result["alternatives"]]
    if result["unreplayed"]:
        lines.append(f"  not replayed (the --budget ran out): {', '.join(result['unreplayed'])}")
    for row in result.get("no_return", []):
        lines.append(f"  {no_return_text(row)}")
        lines += [f"    after {s['step']:>3} steps: {s['successes']}/{s['n']} CI {interval_text(s['interval'])}" for s in row["steps"]]
    return "\n".join(lines)


def render_causal(rows: list[dict[str, Any]]) -> list[str]:
    """The report's causal section: one block per replay of the run."""
    if not rows:
        return []
    lines = ["Causal replays (trajbench replay: continuations resampled from a node; is the fork a cause or a symptom?)"]
    for r in rows:
        if "error" in r:
            lines.append(f"  {r['replay_dir']}: not shown: {r['error']}")
            continue
        where = " (the task's divergence point)" if r["at"] == "divergence" else ""
        lines.append(f"  {r['task']}: node {r['trial']} step {r['step']}{where}: {r['verdict']} (m = {r['m']}; "
                     f"{r['continuations']} continuations) — {r['replay_dir']}")
        node = r["node"]
        lines.append(f"    from the node itself: {node['successes']}/{node['n']} CI {interval_text(node['interval'])}")
        lines += [f"    {_alternative(alt)}" for alt in r["alternatives"]]
        if r["unreplayed"]:
            lines.append(f"    not replayed: {', '.join(r['unreplayed'])}")
        lines += [f"    {no_return_text(row)}" for row in r.get("no_return", [])]
    return lines
