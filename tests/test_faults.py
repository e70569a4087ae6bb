"""Fault injection for bad input: every case goes through the real CLI, in-process.

Each case asserts what the user sees and what is left on disk: exit code 2, exactly one line on
stderr that names the problem and where (file, line, member or field), and no run output. The
parametrized ids are what `benchmarks/reliability.py` counts as "bad inputs tried", with the bad run
directories of tests/test_runs.py (`test_bad_run_directory_fails_cleanly`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_LORA as MODEL
from conftest import archive_members, assert_one_line_error, review, run_cli, write_tar


def write_tree(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / "aclImdb"


def csv_rows(n: int = 8) -> list[str]:
    return [f'"{review(i, i % 2)}",{"pos" if i % 2 else "neg"}' for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl_rows(n: int = 8) -> list[str]:
    return [json.dumps({"text": review(i, i % 2), "label": i % 2}) for i in range(n)]


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """`build(tmp)` writes the bad input and returns (argv, strings the error line must contain)."""

    id: str
    build: Callable[[Path], tuple[list[str], list[str]]]


def _imdb(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *MODEL, "--data", str(data), "--out", str(out), *extra]


def _table(source: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *MODEL, "--source", str(source), "--out", str(out), *extra]


def _archive_with(tmp: Path, **members: bytes) -> Path:
    extra = {k.replace("__", "/") + ".txt": v for k, v in members.items()}
    return write_tar(tmp / "aclImdb_v1.tar.gz", archive_members() | extra)


def c_missing_path(tmp: Path) -> tuple[list[str], list[str]]:
    return _imdb(tmp / "nope.tar.gz", tmp / "run"), [f"{tmp / 'nope.tar.gz'}: no such file or folder", "--data"]


def c_unreadable_member(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_tree(tmp / "x", archive_members())
    (root / "train" / "pos" / "99_9.txt").mkdir()  # a "review" that cannot be read as a file
    return _imdb(root, tmp / "run"), [f"{root / 'train' / 'pos' / '99_9.txt'}: cannot read"]


def c_truncated_archive(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return _imdb(path, tmp / "run"), [str(path), "corrupt or truncated archive"]


def c_corrupt_archive(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp)
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):  # scramble the deflate stream, keep the gzip header
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return _imdb(path, tmp / "run"), [str(path), "corrupt or truncated archive"]


def c_not_an_archive(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "aclImdb_v1.tar.gz"
    path.write_text("<html>404 Not Found</html>\n")  # what a failed download often leaves
    return _imdb(path, tmp / "run"), [str(path), "corrupt or truncated archive"]


def c_gzip_not_tar(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "aclImdb_v1.tar.gz"
    path.write_bytes(gzip.compress(b"just some text, no tar headers\n" * 40))
    return _imdb(path, tmp / "run"), [str(path), "corrupt or truncated archive"]


def c_member_not_utf8(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp, aclImdb__train__pos__77_9=b"caf\xe9 latin-1 review")
    return _imdb(path, tmp / "run"), [str(path), "member aclImdb/train/pos/77_9.txt", "not UTF-8", "byte 3"]


def c_folder_file_not_utf8(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_tree(tmp / "x", archive_members() | {"aclImdb/test/neg/5_1.txt": b"\xff\xfe\x00bad"})
    return _imdb(root, tmp / "run"), [f"{root / 'test' / 'neg' / '5_1.txt'}: not UTF-8"]


def c_layout_one_class(tmp: Path) -> tuple[list[str], list[str]]:
    members = {k: v for k, v in archive_members().items() if "/train/neg/" not in k}
    path = write_tar(tmp / "aclImdb_v1.tar.gz", members)
    return _imdb(path, tmp / "run"), [str(path), "unexpected layout", "aclImdb/train/neg/"]


def c_layout_wrong_root(tmp: Path) -> tuple[list[str], list[str]]:
    members = {k.replace("aclImdb/", "reviews/"): v for k, v in archive_members().items()}
    path = write_tar(tmp / "aclImdb_v1.tar.gz", members)
    return _imdb(path, tmp / "run"), [str(path), "unexpected layout", "expected aclImdb/"]


def c_archive_empty_review(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp, aclImdb__train__neg__42_3=b"")
    return _imdb(path, tmp / "run"), ["train/neg/42_3", "empty or whitespace-only", "data.empty=skip"]


def c_archive_whitespace_review(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp, aclImdb__test__pos__42_10=b" \n\t <br /><br />  ")
    return _imdb(path, tmp / "run"), ["test/pos/42_10", "empty or whitespace-only"]


def c_archive_huge_review(tmp: Path) -> tuple[list[str], list[str]]:
    text = "so good " * 400_000  # 3.2 MB
    path = _archive_with(tmp, aclImdb__train__pos__43_8=text.encode())
    return _imdb(path, tmp / "run"), ["train/pos/43_8", f"{len(text.strip()):,} characters", "data.max_chars=1,000,000"]


def c_csv_missing_file(tmp: Path) -> tuple[list[str], list[str]]:
    return _table(tmp / "reviews.csv", tmp / "run"), [f"{tmp / 'reviews.csv'}: no such file"]


def c_csv_is_directory(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "reviews.csv").mkdir()
    return _table(tmp / "reviews.csv", tmp / "run"), [f"{tmp / 'reviews.csv'}: cannot open"]


def c_table_unknown_type(tmp: Path) -> tuple[list[str], list[str]]:
    path = write_lines(tmp / "reviews.xlsx", ["text,label", *csv_rows()])
    return _table(path, tmp / "run"), [str(path), "unknown file type '.xlsx'"]


def c_csv_missing_column(tmp: Path) -> tuple[list[str], list[str]]:
    path = write_lines(tmp / "reviews.csv", ["text,sentiment", *csv_rows()])
    return _table(path, tmp / "run"), [f"{path}:2: missing field 'label'", "fields: text, sentiment"]


def c_csv_short_row(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    rows[5] = '"a review with no label field"'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), [f"{path}:6: missing field 'label'"]


def c_csv_label_outside(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    rows[3] = '"three stars out of five",2'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), [f"{path}:4: field 'label'", "label '2' is not one of"]


def c_csv_label_word(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    rows[7] = '"could go either way",mixed'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), [f"{path}:8: field 'label'", "'mixed'"]


def c_csv_empty_review(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    rows[2] = '"",pos'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), ["reviews.csv:3", "empty or whitespace-only", "data.empty=skip"]


def c_csv_whitespace_review(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    rows[4] = '"   \t  ",neg'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), ["reviews.csv:5", "empty or whitespace-only"]


def c_csv_huge_review(tmp: Path) -> tuple[list[str], list[str]]:
    rows = ["text,label", *csv_rows()]
    text = "so, so long " * 250_000  # 3 MB in one quoted field
    rows[6] = f'"{text}",pos'
    path = write_lines(tmp / "reviews.csv", rows)
    return _table(path, tmp / "run"), ["reviews.csv:7", f"{len(text.strip()):,} characters", "data.max_chars"]


def c_csv_not_utf8(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "reviews.csv"
    path.write_bytes(("\n".join(["text,label", *csv_rows()]) + "\n").encode() + b'"na\xefve latin-1",pos\n')
    return _table(path, tmp / "run"), [f"{path}:10", "not UTF-8"]


def c_csv_no_rows(tmp: Path) -> tuple[list[str], list[str]]:
    path = write_lines(tmp / "reviews.csv", ["text,label"])
    return _table(path, tmp / "run"), [f"{path}: no rows"]


def c_jsonl_missing_field(tmp: Path) -> tuple[list[str], list[str]]:
    rows = jsonl_rows()
    rows[4] = json.dumps({"review": "wrong key", "label": 1})
    path = write_lines(tmp / "reviews.jsonl", rows)
    return _table(path, tmp / "run"), [f"{path}:5: missing field 'text'", "fields: review, label"]


def c_jsonl_bad_json(tmp: Path) -> tuple[list[str], list[str]]:
    rows = jsonl_rows()
    rows[2] = '{"text": "unterminated, "label": 1'
    path = write_lines(tmp / "reviews.jsonl", rows)
    return _table(path, tmp / "run"), [f"{path}:3: not valid JSON"]


def c_jsonl_not_object(tmp: Path) -> tuple[list[str], list[str]]:
    rows = jsonl_rows()
    rows[1] = '["a list", 1]'
    path = write_lines(tmp / "reviews.jsonl", rows)
    return _table(path, tmp / "run"), [f"{path}:2: expected a JSON object, got list"]


def c_jsonl_label_outside(tmp: Path) -> tuple[list[str], list[str]]:
    rows = jsonl_rows()
    rows[6] = json.dumps({"text": "five stars", "label": 5})
    path = write_lines(tmp / "reviews.jsonl", rows)
    return _table(path, tmp / "run"), [f"{path}:7: field 'label'", "label 5 is not one of"]


def c_jsonl_text_not_string(tmp: Path) -> tuple[list[str], list[str]]:
    rows = jsonl_rows()
    rows[3] = json.dumps({"text": 12345, "label": 1})
    path = write_lines(tmp / "reviews.jsonl", rows)
    return _table(path, tmp / "run"), [f"{path}:4: field 'text' is not text"]


def c_model_unknown(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp)
    argv = _imdb(path, tmp / "run", "--model", "no-such-org/no-such-model")
    return argv, ["model 'no-such-org/no-such-model'", "gpt2-tiny-random"]


def c_model_folder_without_config(tmp: Path) -> tuple[list[str], list[str]]:
    path = _archive_with(tmp)
    (tmp / "my-model").mkdir()
    (tmp / "my-model" / "model.safetensors").write_bytes(b"")
    return _imdb(path, tmp / "run", "--model", str(tmp / "my-model")), ["my-model", "config.json"]


def c_lora_target_missing(tmp: Path) -> tuple[list[str], list[str]]:
    argv = _imdb(_archive_with(tmp), tmp / "run", "--set", "method.lora.target_modules=[query, value]")
    return argv, ["method.lora.target_modules", "query, value not in this gpt2 model", "it has: c_attn, c_fc, c_proj"]


def c_freeze_more_layers_than_model(tmp: Path) -> tuple[list[str], list[str]]:
    argv = _imdb(_archive_with(tmp), tmp / "run", "--method", "partial", "--set", "method.freeze_layers=7")
    return argv, ["method.freeze_layers=7", "only 2 blocks"]


def c_scheduler_unknown(tmp: Path) -> tuple[list[str], list[str]]:
    return _imdb(_archive_with(tmp), tmp / "run", "--set", "train.scheduler=cosine-ish"), ["train.scheduler", "cosine"]


def _hyper(override: list[str], expect: list[str]) -> Callable[[Path], tuple[list[str], list[str]]]:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        return _imdb(_archive_with(tmp), tmp / "run", *override), expect

    return build


def c_config_missing(tmp: Path) -> tuple[list[str], list[str]]:
    return ["train", "--config", str(tmp / "exp.yaml"), "--out", str(tmp / "run")], [f"{tmp / 'exp.yaml'}: config"]


def c_config_not_yaml(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "exp.yaml"
    path.write_text("train:\n  lr: [0.1\n")
    return ["train", "--config", str(path), "--out", str(tmp / "run")], [f"{path}:3: not valid YAML", "expected ','"]


CASES = [
    Case("data-missing-path", c_missing_path),
    Case("data-unreadable-member", c_unreadable_member),
    Case("archive-truncated", c_truncated_archive),
    Case("archive-corrupt-stream", c_corrupt_archive),
    Case("archive-not-an-archive", c_not_an_archive),
    Case("archive-gzip-not-tar", c_gzip_not_tar),
    Case("archive-member-not-utf8", c_member_not_utf8),
    Case("folder-file-not-utf8", c_folder_file_not_utf8),
    Case("archive-layout-missing-class", c_layout_one_class),
    Case("archive-layout-wrong-root", c_layout_wrong_root),
    Case("archive-empty-review", c_archive_empty_review),
    Case("archive-whitespace-review", c_archive_whitespace_review),
    Case("archive-several-mb-review", c_archive_huge_review),
    Case("table-missing-file", c_csv_missing_file),
    Case("table-is-directory", c_csv_is_directory),
    Case("table-unknown-type", c_table_unknown_type),
    Case("csv-missing-column", c_csv_missing_column),
    Case("csv-short-row", c_csv_short_row),
    Case("csv-label-outside-set", c_csv_label_outside),
    Case("csv-label-word-outside-set", c_csv_label_word),
    Case("csv-empty-review", c_csv_empty_review),
    Case("csv-whitespace-review", c_csv_whitespace_review),
    Case("csv-several-mb-review", c_csv_huge_review),
    Case("csv-not-utf8", c_csv_not_utf8),
    Case("csv-no-rows", c_csv_no_rows),
    Case("jsonl-missing-field", c_jsonl_missing_field),
    Case("jsonl-invalid-json", c_jsonl_bad_json),
    Case("jsonl-not-an-object", c_jsonl_not_object),
    Case("jsonl-label-outside-set", c_jsonl_label_outside),
    Case("jsonl-text-not-string", c_jsonl_text_not_string),
    Case("model-unknown-spec-offline", c_model_unknown),
    Case("model-folder-without-config", c_model_folder_without_config),
    Case("lora-target-not-in-model", c_lora_target_missing),
    Case("partial-freeze-more-than-blocks", c_freeze_more_layers_than_model),
    Case("scheduler-unknown", c_scheduler_unknown),
    Case("config-file-missing", c_config_missing),
    Case("config-file-not-yaml", c_config_not_yaml),
    Case("hyper-lr-not-numeric-set", _hyper(["--set", "train.lr=fast"], ["train.lr: expected a number, got 'fast'"])),
    Case("hyper-lr-not-numeric-flag", _hyper(["--lr", "fast"], ["--lr", "'fast'"])),
    Case("hyper-batch-size-not-integer", _hyper(["--set", "train.batch_size=2.5"], ["train.batch_size", "integer"])),
    Case("hyper-lr-nan", _hyper(["--set", "train.lr=nan"], ["train.lr: expected a finite number"])),
    Case("hyper-lr-negative", _hyper(["--lr", "-0.001"], ["train.lr: must be > 0"])),
    Case("hyper-batch-size-zero", _hyper(["--batch-size", "0"], ["train.batch_size: must be >= 1"])),
    Case("hyper-epochs-zero", _hyper(["--epochs", "0"], ["train.epochs: must be > 0"])),
    Case("hyper-warmup-ratio-range", _hyper(["--set", "train.warmup_ratio=1.5"], ["train.warmup_ratio", "[0, 1)"])),
    Case("hyper-lora-rank-zero", _hyper(["--set", "method.lora.r=0"], ["method.lora.r: must be >= 1"])),
    Case("hyper-lora-dropout-one", _hyper(["--set", "method.lora.dropout=1"], ["method.lora.dropout", "[0, 1)"])),
    Case("hyper-max-length-tiny", _hyper(["--max-length", "4"], ["data.max_length: must be >= 8"])),
    Case("hyper-val-size-negative", _hyper(["--val-size", "-1"], ["data.val_size: must be >= 0"])),
    Case("hyper-patience-zero", _hyper(["--set", "train.patience=0"], ["train.patience: must be >= 1"])),
    Case("hyper-unknown-method", _hyper(["--method", "magic"], ["method.name: 'magic' is not one of"])),
    Case("hyper-unknown-key", _hyper(["--set", "train.lrr=0.1"], ["unknown setting train.lrr"])),
]






@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case: Case, tmp_path: Path) -> None:
    argv, expect = case.build(tmp_path)
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, expect)
    left = sorted(p.name for p in (tmp_path / "run").iterdir()) if (tmp_path / "run").exists() else None
    assert left is None, f"a failed start left {left}"


# --------------------------------------------------------------------------- skip, never silent


@pytest.mark.parametrize("source", ["archive", "csv"])
def test_empty_reviews_skipped_with_count(source: str, tmp_path: Path) -> None:
    """data.empty=skip trains on the rest and reports how many were skipped, on stdout and in metrics."""
    if source == "archive":
        data = _archive_with(tmp_path, aclImdb__train__neg__40_1=b"  ", aclImdb__train__pos__41_9=b"<br />",
                             aclImdb__test__pos__40_9=b"")
        argv = _imdb(data, tmp_path / "run", "--set", "data.empty=skip")
    else:
        rows = ["text,label", *csv_rows(12)]
        rows[2], rows[5], rows[9] = '"",pos', '"  ",neg', '"\t",neg'
        argv = _table(write_lines(tmp_path / "r.csv", rows), tmp_path / "run", "--set", "data.empty=skip")
    argv += ["--epochs", "0.5", "--set", "train.baseline=false", "--val-size", "0"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert "skipped {'empty': 3}" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["skipped"] == {"empty": 3}
    n = sum(metrics["data"][s]["n"] for s in ("train", "validation", "test"))
    assert n == (len(archive_members()) + 3 if source == "archive" else 12) - 3


