"""Many workers on one search and one bench: real `sentitune` processes started together against a real
PostgreSQL server (tests/pgserver.py), sharing the trials and the rows, none run twice; claims taken over when
their heartbeat is stale (or their worker is a dead process of this machine), on SQLite and PostgreSQL; and a
search worker killed with SIGKILL mid-trial whose trial is failed by Optuna's heartbeat and redone."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from conftest import BENCH_COMMON, assert_one_line_error, run_cli, write_bench
from test_search import COMMON, lines, write_search

from sentitune.claims import GRACE_SECONDS, Claims, local_and_gone

CLI = "import sys; from sentitune.cli import main; sys.exit(main(sys.argv[1:]))"


def start(args: list[str], log: Path) -> subprocess.Popen:
    """`sentitune ARGS` as its own process (stdout and stderr into `log`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env)


def finish(workers: list[tuple[subprocess.Popen, Path]], timeout: float = 240) -> list[str]:
    """Wait for every worker; their outputs (each must exit 0)."""
    texts = []
    for process, log in workers:
        code = process.wait(timeout=timeout)
        texts.append(log.read_text())
        assert code == 0, texts[-1]
    return texts


def dead_pid() -> int:
    """The pid of a process of this machine that has ended."""
    pid = subprocess.Popen(["true"])
    pid.wait()
    return pid.pid


# ------------------------------------------------------------------------------ claims, no training


@pytest.fixture(params=["sqlite", "postgresql"])
def claims_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'claims.db'}"
    return request.getfixturevalue("postgres_url")


def age(url: str, key: str, seconds: float) -> None:
    """Make a claim's heartbeat `seconds` older, as if its worker had stopped beating that long ago."""
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE sentitune_claims SET heartbeat = heartbeat - :s WHERE key = :k"),
                  {"s": seconds, "k": key})
    engine.dispose()


def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not(claims_url: str) -> None:
    first, second = Claims(claims_url, grace=60), Claims(claims_url, grace=60)
    assert first.try_claim("row")[0]
    taken, holder = second.try_claim("row")
    assert not taken and holder is not None and holder.worker == first.worker and holder.state == "running"
    assert first.beat("row") and not second.beat("row")
    age(claims_url, "row", 30)  # within the grace period: still held
    assert not second.try_claim("row")[0]
    age(claims_url, "row", 60)  # 90 s without a beat: stale
    assert second.try_claim("row")[0]
    assert not first.beat("row") and second.beat("row")  # the first worker has lost it
    assert first.get("row").worker == second.worker
    # A finished claim is taken again (its run directory decides whether there is work), except a failure in
    # another worker during this round (`since`): that one stands until the next start.
    second.finish("row", "failed", "boom")
    assert not first.try_claim("row", since=first.started)[0]
    assert first.try_claim("row")[0]


def test_a_claim_finished_before_a_worker_opened_is_an_earlier_rounds(claims_url: str) -> None:
    """A row finished and a new bench started within the same second (fast rows do this): the new worker must
    see an earlier round's row (skipped), not one another worker did in its round (left) - the clock has
    sub-second steps and the bound is strict."""
    earlier = Claims(claims_url)
    with earlier.try_hold("row") as held:
        held.done()
    later = Claims(claims_url)
    assert not later.this_round(later.get("row"))
    time.sleep(0.05)
    with earlier.try_hold("row") as held:  # a done claim is taken again; finished now, after `later` started
        held.done()
    assert later.this_round(later.get("row"))
    assert later.started % 1 != 0 or later.now() % 1 != 0  # the clock is not whole seconds


def test_a_claim_of_a_dead_local_process_is_taken_at_once(claims_url: str) -> None:
    gone = f"{socket.gethostname()}:{dead_pid()}:abcdef"
    assert local_and_gone(gone) and not local_and_gone(f"{socket.gethostname()}:{os.getpid()}:abcdef")
    assert not local_and_gone(f"another-machine:{dead_pid()}:abcdef")  # judged by its heartbeat only
    dead, elsewhere, me = Claims(claims_url), Claims(claims_url), Claims(claims_url)
    dead.worker, elsewhere.worker = gone, f"another-machine:{dead_pid()}:abcdef"
    assert dead.try_claim("a")[0] and elsewhere.try_claim("b")[0]
    assert me.try_claim("a")[0]  # fresh heartbeat, but its process is gone
    assert not me.try_claim("b")[0]  # fresh heartbeat on another machine: held


