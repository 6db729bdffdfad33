"""The leaderboard's three faces, rendered from the board `build_leaderboard` returns:
`leaderboard.md` (Markdown), `index.html` (a self-contained page with inline SVG plots) and
`leaderboard.json`; `write_leaderboard` writes them. Rendering only: which runs count, how they
rank and why one is refused is `bench.publish.leaderboard`.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import orjson

from bench.errors import BenchError
from bench.publish.leaderboard import IMPORTED
from bench.publish.markdown import md_escape

__all__ = ["render_markdown", "render_html", "render_plots", "write_leaderboard", "ci_text", "HTML_SECTIONS",
           "README_SECTIONS"]


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def ci_text(est: dict[str, Any]) -> str:
    if est.get("mean") is None:
        return "—"
    return f"{est['mean']:.3f} [{_num(est.get('lo'))}, {_num(est.get('hi'))}]"


def _curve_at(entry: dict[str, Any], k: int) -> dict[str, Any]:
    return next((e for e in entry["pass^k"] if e["k"] == k), {"mean": None})


def _tokens(entry: dict[str, Any]) -> str:
    i, o = entry.get("mean_input_tokens"), entry.get("mean_output_tokens")
    return "—" if i is None and o is None else f"{(i or 0) + (o or 0):,.0f}"


def _cost(entry: dict[str, Any]) -> str:
    c = entry.get("mean_cost")
    return "—" if c is None else f"${c:.4f}"


def _date(text: Any) -> str:
    return str(text)[:10] if text else "—"


def _label_md(entry: dict[str, Any]) -> str:
    name = md_escape(entry["label"])
    if entry.get("verification") == IMPORTED:
        name = f"{name} · *{IMPORTED}*"
    return f"{name} · *simulated*" if entry["agent"]["simulated"] else name


# =============================================================================== README.md
def _md_header(board: dict[str, Any]) -> list[str]:
    suite, K = board["suite"], board["rank_by"]["k"]
    return [
        f"# Consistency leaderboard — suite {md_escape(suite['name'])}",
        "",
        f"Suite **{md_escape(suite['name'])}** (content hash `{suite['hash']}`), n = {board['n_tasks']} tasks. "
        f"Ranked by **pass^{K}**: the chance that {K} runs of a task all succeed (unbiased estimator "
        "C(c,k)/C(n,k) per task, mean over tasks). Brackets are 95% intervals from a percentile bootstrap "
        f"over tasks ({board['bootstrap']['replicates']} replicates, seed {board['bootstrap']['seed']}). "
        f"Every entry replayed clean under `trajbench verify`. Generated {board['generated_at']} by trajbench "
        f"{board['generator']['version']}.",
        "",
    ]


def _md_table(board: dict[str, Any]) -> list[str]:
    return _md_rows(board, board["entries"], "*no verified entry*")


def _md_rows(board: dict[str, Any], entries: list[dict[str, Any]], empty: str) -> list[str]:
    K = board["rank_by"]["k"]
    extra = [j for j in board["shown_k"] if j != K]
    head = ["Rank", "Agent", f"pass^{K} [95% CI]", "pass@1 [95% CI]", *[f"pass^{j}" for j in extra], "flip",
            "steps", "tokens/trial", "cost/trial", "n", "k", "harness", "date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h not in ("Agent",) else "---" for h in head) + "|"]
    for e in entries:
        cells = [str(e["rank"]), _label_md(e), ci_text(e["rank_metric"]), ci_text(e["pass@1"]),
                 *[_num(_curve_at(e, j)["mean"]) for j in extra], _num(e["flip"]["mean"]), _num(e["mean_steps"], 1),
                 _tokens(e), _cost(e), str(e["n_tasks"]), str(e["k"]), md_escape(e["run"]["harness_version"]),
                 _date(e["run"]["created_at"])]
        lines.append("| " + " | ".join(cells) + " |")
    if not entries:
        lines.append(f"| — | {empty} |" + " |" * (len(head) - 2))
    return lines + [""]


def _md_unverified(board: dict[str, Any]) -> list[str]:
    entries = board.get("unverified") or []
    if not entries:
        return []
    return ["## Imported, not replay-verified", "", _UNVERIFIED_NOTE, "",
            *_md_rows(board, entries, "—"),
            *[f"- {md_escape(e['label'])}: imported from {md_escape(e['source']['format'])} "
              f"({', '.join(md_escape(f['path']) + ' sha256 `' + str(f['sha256'])[:16] + '…`' for f in e['source']['files'])})"
              for e in entries], ""]


_UNVERIFIED_NOTE = ("These runs were imported from another harness's logs (`trajbench import`) and ranked with "
                    "`--unverified`. **They were not replayed**: the source records no world state to replay on, so "
                    "their figures are recomputed from the imported outcomes as logged, and only their seal (the "
                    "import's manifest and log, unedited since) was checked. They are ranked among themselves, not "
                    "against the verified entries.")


def _md_notes(board: dict[str, Any]) -> list[str]:
    lines = []
    if any(e["agent"]["simulated"] for e in board["entries"]):
        lines += ["*Simulated* entries are trajbench's `sim` reference agents, **not real agents**: they replay the "
                  "task's reference actions with seeded errors of a known rate, so their true scores are known "
                  "(below) and they calibrate the scale.", ""]
        for e in board["entries"]:
            truth = e.get("simulated_truth")
            if e["agent"]["simulated"] and truth:
                at = next((t["value"] for t in truth["pass^k"] if t["k"] == board["rank_by"]["k"]), None)
                lines.append(f"- {md_escape(e['label'])}: true pass@1 {_num(truth['pass@1'])}, true "
                             f"pass^{board['rank_by']['k']} {_num(at)}")
        lines.append("")
    errors = [e for e in board["entries"] if e["trials"]["errors"]]
    if errors:
        lines += ["Infrastructure errors (excluded from every figure): " +
                  ", ".join(f"{md_escape(e['label'])} {e['trials']['errors']}/{e['trials']['expected']} trials" for e in errors), ""]
    lines += [
        "Columns: **pass@1** mean success rate; **pass^j** all j runs succeed; **flip** chance that two runs of a "
        "task disagree, 2c(n−c)/(n(n−1)); **steps** tool calls per trial; **tokens/trial** and **cost/trial** "
        "where the agent reports them (— otherwise); **n** tasks, **k** trials per task; **harness** trajbench "
        "version of the run; **date** of the run. Per-task success rates, pass^k curves and tool errors: "
        "`index.html`; every number: `leaderboard.json`.", ""]
    return lines


def _md_rejected(board: dict[str, Any]) -> list[str]:
    if not board["rejected"]:
        return []
    lines = ["## Rejected runs", "", "These runs did not replay to their logged results under `trajbench verify` "
             "and are not ranked:", ""]
    for r in board["rejected"]:
        lines.append(f"- {md_escape(r['agent'])} (run {md_escape(r['run_id'])}, {r['mismatches']} mismatch(es))")
        lines += [f"  - {md_escape(reason)}" for reason in r["reasons"]]
    return lines + [""]


README_SECTIONS: list[Callable[[dict[str, Any]], list[str]]] = [_md_header, _md_table, _md_unverified, _md_notes,
                                                                _md_rejected]


def render_markdown(board: dict[str, Any]) -> str:
    return "\n".join(line for section in README_SECTIONS for line in section(board)).rstrip() + "\n"


# =============================================================================== plots
def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError("the leaderboard's HTML page draws its plots with matplotlib: pip install 'trajbench[plots]' "
                         "(or pip install matplotlib)", field="--out") from None
    return matplotlib, Figure


def _svg(fig: Any, name: str, label: str) -> str:
    """A figure as an inline <svg> element: deterministic (no date, salted ids per figure),
    scalable, with text kept as (escaped) text."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # RDF boilerplate
    head_end = text.index(">")
    width = re.search(r'\swidth="([0-9.]+)pt"', text[:head_end])
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    natural = f"max-width:min(100%,{width.group(1)}pt);" if width else ""
    head += (f' class="plot" style="width:100%;{natural}height:auto" role="img" aria-label="{html.escape(label)}"'
             f' data-plot="{name}"')
    return head + text[head_end:]


