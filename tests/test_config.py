"""The experiment config (sentitune.config): YAML round-trip, typed key=value overrides, errors that name the field
(also through the CLI: a seed out of range, head_tokens that do nothing, a run name that is not one folder, a
folder as --config), and the shipped configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_SETTINGS as T
from conftest import assert_one_line_error, run_cli

from sentitune.config import ConfigError, ExperimentConfig, PhaseConfig, dump_yaml, load_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_validate() -> None:
    cfg = load_config()
    assert cfg == ExperimentConfig()
    assert [p.method for p in cfg.phases()] == ["lora"]


def _kind(path: Path) -> str:
    """"bench" (rows/matrix), "search" (a search space) or "experiment"."""
    raw = yaml.safe_load(path.read_text())
    return "bench" if {"rows", "matrix"} & set(raw) else "search" if "search" in raw else "experiment"


# configs/ is laid out by schema (configs/README.md): each folder is read by one loader.
FOLDERS = {"experiments": "experiment", "benches": "bench", "searches": "search"}
EXPERIMENTS = sorted((CONFIGS / "experiments").rglob("*.yaml"))
BENCHES = sorted((CONFIGS / "benches").rglob("*.yaml"))
SEARCHES = sorted((CONFIGS / "searches").rglob("*.yaml"))


def test_configs_are_laid_out_by_schema() -> None:
    """Every file under configs/ is the README or a YAML in the folder of its schema: a bench file dropped
    into experiments/ (or an experiment at the top level) fails here, before its loader test names it."""
    files = sorted(p for p in CONFIGS.rglob("*") if p.is_file())
    stray = [str(p.relative_to(CONFIGS)) for p in files
             if p != CONFIGS / "README.md" and (p.suffix != ".yaml" or p.relative_to(CONFIGS).parts[0] not in FOLDERS)]
    assert not stray, f"not in configs/{{{','.join(FOLDERS)}}}/ as .yaml: {stray}"
    misplaced = [str(p.relative_to(CONFIGS)) for p in files if p.suffix == ".yaml"
                 and _kind(p) != FOLDERS[p.relative_to(CONFIGS).parts[0]]]
    assert not misplaced, f"in the folder of another schema: {misplaced}"
    assert EXPERIMENTS and BENCHES and SEARCHES


def test_the_published_and_offline_benches_are_shipped() -> None:
    names = {str(p.relative_to(CONFIGS / "benches")) for p in BENCHES}
    assert {"published.yaml", "offline.yaml", "offline-results.yaml"} <= names


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_bench_files_load_and_fit_their_models(path: Path) -> None:
    """Every row of a shipped bench builds a valid config; offline rows fit the packaged model's depth."""
    from transformers import AutoConfig

    from sentitune.benching import load_bench
    from sentitune.models.packaged import PACKAGED
    from sentitune.models.registry import resolve

    bench = load_bench(path)
    assert bench.rows
    for row in bench.rows:
        cfg = row.config
        if cfg.model.spec in PACKAGED and cfg.method.name not in ("tfidf", "zero-shot"):
            n = AutoConfig.from_pretrained(resolve(cfg.model.spec).source).num_hidden_layers
            if any(p.method == "partial" for p in cfg.phases()):
                assert cfg.method.freeze_layers < n, row.name
            assert (cfg.method.lora.top_layers or 0) <= n, row.name


