"""`nas report` reads like a page: the settings the study chose (defaults folded away), numbers in the units
people use, tables that fit a 1280-pixel window, and the verdict in `nas scale show`'s words. Checked on the
HTML of a real tiny search; the slow test renders it in headless Chromium when the machine has it."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from conftest import TINY_STUDY

from nas import units
from nas.cli import main
from nas.config import load_study
from nas.report import MAX_COLUMNS, render_report, report_parts, study_settings
from nas.search.storage import load_stored_study

E_NOTATION = re.compile(r"\b\d+(\.\d+)?[eE][+-]?\d+\b")
WINDOW = 1280


class Tables(HTMLParser):
    """Each <table> of a page: its header cells, whether it sits inside a <details>, inside a box that scrolls
    sideways, and its rows' cells; and the page's text outside <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.text: list[str] = []
        self._open: list[tuple[str, dict]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"headers": [], "rows": [], "folded": any(t == "details" for t, _ in self._open),
                                "boxed": bool(self._open) and self._open[-1][1].get("class") == "box"})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = []
        if tag not in ("img", "br", "meta"):
            self._open.append((tag, a))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass
        if tag in ("th", "td") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th":
                self.tables[-1]["headers"].append(text)
            else:
                self.tables[-1]["rows"][-1].append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if not any(t == "style" for t, _ in self._open):
            self.text.append(data)


def page_tables(page: str) -> Tables:
    """The tables of a report page, and its text."""
    parser = Tables()
    parser.feed(page)
    return parser


