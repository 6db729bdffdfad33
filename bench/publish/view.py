"""`trajbench view RUN_DIR [--task ID] [--out FILE.html]`: a task's k trials as a branching tree.

One self-contained HTML file (inline CSS, JS and SVG; no network, opens from disk). Each
node is a prefix of the trials' canonical steps (bench/analysis/divergence/, action keys), drawn as
a circle sized by the trials through it and coloured by their success rate (red 0 % → green
100 %); edges are as thick as the trials they carry; the reference path is dashed; the
divergence point is ringed and labelled. Clicking a node shows its step on demand: the tool,
the arguments, the observation (or error), the state hash after the step, the log index, N,
S, the branch test, and example trial ids. Without --task, a selector switches between tasks.

Safety: every string from a run (tool names, arguments, observations, task and trial ids) is
escaped: `html.escape` in the markup, and `<`, `>`, `&`, U+2028 and U+2029 written as \\uXXXX
in the JSON embedded in a `<script type="application/json">` block (read with JSON.parse and
shown with textContent, never innerHTML). A Content-Security-Policy with a per-page nonce
allows only the page's own script, so even markup that slipped through could not run.
"""

from __future__ import annotations

import html
import math
import secrets
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from bench.adapters.spec import is_simulated
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.divergence.section import analyse_run
from bench.analysis.divergence.tree import Analysis
from bench.analysis.replays import causal_section
from bench.canonical import dump_line, step_key
from bench.errors import BenchError
from bench.publish.labels import sibling_labels
from bench.runs.rundir import RunLog, read_run

MAX_NODES = 1500  # per task; smaller branches are folded into their parent beyond this
MAX_TEXT = 4000  # characters of an argument or observation kept per node
X_STEP, Y_STEP, X0, Y0 = 300, 30, 60, 40  # X_STEP fits a label of labels.WIDTH characters


def _json_for_script(value: Any) -> str:
    """JSON that cannot end the <script> element or open markup inside it."""
    raw = dump_line(value).strip().decode()  # lone surrogates as \\uXXXX escapes, which JavaScript reads back
    return (raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _pretty(value: Any) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT} more characters)"


def _colour(rate: float) -> str:
    """Red (0) → amber → green (1)."""
    return f"hsl({round(120 * rate)}, 70%, 45%)"


def _task_tree(a: Analysis, log: RunLog, t: int, first_of: dict[int, int], pos_trial: np.ndarray,
               nodes: np.ndarray, task_trials: np.ndarray) -> dict[str, Any]:
    """The nodes of task t's prefix tree (`nodes`, all of them) with layout and step details."""
    total_nodes = int(nodes.size)
    if nodes.size > MAX_NODES:  # keep the most travelled nodes (ancestors always have N ≥ child's)
        order = np.lexsort((nodes, -a.tree_n[nodes]))
        nodes = np.sort(nodes[order][:MAX_NODES])
    keep = set(nodes.tolist())
    children = _children(a, nodes, keep)
    hidden = {v: int(a.tree_n[v]) - sum(int(a.tree_n[u]) for u in children.get(v, []))
              for v in keep if a.tree_key[v] != 0}
    y, rows = _layout(t, children)
    through = _trials_through(a, task_trials, keep)
    critical = _critical_counts(a, task_trials)
    out_nodes = []
    for v in nodes.tolist():
        step = _step_detail(a, log, first_of[v], pos_trial) if v in first_of and a.tree_key[v] != 0 and v != t else None
        out_nodes.append(_node_entry(a, v, t, y, through.get(v, []), hidden, critical, step))
    short = _short_labels(a, children)
    for e in out_nodes:
        e["short"] = short.get(e["id"], e["label"])
    n_trials, n_succ = int(task_trials.size), int(a.success[task_trials].sum())
    return {"task": a.task_ids[t], "n": n_trials, "successes": n_succ, "nodes": out_nodes,
            "rows": max(rows, 1), "max_depth": int(a.tree_depth[nodes].max()) if nodes.size else 0,
            "leaves": sum(1 for e in out_nodes if e["leaf"]),
            "truncated": total_nodes - len(out_nodes)}


