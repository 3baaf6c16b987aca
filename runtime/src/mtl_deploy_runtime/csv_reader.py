"""The one CSV reader, for training data, export samples and rows to predict (numpy and
the csv module only, so the runtime can use it without torch). Its rules:

- The file is UTF-8; a byte-order mark is dropped, never read as part of the first cell.
- `header=True`: the first row names the columns (training CSVs need one). `False`: every
  row is data. `None` (prediction): the first row is a header when any non-empty cell of
  it is not a number, so a header made only of numbers must be declared.
- Header names are stripped; an empty or repeated name is refused, naming it.
- Empty lines are skipped; every other row has as many fields as the first row.
- Every value read is a number (Python's `float` syntax); an empty cell or anything else
  is refused, naming its line and column. Rows stay rows: one column gives (N, 1).
- Anything the csv module refuses (a field over its size limit, an unclosed quote) or a
  file that is not UTF-8 is refused in one line, and no message pastes a whole field.
"""

from __future__ import annotations

import csv
import reprlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_deploy_runtime.errors import InputError, MtlDeployError


@dataclass(frozen=True)
class Table:
    """A CSV's header (or None) and its rows of raw cells, each with its first line number."""

    path: Path
    header: list[str] | None
    rows: list[list[str]]
    lines: list[int]

    @property
    def width(self) -> int:
        return len(self.rows[0])

    def column_name(self, index: int) -> str:
        return repr(self.header[index]) if self.header else str(index + 1)

    def numbers(self, columns: list[int] | None = None, dtype=np.float64) -> np.ndarray:
        """(rows, columns) values of `columns` (indices; every column when None)."""
        columns = list(range(self.width)) if columns is None else list(columns)
        values = []
        for row, line in zip(self.rows, self.lines):
            try:
                values.append([float(row[j]) for j in columns])
            except ValueError:
                raise self._bad_cell(row, line, columns) from None
        return np.array(values, dtype=dtype).reshape(len(values), len(columns))

    def _bad_cell(self, row: list[str], line: int, columns: list[int]) -> InputError:
        for j in columns:
            cell = row[j]
            where = f"{self.path}: line {line}, column {self.column_name(j)}"
            if not cell.strip():
                return InputError(f"{where} is empty; fill it in or drop the row")
            if not is_number(cell):
                return InputError(f"{where}: {reprlib.repr(cell)} is not a number; fix or drop the row")
        raise AssertionError("no bad cell in a row that failed to parse")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: str | Path, header: bool | None = None) -> Table:
    """The table in the CSV at `path`, its header decided by `header` (see the module's rules)."""
    path = Path(path)
    rows, lines = _rows(path)
    if not rows:
        raise InputError(f"{path} is empty; it needs {'a header row and ' if header else ''}data rows")
    if header is None:
        header = any(cell.strip() and not is_number(cell) for cell in rows[0])
    names = [cell.strip() for cell in rows[0]] if header else None
    if names is not None:
        _check_names(path, names)
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise InputError(f"{path} has a header but no data rows")
    width = len(names) if names is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise InputError(f"{path}: line {line} has {len(row)} field(s), the {'header' if header else 'first row'} "
                             f"has {width}; give every row the same columns")
    return Table(path, names, rows, lines)


def _rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """Every non-empty row and the line it starts on."""
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return rows, lines
                except csv.Error as err:
                    raise InputError(f"{path}: line {reader.line_num} is not readable CSV ({err}); "
                                     "check its quotes and delimiters") from None
                if row:
                    rows.append(row)
                    lines.append(start)
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise MtlDeployError(f"cannot read {path} ({err.strerror})") from None


def _check_names(path: Path, names: list[str]) -> None:
    if not all(names):
        raise InputError(f"{path}: column {names.index('') + 1} of the header has no name; name every column "
                         "(pandas writes an unnamed index column unless to_csv(index=False))")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise InputError(f"{path}: the header has duplicate column name(s) {reprlib.repr(repeated)}; "
                         "give every column its own name")