def test_racing_workers_take_a_stale_claim_once(claims_url: str) -> None:
    Claims(claims_url, grace=5).try_claim("row")
    age(claims_url, "row", 60)
    workers = [Claims(claims_url, grace=5) for _ in range(6)]
    won: list[bool] = []
    barrier = threading.Barrier(len(workers))

    def race(c: Claims) -> None:
        barrier.wait()
        won.append(c.try_claim("row")[0])

    threads = [threading.Thread(target=race, args=(c,)) for c in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 5 + [True]


def test_a_held_claim_beats_while_held_and_is_released_by_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    claims = Claims(url, grace=4)  # a beat every second
    with claims.try_hold("row") as held:
        age(url, "row", 100)
        time.sleep(2.5)
        assert Claims(url, grace=4).try_hold("row") is None  # the thread beat again: not stale
        held.done()
    assert claims.get("row").state == "done"
    with pytest.raises(RuntimeError), claims.try_hold("other"):
        raise RuntimeError("a bug")
    assert claims.get("other") is None  # released: the next worker takes it at once


def test_the_help_explains_many_workers() -> None:
    for command in ("search", "bench"):
        code, stdout, _ = run_cli([command, "--help"])
        assert code == 0 and "Many workers" in stdout and "--grace" in stdout and "PostgreSQL" in stdout
        assert f"[{GRACE_SECONDS}]" in stdout.replace("\n", " ").replace("  ", " ")
    assert "--workers-db" in run_cli(["bench", "--help"])[1]


# ------------------------------------------------------------------------------ two search workers


def tiny_search(archive: Path, trials: int) -> dict:
    """Only a categorical space: trials share directories (equal settings), so claims on them are needed."""
    return {"name": "shared", "set": [*COMMON, f"data.path={archive}", "data.train_size=32", "train.batch_size=8"],
            "trial_set": ["data.train_size=24"],
            "search": {"trials": trials, "seed": 0, "space": {"method.lora.r": [2, 4]}}}


def test_two_search_workers_share_one_study_on_postgresql(tmp_path: Path, imdb_slice_archive: Path,
                                                          postgres_url: str) -> None:
    path = write_search(tmp_path, tiny_search(imdb_slice_archive, trials=3))
    out = tmp_path / "out"
    args = ["search", str(path), "--out", str(out), "--storage", postgres_url, "--no-progress"]
    texts = finish([(start(args, tmp_path / f"w{i}.log"), tmp_path / f"w{i}.log") for i in range(2)])
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # exactly --trials, none redone
    assert [t.number for t in study.trials] == [0, 1, 2]
    done = [lines(text, "[trial ") for text in texts]
    assert all(done) and sorted(int(re.match(r"\[trial (\d+)\]", x)[1]) for d in done for x in d) == [0, 1, 2]
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers ran trials
    # Each trial directory was trained by one worker once; equal settings later were read back.
    ran = [re.search(r"\((trials/trial-\w+)\)", x)[1] for d in done for x in d if ": ran," in x]
    assert len(ran) == len(set(ran)) == len({t.user_attrs["run"] for t in study.trials})
    assert all(": ran," in x or ": read back," in x for d in done for x in d), done
    # best/ trained once: one worker ran it, the other read it back.
    finals = sorted(next(x for x in text.splitlines() if x.startswith("best: ")).split(": ")[2][:7] for text in texts)
    assert finals == ["ran; te", "skipped"], texts
    assert json.loads((out / "search.json").read_text())["best"]["test"]["n"] == 16
    held = Claims(postgres_url).all("search:shared:")
    assert {c.state for c in held} == {"done"} and {c.key for c in held} >= {"search:shared:best"}


def test_a_killed_search_worker_s_trial_is_failed_by_heartbeat_and_redone(tmp_path: Path,
                                                                          imdb_slice_archive: Path) -> None:
    data = tiny_search(imdb_slice_archive, trials=1)
    path, out = write_search(tmp_path, data), tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    worker = start(["search", str(path), "--out", str(out), "--no-progress", "--grace", "2"], tmp_path / "w.log")
    query = ("SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
             "WHERE t.state = 'RUNNING' AND a.key = 'worker'")
    running: list[tuple[int]] = []
    try:
        deadline = time.monotonic() + 120
        while not running and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(out / "study.db")) as db:
                running = db.execute(query).fetchall()  # a trial asked and owned: it is training now
        assert running and worker.poll() is None, (tmp_path / "w.log").read_text()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    study = optuna.load_study(study_name="shared", storage=storage)
    stale = study.trials[running[0][0]]
    # As if it had run on another machine: only its heartbeat (none for 2 s) can tell it is gone.
    study._storage.set_trial_user_attr(stale._trial_id, "worker", "another-machine:1:abcdef")
    code, stdout, err = run_cli(["search", str(path), "--out", str(out), "--no-progress", "--grace", "2"])
    assert code == 0, stdout + err
    assert f"trial {stale.number} was left running" in stdout
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == stale.params  # redone with the same settings
    (line,) = lines(stdout, "[trial ")
    assert line.startswith("[trial 1]") and (": ran," in line or ": resumed," in line), stdout


