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
from pathlib import Path

import optuna
import pandas as pd

from nas.plots import plot_frontier, plot_grid, plot_history

FRONTIER_FIGURES = {"mflops": "accuracy_vs_flops", "latency_ms": "accuracy_vs_latency"}


def _frontier_figures(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(x column, file stem) of the frontier figures the table has data for (no latency: no figure)."""
    if not table["acc_mean"].notna().any():
        return []
    return [(x, stem) for x, stem in FRONTIER_FIGURES.items() if table[x].notna().any()]


def frontier_title(config: dict, seeds: int) -> tuple[str, str]:
    """(title, subtitle) naming the proxy that every point was trained on."""
    p = config["proxy"]
    title = f"{config['name']}: proxy accuracy of each family"
    subtitle = (f"{config['space']} at width {p['width']:g}, depth {p['depth']:g}, {p['resolution']} px at φ = 0; "
                f"{p['dataset']}, {p['train']['epochs']} epochs, {seeds} seed(s) per point")
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


def render_report(name: str, config: dict, history: pd.DataFrame, winners: pd.DataFrame, family: pd.DataFrame,
                  family_caption: str, frontier: pd.DataFrame | None, grid: pd.DataFrame | None,
                  storage: str) -> str:
    """The HTML page. `history` needs trial, state, acc_mean; `grid` (a coefficient search's trials) adds
    the coefficient-grid figure; `frontier` (None when not run) adds the frontier table and figures."""
    sections = [f"<h1>Study {html.escape(name)}</h1>",
                f'<p class="note">{html.escape(config.get("description", ""))}<br>storage: '
                f'{html.escape(storage)}; report written {time.strftime("%Y-%m-%d %H:%M")}</p>',
                '<h2 id="definition">Study definition</h2>',
                f"<pre>{html.escape(json.dumps(config, indent=2, default=str))}</pre>",
                '<h2 id="history">Search history</h2>']
    counts = history["state"].value_counts().to_dict()
    sections.append(f"<p>{len(history)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>")
    sections.append(_figure(lambda stem: plot_history(history, stem, f"{name}: search history"), "search history"))
    if grid is not None:
        sections.append(_figure(lambda stem: plot_grid(grid, stem, f"{name}: coefficient search"),
                                "coefficient grid coloured by accuracy"))
    sections += ['<h2 id="winners">Winners</h2>', _table(winners) if not winners.empty else
                 '<p class="note">No trial has finished with an accuracy yet.</p>']
    sections += ['<h2 id="family">Family</h2>', f"<p>{html.escape(family_caption)}</p>",
                 _table(family) if not family.empty else ""]
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


def report_parts(study: optuna.Study, config: dict,
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                         str, pd.DataFrame | None]:
    """(history, winners, family, family caption, grid) of a coefficient or block-level search.

    The family is built from the winner's exact coefficients (`best_coefficients`), as `nas materialize
    --study` builds it; the tables show them rounded, which would move resolutions by a pixel."""
    if config.get("arch") is not None:
        from nas.search.results import arch_table
        table = arch_table(study)
        winners = table[table["best"].notna()].sort_values("best").head(10) if not table.empty else table
        caption = ("A block-level search has no family of its own: export its best network (nas arch export) "
                   "and scale it with a coefficient search.")
        return table, winners, pd.DataFrame(), caption, None
    from nas.family import exact_cost_family, family_table, worst_deviation
    from nas.search.constraint import activations_cost
    from nas.search.results import trials_table, verdict
    from nas.spec import load_spec
    table = trials_table(study)
    found = verdict(study)
    if found is None:
        return table, pd.DataFrame(), pd.DataFrame(), "No winner yet, so no family.", table
    winners = table[table["rank"].notna()].sort_values("rank").head(10)
    alpha, beta, gamma = found.best.coefficients
    search = config.get("search", {})
    target = search.get("target", 2.0)
    # Solved on the study's cost where it is counted; a latency study's members would each be timed several
    # times at up to B7 size, too long for a report: they are solved on FLOPs here, and the caption says so.
    timed = search.get("cost") == "latency"
    cost = "activations" if search.get("cost") == "activations" else "flops"
    members, nominal = exact_cost_family(load_spec(config["space"]), alpha, beta, gamma, range(8), target,
                                         cost=activations_cost(3, 1000) if cost == "activations" else None)
    family = family_table(members, progress=progress, target=target, nominal_resolutions=nominal)
    stability = found.stability()
    caption = (f"{found.sentence()}. {stability[0].upper()}{stability[1:]}. The best coefficients "
               f"(alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g}) "
               f"applied to the full-size {config['space']}, phi = 0..7, each member's resolution solved so that its "
               f"{'FLOPs are' if cost == 'flops' else 'activations are'} {target:g}^phi times the base's"
               + (" (a latency study: its family solved on latency and timed is what nas materialize --study "
                  f"{study.study_name} prints)" if timed else f" (nas materialize --study {study.study_name})")
               + f"; {worst_deviation(family, target, cost)}.")
    return table, winners, family, caption, table


def report_study(name_or_path: str, storage: str | None, out: Path | None,
                 progress: Callable[[str], None] | None = None) -> tuple[Path, int]:
    """Write the report of a stored study (default runs/<name>/report.html); (its path, its size in bytes)."""
    from nas.config import RUNS_DIR
    from nas.errors import NasError
    from nas.search.results import frontier_table
    from nas.search.storage import load_stored_study, masked, open_storage

    study, url = load_stored_study(name_or_path, storage)
    config = study.user_attrs.get("config")
    if config is None:
        raise NasError(f"study '{study.study_name}' in {masked(url)} was not created by nas: nothing to report")
    history, winners, family, caption, grid = report_parts(study, config, progress)
    if history.empty:
        raise NasError(f"study '{study.study_name}' has no trials yet: run it first")
    try:
        frontier = frontier_table(optuna.load_study(study_name=f"{study.study_name}-frontier",
                                                    storage=open_storage(url)))
    except KeyError:
        frontier = None
    shown = {**config, "storage": masked(config["storage"])} if config.get("storage") else config
    page = render_report(study.study_name, shown, history, winners, family, caption, frontier, grid, masked(url))
    out = out or RUNS_DIR / study.study_name / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, len(page)
