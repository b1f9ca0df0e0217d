"""What the terminal shows: tables on stdout in the format asked for, progress on stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:          # pandas loads with the first table, not with `nas --help`
    import pandas as pd

FORMATS = ("table", "json", "csv")


def print_table(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    else:
        sys.stdout.write(df.to_string(index=False) + "\n")


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