# ------------------------------------------------------------------------------ two bench workers


def test_two_bench_workers_split_the_rows_on_postgresql(tmp_path: Path, imdb_slice_archive: Path,
                                                        postgres_url: str) -> None:
    path = write_bench(tmp_path, {
        "name": "shared", "set": [*BENCH_COMMON, f"data.path={imdb_slice_archive}"],
        "rows": [{"name": "lora", "set": ["method.name=lora", "data.train_size=32"]},
                 *({"name": f"tfidf-{n}", "set": ["method.name=tfidf", f"method.tfidf.max_features={n}"]}
                   for n in (500, 1000))],
    })
    out = tmp_path / "out"
    args = ["bench", str(path), "--out", str(out), "--workers-db", postgres_url, "--no-progress"]
    texts = finish([(start(args, tmp_path / f"w{i}.log"), tmp_path / f"w{i}.log") for i in range(2)])
    rows = ["lora", "tfidf-500", "tfidf-1000"]
    ran = {row: [i for i, text in enumerate(texts) if re.search(rf"\] {row}: ran", text)] for row in rows}
    assert all(len(who) == 1 for who in ran.values()), texts  # each row trained by exactly one worker
    assert {who[0] for who in ran.values()} == {0, 1}, texts  # and both workers trained some
    for row, (i,) in ran.items():
        assert re.search(rf"\] {row}: left: (running in|done by) ", texts[1 - i]), texts[1 - i]
    claims = {c.key: c for c in Claims(postgres_url).all("bench:shared:")}
    assert {k: c.state for k, c in claims.items() if k != "bench:shared:results"} == {
        f"bench:shared:{r}": "done" for r in rows}
    assert len({claims[f"bench:shared:{r}"].worker for r in rows}) == 2  # who ran it, recorded
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["name"] for r in results["rows"]) == sorted(rows) and not results["not_reported"]
    assert all((out / r / "metrics.json").is_file() for r in rows) and (out / "report.html").is_file()


def test_a_bad_workers_db_or_grace_is_one_line(tmp_path: Path) -> None:
    path = write_bench(tmp_path, {"name": "b", "rows": [{"name": "t", "set": ["method.name=tfidf"]}]})
    code, _, err = run_cli(["bench", str(path), "--out", str(tmp_path / "out"),
                            "--workers-db", f"sqlite:///{tmp_path}/no/such/folder/claims.db"])
    assert_one_line_error(code, err, ["claims database sqlite:///", "cannot open"])
    code, _, err = run_cli(["bench", str(path), "--out", str(tmp_path / "out"), "--grace", "0"])
    assert_one_line_error(code, err, ["--grace"])
