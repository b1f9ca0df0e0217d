"""What a finished study leaves for people: frontier files (CSV, JSON, figures) and a one-page report.

The report is a single HTML file with its figures embedded (base64 PNG), so it opens from disk without
a server and can be mailed or attached to an issue as it is. It is rendered from storage only: the
study definition, the search history, the winners, the family of the best coefficients, and the
frontier when one has been run.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from nas import units
from nas.config import RUNS_DIR, StudyConfig
from nas.errors import NasError
from nas.family import study_family
from nas.plots import left_behind, plot_confirmation, plot_frontier, plot_grid, plot_history
from nas.search.confirm import Confirmation, answer, confirmation
from nas.search.results import arch_table, candidates, frontier_table, state_counts, trials_table, verdict
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

MAX_COLUMNS = 13
"""The most columns a table shows on the page (tests/test_report.py holds every table to it): the ones a reader
compares. Every column is in the table's CSV (a link under it) and in its all-columns view, folded away."""


@dataclass(frozen=True)
class Setting:
    """One field of a study definition (`proxy.train.epochs`), its value and its default (MISSING for a field
    the study must give: name, space)."""

    key: str
    value: Any
    default: Any

    @property
    def chosen(self) -> bool:
        return self.default is dataclasses.MISSING or self.value != self.default


def study_settings(config: StudyConfig) -> list[Setting]:
    """Every setting of a study, in the order of the config dataclasses (nas.config), each with the default of
    its dataclass field; a section the study leaves unset (`arch` of a coefficient search) is one setting,
    and a block-level search has no `search` or `confirm` section (those of coefficient searches)."""
    unused = ("search.", "confirm.") if config.arch is not None else ()
    return [s for s in _settings(config, None, "") if not s.key.startswith(unused)]


def _settings(obj: Any, defaults: Any, prefix: str) -> Iterator[Setting]:
    for f in dataclasses.fields(obj):
        if not f.compare or f.name in ("description", "storage"):    # the page's heading says them
            continue
        value = getattr(obj, f.name)
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):   # a section, against its defaults
            yield from _settings(value, default if type(default) is type(value) else type(value)(),
                                 f"{prefix}{f.name}.")
        else:
            yield Setting(prefix + f.name, value, default)


def _setting_value(value: Any) -> str:
    """As it would be written in a study file: unset, true, 0.002, [1, 1.6]."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_setting_value(v) for v in value) + "]"
    return units.plain(value) if isinstance(value, float) else str(value)


def _definition(config: StudyConfig) -> str:
    """The settings the study chose (those away from their defaults) as a table, and every setting folded
    under it."""
    settings = study_settings(config)
    shown = {s.key: _setting_value(s.value) for s in settings}

    def default(s: Setting) -> str:
        return "required" if s.default is dataclasses.MISSING else _setting_value(s.default)

    chosen = [s for s in settings if s.chosen]
    rows = [[s.key, shown[s.key], default(s)] for s in chosen]
    every = [[s.key, shown[s.key], default(s)] for s in settings]
    return (f"<p>The settings this study chose; the other {len(settings) - len(chosen)} are at their defaults "
            f"(docs/search.md, Study file format, describes each).</p>"
            + _html_table(["setting", "value", "default"], rows, numeric=[False] * 3, css="settings")
            + _folded(f"All {len(settings)} settings (the chosen in bold)",
                      _html_table(["setting", "value", "default"], every, numeric=[False] * 3,
                                  css="settings", marked=[s.chosen for s in settings])))


@dataclass(frozen=True)
class Column:
    """A column of a table on the page: its header, how it reads a row, and whether it is a number
    (right-aligned). A `notes` column (why a trial ended so: sentences) shows [1], [2], ... and its
    sentences under the table, once each, as `nas scale show` does."""

    header: str
    cell: Callable[[pd.Series], str]
    numeric: bool = True
    notes: bool = False


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (str, list, tuple, dict)) and bool(pd.isna(value)))


def _of(column: str, fmt: Callable[[Any], str]) -> Callable[[pd.Series], str]:
    """A cell: `fmt` of the row's `column`, empty where the row has none."""
    return lambda row: "" if column not in row or _missing(row[column]) else fmt(row[column])


