"""Two launches on one run directory: the second is refused, naming the first (pid, host, start time); a launch killed
with SIGKILL leaves its lock file behind, but not its lock, so the next launch goes ahead."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest
from cli_runs import train_args

from vgf.cli import main
from vgf.training.lock import LOCK_FILE, RunDirectoryInUse, hold_run_directory

HOLD = "import sys, time; from pathlib import Path; from vgf.training.lock import hold_run_directory\n" \
       "with hold_run_directory(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"


def test_a_second_launch_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = json.loads((run_dir / LOCK_FILE).read_text())["started"]
        assert main(train_args(run_dir)) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{run_dir} is in use by pid {holder.pid} on host {socket.gethostname()}, running since {started}" in err
        assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_FILE]  # nothing of the holder's was touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid  # the dead holder's file is left...
    with hold_run_directory(run_dir):  # ...but its lock went with the process
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] != holder.pid
    assert not (run_dir / LOCK_FILE).exists()  # a finished holder removes its file


def test_one_process_cannot_hold_a_run_directory_twice(tmp_path):
    # POSIX locks never conflict within one process: without its own record, a second hold would succeed.
    with hold_run_directory(tmp_path / "run"):
        with pytest.raises(RunDirectoryInUse, match="in use by this process"):
            with hold_run_directory(tmp_path / "run"):
                pass
    with hold_run_directory(tmp_path / "run"):
        pass