def _children(a: Analysis, nodes: np.ndarray, keep: set[int]) -> dict[int, list[int]]:
    """Each kept node's kept children, the most travelled first."""
    children: dict[int, list[int]] = {}
    for v in nodes.tolist():
        p = int(a.tree_parent[v])
        if p >= 0 and p in keep:
            children.setdefault(p, []).append(v)
    for kids in children.values():
        kids.sort(key=lambda u: (-int(a.tree_n[u]), a.vocab[int(a.tree_key[u])]))
    return children


def _short_labels(a: Analysis, children: dict[int, list[int]]) -> dict[int, str]:
    """Each node's drawn label: what sets it apart from its siblings (see bench.publish.labels)."""
    out: dict[int, str] = {}
    for kids in children.values():
        calls = [u for u in kids if a.tree_key[u] != 0]
        out.update(zip(calls, sibling_labels([a.vocab[int(a.tree_key[u])] for u in calls])))
    return out


def _layout(root: int, children: dict[int, list[int]]) -> tuple[dict[int, float], int]:
    """Row of every node: leaves in depth-first order, a parent centred on its children."""
    y: dict[int, float] = {}
    row = 0
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:
        v, done = stack.pop()
        kids = children.get(v, [])
        if done:
            y[v] = (y[kids[0]] + y[kids[-1]]) / 2
            continue
        if not kids:
            y[v] = row
            row += 1
            continue
        stack.append((v, True))
        for u in reversed(kids):
            stack.append((u, False))
    return y, row


def _trials_through(a: Analysis, task_trials: np.ndarray, keep: set[int]) -> dict[int, list[int]]:
    """The trials through each kept node (ids shown on demand)."""
    through: dict[int, list[int]] = {}
    for tr in task_trials.tolist():
        off, ln = int(a.offsets[tr]), int(a.lengths[tr])
        for v in a.node_at[off:off + ln].tolist():
            if v in keep:
                through.setdefault(v, []).append(tr)
    return through


def _critical_counts(a: Analysis, task_trials: np.ndarray) -> dict[int, int]:
    """How many failed trials have their critical step at each node."""
    counts: dict[int, int] = {}
    for tr in task_trials.tolist():
        cp = int(a.critical_pos[tr])
        if cp >= 0:
            v = int(a.node_at[int(a.offsets[tr]) + cp])
            counts[v] = counts.get(v, 0) + 1
    return counts


def _node_entry(a: Analysis, v: int, root: int, y: dict[int, float], trials: list[int], hidden: dict[int, int],
                critical: dict[int, int], step: dict[str, Any] | None) -> dict[str, Any]:
    n, s = int(a.tree_n[v]), int(a.tree_s[v])
    key_id = int(a.tree_key[v])
    entry: dict[str, Any] = {
        "id": v, "parent": int(a.tree_parent[v]) if v != root else None, "depth": int(a.tree_depth[v]),
        "x": X0 + X_STEP * int(a.tree_depth[v]), "y": Y0 + Y_STEP * y.get(v, 0.0),
        "n": n, "s": s, "rate": s / n if n else 0.0,
        "end": key_id == 0, "root": v == root,
        "label": "start" if v == root else ("end" if key_id == 0 else a.vocab[key_id]),
        "on_ref": bool(a.tree_on_ref[v]), "divergence": v == int(a.divergence_node[root]),
        "leaf": key_id == 0, "folded": hidden.get(v, 0) if key_id != 0 else 0,
        "critical_for": critical.get(v, 0),
        "trials": [[a.trial_ids[tr], bool(a.success[tr])] for tr in trials[:200]],
        "more_trials": max(0, len(trials) - 200),
    }
    if step is not None:
        entry["step"] = step
    if a.graph_label is None and not np.isnan(a.ig[v]):
        entry["branch"] = {"ig": _num(a.ig[v]), "score": _num(a.score[v]), "p": _num(a.pvalue[v]),
                           "q": _num(a.qvalue[v]), "test": a.method[v], "tested": bool(a.tested[v]),
                           "significant": bool(a.tested[v] and a.qvalue[v] <= a.options.alpha)}
    return entry