def _accuracy_with_interval(row: pd.Series) -> str:
    if _missing(row.get("acc_mean")):
        return ""
    if _missing(row.get("acc_low")) or _missing(row.get("acc_high")):
        return units.accuracy(row["acc_mean"])
    return f"{units.accuracy(row['acc_mean'])} ({units.interval(row['acc_low'], row['acc_high'])})"


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-", "−")


def _any(value: Any) -> str:
    """A cell of an all-columns view: numbers in plain notation (never 7.329e+06), yes/no for flags."""
    if _missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and value == int(value):
            return f"{int(value):,}"
        text = units.significant(float(value), 4)
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


COEFFICIENTS = [Column("α", _of("alpha", lambda v: f"{v:.3f}")), Column("β", _of("beta", lambda v: f"{v:.3f}")),
                Column("γ", _of("gamma", lambda v: f"{v:.3f}"))]
ACCURACY = Column("accuracy (95 % interval)", _accuracy_with_interval)
TIME = Column("time", _of("wall_s", units.duration))


def _trial_columns(table: pd.DataFrame, ranked: bool) -> list[Column]:
    """A coefficient search's trials: what each candidate is (coefficients; resolution, params and FLOPs of its
    full-size φ = 1 network), how it scored, and the verdict's word for it. `ranked`: the winners, with
    their rank and paired difference to the best; otherwise every trial, with its state and why it
    ended so."""
    columns = [Column("rank", _of("rank", str))] if ranked else []
    columns += [Column("trial", _of("trial", str)), *([] if ranked else [Column("state", _of("state", str), False)]),
                *COEFFICIENTS,
                Column("resolution", _of("res1", lambda v: f"{int(v)} px")),
                Column("params", _of("params", units.si)), Column("FLOPs", _of("flops", units.flops)),
                ACCURACY]
    if table.loc[table["acc_mean"].notna(), "seeds"].nunique() > 1:      # racing: some candidates got more
        columns.append(Column("seeds", _of("seeds", lambda v: f"{int(v)}")))
    if ranked and "vs_best" in table.columns:
        columns.append(Column("vs best", _of("vs_best", _signed)))
    columns.append(Column("verdict", _verdict_words(table), False))
    columns.append(TIME)
    if not ranked:
        columns.append(Column("why", _of("reason", str), False, notes=True))
    return columns


def _verdict_words(table: pd.DataFrame) -> Callable[[pd.Series], str]:
    """A candidate's word in the verdict, as the coefficient-grid figure (nas.plots.plot_grid) writes it: the
    best is the winner only when no other candidate is tied with it."""
    tie = "tied_best" in table.columns and int(table["tied_best"].sum()) > 1

    def word(row: pd.Series) -> str:
        if left_behind(row.get("rung")):
            return f"stopped at rung {row['rung']}"      # budget racing left it behind
        if not _missing(row.get("rank")) and row["rank"] == 1:
            return "best (tied)" if tie else "winner"
        return "tied" if not _missing(row.get("tied_best")) and bool(row["tied_best"]) else ""
    return word


FAMILY_COLUMNS = [
    Column("member", _of("name", str), False), Column("φ", _of("phi", lambda v: f"{v:g}")),
    Column("width", _of("width", lambda v: f"{v:.3f}")), Column("depth", _of("depth", lambda v: f"{v:.3f}")),
    Column("resolution", _of("resolution", lambda v: f"{int(v)} px")), Column("params", _of("params", units.si)),
    Column("FLOPs", _of("gflops", lambda v: units.flops(v * 1e9))),
    Column("activations", _of("activations", units.si)),
    Column("FLOPs vs φ = 0", _of("flops_ratio", lambda v: f"{v:.3f}×")),
    Column("asked", _of("target_ratio", lambda v: f"{v:g}×")),
    Column("latency", _of("latency_ms", units.milliseconds))]

