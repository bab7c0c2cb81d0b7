"""The recipes' shell library (egs2/clipsep/enh1/utils/recipe_lib.sh): the job pool, stage timings, log lines.

Each test writes a small bash script into a temporary directory that sources the library as the stage scripts
do (after ``set -euo pipefail``) and runs it there.
"""

import re
import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[3] / "egs2" / "clipsep" / "enh1" / "utils" / "recipe_lib.sh"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"

# job NAME [SECONDS]: logs its start and end (with its arguments) to events.txt; fail NAME: the same, and fails;
# meet A B: creates A, then waits (1 s at most) for B to exist: two jobs that meet ran at the same time
JOBS = """
job() { echo "start $*" >> events.txt; sleep "${2:-0}"; echo "end $*" >> events.txt; }
fail() { echo "start fail $*" >> events.txt; echo "end fail $*" >> events.txt; return 3; }
meet() { touch "$1"; for _ in $(seq 50); do [ -e "$2" ] && return 0; sleep 0.02; done; return 1; }
"""


def _bash(tmp_path, body):
    script = tmp_path / "t.sh"
    script.write_text(f"set -euo pipefail\n. {LIB}\nstage=1; stop_stage=100; timings=$PWD/timings.tsv\n{JOBS}{body}\n")
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    events = (tmp_path / "events.txt").read_text().splitlines() if (tmp_path / "events.txt").exists() else []
    return proc, events


def _max_running(events):
    running = peak = 0
    for e in events:
        running += 1 if e.startswith("start") else -1 if e.startswith("end") else 0
        peak = max(peak, running)
    return peak


def test_pool_runs_items_with_args_at_most_n_at_once(tmp_path):
    proc, events = _bash(tmp_path, 'pool 2 "job a 0.2" "job b 0.1" "job c" "job d 0.05"; echo "rc=$?"')
    assert proc.returncode == 0 and "rc=0" in proc.stdout, proc.stderr
    items = ["a 0.2", "b 0.1", "c", "d 0.05"]
    assert sorted(e for e in events if e.startswith("start")) == [f"start {i}" for i in items]
    assert sorted(e for e in events if e.startswith("end")) == [f"end {i}" for i in items]
    assert _max_running(events) <= 2
    assert "error" not in proc.stdout


def test_pool_runs_side_by_side(tmp_path):
    """Two items that each wait for the other to have started: both succeed only if they run at once."""
    proc, _ = _bash(tmp_path, 'pool 2 "meet x y" "meet y x"; echo "rc=$?"')
    assert "rc=0" in proc.stdout, proc.stdout + proc.stderr


def test_pool_of_one_keeps_the_list_order(tmp_path):
    proc, events = _bash(tmp_path, 'pool 1 "job a 0.05" "job b" "job c 0.02"; echo "rc=$?"')
    assert "rc=0" in proc.stdout
    assert events == ["start a 0.05", "end a 0.05", "start b", "end b", "start c 0.02", "end c 0.02"]


def test_pool_job_status_is_its_exit_status(tmp_path):
    """A job that exits (rather than returns) counts by its exit status; set -e is off in jobs, as before."""
    body = (
        'quit() { echo "start quit $1" >> events.txt; exit "$1"; }\n'
        'late() { false; echo "start late" >> events.txt; return 0; }\n'
        'pool 2 "quit 0" "quit 4" late || echo "rc=$?"'
    )
    proc, events = _bash(tmp_path, body)
    assert "rc=1" in proc.stdout and "error: failed: quit 4\n" in proc.stdout, proc.stdout + proc.stderr
    assert sorted(events) == ["start late", "start quit 0", "start quit 4"]


def test_pool_failure_skips_its_dependents_and_returns_1(tmp_path):
    # "job:fail never" is skipped (fail failed), so job counts as failed and "job2:job z" is skipped too
    body = 'job2() { job "$@"; }\nrc=0; pool 2 "job a 0.2" "fail x" "job:fail never" "job b 0.05" "job2:job z" || rc=$?'
    proc, events = _bash(tmp_path, body + '; echo "rc=$rc"')
    assert proc.returncode == 0 and "rc=1" in proc.stdout, proc.stdout + proc.stderr
    started = {e for e in events if e.startswith("start")}
    assert started == {"start a 0.2", "start fail x", "start b 0.05"}
    assert _max_running(events) <= 2
    out = proc.stdout
    assert re.search(rf"^{STAMP} \(t\.sh:\d+:main\) job never: not started: fail failed$", out, re.M), out
    assert "job2 z: not started: job failed" in out
    assert re.search(r"\(t\.sh:\d+:main\) error: failed: fail x, job never, job2 z$", out, re.M), out