def _step_detail(a: Analysis, log: RunLog, pos: int, pos_trial: np.ndarray) -> dict[str, Any] | None:
    """The logged event behind the first position through a node (its tool, arguments, result)."""
    tr = int(pos_trial[pos])
    ev_index = int(a.flat_steps[pos])
    events = log.trial_steps(a.trial_ids[tr])
    if not 0 <= ev_index < len(events):
        return None
    ev = events[ev_index]
    return {"position": int(pos - a.offsets[tr]), "log_step": ev.get("step"), "kind": ev.get("kind"),
            "tool": str(ev.get("tool")), "args": _pretty(ev.get("args")),
            "observation": _pretty(ev.get("observation")), "error": ev.get("error"),
            "read_only": ev.get("read_only"), "state_hash": ev.get("state_hash"),
            "example_trial": a.trial_ids[tr]}


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


class _Paths:
    """A drawn tree's nodes by path: the node a list of step keys leads to from the start."""

    def __init__(self, tree: dict[str, Any]):
        self.kids: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
        for e in tree["nodes"]:
            self.kids[e["parent"]][e["label"]] = e
        self.root = next(e for e in tree["nodes"] if e["root"])

    def walk(self, keys: list[str]) -> dict[str, Any] | None:
        node: dict[str, Any] | None = self.root
        for key in keys:
            node = self.kids[node["id"]].get(key) if node is not None else None
        return node


def _annotate_replays(trees: list[dict[str, Any]], rows: list[dict[str, Any]], log: RunLog) -> None:
    """Mark the nodes a replay resampled (bench.analysis.replays): the node with the success of
    its own continuations and of every alternative, each drawn alternative with the success of
    its forced arm and its verdict, and each failed trial's point of no return with the
    continuations along its path."""
    by_task = {t["task"]: t for t in trees}
    for r in rows:
        tree = by_task.get(r.get("task", ""))
        if tree is None or "error" in r:
            continue
        paths = _Paths(tree)
        where = f"{r['replay_dir']} (m = {r['m']})"
        node = paths.walk(r["prefix"])
        if node is None:
            continue
        node["replay"] = {**_arm_note(r["node"]), "verdict": r["verdict"], "replay": where,
                          "alternatives": [{**_arm_note(alt), "action": alt["action"], "verdict": alt["verdict"]}
                                           for alt in r["alternatives"]]}
        for alt in r["alternatives"]:
            child = paths.kids[node["id"]].get(alt["action"])
            if child is not None:
                child["replay_arm"] = {**_arm_note(alt), "verdict": alt["verdict"], "effect": alt["effect"],
                                       "effect_interval": alt["effect_interval"], "replay": where}
        for row in r.get("no_return", []):
            _annotate_no_return(paths, row, log, where)


def _arm_note(arm: dict[str, Any]) -> dict[str, Any]:
    return {"successes": arm["successes"], "n": arm["n"], "interval": arm["interval"]}


def _annotate_no_return(paths: _Paths, row: dict[str, Any], log: RunLog, where: str) -> None:
    """The nodes along a failed trial's path that the no-return scan resampled, and its point."""
    if row["trial"] not in log.summaries:
        return
    events = log.trial_steps(row["trial"])
    acting = [e.get("kind") in ("tool", "user") for e in events]
    keys = [step_key(str(e.get("tool")), e.get("args")) for e, act in zip(events, acting) if act]
    for step in row["steps"]:
        node = paths.walk(keys[:sum(acting[:step["step"]])])
        if node is not None:
            node.setdefault("replay", {**_arm_note(step), "verdict": None, "replay": where})
            if step["step"] == row["point_of_no_return"]:
                node.setdefault("no_return", []).append({"trial": row["trial"], "threshold": row["threshold"]})


