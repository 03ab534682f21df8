"""Killed and terminated writes: SIGTERM removes the temporary file, and a later write removes
the temporary files of writers that were killed outright, never those of running writers."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fastdata import DatasetWriter, IntField, Reader
from fastdata.demo import make_imagenet_like

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_S = 60       # the most any step waits: a broken writer fails the test instead of hanging it

# Writes N samples to OUT; sample 0 waits (at most WAIT_S) for GATE/release after creating
# GATE/waiting, so the test acts while the write is under way.  HANDLER: 'none', or a SIGTERM
# handler of the script's own: 'note' (notes the signal in GATE/noted and carries on), 'exit'
# (sys.exit(7)).
GATED_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    from fastdata import DatasetWriter, IntField

    out, gate, n, handler = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if handler == "note":
        signal.signal(signal.SIGTERM, lambda *_: open(os.path.join(gate, "noted"), "w").close())
    elif handler == "exit":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))

    class GatedDataset:
        def __len__(self):
            return n

        def __getitem__(self, i):
            if i == 0:
                open(os.path.join(gate, "waiting"), "w").close()
                deadline = time.monotonic() + %d
                while (not os.path.exists(os.path.join(gate, "release"))
                       and time.monotonic() < deadline):
                    time.sleep(0.01)
            return (i,)

    DatasetWriter(out, {"label": IntField()}, num_workers=1,
                  progress=False).from_indexed_dataset(GatedDataset())
    print("finished", flush=True)
""" % WAIT_S)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll ``condition()`` until true; fail if the process ends first or WAIT_S passes."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the writer ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {WAIT_S} s")
        time.sleep(0.01)


class GatedWriter:
    """A writer process stopped inside its write (its temporary file exists) until released."""

    def __init__(self, out, gate_dir, num_samples: int, handler: str = "none"):
        self.gate_dir = str(gate_dir)
        os.makedirs(self.gate_dir, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GATED_WRITER, str(out), self.gate_dir, str(num_samples),
             handler], cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        _wait_until(lambda: os.path.exists(os.path.join(self.gate_dir, "waiting")), self.proc,
                    "its first sample was loaded")

    def release(self) -> None:
        open(os.path.join(self.gate_dir, "release"), "w").close()

    def finish(self) -> tuple[int, str, str]:
        """Wait for the process to end; its exit status, stdout and stderr."""
        out, err = self.proc.communicate(timeout=WAIT_S)
        return self.proc.returncode, out, err

    def __enter__(self) -> "GatedWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=WAIT_S)


def partials(out) -> list[str]:
    return sorted(glob.glob(glob.escape(str(out)) + ".*.partial"))


def write_labels(out, num_samples: int) -> None:
    DatasetWriter(str(out), {"label": IntField()}, num_workers=1,
                  progress=False).from_indexed_dataset([(i,) for i in range(num_samples)])


def num_samples_in(out) -> int:
    with Reader(str(out)) as reader:
        return len(reader)


def host_tag_of(partial_path: str, out) -> str:
    """The host part of a temporary file's name ``OUT.<host>.<pid>.<random>.partial``."""
    return os.path.basename(partial_path)[len(os.path.basename(str(out))) + 1:].split(".")[0]


def wait_until_removed(partial, proc):
    """Wait (at most WAIT_S) for the temporary file to go, while the writer still runs."""
    deadline = time.monotonic() + WAIT_S
    while os.path.exists(partial) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(partial), f"exit {proc.poll()}"


