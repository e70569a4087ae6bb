"""The Python API (api.py): the README's "Python" block, run as written (with the IMDb slice for data), and
what it promises: a run directory like the CLI's, the same predictions after `load`, a bench's rows as runs."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

import sentitune
from sentitune.errors import ConfigError


def readme_block(heading: str) -> str:
    """The first ```python block under a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, f"README: no python block under '## {heading}'"
    return found.group(1)


def test_the_readme_python_block_runs(tmp_path: Path, imdb_slice_archive: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SENTITUNE_IMDB", str(imdb_slice_archive))
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_block("Python"), "README.md", "exec"), namespace)  # noqa: S102
    run, again, bench = namespace["run"], namespace["again"], namespace["bench"]
    assert run.path == Path("runs/api-probe") and (run.path / "model").is_dir()
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    assert run.accuracy == run.metrics["test"]["accuracy"] and f"test accuracy {run.accuracy:.3f}" in out.getvalue()
    assert again.config == run.config
    first = namespace["first"]
    assert first.label in ("negative", "positive") and sum(first.probs.values()) == pytest.approx(1.0)
    # the same probabilities as `sentitune predict` on the same run directory
    code, stdout, err = run_cli(["predict", str(run.path), "A wonderful, moving film.", "--json"])
    assert code == 0, err
    assert json.loads(stdout)["probs"] == pytest.approx(again.predict(["A wonderful, moving film."])[0].probs,
                                                        abs=1e-6)
    assert set(bench.runs) == {"tfidf", "probe"} and not bench.failed
    rows = {r["name"]: r for r in bench.results["rows"]}
    assert rows["probe"]["accuracy"] == bench.runs["probe"].accuracy
    assert bench.runs["probe"].config.method.name == "probe"


def test_configs_from_dicts_objects_and_keywords(tmp_path: Path) -> None:
    cfg = sentitune.experiment({"model": {"spec": "minilm"}, "train": {"epochs": 2}}, method__name="probe",
                               **{"data.max_length": 64})
    assert (cfg.model.spec, cfg.train.epochs, cfg.method.name, cfg.data.max_length) == ("minilm", 2, "probe", 64)
    again = sentitune.experiment(cfg, train__lr=0.1)
    assert again.train.lr == 0.1 and again.model.spec == "minilm"
    with pytest.raises(ConfigError, match="method.name"):
        sentitune.experiment(method__name="no-such-method")
    with pytest.raises(AttributeError):
        sentitune.no_such_function  # noqa: B018
