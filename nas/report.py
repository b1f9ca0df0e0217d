"""What a finished study leaves for people: frontier files (CSV, JSON, figures) and a one-page report.

The report is a single HTML file with its figures embedded (base64 PNG), so it opens from disk without
a server and can be mailed or attached to an issue as it is. It is rendered from storage only: the
study definition, the search history, the winners, the family of the best coefficients, and the
frontier when one has been run.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from nas.config import RUNS_DIR, StudyConfig
from nas.errors import NasError
from nas.family import study_family
from nas.plots import plot_confirmation, plot_frontier, plot_grid, plot_history
from nas.search.confirm import Confirmation, answer, confirmation
from nas.search.results import arch_table, frontier_table, trials_table, verdict
from nas.search.storage import load_stored_study, masked, open_storage, stored_config

FRONTIER_FIGURES = {"mflops": "accuracy_vs_flops", "latency_ms": "accuracy_vs_latency"}


def _frontier_figures(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(x column, file stem) of the frontier figures the table has data for (no latency: no figure)."""
    if not table["acc_mean"].notna().any():
        return []
    return [(x, stem) for x, stem in FRONTIER_FIGURES.items() if table[x].notna().any()]


def frontier_title(config: StudyConfig, seeds: int) -> tuple[str, str]:
    """(title, subtitle) naming the proxy that every point was trained on."""
    p = config.proxy
    title = f"{config.name}: proxy accuracy of each family"
    subtitle = (f"{config.space} at width {p.width:g}, depth {p.depth:g}, {p.resolution} px at φ = 0; "
                f"{p.dataset}, {p.train.epochs} epochs, {seeds} seed(s) per point")
    return title, subtitle


def write_frontier(table: pd.DataFrame, out_dir: Path, title: str, subtitle: str,
                   grid_trials: pd.DataFrame | None = None) -> list[Path]:
    """frontier.csv, frontier.json, and PNG + SVG figures: accuracy vs FLOPs, vs latency (when measured),
    and the coefficient grid coloured by accuracy (when a search is given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "frontier.csv", out_dir / "frontier.json"]
    table.to_csv(written[0], index=False)
    written[1].write_text(table.to_json(orient="records", indent=2))
    for x, stem in _frontier_figures(table):
        written += plot_frontier(table, x, out_dir / stem, title, subtitle)
    if grid_trials is not None and not grid_trials.empty and grid_trials["alpha"].notna().any():
        written += plot_grid(grid_trials, out_dir / "coefficient_grid", f"{title.split(':')[0]}: coefficient search")
    return written


# ------------------------------------------------------------------------------------------- report

def _figure(render: Callable[[Path], list[Path]], alt: str) -> str:
    """An <img> with the PNG that `render(stem)` writes, embedded."""
    with tempfile.TemporaryDirectory() as tmp:
        png = next(p for p in render(Path(tmp) / "figure") if p.suffix == ".png")
        data = base64.b64encode(png.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", border=0, classes="data", float_format=lambda v: f"{v:.4g}")


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.data th, table.data td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: right; }
table.data th { background: #f4f4f4; } img { max-width: 100%; margin: 0.5em 0; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; } .note { color: #666; }
"""


@dataclass(frozen=True)
class ReportParts:
    """What the report shows of a search, read from storage: `grid` (a coefficient search's trials) adds
    the coefficient-grid figure, `confirmation` (None until one has run) the proxy-against-confirmation
    section."""

    history: pd.DataFrame              # every trial: trial, state, acc_mean
    winners: pd.DataFrame
    family: pd.DataFrame
    caption: str
    grid: pd.DataFrame | None = None
    confirmation: Confirmation | None = None