def test_pool_dependency_waits_for_success(tmp_path):
    """The tts1 recipe's stages 2-6: stage_6 beside stage_2 (they meet), stage_3 and stage_5 after stage_2."""
    stages = (
        "stage_2() { meet 2 6 && job 2; }; stage_6() { meet 6 2 && job 6; }\n"
        "stage_3() { job 3; }; stage_4() { job 4; }; stage_5() { job 5; }\n"
    )
    body = stages + 'pool 2 stage_2 stage_6 stage_3:stage_2 stage_4 stage_5:stage_2; echo "rc=$?"'
    proc, events = _bash(tmp_path, body)
    assert "rc=0" in proc.stdout, proc.stdout + proc.stderr
    assert sorted(events) == sorted(f"{w} {n}" for n in range(2, 7) for w in ("start", "end"))
    assert events.index("end 2") < min(events.index("start 3"), events.index("start 5"))
    assert _max_running(events) <= 2


def test_pool_failed_stage_2_stops_3_and_5(tmp_path):
    """The log lines the tts1 recipe test greps when its stage 2 fails."""
    body = 'stage_2() { fail 2; }; stage_3() { job 3; }; stage_5() { job 5; }; stage_6() { job 6; }\n'
    proc, events = _bash(tmp_path, body + 'pool 3 stage_2 stage_6 stage_3:stage_2 stage_5:stage_2 || echo "rc=$?"')
    assert "rc=1" in proc.stdout
    assert "stage_3: not started: stage_2 failed" in proc.stdout
    assert "stage_5: not started: stage_2 failed" in proc.stdout
    assert sorted(events) == ["end 6", "end fail 2", "start 6", "start fail 2"]
    assert "error: failed: stage_2, stage_3, stage_5" in proc.stdout


def test_pool_unknown_or_cyclic_dependency_fails_at_once(tmp_path):
    body = 'pool 2 "job:nothing a" "job b" || echo "rc=$?"\npool 2 x:y y:x || echo "rc=$?"'
    proc, events = _bash(tmp_path, body)
    assert proc.stdout.count("rc=1") == 2, proc.stdout + proc.stderr
    assert "job a: not started: nothing is not in the pool" in proc.stdout
    assert "x: not started: y never finished (a cycle)" in proc.stdout
    assert events == ["start b", "end b"]


def test_stage_timings_tsv(tmp_path):
    body = """
stage_start 3 "three"; stage_end 3 "three"
stage_start 1 "one"; stage_end 1 "one, first"
record_time 2-6 "the concurrent stages, side by side" 42
stage_start 6 "six"; stage_end 6 "six"
stage_start 7 "seven"; stage_end 7 "seven"
stage_start 3 "three again"; stage_end 3 "three, again"
"""
    proc, _ = _bash(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in (tmp_path / "timings.tsv").read_text().splitlines()]
    assert [r[:2] for r in rows] == [["1", "one, first"], ["3", "three, again"], ["6", "six"],
                                     ["2-6", "the concurrent stages, side by side"], ["7", "seven"]]  # fmt: skip
    assert all(len(r) == 3 and r[2].isdigit() for r in rows) and rows[3][2] == "42"
    assert re.search(rf"^{STAMP} \(t\.sh:\d+:main\) Stage 1: one$", proc.stdout, re.M), proc.stdout
    assert re.search(rf"^{STAMP} \(t\.sh:\d+:main\) Stage 3 done in \d+ s$", proc.stdout, re.M), proc.stdout


def test_stage_timings_from_pooled_jobs(tmp_path):
    """Stages timed in pool jobs all land in the TSV (each job has its own clock; the lock serialises writes)."""
    body = 'st() { stage_start "$1" "s$1"; stage_end "$1" "stage $1"; }\n'
    proc, _ = _bash(tmp_path, body + 'pool 6 "st 5" "st 4" "st 3" "st 2" "st 1" "st 6"')
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "timings.tsv").read_text().splitlines()
    assert [r.split("\t")[:2] for r in rows] == [[str(n), f"stage {n}"] for n in range(1, 7)]


def test_log_names_the_caller_and_run_stage(tmp_path):
    body = """
f() { log "inside f"; stage_start 9 "nine"; }
log "hello" "world"
f
stage=3; stop_stage=5
for n in 2 3 5 6; do if run_stage "$n"; then echo "run $n"; else echo "skip $n"; fi; done
"""
    proc, _ = _bash(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(rf"{STAMP} \(t\.sh:\d+:main\) hello world", lines[0]), lines
    assert re.fullmatch(rf"{STAMP} \(t\.sh:\d+:f\) inside f", lines[1]), lines
    assert re.fullmatch(rf"{STAMP} \(t\.sh:\d+:f\) Stage 9: nine", lines[2]), lines  # the caller's place
    assert lines[3:] == ["skip 2", "run 3", "run 5", "skip 6"]
