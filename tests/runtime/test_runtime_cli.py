"""The mtl-deploy-runtime command: the flags of `mtl-deploy predict`, and the same answers
(its refusals are in tests/test_bad_input.py, row for row with `mtl-deploy predict`)."""

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.runtime.cli import main, parser


def test_predict_takes_the_flags_of_mtl_deploy_predict():
    ours = next(a for a in parser()._actions if a.dest == "command").choices["predict"]
    flags = {flag for action in ours._actions for flag in action.option_strings} - {"-h", "--help"}
    theirs = typer.main.get_command(app).commands["predict"]
    assert flags == {flag for p in theirs.params if p.param_type_name == "option" for flag in p.opts + p.secondary_opts}


@pytest.mark.parametrize("options", [[], ["--task", "segment", "--logits"], ["--output", "{out}.json"],
                                     ["--output", "{out}.csv", "--no-header"]])
def test_predict_answers_as_mtl_deploy_predict(export_dir, tmp_path, capsys, options):
    rows = np.random.default_rng(4).standard_normal((5, 50)).astype(np.float32)
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",")
    answers = []
    for name, command in [("typer", None), ("runtime", main)]:
        args = ["predict", str(export_dir), "--input", str(tmp_path / "rows.csv"),
                *(o.format(out=tmp_path / name) for o in options)]
        if command is None:
            result = CliRunner().invoke(app, args)
            code, printed = result.exit_code, result.output
        else:
            code, printed = command(args), capsys.readouterr().out
        assert code == 0, printed
        written = sorted(tmp_path.glob(f"{name}.*"))
        answers.append((printed.replace(name, "NAME"), [path.read_text() for path in written]))
    assert answers[0] == answers[1]