def render_report(name: str, config: StudyConfig, parts: ReportParts, frontier: pd.DataFrame | None,
                  storage: str) -> str:
    """The HTML page; `frontier` (None when not run) adds the frontier table and figures."""
    definition = {**config.to_dict(), "storage": storage}
    history, grid, confirmed = parts.history, parts.grid, parts.confirmation
    sections = [f"<h1>Study {html.escape(name)}</h1>",
                f'<p class="note">{html.escape(config.description)}<br>storage: '
                f'{html.escape(storage)}; report written {time.strftime("%Y-%m-%d %H:%M")}</p>',
                '<h2 id="definition">Study definition</h2>',
                f"<pre>{html.escape(json.dumps(definition, indent=2, default=str))}</pre>",
                '<h2 id="history">Search history</h2>']
    counts = history["state"].value_counts().to_dict()
    sections.append(f"<p>{len(history)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>")
    sections.append(_figure(lambda stem: plot_history(history, stem, f"{name}: search history"), "search history"))
    if grid is not None:
        sections.append(_figure(lambda stem: plot_grid(grid, stem, f"{name}: coefficient search"),
                                "coefficient grid coloured by accuracy"))
    sections += ['<h2 id="winners">Winners</h2>', _table(parts.winners) if not parts.winners.empty else
                 '<p class="note">No trial has finished with an accuracy yet.</p>']
    if confirmed is not None:
        lines = confirmed.sentences()
        sections += ['<h2 id="confirmation">Confirmation</h2>',
                     "<p>" + "<br>".join(html.escape(line[0].upper() + line[1:]) for line in lines) + "</p>",
                     _figure(lambda stem: plot_confirmation(confirmed.table(), stem, f"{name}: proxy against "
                                                            f"confirmation", lines[1]),
                             "proxy accuracy against confirmation accuracy, one point a candidate"),
                     _table(confirmed.table())]
    sections += ['<h2 id="family">Family</h2>', f"<p>{html.escape(parts.caption)}</p>",
                 _table(parts.family) if not parts.family.empty else ""]
    sections.append('<h2 id="frontier">Frontier</h2>')
    if frontier is None or frontier.empty:
        sections.append(f'<p class="note">No frontier yet: run <code>nas frontier {html.escape(name)}</code>, '
                        f'then write this report again.</p>')
    else:
        seeds = int(frontier["seeds"].max())
        title, subtitle = frontier_title(config, seeds)
        for x, stem in _frontier_figures(frontier):
            sections.append(_figure(functools.partial(plot_frontier, frontier, x, title=title, subtitle=subtitle),
                                    stem))
        sections.append(_table(frontier.drop(columns=["label", "network"], errors="ignore")))
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>effnas report: '
            f'{html.escape(name)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n')


def report_parts(study: optuna.Study, config: StudyConfig,
                 progress: Callable[[str], None] | None = None) -> ReportParts:
    """What the report shows of a coefficient or block-level search. The family is the study's own
    (nas.family.study_family, as `nas scale run` and `nas materialize --study` build it) from the exact
    coefficients of its answer: the confirmed best once a confirmation has run, else the proxy's best."""
    if config.arch is not None:
        table = arch_table(study)
        winners = table[table["best"].notna()].sort_values("best").head(10) if not table.empty else table
        return ReportParts(table, winners, pd.DataFrame(), "A block-level search has no family of its own: export "
                           "its best network (nas arch export) and scale it with a coefficient search.")
    table = trials_table(study)
    found = verdict(study)
    if found is None:
        return ReportParts(table, pd.DataFrame(), pd.DataFrame(), "No winner yet, so no family.", table)
    winners = table[table["rank"].notna()].sort_values("rank").head(10)
    (alpha, beta, gamma), confirmed_words = answer(config, study)
    # A latency study's eight members would each be timed, up to B7 size: too long for a report. They are
    # solved on FLOPs here, and the caption says so.
    family = study_family(config, (alpha, beta, gamma), range(8), progress, timed=False)
    stability = found.stability()
    timed = config.search.cost == "latency"
    caption = (f"{found.sentence()}. {stability[0].upper()}{stability[1:]}. Ties are {found.test_words()}. "
               + (f"{confirmed_words[0].upper()}{confirmed_words[1:]}. " if confirmed_words else "")
               + f"The coefficients (alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g}) "
               f"applied to the full-size {config.space}, phi = 0..7, each member's resolution solved so that its "
               f"{family.solved_on} are {config.search.target:g}^phi times the base's"
               + (" (a latency study: its family solved on latency and timed is what nas materialize --study "
                  f"{study.study_name} prints)" if timed else f" (nas materialize --study {study.study_name})")
               + f"; {family.drift}.")
    return ReportParts(table, winners, family.table, caption, table, confirmation(config, study))


def report_study(name_or_path: str, storage: str | None, out: Path | None,
                 progress: Callable[[str], None] | None = None) -> tuple[Path, int]:
    """Write the report of a stored study (default runs/<name>/report.html); (its path, its size in bytes)."""
    study, url = load_stored_study(name_or_path, storage)
    config = stored_config(study, url)
    parts = report_parts(study, config, progress)
    if parts.history.empty:
        raise NasError(f"study '{study.study_name}' has no trials yet: run it first")
    try:
        frontier = frontier_table(optuna.load_study(study_name=f"{study.study_name}-frontier",
                                                    storage=open_storage(url)))
    except KeyError:
        frontier = None
    page = render_report(study.study_name, config, parts, frontier, masked(url))
    out = out or RUNS_DIR / study.study_name / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, len(page)