def _published_doc() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("published_doc", CONFIGS.parent / "benchmarks" / "published_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_published_row_has_an_offline_counterpart_in_the_results_doc() -> None:
    """benchmarks/published_doc.py maps each published row to a row of configs/benches/offline.yaml (full size,
    estimated) and to the measured row that answers it: of the matrix (offline-results.yaml) or of
    published-measured.yaml, the same method on the same stand-in model."""
    from sentitune.benching import load_bench

    module = _published_doc()
    published = [r.name for r in load_bench(CONFIGS / "benches" / "published.yaml").rows]
    offline = {r.name: r.config for r in load_bench(CONFIGS / "benches" / "offline.yaml").rows}
    measured = {r.name: r.config for bench in ("offline-results", "published-measured")
                for r in load_bench(CONFIGS / "benches" / f"{bench}.yaml").rows}
    assert sorted(module.COUNTERPARTS) == sorted(published)
    for name, (counterpart, here) in module.COUNTERPARTS.items():
        assert counterpart in offline, name
        assert here in measured, name
        assert measured[here].method.name == offline[counterpart].method.name, name
        assert measured[here].model.spec == offline[counterpart].model.spec or measured[here].method.name == "tfidf"


def test_published_setups_say_what_each_stand_in_changes() -> None:
    """RESULTS.md sets each published setup beside its stand-in's: the setup is read from the configs, and the
    stand-in's column names only what differs (model, frozen blocks, targets, sizes), not the shared schedule."""
    from sentitune.benching import load_bench

    module = _published_doc()
    published = {r.name: r.config for r in load_bench(CONFIGS / "benches" / "published.yaml").rows}
    measured = {r.name: r.config for r in load_bench(CONFIGS / "benches" / "published-measured.yaml").rows}
    theirs = module.setup(published["gpt2-partial"])
    assert theirs["method"] == "partial: embeddings + blocks 1-10 frozen"
    assert theirs["head"] == "1 logit + BCE, last pooling"
    assert theirs["data"] == "22,500 / 2,500 / 25,000, 512 tokens (head)"
    changed = module._differences(module.setup(measured["smollm2-partial-1k"]), theirs)
    assert changed == ("model: smollm2-135m; method: partial: embeddings + blocks 1-28 frozen; "
                       "data: 1,000 / 300 / 500, 512 tokens (head)")
    def differences(here: str, there: str) -> str:
        return module._differences(module.setup(measured[here]), module.setup(published[there]))

    lora = differences("smollm2-lora-last2-1k", "gpt2-lora-last2")
    assert "q_proj/k_proj/v_proj, top 2 blocks" in lora and "schedule" not in lora
    assert differences("minilm-lora-5k", "bert-lora-5k") == "model: minilm"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.name == raw["name"]
    assert cfg.model.spec == raw["model"]["spec"]
    out = tmp_path / "config.yaml"
    out.write_text(dump_yaml(cfg))
    assert to_dict(load_config(out)) == to_dict(cfg)


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_search_files_load(path: Path) -> None:
    """Every shipped search file loads (load_search builds its trial and final configs; nothing runs)."""
    from sentitune.search import load_search

    search = load_search(path)
    assert search.space and search.base is not None and search.base.is_file()
    assert load_config(search.base).name


def test_round_trip_keeps_every_non_default_value(tmp_path: Path) -> None:
    cfg = load_config(overrides=[
        "name=rt", "method.name=two-phase", "method.phases=[{method: full, epochs: 0.5, lr: 1e-5}, {method: probe}]",
        "method.lora.target_modules=[query, value]", "data.train_size=null", "data.head_tokens=32",
        "data.truncation=head+tail", "train.lr=3.0e-5", "train.patience=2", "model.head=sigmoid",
    ])
    out = tmp_path / "c.yaml"
    out.write_text(dump_yaml(cfg))
    again = load_config(out)
    assert again == cfg
    assert again.method.phases == [PhaseConfig("full", 0.5, 1e-5), PhaseConfig("probe", 1.0, None)]
    # A phase without its own lr inherits train.lr; with one, keeps it.
    assert [p.lr for p in again.phases()] == [1e-5, 3e-5]


def test_overrides_are_typed_by_field() -> None:
    cfg = load_config(overrides=[
        "data.train_size=100",  # int
        "data.val_size=0.25",  # float
        "train.epochs=2",  # int literal into a float field
        "train.lr=5e-4",  # YAML 1.1 reads this as a string; the float field still parses it
        "data.clean_html=false",  # bool
        "method.lora.target_modules=query,value",  # comma list into list[str]
        "model.spec=123",  # a number into a str field stays the text
        "data.eval_size=null",  # None into an optional field
    ])
    assert cfg.data.train_size == 100 and isinstance(cfg.data.train_size, int)
    assert cfg.data.val_size == 0.25
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.data.clean_html is False
    assert cfg.method.lora.target_modules == ["query", "value"]
    assert cfg.model.spec == "123"
    assert cfg.data.eval_size is None


def test_overrides_beat_the_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: file\ntrain:\n  batch_size: 8\n  seed: 1\n")
    cfg = load_config(f, ["train.seed=7"])
    assert (cfg.name, cfg.train.batch_size, cfg.train.seed) == ("file", 8, 7)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=-1", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("data.clean_html=maybe", "data.clean_html"),
        ("data.truncation=middle", "data.truncation"),
        ("data.val_size=-0.1", "data.val_size"),
        ("data.val_size=2.5", "data.val_size"),
        ("data.head_tokens=-3", "data.head_tokens"),
        ("data.max_length=4", "data.max_length"),
        ("method.name=adapter", "method.name"),
        ("method.lora.r=0", "method.lora.r"),
        ("method.lora.dropout=1.5", "method.lora.dropout"),
        ("method.lora.target_modules={a: 1}", "method.lora.target_modules"),
        ("model.pooling=max", "model.pooling"),
        ("train.warmup_ratio=1", "train.warmup_ratio"),
        ("train.patience=0", "train.patience"),
        ("data.nonsense=1", "data.nonsense"),
        ("data=5", "data"),
    ],
)
def test_validation_errors_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_two_phase_needs_phases() -> None:
    with pytest.raises(ConfigError, match="method.phases"):
        load_config(overrides=["method.name=two-phase"])
    with pytest.raises(ConfigError, match=r"method.phases\[0\].method"):
        load_config(overrides=["method.name=two-phase", "method.phases=[{method: two-phase}]"])


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: run\n  bad: indent\ntrain: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: not valid YAML \(mapping values are not allowed here\)$"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["train.lr"])


# ------------------------------------------------------------------------------ settings through the CLI


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_2_a_seed_out_of_range_is_one_line(seed: str, tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--model", "gpt2-tiny-random", *T, "--seed", seed, "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, ["train.seed", "0..4294967295", seed])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("sets", "expect"), [
    (["--truncation", "head+tail", "--set", "data.head_tokens=500"], ["data.head_tokens", "0..63", "500"]),
    (["--truncation", "head", "--set", "data.head_tokens=16"], ["data.head_tokens", "head+tail"]),
], ids=["longer-than-max-length", "without-head+tail"])
def test_12_head_tokens_that_do_nothing_are_refused(sets: list[str], expect: list[str], tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--model", "gpt2-tiny-random", *T, *sets, "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, expect)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["..", "../escaped", "/tmp/elsewhere", "a/b", " padded "])
def test_a_run_name_is_one_folder_under_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": name, "method": {"name": "tfidf"}}))
    code, _, err = run_cli(["train", "--config", str(config), "--print-config"])
    assert_one_line_error(code, err, ["name:", "not a plain folder name"])


def test_config_given_a_folder_says_so(tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--config", str(tmp_path), "--print-config"])
    assert_one_line_error(code, err, [f"{tmp_path}: is a folder", "YAML file"])