FRONTIER_COLUMNS = [
    Column("family", _of("family", str), False), Column("φ", _of("phi", lambda v: f"{v:g}")),
    Column("width", _of("width", lambda v: f"{v:.3f}")), Column("depth", _of("depth", lambda v: f"{v:.3f}")),
    Column("resolution", _of("resolution", lambda v: f"{int(v)} px")), Column("params", _of("params", units.si)),
    Column("FLOPs", _of("mflops", lambda v: units.flops(v * 1e6))),
    Column("latency (full size)", _of("latency_ms", units.milliseconds)), ACCURACY,
    Column("seeds", _of("seeds", lambda v: f"{int(v)}")),
    Column("tied best at φ", _of("tied_best_at_phi", lambda v: "tied" if v else ""), False),
    Column("Pareto", _of("pareto", lambda v: "yes" if v else ""), False)]

CONFIRMATION_COLUMNS = [
    Column("trial", _of("trial", str)), *COEFFICIENTS, Column("resolution", _of("resolution", lambda v: f"{int(v)} px")),
    Column("proxy rank", _of("proxy_rank", str)), Column("proxy accuracy", _of("proxy_acc", units.accuracy)),
    Column("confirmed rank", _of("confirmed_rank", str)),
    Column("confirmed accuracy", _of("confirmed_acc", units.accuracy)), Column("seeds", _of("seeds", str)),
    Column("vs best", _of("vs_best", _signed)),
    Column("verdict", _of("tied_best", lambda v: "tied" if v else ""), False)]

ARCH_COLUMNS = [
    Column("trial", _of("trial", str)), Column("best", _of("best", str)), Column("state", _of("state", str), False),
    Column("FLOPs", _of("mflops", lambda v: units.flops(v * 1e6))), Column("params", _of("params", units.si)),
    Column("latency", _of("latency_ms", units.milliseconds)),
    Column("accuracy (± std)", lambda r: "" if _missing(r.get("acc_mean")) else units.accuracy(r["acc_mean"])
           + ("" if _missing(r.get("acc_std")) else f" ± {units.accuracy(r['acc_std'])}")),
    Column("reward", _of("reward", lambda v: f"{v:.4f}")), TIME,
    Column("why", _of("reason", str), False, notes=True)]


LONG_TEXT = 60
"""Characters from which a cell's text is a sentence, which wraps (other cells keep to one line)."""