def older_output(tmp_path, name="ds.beton"):
    """OUT in a folder of its own, already holding a complete older file of 3 samples."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / name
    write_labels(out, 3)
    return out


def test_sigkill_leaves_a_partial_that_the_next_write_removes(tmp_path):
    out = older_output(tmp_path)
    with GatedWriter(out, tmp_path / "gate", 5) as writer:
        [killed_partial] = partials(out)
        assert f".{writer.proc.pid}." in os.path.basename(killed_partial)
        writer.proc.send_signal(signal.SIGKILL)
        assert writer.finish()[0] == -signal.SIGKILL
    dead_pid = writer.proc.pid        # reaped: no process has it (until the system reuses it)
    assert os.path.exists(killed_partial)
    assert num_samples_in(out) == 3   # the older file survives the killed rewrite

    # Files that only look like the temporary files of ds.beton's dead writers are kept.
    tag = host_tag_of(killed_partial, out)
    other_tag = "00000000" if tag != "00000000" else "11111111"
    decoys = ["ds.beton.partial", "ds.beton.tmp1234.partial", "ds.beton.1.partial",
              f"ds.beton.{other_tag}.{dead_pid}.0123abcd.partial",    # another machine's
              f"other.beton.{tag}.{dead_pid}.0123abcd.partial",       # another output's
              f"ds.beton.1.{tag}.{dead_pid}.0123abcd.partial",        # ... named ds.beton.1
              f"ds.beton.{tag}.{dead_pid}.0123abcd.partial.old",
              f"ds.beton.{tag}.0.0123abcd.partial"]                   # pid 0: not a process
    for name in decoys:
        (out.parent / name).write_bytes(b"x")

    write_labels(out, 4)
    assert num_samples_in(out) == 4
    assert not os.path.exists(killed_partial)
    assert sorted(os.listdir(out.parent)) == sorted(decoys + ["ds.beton"])


def test_a_running_writers_partial_is_left_alone(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "ds.beton"
    with GatedWriter(out, tmp_path / "gate", 5) as writer:
        [running_partial] = partials(out)
        tag = host_tag_of(running_partial, out)
        # Live pids: this test's own process, and init (another user's unless run as root).
        alive = [out_dir / f"ds.beton.{tag}.{pid}.0123abcd.partial" for pid in (os.getpid(), 1)]
        for path in alive:
            path.write_bytes(b"x")

        write_labels(out, 3)
        assert num_samples_in(out) == 3
        assert os.path.exists(running_partial)
        assert all(path.exists() for path in alive)

        writer.release()
        status, stdout, stderr = writer.finish()
    assert status == 0 and "finished" in stdout, stderr
    assert num_samples_in(out) == 5   # its rename still found its temporary file
    assert sorted(partials(out)) == sorted(str(path) for path in alive)


def test_sigterm_removes_the_partial_and_exits_143(tmp_path):
    out = older_output(tmp_path)
    with GatedWriter(out, tmp_path / "gate", 5) as writer:
        [partial] = partials(out)
        writer.proc.send_signal(signal.SIGTERM)
        # Removed at once, not when the sample still loading returns: before the release.
        wait_until_removed(partial, writer.proc)
        writer.release()
        status, stdout, stderr = writer.finish()
    assert status == 128 + signal.SIGTERM, stderr
    assert "finished" not in stdout and "Traceback" not in stderr, stderr
    assert os.listdir(out.parent) == ["ds.beton"]
    assert num_samples_in(out) == 3


@pytest.mark.parametrize("handler", ["note", "exit"])
def test_sigterm_goes_to_the_callers_own_handler(tmp_path, handler):
    """A handler the program set keeps its meaning: one that carries on lets the write finish;
    one that exits (raises) stops it, and the write removes its temporary file."""
    out = tmp_path / "ds.beton"
    with GatedWriter(out, tmp_path / "gate", 5, handler) as writer:
        [partial] = partials(out)
        writer.proc.send_signal(signal.SIGTERM)
        if handler == "note":
            _wait_until(lambda: os.path.exists(os.path.join(writer.gate_dir, "noted")),
                        writer.proc, "its handler noted the signal")
        else:
            wait_until_removed(partial, writer.proc)
        writer.release()
        status, stdout, stderr = writer.finish()
    if handler == "note":
        assert status == 0 and "finished" in stdout, stderr
        assert num_samples_in(out) == 5
    else:
        assert status == 7 and "finished" not in stdout, stderr
        assert not out.exists()
    assert not os.path.exists(partial)


def test_the_sigterm_handler_is_set_only_during_a_write(tmp_path):
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("this test process has a SIGTERM handler of its own")
    seen = []

    class Dataset:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            seen.append(signal.getsignal(signal.SIGTERM))
            return (i,)

    # Threads: __getitem__ records the writing process's handler (a worker process has its own).
    DatasetWriter(str(tmp_path / "a.beton"), {"label": IntField()}, num_workers=1,
                  progress=False).from_indexed_dataset(Dataset(), worker_type="thread")
    assert seen and all(callable(h) for h in seen)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    # Outside the main thread no handler can be set; the write works all the same.
    errors = []

    def write_in_thread():
        try:
            write_labels(tmp_path / "b.beton", 2)
        except BaseException as err:    # reported by the assertion below
            errors.append(err)

    thread = threading.Thread(target=write_in_thread)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive() and not errors, errors
    assert num_samples_in(tmp_path / "b.beton") == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_cli_write_imagenet_on_sigterm_leaves_no_partial_and_exits_143(tmp_path):
    data = make_imagenet_like(str(tmp_path / "inet"), classes=1, per_class=2, val_per_class=0)
    # A named pipe first in the class folder: reading it waits until the test opens it, so the
    # write is under way, its temporary file created, when the signal comes.
    fifo = os.path.join(data, "train", "n00000000", "000.JPEG")
    os.mkfifo(fifo)
    out = older_output(tmp_path, "train.beton")
    cli = "import sys; from fastdata.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", cli, "write", "imagenet", "--data-dir", data,
                             "--out", str(out), "--workers", "1", "--quiet"], cwd=REPO_ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: partials(out), proc, "a temporary file appeared")
        [partial] = partials(out)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WAIT_S
        while os.path.exists(partial) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(partial), f"exit {proc.poll()}"
        # Let the image read waiting on the pipe end (it reads nothing), so the process can exit.
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass            # no reader on the pipe (yet)
            time.sleep(0.01)
        stdout, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    assert os.listdir(out.parent) == ["train.beton"]
    assert num_samples_in(out) == 3
