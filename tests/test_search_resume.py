"""Search runs: resume after a stop or a SIGKILL equals the uninterrupted run; worker processes and torchrun ranks
give the same files as one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotinybert import Arch
from autotinybert.search import CallableEvaluator, CandidateLog, FlopsLatencyModel, SearchConfigError, run_search

REPO = Path(__file__).resolve().parents[1]
PREDICTOR = FlopsLatencyModel()
CONFIG = {"space": "cpu-mlm", "speedup": 60.0, "generations": 4, "population": 12, "seed": 11, "progress": False,
          "plot": False}


def score(arch: Arch) -> dict:
    """Module level, so worker processes can import it."""
    return {"a": arch.hidden / 256 + 0.2 * arch.layers, "b": 1.0 - abs(arch.ffn - 1.75 * arch.hidden) / 2048}


class Stop(Exception):
    pass


def comparable_lines(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s"), row.pop("worker")
    return rows


def best_of(folder: Path, drop_name: bool = False) -> dict:
    best = json.loads((folder / "best.json").read_text())
    if drop_name:
        best.pop("evaluator")  # the CLI names a Python evaluator by its module:function
    return best


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_search({**CONFIG, "out": str(out)}, evaluator=score, predictor=PREDICTOR)
    assert len(result.candidates) == 48
    return out


def test_resume_after_a_stop_mid_generation_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    calls = []

    def stops_after_17(arch):
        if len(calls) == 17:  # generation 1, slot 5
            raise Stop
        calls.append(arch)
        return score(arch)

    with pytest.raises(Stop):
        # the evaluator's name is part of the search's identity: the same name as the reference run's
        run_search({**CONFIG, "out": str(tmp_path)}, evaluator=CallableEvaluator(stops_after_17, "score"),
                   predictor=PREDICTOR)
    assert len(CandidateLog(tmp_path / "candidates.jsonl").read()) == 17

    resumed_calls = []

    def counting(arch):
        resumed_calls.append(arch)
        return score(arch)

    counting_score = CallableEvaluator(counting, "score")
    result = run_search({**CONFIG, "out": str(tmp_path), "resume": True}, evaluator=counting_score,
                        predictor=PREDICTOR)
    assert result.resumed == 17 and result.evaluated == 31 and len(resumed_calls) == 31
    assert not set(calls) & set(resumed_calls)  # nothing evaluated twice
    assert comparable_lines(tmp_path) == comparable_lines(uninterrupted)
    assert (tmp_path / "best.json").read_text() == (uninterrupted / "best.json").read_text()

    # resuming a finished search evaluates nothing
    again = run_search({**CONFIG, "out": str(tmp_path), "resume": True}, evaluator=counting_score,
                       predictor=PREDICTOR)
    assert again.evaluated == 0 and len(resumed_calls) == 31


def test_resume_drops_a_torn_last_line(tmp_path, uninterrupted):
    shutil.copy(uninterrupted / "config.json", tmp_path / "config.json")
    lines = (uninterrupted / "candidates.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "candidates.jsonl").write_text("".join(lines[:30]) + lines[30][:40])  # killed while writing line 31
    result = run_search({**CONFIG, "out": str(tmp_path), "resume": True}, evaluator=score, predictor=PREDICTOR)
    assert result.resumed == 30 and result.evaluated == 18
    assert comparable_lines(tmp_path) == comparable_lines(uninterrupted)


def test_resume_refuses_a_different_search(tmp_path, uninterrupted):
    shutil.copytree(uninterrupted, tmp_path / "run")
    before = (tmp_path / "run" / "candidates.jsonl").read_text()
    for change, words in [({"seed": 12}, "seed was 11, now 12"), ({"population": 10}, "population was 12, now 10"),
                          ({"speedup": 50.0}, "speedup was 60.0, now 50.0")]:
        with pytest.raises(SearchConfigError, match=words):
            run_search({**CONFIG, **change, "out": str(tmp_path / "run"), "resume": True}, evaluator=score,
                       predictor=PREDICTOR)
    # a predictor that changed under the same settings is caught too (the window moves)
    with pytest.raises(SearchConfigError, match="window"):
        run_search({**CONFIG, "out": str(tmp_path / "run"), "resume": True}, evaluator=score,
                   predictor=FlopsLatencyModel(reference_ms=90.0))
    assert (tmp_path / "run" / "candidates.jsonl").read_text() == before  # nothing touched


def test_worker_processes_give_the_same_files(tmp_path, uninterrupted):
    result = run_search({**CONFIG, "out": str(tmp_path), "workers": 2, "threads": 1}, evaluator=score,
                        predictor=PREDICTOR)
    assert comparable_lines(tmp_path) == comparable_lines(uninterrupted)
    # evaluated in the worker processes, not here (how the work splits between them depends on timing)
    workers = {r.worker for r in result.candidates}
    assert 1 <= len(workers) <= 2 and all(w.startswith("pid:") and w != f"pid:{os.getpid()}" for w in workers)


def test_unpicklable_evaluator_with_workers_is_a_clear_error(tmp_path):
    from autotinybert.search import EvaluatorError

    with pytest.raises(EvaluatorError, match="cannot be sent to worker processes"):
        run_search({**CONFIG, "out": str(tmp_path), "workers": 2}, evaluator=lambda arch: 1.0, predictor=PREDICTOR)


# ----- the command line: a real SIGKILL, and torchrun ranks ----------------------------------------------
STUB = '''
import time
from autotinybert import Arch

def score(arch: Arch) -> dict:
    time.sleep({sleep})
    return {{"a": arch.hidden / 256 + 0.2 * arch.layers, "b": 1.0 - abs(arch.ffn - 1.75 * arch.hidden) / 2048}}
'''


def _cli(tmp_path: Path, out: Path, *extra: str, sleep: float = 0.0, launcher=(sys.executable, "-m")):
    (tmp_path / "stub_eval.py").write_text(textwrap.dedent(STUB.format(sleep=sleep)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    args = [*launcher, "autotinybert", "search", "space=cpu-mlm", "speedup=60", "generations=4",
            "population=12", "seed=11", "plot=false", "progress=false",
            "predictor=autotinybert.search.target:FlopsLatencyModel", "evaluator=stub_eval:score",
            f"out={out}", *extra]
    return args, env


def test_cli_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    args, env = _cli(tmp_path, out, sleep=0.05)
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "candidates.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 17:
            break
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(CandidateLog(log).read())
    assert 17 <= killed_at < 48

    args, env = _cli(tmp_path, out, "resume=true")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"({killed_at} from the earlier run, {48 - killed_at} evaluated now)" in done.stdout
    assert comparable_lines(out) == comparable_lines(uninterrupted)
    assert best_of(out, drop_name=True) == best_of(uninterrupted, drop_name=True)

    # without --resume the folder is refused, and the error says what to do
    args, env = _cli(tmp_path, out)
    refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "pass resume=true" in refused.stderr


def test_torchrun_ranks_give_the_same_files(tmp_path, uninterrupted):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    out = tmp_path / "ranks"
    args, env = _cli(tmp_path, out, launcher=(torchrun, "--standalone", "--nproc-per-node", "2", "-m"))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert comparable_lines(out) == comparable_lines(uninterrupted)
    assert best_of(out, drop_name=True) == best_of(uninterrupted, drop_name=True)
    workers = {json.loads(line)["worker"] for line in (out / "candidates.jsonl").read_text().splitlines()}
    assert workers == {"rank:0", "rank:1"}
    assert done.stdout.count("top 3:") == 1  # only rank 0 reports


def test_resume_refuses_a_file_from_another_search(tmp_path, uninterrupted):
    shutil.copytree(uninterrupted, tmp_path / "run")
    log = tmp_path / "run" / "candidates.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()[:20]]
    rows[13]["arch"] = "1-128-128-1-64"  # not what this search proposes at generation 1, slot 1
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SearchConfigError, match="has 1-128-128-1-64 at generation 1 slot 1"):
        run_search({**CONFIG, "out": str(tmp_path / "run"), "resume": True}, evaluator=score, predictor=PREDICTOR)
