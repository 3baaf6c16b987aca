"""The one CSV reader and its rules, through both of its users: `read_rows` (prediction,
header optional) and the training loaders `load_csv` / `load_inputs` (header required)."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.data import TaskSpec, load_csv
from mtl_deploy.data.loaders import load_inputs
from mtl_deploy.errors import InputError
from mtl_deploy.runtime import read_rows

BOM = b"\xef\xbb\xbf"
BIG = csv.field_size_limit() + 10

# (file bytes, what both readers must say): every rule that refuses, one row each
REFUSED = [
    (b"a,a,b\n1,2,3\n", "the header has duplicate column name(s) ['a']; give every column its own name"),
    (b",a,b\n0,1,2\n", "column 1 of the header has no name"),
    (b"a,b\n", "has a header but no data rows"),
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"a,b\n1,2\n3\n", "line 3 has 1 field(s), the header has 2"),
    (b"a,b\n1,2\n\n3,4,5\n", "line 4 has 3 field(s)"),  # blank lines are skipped, and counted
    (b"a,b\n1,\n", "line 2, column 'b' is empty"),
    (b"a,b\n1,x\n", "line 2, column 'b': 'x' is not a number"),
    (b'a,b\n"1\n",2\n3,x\n', "line 4, column 'b': 'x' is not a number"),  # a quoted newline is one row
    (b"a,b\n1,2\n3,4" + b"5" * 200 + b"z\n", "is not a number"),
    (b'a,b\n1,"' + b"9" * BIG + b'"\n', "is not readable CSV (field larger than field limit"),
    (b'a,b\n1,"2\n', "is not readable CSV"),
    (b'a,b\n1,"2"3\n', "is not readable CSV"),
    (b"a,b\n1,\xff\n", "is not UTF-8 text"),
    (b",".join(b"c%d" % (i % 3000) for i in range(6000)) + b"\n" + b",".join([b"1"] * 6000) + b"\n",
     "the header has duplicate column name(s) ['c0', 'c1'"),
]


def read_for_training(path):
    return load_inputs(path, (2,), [])


def read_for_prediction(path):
    return read_rows(path, header=True)


@pytest.mark.parametrize("reader", [read_for_training, read_for_prediction, read_rows])
@pytest.mark.parametrize("content, message", REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_each_refusal_is_one_bounded_line(tmp_path, reader, content, message):
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        reader(path)
    text = str(caught.value)
    assert message in text and text.startswith(str(path)), text
    assert "\n" not in text and len(text) < len(str(path)) + 200, text


def write(tmp_path, content: bytes, name="rows.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# (file bytes, header given to read_rows, the rows it reads)
READ = [
    (BOM + b"1,2\n3,4\n", None, [[1, 2], [3, 4]]),  # a BOM never costs the first row
    (BOM + b"a,b\n3,4\n", None, [[3, 4]]),
    (b"a,b\n1,2\n", None, [[1, 2]]),  # a header of names is detected
    (b"10,20\n1,2\n", True, [[1, 2]]),  # a header of numbers is declared
    (b"10,20\n1,2\n", None, [[10, 20], [1, 2]]),  # ... or it is data
    (b"x,y\n1,2\n", True, [[1, 2]]),
    (b"1,2\n3,4\n", False, [[1, 2], [3, 4]]),
    (b"5\n6\n7\n", None, [[5], [6], [7]]),  # one feature: N rows of 1, not one row of N
    (b"f\n5\n6\n", None, [[5], [6]]),
    (b"5\n", None, [[5]]),
    (b"1,2\r\n\r\n3, 4 \r\n", None, [[1, 2], [3, 4]]),  # CRLF, blank lines, spaces around numbers
    (b'"1","2"\n', None, [[1, 2]]),  # quoted numbers are numbers
    (b"1,,3\n", None, InputError),  # an empty cell does not make a header: line 1, column 2 is empty
    (b"a,b\n1,2\n", False, InputError),  # forced data: 'a' is not a number
]


@pytest.mark.parametrize("content, header, want", READ)
def test_read_rows_follows_the_rules(tmp_path, content, header, want):
    path = write(tmp_path, content)
    if want is InputError:
        with pytest.raises(InputError, match=r"line 1, column \d"):
            read_rows(path, header)
        return
    rows = read_rows(path, header)
    assert rows.dtype == np.float32 and rows.ndim == 2
    np.testing.assert_array_equal(rows, np.array(want, dtype=np.float32))


def test_training_csvs_strip_the_bom_and_keep_one_feature_as_a_column(tmp_path):
    path = write(tmp_path, BOM + b"a,price\n1,2.5\n3,4.5\n5,6.5\n")
    data = load_csv(path, [TaskSpec("price", "regression")])
    assert data.x.shape == (3, 1) and data.x[:, 0].tolist() == [1, 3, 5]
    assert data.targets["price"].flatten().tolist() == [2.5, 4.5, 6.5]
    assert load_inputs(path, (1,), ["price"]).shape == (3, 1)
    numeric = write(tmp_path, b"1,2\n3,4\n", "numeric.csv")  # a training CSV's first row is always its header
    assert load_csv(numeric, [TaskSpec("2", "regression")]).x.tolist() == [[3.0]]


def test_duplicate_columns_are_never_silently_merged(tmp_path):
    path = write(tmp_path, b"a,price,a\n1,2,3\n4,5,6\n")
    with pytest.raises(InputError, match=r"duplicate column name\(s\) \['a'\]"):
        load_csv(path, [TaskSpec("price", "regression")])


runner = CliRunner()


def test_predict_header_flags(export_dir, tmp_path):
    rows = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    numbers = ",".join(str(i) for i in range(50))
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    path = write(tmp_path, (numbers + "\n" + body + "\n").encode())
    want = read_rows(path, header=True)
    np.testing.assert_array_equal(want, rows)
    declared = runner.invoke(app, ["predict", str(export_dir), "--input", str(path), "--header",
                                   "--output", str(tmp_path / "a.npz")])
    assert declared.exit_code == 0, declared.output
    assert len(np.load(tmp_path / "a.npz")["price"]) == 3
    forced = runner.invoke(app, ["predict", str(export_dir), "--input", str(path), "--no-header",
                                 "--output", str(tmp_path / "b.npz")])
    assert forced.exit_code == 0 and len(np.load(tmp_path / "b.npz")["price"]) == 4
    named = write(tmp_path, b"a,b\n1,2\n", "named.csv")
    refused = runner.invoke(app, ["predict", str(export_dir), "--input", str(named), "--no-header"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert refused.stderr.strip() == f"error: {named}: line 1, column 1: 'a' is not a number; fix or drop the row"