def _chosen(tables: Tables) -> dict[str, str]:
    """The study definition's table of chosen settings: setting -> value."""
    table = next(t for t in tables.tables if t["headers"] == ["setting", "value", "default"] and not t["folded"])
    return {row[0]: row[1] for row in table["rows"] if row}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished tiny coefficient search (4 grid points, 1 epoch, 1 seed each) with a few settings away from
    their defaults, and its report page."""
    cwd = tmp_path_factory.mktemp("report")
    patch = pytest.MonkeyPatch()
    patch.chdir(cwd)
    path = cwd / "page.yaml"
    path.write_text(TINY_STUDY.format(name="page", sampler="grid", epochs=1, seeds=1, trials=4)
                    .replace("batch_size: 32", "batch_size: 32, lr: 0.003"))
    try:
        assert main(["scale", "run", str(path), "--phi", "0", "--format", "csv"]) == 0
        study, url = load_stored_study("page", None)
        config = load_study(path)
        parts = report_parts(study, config)
        page = render_report("page", config, parts, None, url)
    finally:
        patch.undo()
    return cwd, config, page, parts


def test_the_definition_shows_what_the_study_chose_and_folds_the_defaults(searched):
    _, config, page, _ = searched
    tables = page_tables(page)
    chosen = _chosen(tables)
    # what the study file sets away from the defaults, as a study file writes it
    assert chosen["proxy.train.epochs"] == "1" and chosen["proxy.train.lr"] == "0.003"
    assert chosen["search.alpha"] == "[1, 1.3]" and chosen["proxy.width"] == "0.25"
    assert chosen["pruner.type"] == "none" and chosen["name"] == "page"
    # what it leaves at (or sets to) the default is folded: search.target 2.0 and the optimizer adamw
    every = {s.key: s for s in study_settings(config)}
    assert not every["search.target"].chosen and "search.target" not in chosen
    assert "proxy.train.optimizer" not in chosen and not every["proxy.train.optimizer"].chosen
    folded = next(t for t in tables.tables if t["headers"] == ["setting", "value", "default"] and t["folded"])
    assert {r[0] for r in folded["rows"] if r} == set(every)        # every setting, once, under "all settings"
    assert len(chosen) == sum(s.chosen for s in every.values()) < len(every) / 3
    assert '"proxy": {' not in page                                 # no JSON dump


def test_a_storage_password_never_reaches_the_page(searched):
    _, config, _, parts = searched
    url = "postgresql://effnas:hunter2@db.example/studies"
    page = render_report("page", dataclasses.replace(config, storage=url), parts, None, url)
    assert "hunter2" not in page and "storage: postgresql://effnas:***@db.example/studies;" in page


def test_numbers_are_in_the_units_people_use(searched):
    _, _, page, _ = searched
    tables = page_tables(page)
    assert not E_NOTATION.search("".join(tables.text)), E_NOTATION.search("".join(tables.text))
    family = next(t for t in tables.tables if t["headers"][:2] == ["member", "φ"])
    column = dict(zip(family["headers"], zip(*[r for r in family["rows"] if r])))
    assert all(re.fullmatch(r"\d+(\.\d+)? M", p) for p in column["params"]), column["params"]     # 5.29 M
    assert all(re.fullmatch(r"\d+(\.\d+)? [MG]FLOPs", f) for f in column["FLOPs"]), column["FLOPs"]
    winners = next(t for t in tables.tables if t["headers"][:2] == ["rank", "trial"] and not t["folded"])
    accuracies = [dict(zip(winners["headers"], r))["accuracy (95 % interval)"] for r in winners["rows"] if r]
    assert all(re.fullmatch(r"0\.\d{4} \(0\.\d{4} to (0\.\d{4}|1\.0000)\)", a) for a in accuracies), accuracies


def test_tables_fit_the_page_and_the_rest_is_folded_or_in_a_csv(searched):
    _, _, page, _ = searched
    tables = page_tables(page).tables
    assert all(t["boxed"] for t in tables)                          # each scrolls in its own box, not the page
    assert ".box { overflow-x: auto" in page
    shown = [t for t in tables if not t["folded"]]
    assert {"rank", "trial", "α", "β", "γ", "params", "FLOPs", "verdict", "time"} <= set(shown[1]["headers"])
    assert all(len(t["headers"]) <= MAX_COLUMNS for t in shown), [t["headers"] for t in shown]
    # every column of the trials is still there: folded, and in an embedded CSV
    assert re.search(r'<a download="winners.csv" href="data:text/csv;charset=utf-8;base64,', page)
    assert any(t["folded"] and {"nominal_ratio", "family_dev", "acc_std"} <= set(t["headers"]) for t in tables)


def test_the_verdict_reads_as_scale_show_says_it(searched, run_cli, monkeypatch):
    cwd, _, page, _ = searched
    monkeypatch.chdir(cwd)
    code, out, err = run_cli("scale", "show", "page")
    assert code == 0, err
    verdict = out.split("\nstudy page: ")[1].splitlines()[1:]       # the lines after the trial counts
    assert len(verdict) >= 3         # the verdict, how ties were judged, whether the seeds agree on the order
    for line in verdict:
        assert f"<li>{html.escape(line)}</li>" in page


def test_units_write_plain_numbers():
    assert (units.si(7_329_000), units.si(812), units.si(66_347_960)) == ("7.33 M", "812", "66.3 M")
    assert (units.flops(3.9e8), units.flops(1.0546e9), units.flops(4.2e6)) == ("390 MFLOPs", "1.05 GFLOPs",
                                                                              "4.20 MFLOPs")
    assert (units.significant(9.996), units.significant(0.001234), units.significant(12_345)) == ("10.0", "0.00123",
                                                                                               "12,300")
    assert (units.plain(0.002), units.plain(1e-5), units.plain(2.0)) == ("0.002", "0.00001", "2")
    assert (units.duration(13.24), units.duration(245), units.duration(7384)) == ("13.2 s", "4 min 05 s",
                                                                                "2 h 03 min")
    assert units.milliseconds(12.345) == "12.3 ms" and units.interval(0.97, 0.985) == "0.9700 to 0.9850"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_the_page_fits_a_1280_pixel_window_in_chromium(searched, tmp_path):
    """The page as Chromium lays it out in a 1280 x 2000 window, every folded part opened: nothing wider than
    the window (a wide table scrolls in its box). A copy of the page gets one script that writes the widths
    into the DOM."""
    _, _, page, _ = searched
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<details>", "<details open>").replace("</body>", "<script>document.body.dataset.widths = "
                                  "document.documentElement.scrollWidth + ' ' + window.innerWidth</script></body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW},2000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-widths="(\d+) (\d+)"', dom)
    assert found, dom[-500:]
    page_width, window = map(int, found.groups())
    assert window == WINDOW and page_width <= WINDOW