def _html_table(headers: list[str], rows: list[list[str]], numeric: list[bool], css: str = "data",
                marked: list[bool] | None = None) -> str:
    """A table in its own box, which scrolls sideways if the table is wider than the page (the page never
    does). Text is left-aligned, and wraps only where it is a sentence; `marked` rows are set in bold."""
    def cells(tag: str, values: list[str]) -> str:
        kind = ["" if n else ' class="long"' if len(v) > LONG_TEXT else ' class="text"' for v, n in zip(values, numeric)]
        return "".join(f"<{tag}{k}>{html.escape(v)}</{tag}>" for v, k in zip(values, kind))
    body = "\n".join(f'<tr{" class=marked" if marked and marked[i] else ""}>{cells("td", row)}</tr>'
                     for i, row in enumerate(rows))
    return (f'<div class="box"><table class="{css}"><thead><tr>{cells("th", headers)}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>")


def _table(df: pd.DataFrame, columns: list[Column], csv_name: str) -> str:
    """`df` in the chosen `columns` (those the rows have data for), then a link to its CSV (every column, raw
    numbers) and every column folded under it."""
    shown = [c for c in columns if any(c.cell(row) for _, row in df.iterrows())]
    rows = [[c.cell(row) for c in shown] for _, row in df.iterrows()]
    notes: dict[str, int] = {}
    for row in rows:
        for i, c in enumerate(shown):
            if c.notes and row[i]:
                row[i] = f"[{notes.setdefault(row[i], len(notes) + 1)}]"
    table = _html_table([c.header for c in shown], rows, [c.numeric for c in shown])
    if notes:
        table += '<ol class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ol>"
    every = _html_table(list(map(str, df.columns)), [[_any(v) for v in row] for row in df.itertuples(index=False)],
                        [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns], css="all")
    csv = base64.b64encode(df.to_csv(index=False).encode()).decode()
    link = (f'<a download="{csv_name}" href="data:text/csv;charset=utf-8;base64,{csv}">{csv_name}</a>')
    return table + _folded(f"All {len(df.columns)} columns (also as {link}, for a spreadsheet)", every)


def _folded(summary: str, content: str) -> str:
    return f"<details><summary>{summary}</summary>\n{content}\n</details>"


def _figure(render: Callable[[Path], list[Path]], alt: str) -> str:
    """An <img> with the PNG that `render(stem)` writes, embedded, shown at 100 pixels an inch (the PNG has
    150: sharp on a high-density screen, the size of print on any)."""
    with tempfile.TemporaryDirectory() as tmp:
        png = next(p for p in render(Path(tmp) / "figure") if p.suffix == ".png").read_bytes()
    width = int.from_bytes(png[16:20], "big") * 2 // 3      # the PNG header's width, in pixels
    data = base64.b64encode(png).decode()
    return f'<img src="data:image/png;base64,{data}" width="{width}" alt="{html.escape(alt)}">'


def _sentences(lines: list[str]) -> str:
    """Sentences as `nas scale show` prints them, one a line, each ended with a full stop."""
    return '<ul class="verdict">' + "".join(f"<li>{html.escape(line)}.</li>" for line in lines) + "</ul>"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222;
       line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; } .note { color: #666; }
.box { overflow-x: auto; max-width: 100%; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: right; vertical-align: top; }
th { background: #f4f4f4; white-space: nowrap; } td { white-space: nowrap; }
.text, .long { text-align: left; } td.long { white-space: normal; min-width: 30em; } ol.notes { font-size: 0.85em; color: #444; max-width: 60em; }
table.settings td:first-child { font-family: ui-monospace, monospace; } tr.marked td { font-weight: 600; }
details { margin: 0.5em 0 1em; } summary { cursor: pointer; color: #444; }
ul.verdict { background: #f8f8f8; padding: 0.6em 0.8em 0.6em 2em; }
img { max-width: 100%; height: auto; margin: 0.5em 0; display: block; }
"""


@dataclass(frozen=True)
class ReportParts:
    """What the report shows of a search, read from storage: `grid` (a coefficient search's trials) adds
    the coefficient-grid figure, `confirmation` (None until one has run) the proxy-against-confirmation
    section, `verdict` the lines `nas scale show` ends with."""

    history: pd.DataFrame              # every trial: trial, state, acc_mean
    winners: pd.DataFrame
    family: pd.DataFrame
    caption: str
    grid: pd.DataFrame | None = None
    confirmation: Confirmation | None = None
    verdict: list[str] = dataclasses.field(default_factory=list)


def _winners_note(config: StudyConfig, winners: pd.DataFrame) -> str:
    """What the columns of a coefficient search's Winners table measure."""
    base = winners["res0"].dropna()
    at_0 = f" ({config.space} is {int(base.iloc[0])} px at φ = 0)" if len(base) else ""
    return (f'<p class="note">Resolution, params and FLOPs: each candidate\'s full-size φ = 1 network{at_0}. '
            f"Accuracy: its proxy's, with its 95 % interval; vs best: its accuracy minus the best's, on the same "
            f"validation images.</p>")


def render_report(name: str, config: StudyConfig, parts: ReportParts, frontier: pd.DataFrame | None,
                  storage: str) -> str:
    """The HTML page; `frontier` (None when not run) adds the frontier table and figures. `storage` (the
    study's URL) is shown masked: no password reaches the page."""
    history, grid, confirmed = parts.history, parts.grid, parts.confirmation
    arch = config.arch is not None
    sections = [f"<h1>Study {html.escape(name)}</h1>",
                f'<p class="note">{html.escape(config.description) + "<br>" if config.description else ""}storage: '
                f'{html.escape(masked(storage))}; report written {time.strftime("%Y-%m-%d %H:%M")}</p>',
                "<nav>" + "".join(f'<a href="#{s}">{s.capitalize()}</a>' for s in
                                  ("definition", "history", "winners", *(["confirmation"] if confirmed else []),
                                   "family", "frontier")) + "</nav>",
                '<h2 id="definition">Study definition</h2>', _definition(config),
                '<h2 id="history">Search history</h2>',
                f"<p>{len(history)} trials: {state_counts(history)}.</p>",
                _figure(lambda stem: plot_history(history, stem, f"{name}: search history"), "search history")]
    if grid is not None:
        sections.append(_figure(lambda stem: plot_grid(grid, stem, f"{name}: coefficient search"),
                                "coefficient grid coloured by accuracy"))
    every = ARCH_COLUMNS if arch else _trial_columns(history, ranked=False)
    sections.append(_folded(f"All {len(history)} trials", _table(history, every, "trials.csv")))
    sections.append('<h2 id="winners">Winners</h2>')
    if parts.winners.empty:
        sections.append('<p class="note">No trial has finished with an accuracy yet.</p>')
    else:
        if parts.verdict:
            sections.append(_sentences(parts.verdict))
        if arch:
            sections += ['<p class="note">The best by reward (best 1: the highest), or the Pareto set of a search '
                         'with several objectives.</p>', _table(parts.winners, ARCH_COLUMNS, "winners.csv")]
        else:
            sections += [_winners_note(config, parts.winners),
                         _table(parts.winners, _trial_columns(parts.winners, ranked=True), "winners.csv")]
    if confirmed is not None:
        lines = confirmed.sentences()
        sections += ['<h2 id="confirmation">Confirmation</h2>',
                     "<p>" + "<br>".join(html.escape(line[0].upper() + line[1:]) for line in lines) + "</p>",
                     _figure(lambda stem: plot_confirmation(confirmed.table(), stem, f"{name}: proxy against "
                                                            f"confirmation", lines[1]),
                             "proxy accuracy against confirmation accuracy, one point a candidate"),
                     _table(confirmed.table(), CONFIRMATION_COLUMNS, "confirmation.csv")]
    sections += ['<h2 id="family">Family</h2>', f"<p>{html.escape(parts.caption)}</p>",
                 _table(parts.family, FAMILY_COLUMNS, "family.csv") if not parts.family.empty else ""]
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
        sections.append(_table(frontier, FRONTIER_COLUMNS, "frontier.csv"))
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
    if not table.empty:      # the FLOPs of each candidate's full-size phi = 1 network, beside its params
        flops = {r.number: r.flops1 for r in candidates(study)}
        table.insert(table.columns.get_loc("params") + 1, "flops",
                     pd.array([flops.get(n) for n in table["trial"]], dtype="Int64"))
    if found is None:
        return ReportParts(table, pd.DataFrame(), pd.DataFrame(), "No winner yet, so no family.", table)
    winners = table[table["rank"].notna()].sort_values("rank").head(10)
    (alpha, beta, gamma), confirmed_words = answer(config, study)
    # A latency study's eight members would each be timed, up to B7 size: too long for a report. They are
    # solved on FLOPs here, and the caption says so.
    family = study_family(config, (alpha, beta, gamma), range(8), progress, timed=False)
    timed = config.search.cost == "latency"
    source = confirmed_words or ("a tie: its best" if found.is_tie else "the winner")
    caption = (f"The coefficients alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g} ({source}) "
               f"applied to the full-size {config.space}, phi = 0..7, each member's resolution solved so that its "
               f"{family.solved_on} are {config.search.target:g}^phi times the base's"
               + (" (a latency study: its family solved on latency and timed is what nas materialize --study "
                  f"{study.study_name} prints)" if timed else f" (nas materialize --study {study.study_name})")
               + f"; {family.drift}.")
    lines = [found.sentence(), f"ties: {found.test_words()}", found.stability()]
    return ReportParts(table, winners, family.table, caption, table, confirmation(config, study), lines)


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
    page = render_report(study.study_name, config, parts, frontier, url)
    out = out or RUNS_DIR / study.study_name / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, len(page)
