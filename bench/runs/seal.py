"""The run seal: a digest of the manifest's fields and of the log, recorded when a run ends.

`trajbench verify` replays the log, which re-derives every observation, state hash, check and
outcome; but several manifest fields that a leaderboard shows are not re-derivable from the
world: the agent's name, its target and options, when and where the run was made. The seal
covers them. At the end of a run (`seal_run`, called by the runner and the importers) run.json
gains a `seal` object:

    {"algorithm": "sha256", "fields": {"agent.name": "<sha256>", "k": "<sha256>", ...},
     "log": {"sha256": "<sha256 of the log's JSON lines>", "bytes": N}, "digest": "<sha256>"}

`fields` holds one digest per manifest field (the members of object-valued fields one by one:
`agent.name`, `suite.hash`, ...; all but `suite.path`, a location), so that verify can name the field that was edited; `log` pins
the log's exact content (answers, token counts and every other logged value the replay cannot
re-derive): the bytes of its JSON lines — a plain `trajectories.jsonl` as it is on disk, a
compressed `trajectories.jsonl.zst` decompressed (`bench.runs.logfile.content_digest`). The two
are the same for the same records, so a log decompressed for `grep`, or recompressed, keeps its
seal, and the seals of runs made before the compressed log still hold; `digest` is the digest of `fields` and `log` together, the one value a publisher
signs (docs/publishing.md, "what a publisher can add").

What the seal proves and does not: it is not a secret. It detects a manifest or log edited after
the run by hand or by a tool that does not reseal; anyone who runs `seal_run` (or recomputes
sha256 by hand) can reseal an edited run. Only a signature over `digest` by a key the publisher
controls binds a run to someone. A resumed run is unsealed (its manifest is rewritten) until it
ends again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, cast

from bench.canonical import sorted_digest_bytes
from bench.runs.logfile import content_digest, log_path
from bench.runs.rundir import Manifest, read_manifest, write_manifest

SEAL = "seal"
ALGORITHM = "sha256"
# Where to find things, not claims about the run: a run directory copied to another machine
# keeps its seal when its suite folder is elsewhere (the suite's content hash is sealed).
UNSEALED = frozenset({"suite.path"})


def _sha256(value: Any) -> str:
    return hashlib.sha256(sorted_digest_bytes(value)).hexdigest()  # a non-UTF-8 suite path too


def field_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    """One digest per manifest field; object-valued fields member by member (`agent.name`)."""
    out: dict[str, str] = {}
    for key, value in manifest.items():
        if key == SEAL:
            continue
        if isinstance(value, dict) and value:
            for sub, inner in value.items():
                if f"{key}.{sub}" not in UNSEALED:
                    out[f"{key}.{sub}"] = _sha256(inner)
        else:
            out[key] = _sha256(value)
    return out


def log_digest(run_dir: Path) -> dict[str, Any]:
    """The sha256 and size of the log's content (its JSON lines, in either encoding), read in
    chunks (the log can be large)."""
    sha256, size = content_digest(log_path(run_dir))
    return {"sha256": sha256, "bytes": size}


def _seal_of(manifest: Mapping[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    fields = field_digests(manifest)
    return {"algorithm": ALGORITHM, "fields": fields, "log": log, "digest": _sha256({"fields": fields, "log": log})}


def seal_run(run_dir: str | Path) -> dict[str, Any]:
    """Record the seal in run.json (replacing an older one); returns it."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    manifest.pop(SEAL, None)  # type: ignore[misc]  # `seal` is not a Manifest key: it is this module's
    seal = _seal_of(manifest, log_digest(run_dir))
    sealed: dict[str, Any] = {**manifest, SEAL: seal}
    write_manifest(run_dir, cast(Manifest, sealed))
    return seal


def check_seal(run_dir: Path, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, what differs) for every manifest field or log that is not as sealed; a missing or
    unreadable seal is one problem under the field `seal`."""
    seal = manifest.get(SEAL)
    if seal is None:
        return [(SEAL, "run.json has no seal: the run did not finish (resume it with the same command), was made by "
                       "a trajbench before 0.1.0's seal, or its seal was removed; its manifest cannot be checked")]
    if not (isinstance(seal, dict) and seal.get("algorithm") == ALGORITHM and isinstance(seal.get("fields"), dict)
            and isinstance(seal.get("log"), dict)):
        return [(SEAL, f"the seal is not a {ALGORITHM} seal of this harness (algorithm, fields and log expected)")]
    problems: list[tuple[str, str]] = []
    sealed, now = seal["fields"], field_digests(manifest)
    for name in sorted(set(sealed) | set(now)):
        if name not in now:
            problems.append((name, "the field was removed from run.json after the run was sealed"))
        elif name not in sealed:
            problems.append((name, "the field was added to run.json after the run was sealed"))
        elif sealed[name] != now[name]:
            problems.append((name, "run.json was edited after the run: the field's value is not the sealed one"))
    log = log_digest(run_dir)
    if log != seal["log"]:
        problems.append(("log", f"{log_path(run_dir).name} is not the log sealed at the run's end ({log['bytes']} bytes now, "
                                f"{seal['log'].get('bytes')} sealed): it was edited, appended to or truncated"))
    elif seal.get("digest") != _sha256({"fields": sealed, "log": seal["log"]}):
        problems.append(("seal.digest", "the seal's digest is not the digest of its fields and log"))
    return problems


def run_digest(manifest: Mapping[str, Any]) -> str | None:
    """The sealed run digest (the value to sign), or None for an unsealed run."""
    seal = manifest.get(SEAL)
    return seal.get("digest") if isinstance(seal, dict) and isinstance(seal.get("digest"), str) else None