def _plot_label(entry: dict[str, Any], width: int = 56) -> str:
    """`rank. label (simulated)`, shortened in the middle: a plot has no room for a long path."""
    label = " ".join(str(entry["label"]).split())
    suffix = " (simulated)" if entry["agent"]["simulated"] else ""
    room = width - len(suffix)
    if len(label) > room:
        head = room // 3
        label = label[:head] + "…" + label[-(room - head - 1):]
    return f"{entry['rank']}. {label}{suffix}"


def render_plots(board: dict[str, Any]) -> dict[str, str]:
    """The pass^k curves and the per-task heat map as inline SVG strings."""
    matplotlib, Figure = _matplotlib()
    import numpy as np

    entries = board["entries"]
    out: dict[str, str] = {}
    style = {"svg.fonttype": "none", "text.usetex": False, "font.size": 9, "font.family": "DejaVu Sans",
             "axes.spines.top": False, "axes.spines.right": False}
    if "text.parse_math" in matplotlib.rcParams:
        style["text.parse_math"] = False  # agent names are text, never mathtext
    colors = matplotlib.colormaps["tab10" if len(entries) <= 10 else "tab20"]
    with matplotlib.rc_context({**style, "svg.hashsalt": "trajbench-curves"}):
        fig = Figure(figsize=(7.5, 4.6 + 0.18 * len(entries)), layout="constrained")
        ax = fig.add_subplot()
        kmax = 1
        for i, e in enumerate(entries):
            pts = [p for p in e["pass^k"] if p["mean"] is not None]
            if not pts:
                continue
            ks = [p["k"] for p in pts]
            kmax = max(kmax, ks[-1])
            color = colors(i % colors.N)
            lo = [p["lo"] if p["lo"] is not None else p["mean"] for p in pts]
            hi = [p["hi"] if p["hi"] is not None else p["mean"] for p in pts]
            ax.fill_between(ks, lo, hi, color=color, alpha=0.15, linewidth=0)
            ax.plot(ks, [p["mean"] for p in pts], marker="o", markersize=3, color=color,
                    linestyle="--" if e["agent"]["simulated"] else "-", label=_plot_label(e))
        ax.axvline(board["rank_by"]["k"], color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlim(1, max(kmax, 2))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k (runs of the same task that must all succeed)")
        ax.set_ylabel("pass^k")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"pass^k with 95% intervals (bootstrap over n = {board['n_tasks']} tasks)", loc="left")
        ax.grid(alpha=0.3)
        if entries:
            longest = max(len(_plot_label(e)) for e in entries)
            fig.legend(loc="outside lower center", ncols=max(1, min(len(entries), 90 // (longest + 6))), fontsize=8,
                       frameon=False)
        out["curves"] = _svg(fig, "curves", "pass^k curves per agent")

    tasks = board["tasks"]
    with matplotlib.rc_context({**style, "svg.hashsalt": "trajbench-heatmap"}):
        rows = max(1, len(entries))
        labels = [_plot_label(e) for e in entries]
        longest = max((len(x) for x in labels), default=10)
        fig = Figure(figsize=(max(6.0, 0.2 * len(tasks) + 2.0 + 0.075 * longest), 0.32 * rows + 3.2), layout="constrained")
        ax = fig.add_subplot()
        grid = np.full((rows, max(1, len(tasks))), np.nan)
        for r, e in enumerate(entries):
            for c, t in enumerate(e["per_task"]):
                if t["pass@1"] is not None:
                    grid[r, c] = t["pass@1"]
        cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="0.85")
        # vector cells (pcolormesh), not an embedded raster: the page stays pure SVG
        image = ax.pcolormesh(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, edgecolors="white", linewidth=0.5)
        ax.invert_yaxis()
        ax.set_yticks([r + 0.5 for r in range(len(entries))], labels)
        ax.set_xticks([c + 0.5 for c in range(len(tasks))], tasks, rotation=90, fontsize=6)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title("success rate per task (pass@1; grey: no valid trial)")
        # 20 steps: drawn as vector (matplotlib rasterises long colour bars) and small
        bar = fig.colorbar(image, ax=ax, shrink=0.8, label="success rate", boundaries=np.linspace(0, 1, 21))
        bar.solids.set_rasterized(False)
        out["heatmap"] = _svg(fig, "heatmap", "per-task success rate heat map, agents by tasks")
    return out


# =============================================================================== index.html
def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.meta{color:#57606a;font-size:.9rem}code{background:#f6f8fa;padding:0 .25rem;border-radius:3px;font-size:.85em;word-break:break-all}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{border-bottom:1px solid #d8dee4;padding:.3rem .5rem;text-align:right;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}td.agent,th.agent,td.text{text-align:left}td.agent{max-width:22rem;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:.7rem;padding:0 .35rem;border-radius:.6rem;background:#ddf4ff;color:#0969da;margin-left:.3rem}
.ci{color:#57606a;font-size:.8em;white-space:nowrap}figure{margin:1rem 0}svg.plot{max-width:100%;height:auto}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}.scroll{overflow-x:auto}
td.date{white-space:nowrap}.rejected{background:#fff8f8;border-left:3px solid #cf222e;padding:.3rem .8rem}td.cell{min-width:2.5rem}
"""


def _est_html(est: dict[str, Any]) -> str:
    if est.get("mean") is None:
        return "—"
    return f'{est["mean"]:.3f} <span class="ci">[{_num(est.get("lo"))}, {_num(est.get("hi"))}]</span>'


def _label_html(entry: dict[str, Any]) -> str:
    badge = ' <span class="badge sim">simulated</span>' if entry["agent"]["simulated"] else ""
    if entry.get("verification") == IMPORTED:
        badge += f' <span class="badge imported">{_h(IMPORTED)}</span>'

    return f'<span class="agent-name">{_h(entry["label"])}</span>{badge}'


def _ranking_section(board: dict[str, Any], plots: dict[str, str]) -> str:
    out = ['<section id="ranking"><h2>Ranking</h2>', _ranking_table(board, board["entries"], "leaderboard", "No verified entry.")]
    if any(e["agent"]["simulated"] for e in board["entries"]):
        out.append('<p class="meta"><span class="badge">simulated</span> entries are trajbench\'s <code>sim</code> '
                   "reference agents, <strong>not real agents</strong>: they replay each task's reference actions with "
                   "seeded errors of a known rate, so their true scores are known; they calibrate the scale.</p>")
    out.append(f'<p class="meta">errors: trials lost to infrastructure failures, excluded from every figure. '
               f'Brackets: 95% intervals (percentile bootstrap over tasks, {board["bootstrap"]["replicates"]} replicates, '
               f'seed {board["bootstrap"]["seed"]}).</p></section>')
    return "".join(out)


def _ranking_table(board: dict[str, Any], entries: list[dict[str, Any]], table_id: str, empty: str) -> str:
    K = board["rank_by"]["k"]
    extra = [j for j in board["shown_k"] if j != K]
    head = ["Rank", "Agent", f"pass^{K}", "pass@1", *[f"pass^{j}" for j in extra], "flip", "steps", "tokens/trial",
            "cost/trial", "errors", "n", "k", "harness", "date"]
    out = [f'<div class="scroll"><table id="{table_id}"><thead><tr>']
    out += [f'<th{" class=agent" if h == "Agent" else ""} scope="col">{_h(h)}</th>' for h in head]
    out.append("</tr></thead><tbody>")
    for e in entries:
        cells = [
            f'<td class="rank">{e["rank"]}</td>', f'<td class="agent">{_label_html(e)}</td>',
            f'<td class="metric">{_est_html(e["rank_metric"])}</td>', f'<td>{_est_html(e["pass@1"])}</td>',
            *[f'<td>{_num(_curve_at(e, j)["mean"])}</td>' for j in extra],
            f'<td>{_est_html(e["flip"])}</td>', f'<td>{_num(e["mean_steps"], 1)}</td>', f"<td>{_h(_tokens(e))}</td>",
            f"<td>{_h(_cost(e))}</td>", f'<td>{e["trials"]["errors"]}</td>', f'<td>{e["n_tasks"]}</td>',
            f'<td>{e["k"]}</td>', f'<td>{_h(e["run"]["harness_version"])}</td>', f'<td class="date">{_h(_date(e["run"]["created_at"]))}</td>',
        ]
        sim = "true" if e["agent"]["simulated"] else "false"
        out.append(f'<tr class="entry" data-rank="{e["rank"]}" data-simulated="{sim}" '
                   f'data-verification="{_h(e.get("verification", "replay-verified"))}">' + "".join(cells) + "</tr>")
    if not entries:
        out.append(f'<tr><td colspan="{len(head)}" class="text">{_h(empty)}</td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


def _unverified_section(board: dict[str, Any], plots: dict[str, str]) -> str | None:
    entries = board.get("unverified") or []
    if not entries:
        return None
    return (f'<section id="unverified"><h2>Imported, not replay-verified</h2><p class="meta">{_h(_UNVERIFIED_NOTE)}</p>'
            + _ranking_table(board, entries, "unverified-table", "") + "</section>")


def _curves_section(board: dict[str, Any], plots: dict[str, str]) -> str:
    return ('<section id="curves"><h2>pass^k curves</h2><figure id="passk-curves">' + plots["curves"] +
            "<figcaption class=\"meta\">pass^k for k = 1..n per agent (the chance that k runs of a task all succeed), "
            "mean over tasks; shaded: 95% interval; dotted line: the ranking k; dashed curves: simulated agents."
            "</figcaption></figure></section>")


def _heatmap_section(board: dict[str, Any], plots: dict[str, str]) -> str:
    return ('<section id="tasks"><h2>Success rate per task</h2><figure id="heatmap">' + plots["heatmap"] +
            "<figcaption class=\"meta\">Agents (rows, in rank order) × tasks (columns): share of a task's valid trials "
            "that succeeded.</figcaption></figure></section>")


def _per_task_section(board: dict[str, Any], plots: dict[str, str]) -> str | None:
    if not board["entries"]:
        return None
    out = ['<section id="per-task"><details><summary>Per-task numbers (successes / valid trials)</summary>'
           '<div class="scroll"><table id="per-task-table"><thead><tr><th class="agent">Task</th>']
    out += [f'<th scope="col">{e["rank"]}. {_h(e["label"])}</th>' for e in board["entries"]]
    out.append("</tr></thead><tbody>")
    for i, task in enumerate(board["tasks"]):
        out.append(f'<tr><td class="text"><code>{_h(task)}</code></td>')
        for e in board["entries"]:
            t = e["per_task"][i]
            out.append(f'<td class="cell">{t["successes"]}/{t["n"]}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div></details></section>")
    return "".join(out)


def _tool_errors_section(board: dict[str, Any], plots: dict[str, str]) -> str | None:
    if not any(e["tool_errors"]["top"] for e in board["entries"]):
        return None
    out = ['<section id="tool-errors"><h2>Most frequent tool errors</h2><p class="meta">Tool calls that returned an '
           "error (invalid arguments, unknown tools, policy refusals), per agent, over valid trials.</p>"]
    for e in board["entries"]:
        te = e["tool_errors"]
        if not te["top"]:
            continue
        rate = "—" if te["rate"] is None else f"{te['rate']:.1%}"
        out.append(f'<details class="tool-errors"><summary>{e["rank"]}. {_label_html(e)} — {te["errors"]} of '
                   f'{te["calls"]} calls errored ({rate})</summary><table><thead><tr><th class="agent">call</th>'
                   '<th class="agent">error</th><th>times</th><th>trials</th></tr></thead><tbody>')
        for row in te["top"]:
            out.append(f'<tr><td class="text"><code>{_h(row["action"])}</code></td><td class="text">{_h(row["error"])}</td>'
                       f'<td>{row["count"]}</td><td>{row["trials"]}</td></tr>')
        out.append("</tbody></table></details>")
    out.append("</section>")
    return "".join(out)


def _rejected_section(board: dict[str, Any], plots: dict[str, str]) -> str | None:
    if not board["rejected"]:
        return None
    out = ['<section id="rejected"><h2>Rejected runs</h2><p class="meta">These runs did not replay to their logged '
           "results under <code>trajbench verify</code> and are not ranked.</p>"]
    for r in board["rejected"]:
        out.append(f'<div class="rejected"><p><strong>{_h(r["agent"])}</strong> (run <code>{_h(r["run_id"])}</code>, '
                   f'{r["mismatches"]} mismatch(es))</p><ul>' + "".join(f"<li>{_h(x)}</li>" for x in r["reasons"]) + "</ul></div>")
    out.append("</section>")
    return "".join(out)


def _method_section(board: dict[str, Any], plots: dict[str, str]) -> str:
    return ('<section id="method"><h2>Method</h2><p class="meta">Per task with n valid trials and c successes: '
            "pass@1 = c/n; pass^k = C(c,k)/C(n,k) (unbiased for p<sup>k</sup>); flip = 2c(n−c)/(n(n−1)). Suite figures "
            "are means over tasks; intervals resample tasks (never trials within a task). Every entry's log was replayed "
            "on a fresh copy of the suite by <code>trajbench verify</code>: observations, state hashes, goal checks, "
            "outcomes and figures all match. All numbers are in <code>leaderboard.json</code>.</p></section>")


# The page, top to bottom. Each section takes (board, plots) and returns HTML, or None to be left out.
HTML_SECTIONS: list[Callable[[dict[str, Any], dict[str, str]], str | None]] = [
    _ranking_section, _unverified_section, _curves_section, _heatmap_section, _per_task_section, _tool_errors_section, _rejected_section,
    _method_section,
]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_html(board: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    plots = plots if plots is not None else render_plots(board)
    suite, K = board["suite"], board["rank_by"]["k"]
    body = "".join(s for s in (section(board, plots) for section in HTML_SECTIONS) if s)
    title = f"trajbench consistency leaderboard — {suite['name']}"
    n = len(board["entries"])
    rejected = f" · {len(board['rejected'])} rejected" if board["rejected"] else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_h(title)}</h1><p class=\"meta\">Suite <strong>{_h(suite['name'])}</strong> "
        f"(content hash <code>{_h(suite['hash'])}</code>) · n = {board['n_tasks']} tasks · ranked by "
        f"<strong>pass^{K}</strong> · {n} verified entr{'y' if n == 1 else 'ies'}"
        f"{rejected}"
        f" · generated {_h(board['generated_at'])} by trajbench {_h(board['generator']['version'])}</p></header>"
        f"<main>{body}</main></body></html>\n"
    )


# =============================================================================== files and command
def write_leaderboard(board: dict[str, Any], out: str | Path) -> list[Path]:
    """Write leaderboard.json, README.md and index.html to `out` (created if needed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError("the output path exists and is not a folder", file=str(out), field="--out")
    html_text = render_html(board)  # first: a missing matplotlib fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.json": orjson.dumps(board, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n",
        "README.md": render_markdown(board).encode(),
        "index.html": html_text.encode(),
    }
    written = []
    for name, data in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written
