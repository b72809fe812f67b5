"""Where an exported model came from: the runs it was trained in, and their records as a model card's
"Runs" section.

A run's record.json keeps each session's arguments; the model-folder arguments (`--base`,
`--teacher`, `--vae`, `--init`, `--perceptual`) name the runs it was built on. `lineage` follows
them back to the first run (the autoencoder); `runs_markdown` writes each run's sessions (start,
steps, wall time, device, exact command), its losses and its metrics, ancestors first.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from training.runner import RECORD_FILE

UPSTREAM_ARGUMENTS = ("init", "vae", "teacher", "base", "perceptual")


def read_record(run: Path) -> dict[str, Any]:
    return json.loads((run / RECORD_FILE).read_text())


def run_folder(path: Path) -> Path | None:
    """The run folder holding `path` (a run, its model/ or model/vae), or None when no folder on
    the way up has a record (a downloaded or hand-made model)."""
    for folder in (path, *path.parents):
        if (folder / RECORD_FILE).is_file():
            return folder
    return None


def working_directory(run: Path, arguments: dict[str, str]) -> Path:
    """The folder the session ran in, where its relative paths start: the run folder less its
    --out as given (the current folder when --out does not end the run's path)."""
    out = Path(arguments.get("out", ""))
    if not out.is_absolute() and out.parts and run.parts[-len(out.parts):] == out.parts:
        return Path(*run.parts[:-len(out.parts)])
    return Path.cwd()


def upstream_runs(run: Path) -> list[Path]:
    """The runs whose models this run was built on, as its sessions' arguments name them."""
    found: list[Path] = []
    for session in read_record(run).get("sessions", []):
        arguments = session.get("arguments", {})
        for name in UPSTREAM_ARGUMENTS:
            value = arguments.get(name)
            if not isinstance(value, str) or value in ("", "tiny", "hub", "None"):
                continue
            folder = run_folder((working_directory(run, arguments) / value).resolve())
            if folder is not None and folder != run and folder not in found:
                found.append(folder)
    return found


def lineage(runs: list[Path]) -> list[Path]:
    """Every run these runs were built on, and themselves: each after the runs it was built on."""
    ordered: list[Path] = []

    def visit(run: Path, path: tuple[Path, ...]) -> None:
        if run in ordered or run in path:
            return
        for upstream in upstream_runs(run):
            visit(upstream, (*path, run))
        ordered.append(run)

    for run in runs:
        visit(run.resolve(), ())
    return ordered


def record_names(runs: list[Path]) -> dict[Path, str]:
    """A file name for each run's record: its folder's name, with its parent's where two share one."""
    names: dict[Path, str] = {}
    for run in runs:
        name = run.name
        if name in names.values():
            name = f"{run.parent.name}-{run.name}"
        names[run] = name
    return names


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_figure(item)}" for key, item in value.items()) + "}"
    return str(value)


def _session_line(session: dict[str, Any]) -> str:
    start, end = session.get("start_step", 0), session.get("end_step", 0)
    minutes = session.get("wall_time_s", 0.0) / 60
    steps = f"steps {start} -> {end}" if end > start else "no steps"
    speed = f", {session['s_per_step']:.2f} s/step" if end > start and session.get("s_per_step") else ""
    command = shlex.join(session.get("command", []))
    return (f"- {session.get('started_utc', '?')[:16].replace('T', ' ')} UTC, {steps}, {minutes:.1f} min{speed}, "
            f"{session.get('device', '?')}:\n  `{command}`")


def run_markdown(name: str, record: dict[str, Any]) -> str:
    minutes = record.get("wall_time_s", 0.0) / 60
    lines = [f"### {name} ({record.get('recipe', '?')}): {record.get('steps_done', 0)} steps, {minutes:.1f} min, "
             f"{record.get('status', '?')}", ""]
    lines += [_session_line(session) for session in record.get("sessions", [])]
    losses = record.get("loss_summary") or {}
    if losses:
        lines.append("- losses (first -> mean of the last 10%): " + ", ".join(
            f"{loss} {_figure(values['first'])} -> {_figure(values['last_10pct_mean'])}"
            for loss, values in sorted(losses.items())))
    metrics = record.get("metrics") or {}
    if metrics:
        lines.append("- metrics: " + ", ".join(f"{key}: {_figure(value)}" for key, value in metrics.items()))
    return "\n".join(lines)


def runs_markdown(records: dict[str, dict[str, Any]]) -> str:
    """The "Runs" section: each run's sessions, losses and metrics, in the order given."""
    minutes = sum(record.get("wall_time_s", 0.0) for record in records.values()) / 60
    header = (f"## Runs\n\n{len(records)} runs, {minutes:.0f} minutes of run time in all, ancestors first. Each "
              "session's start, steps, wall time, device and exact command, then the losses and metrics the run "
              "recorded (`records/` holds each run's record.json).")
    return "\n\n".join([header, *(run_markdown(name, record) for name, record in records.items())]) + "\n"


def write_provenance(runs: list[Path], folder: Path) -> list[str]:
    """records/<run>.json for every run in the lineage and RUNS.md; returns the record names."""
    ordered = lineage(runs)
    names = record_names(ordered)
    records = {names[run]: read_record(run) for run in ordered}
    (folder / "records").mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        (folder / "records" / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (folder / "RUNS.md").write_text(runs_markdown(records))
    return list(records)