def _replay_label(note: dict[str, Any]) -> str:
    lo, hi = note["interval"]
    verdict = f" {note['verdict']}" if note.get("verdict") in ("confirmed", "not confirmed", "best") and "effect" in note else ""
    return f"replay {note['successes']}/{note['n']} [{lo:.2f}, {hi:.2f}]{verdict}"


def _svg(tree: dict[str, Any], index: int) -> str:
    esc = html.escape
    nodes = {e["id"]: e for e in tree["nodes"]}
    max_n = max((e["n"] for e in tree["nodes"]), default=1)
    width = X0 + X_STEP * (tree["max_depth"] + 1) + 220
    height = Y0 + Y_STEP * tree["rows"] + 20
    parts = [f'<svg class="tree" id="tree-{index}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="trial tree of task {esc(tree["task"])}">']
    for e in tree["nodes"]:  # edges first, under the nodes
        p = nodes.get(e["parent"]) if e["parent"] is not None else None
        if p is None:
            continue
        w = 1 + 7 * e["n"] / max_n
        mid = (p["x"] + e["x"]) / 2
        cls = "edge on-ref" if e["on_ref"] else "edge"
        parts.append(f'<path class="{cls}" d="M{p["x"]:.1f},{p["y"]:.1f} C{mid:.1f},{p["y"]:.1f} {mid:.1f},{e["y"]:.1f} '
                     f'{e["x"]:.1f},{e["y"]:.1f}" stroke="{_colour(e["rate"])}" stroke-width="{w:.1f}"/>')
    for e in tree["nodes"]:
        r = 4 + 8 * math.sqrt(e["n"] / max_n)
        classes = ["node"]
        if e["leaf"]:
            classes.append("leaf")
        if e["root"]:
            classes.append("root")
        if e["divergence"]:
            classes.append("divergence")
        if e.get("branch"):
            classes.append("branch")
        if e["critical_for"]:
            classes.append("critical")
        classes += [c for c, k in (("replayed", "replay"), ("replayed-arm", "replay_arm"), ("no-return", "no_return")) if e.get(k)]
        rate = f"{e['s']}/{e['n']} succeeded"
        title = f"{e['label']} — {rate}" + (" — DIVERGENCE POINT" if e["divergence"] else "")
        parts.append(f'<g class="{" ".join(classes)}" data-node="{e["id"]}" data-task="{index}" '
                     f'data-n="{e["n"]}" data-s="{e["s"]}" tabindex="0">')
        parts.append(f"<title>{esc(title)}</title>")
        if e["divergence"]:
            parts.append(f'<circle class="divergence-ring" cx="{e["x"]:.1f}" cy="{e["y"]:.1f}" r="{r + 6:.1f}"/>')
            parts.append(f'<text class="divergence-label" x="{e["x"]:.1f}" y="{e["y"] + r + 18:.1f}">divergence</text>')
        if e.get("no_return"):
            parts.append(f'<rect class="no-return-mark" x="{e["x"] - r - 5:.1f}" y="{e["y"] - r - 5:.1f}" width="{2 * r + 10:.1f}" '
                         f'height="{2 * r + 10:.1f}" transform="rotate(45 {e["x"]:.1f} {e["y"]:.1f})"/>')
            parts.append(f'<text class="no-return-label" x="{e["x"]:.1f}" y="{e["y"] - r - 12:.1f}">point of no return</text>')
        note = e.get("replay_arm") or e.get("replay")
        if note:
            parts.append(f'<text class="replay-label" x="{e["x"] + r + 3:.1f}" y="{e["y"] + 14:.1f}">'
                         f'{esc(_replay_label(note))}</text>')
        shape = (f'<rect x="{e["x"] - r:.1f}" y="{e["y"] - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" rx="2"'
                 if e["leaf"] else f'<circle cx="{e["x"]:.1f}" cy="{e["y"]:.1f}" r="{r:.1f}"')
        parts.append(f'{shape} fill="{_colour(e["rate"])}"/>')
        if e["leaf"]:
            label = f"{e['s']}/{e['n']}" + (" ✓" if e["s"] == e["n"] else (" ✗" if e["s"] == 0 else ""))
        elif e["root"]:
            label = f"start {e['s']}/{e['n']}"
        else:
            label = e["short"] + (f" (+{e['folded']} folded)" if e["folded"] else "")
        ty = e["y"] + 4 if e["leaf"] else e["y"] - 7
        parts.append(f'<text x="{e["x"] + r + 3:.1f}" y="{ty:.1f}">{esc(label)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafafa}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #ddd}
h1{font-size:18px;margin:0 0 4px}
.meta{color:#555}
main{display:flex;align-items:flex-start}
.trees{flex:1;overflow:auto;padding:10px 20px}
aside{width:420px;max-height:100vh;overflow:auto;position:sticky;top:0;background:#fff;border-left:1px solid #ddd;padding:12px 16px}
.task{display:none}.task.active{display:block}
.summary{margin:6px 0 10px;color:#333}
svg.tree text{font-size:11px;fill:#222;pointer-events:none}
svg.tree .edge{fill:none;opacity:.75}
svg.tree .edge.on-ref{stroke-dasharray:6 3}
svg.tree .node{cursor:pointer}
svg.tree .node:focus,svg.tree .node.selected{outline:none}
svg.tree .node.selected circle,svg.tree .node.selected rect{stroke:#000;stroke-width:2}
svg.tree .divergence-ring{fill:none;stroke:#6a1b9a;stroke-width:3;stroke-dasharray:4 2}
svg.tree text.divergence-label{fill:#6a1b9a;font-weight:bold;text-anchor:middle}
svg.tree text.replay-label{fill:#0d47a1;font-size:10px}
svg.tree .no-return-mark{fill:none;stroke:#000;stroke-width:2}
svg.tree text.no-return-label{fill:#000;font-weight:bold;text-anchor:middle;font-size:10px}
.legend{display:flex;align-items:center;gap:8px;color:#555;font-size:12px;margin:4px 0}
.bar{width:140px;height:10px;background:linear-gradient(90deg,hsl(0,70%,45%),hsl(60,70%,45%),hsl(120,70%,45%))}
pre{white-space:pre-wrap;word-break:break-word;background:#f4f4f4;padding:6px;border-radius:4px;max-height:260px;overflow:auto;margin:2px 0 8px}
dt{font-weight:600;margin-top:6px}dd{margin:0 0 4px}
.muted{color:#777}
select{font-size:14px;padding:2px 4px;max-width:420px}
"""

_JS = """
(function(){
  var DATA = JSON.parse(document.getElementById('view-data').textContent);
  var panel = document.getElementById('details');
  function el(tag, text, cls){var e=document.createElement(tag); if(text!==undefined&&text!==null){e.textContent=String(text);} if(cls){e.className=cls;} return e;}
  function row(dl, name, value, pre){ if(value===undefined||value===null||value===''){return;} dl.appendChild(el('dt', name)); var dd=el('dd'); if(pre){dd.appendChild(el('pre', value));} else {dd.textContent=String(value);} dl.appendChild(dd); }
  function fmt(x){ return (x===null||x===undefined) ? 'n/a' : (Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(2) : x.toFixed(3)); }
  function show(ti, id){
    var tree = DATA.tasks[ti]; var node = null;
    for (var i=0;i<tree.nodes.length;i++){ if(tree.nodes[i].id===id){node=tree.nodes[i];break;} }
    if(!node){return;}
    var prev = document.querySelectorAll('.node.selected'); for(var j=0;j<prev.length;j++){prev[j].classList.remove('selected');}
    var g = document.querySelector('#tree-'+ti+' .node[data-node="'+id+'"]'); if(g){g.classList.add('selected');}
    while(panel.firstChild){panel.removeChild(panel.firstChild);}
    panel.appendChild(el('h2', node.root ? 'Start of task' : (node.end ? 'End of trajectory' : 'Step '+(node.depth-1))));
    if(node.divergence){ panel.appendChild(el('p', 'Divergence point of this task: right after this point, at step '+node.depth+', the trials branch into different outcomes.', 'divergence-note')); }
    var dl = el('dl'); panel.appendChild(dl);
    row(dl, 'Key', node.root ? null : (node.end ? '(stops here)' : node.label), true);
    row(dl, 'Trials through here', node.s+' of '+node.n+' succeeded ('+Math.round(100*node.rate)+'%)');
    if(node.on_ref){ row(dl, 'Reference', 'on the reference path'); }
    if(node.critical_for){ row(dl, 'Critical step of', node.critical_for+' failed trial(s): their estimated success drops most here'); }
    function ci(v){ return '['+v[0].toFixed(2)+', '+v[1].toFixed(2)+']'; }
    if(node.replay){ var rp=node.replay; row(dl, 'Continuations from here (replay)', rp.successes+' of '+rp.n+' succeeded, 95% CI '+ci(rp.interval)+(rp.verdict ? '; the node is '+rp.verdict : '')+' — '+rp.replay);
      if(rp.alternatives && rp.alternatives.length){ dl.appendChild(el('dt', 'Each alternative forced here (replay)')); var rd=el('dd'); var rl=el('ul');
        rp.alternatives.forEach(function(u){ rl.appendChild(el('li', u.action+' — '+u.successes+'/'+u.n+' '+ci(u.interval)+', '+u.verdict, 'replay-alternative')); });
        rd.appendChild(rl); dl.appendChild(rd); } }
    if(node.replay_arm){ var ra=node.replay_arm; row(dl, 'Forced here (replay)', ra.successes+' of '+ra.n+' succeeded, 95% CI '+ci(ra.interval)+(ra.verdict==='best' ? '; the best alternative' : '; effect '+fmt(ra.effect)+' '+ci(ra.effect_interval)+', '+ra.verdict)); }
    if(node.no_return){ node.no_return.forEach(function(nr){ row(dl, 'Point of no return', 'of trial '+nr.trial+': from here on, continuations almost never succeed (upper 95% bound < '+nr.threshold+')'); }); }
    if(node.branch){ var b=node.branch; row(dl, 'Branch test', (b.test||'not tested')+': p = '+fmt(b.p)+', q (BH) = '+fmt(b.q)+(b.significant?' — significant':'')+'; IG = '+fmt(b.ig)+', task information = '+fmt(b.score)+' bits'); }
    if(node.step){ var s=node.step;
      row(dl, 'Tool', s.tool); row(dl, 'Arguments', s.args, true);
      if(s.error!==null && s.error!==undefined){ row(dl, 'Error', s.error, true); } else { row(dl, 'Observation', s.observation, true); }
      row(dl, 'State hash after the step', s.state_hash); row(dl, 'Read-only', s.read_only ? 'yes' : 'no');
      row(dl, 'Logged at', 'event '+s.log_step+' of trial '+s.example_trial);
    }
    var kids = tree.nodes.filter(function(u){ return u.parent===node.id; });
    if(kids.length > 1){ dl.appendChild(el('dt', 'Alternatives at step '+node.depth)); var kd=el('dd'); var kl=el('ul');
      kids.forEach(function(u){ kl.appendChild(el('li', (u.end ? '(stops here)' : u.label)+' — '+u.s+'/'+u.n+' succeeded')); });
      kd.appendChild(kl); dl.appendChild(kd); }
    if(node.folded){ row(dl, 'Folded', node.folded+' trial(s) continue in branches too small to draw'); }
    if(node.trials && node.trials.length){ dl.appendChild(el('dt', 'Trials')); var dd=el('dd'); var ul=el('ul');
      for(var k=0;k<node.trials.length;k++){ ul.appendChild(el('li', node.trials[k][0]+' — '+(node.trials[k][1]?'success':'failure'))); }
      if(node.more_trials){ ul.appendChild(el('li', '… and '+node.more_trials+' more', 'muted')); }
      dd.appendChild(ul); dl.appendChild(dd); }
  }
  document.addEventListener('click', function(ev){ var g = ev.target.closest ? ev.target.closest('.node') : null; if(g){ show(+g.getAttribute('data-task'), +g.getAttribute('data-node')); } });
  document.addEventListener('keydown', function(ev){ if(ev.key==='Enter' && ev.target.classList && ev.target.classList.contains('node')){ show(+ev.target.getAttribute('data-task'), +ev.target.getAttribute('data-node')); } });
  var select = document.getElementById('task-select');
  function activate(i){ var secs=document.querySelectorAll('section.task'); for(var j=0;j<secs.length;j++){ secs[j].classList.toggle('active', j===i); }
    var t = DATA.tasks[i]; var dv = null; for(var k=0;k<t.nodes.length;k++){ if(t.nodes[k].divergence){dv=t.nodes[k].id;} }
    show(i, dv!==null ? dv : t.nodes[0].id); }
  if(select){ select.addEventListener('change', function(){ activate(+select.value); }); }
  activate(select ? +select.value : 0);
  document.body.setAttribute('data-ready', '1');
})();
"""


def write_view(run_dir: str | Path, task_id: str | None = None, out: str | Path | None = None,
               options: DivergenceOptions | None = None, replays: Sequence[str | Path] = ()) -> Path:
    """Write the viewer for a run (one task, or every task with a selector) and return its path.
    Default file: RUN_DIR/view.html (RUN_DIR/view-TASK.html with a task). The run's replays
    (RUN_DIR/replays/, or `replays`) annotate the nodes they resampled."""
    run_dir = Path(run_dir)
    log = read_run(run_dir)
    # the tree is drawn over every action (fork="raw"): a reader follows each trial step by step,
    # lookups included; the report's decision rule names the write or stop inside it
    o = replace(options or DivergenceOptions(), key="action", fork="raw")
    analysis = analyse_run(log, o)
    trees = _trees(analysis, log, _task_indices(analysis, task_id, run_dir))
    causal = causal_section(run_dir, replays)
    _annotate_replays(trees, causal, log)
    rows = {r["task"]: r for r in analysis.section["tasks"]}
    sections = "".join(_task_section(i, tree, rows.get(tree["task"], {}), causal) for i, tree in enumerate(trees))
    page = _page(log, sections, _selector(trees, rows) if task_id is None and len(trees) > 1 else "", trees)
    if out is None:
        out = run_dir / ("view.html" if task_id is None else f"view-{_file_safe(task_id)}.html")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8", errors="backslashreplace")  # a lone surrogate shows as \\udXXX
    except OSError as exc:
        raise BenchError(f"cannot write the view: {exc.strerror}", file=str(out)) from None
    return out


def _task_indices(analysis: Analysis, task_id: str | None, run_dir: Path) -> list[int]:
    if not analysis.task_ids:
        raise BenchError("the run has no finished trials to show", file=str(run_dir))
    if task_id is None:
        return list(range(len(analysis.task_ids)))
    if task_id not in analysis.task_ids:
        known = ", ".join(analysis.task_ids[:10]) + (" …" if len(analysis.task_ids) > 10 else "")
        raise BenchError(f"the run has no finished trials of task {task_id!r} (tasks: {known})", field="--task")
    return [analysis.task_ids.index(task_id)]


def _trees(analysis: Analysis, log: RunLog, indices: list[int]) -> list[dict[str, Any]]:
    """The drawn tree of each chosen task (node layout and step details)."""
    n_tasks = len(analysis.task_ids)
    # the first position (hence trial and logged event) through each node: its details
    pos_trial = np.repeat(np.arange(len(analysis.trial_ids)), analysis.lengths)
    flat_nodes, first_pos = np.unique(analysis.node_at, return_index=True)
    first_of = dict(zip(flat_nodes.tolist(), first_pos.tolist()))
    node_order = np.argsort(analysis.tree_task, kind="stable")
    node_bounds = np.searchsorted(analysis.tree_task[node_order], np.arange(n_tasks + 1))
    trial_order = np.argsort(analysis.trial_task, kind="stable")
    trial_bounds = np.searchsorted(analysis.trial_task[trial_order], np.arange(n_tasks + 1))
    return [_task_tree(analysis, log, t, first_of, pos_trial, node_order[node_bounds[t]:node_bounds[t + 1]],
                       trial_order[trial_bounds[t]:trial_bounds[t + 1]]) for t in indices]


def _causal_summary(task: str, causal: list[dict[str, Any]]) -> str:
    """The task's replay verdicts, for the line above its tree (beside the divergence point)."""
    verdicts = [f"after {r['step']} step(s) {r['verdict']} ({r['node']['successes']}/{r['node']['n']} from the node)"
                for r in causal if r.get("task") == task and "error" not in r]
    return f" · Causal replay: {'; '.join(verdicts)}." if verdicts else ""


def _task_section(i: int, tree: dict[str, Any], row: dict[str, Any], causal: list[dict[str, Any]]) -> str:
    esc = html.escape
    d = row.get("divergence")
    if d:
        alts = "; ".join(
            f"{'(stops)' if alt['end'] else alt['action']}: {alt['successes']}/{alt['n']}" for alt in d["alternatives"][:4])
        summary = (f"Divergence point at step {d['step']} (q = {d['q']:.2g}, {d['test']}): {alts}")
    elif row.get("mixed"):
        summary = "Mixed outcomes, but no branch separates them significantly."
    else:
        summary = "All trials have the same outcome." if tree["n"] else "No finished trials."
    trunc = f" {tree['truncated']} small nodes folded." if tree["truncated"] else ""
    return (f'<section class="task{" active" if i == 0 else ""}" id="task-{i}" data-task-id="{esc(tree["task"])}">'
            f'<h2>{esc(tree["task"])}</h2>'
            f'<p class="summary">{tree["successes"]} of {tree["n"]} trials succeeded; {tree["leaves"]} distinct '
            f'trajectories. {esc(summary)}{esc(_causal_summary(tree["task"], causal))}{esc(trunc)}</p>'
            f'{_svg(tree, i)}</section>')


def _selector(trees: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> str:
    options_html = "".join(
        f'<option value="{i}">{html.escape(t["task"])} — {t["successes"]}/{t["n"]}'
        f'{" · divergence" if rows.get(t["task"], {}).get("divergence") else ""}</option>'
        for i, t in enumerate(trees))
    return f'<label>Task <select id="task-select">{options_html}</select></label>'


def _page(log: RunLog, sections: str, selector: str, trees: list[dict[str, Any]]) -> str:
    esc = html.escape
    manifest = log.manifest
    agent, suite = manifest.get("agent", {}), manifest.get("suite", {})
    nonce = secrets.token_urlsafe(16)
    head = (f"run {esc(str(manifest.get('run_id', '')))} · agent {esc(str(agent.get('name', '')))}"
            f"{' (SIMULATED)' if is_simulated(agent.get('adapter')) else ''} · suite {esc(str(suite.get('name', '')))} "
            f"(hash {esc(str(suite.get('hash', ''))[:12])}) · k = {esc(str(manifest.get('k', '')))}")
    data = {"tasks": [{"task": t["task"], "nodes": t["nodes"]} for t in trees]}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trajbench view — {esc(str(manifest.get('run_id', '')))}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>trajbench view</h1><div class="meta">{head}</div>
<div class="legend"><span>success rate</span><span>0%</span><span class="bar"></span><span>100%</span>
<span>· circle size: trials through the step · dashed: reference path · square: end of a trajectory</span></div>
{selector}</header>
<main><div class="trees">{sections}</div>
<aside id="details" aria-live="polite"><p class="muted">Click a step to see its details.</p></aside></main>
<script type="application/json" id="view-data">{_json_for_script(data)}</script>
<script nonce="{nonce}">{_JS}</script>
</body></html>
"""


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "task"
