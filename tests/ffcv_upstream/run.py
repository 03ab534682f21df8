"""Run FFCV's own tests against fastdata with only their imports changed.

    python tests/ffcv_upstream/run.py [--source DIR] [--keep DIR] [-k EXPR]

Copies FFCV's test files (``upstream/``, or ``--source``: the ``tests/`` folder of a libffcv/ffcv
checkout) to a scratch folder, rewrites their imports (``SUBSTITUTIONS``), runs pytest on them in
a subprocess, and prints one line per test: passed, failed, skipped (with pytest's reason) or left
out (``INTERNALS``, with the reason).  Exits 1 if any test that is not left out fails or errors.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))

#: (pattern, replacement, why) applied to every line of every test file.  All but the last
#: change imports only.
SUBSTITUTIONS = [
    (r"^(\s*)from ffcv(\.[\w.]+)? import", r"\1from fastdata.ffcv\2 import",
     "FFCV's modules -> fastdata's (fastdata.ffcv serves FFCV's import paths)"),
    (r"^(\s*)import ffcv$", r"\1import fastdata.ffcv as ffcv", "import ffcv"),
    (r"^(\s*)from torchvision\.datasets import CIFAR10$", r"\1from cifar_standin import CIFAR10",
     "the tests download CIFAR-10; without a network a stand-in of the same shape serves "
     "(cifar_standin.py)"),
    (r"init_process_group\('nccl'", "init_process_group(BACKEND",
     "the distributed tests ask for NCCL, which needs GPUs; BACKEND is 'nccl' where CUDA is "
     "available and 'gloo' otherwise (the only change that is not an import)"),
]
BACKEND_LINE = ("import torch as _torch\n"
                "BACKEND = 'nccl' if _torch.cuda.is_available() else 'gloo'\n")

#: Tests of FFCV's internals, which fastdata does not have, left out with the reason.
INTERNALS = {
    "test_memcpy.py": "tests ffcv.libffcv.memcpy, FFCV's C extension",
    "test_memory_reader.py": "tests ffcv.memory_managers.OSCacheManager, FFCV's page reader",
    "test_image_read.py": "drives FFCV's image decoder by hand through its memory manager and "
                          "generated code (OSCacheManager, accept_globals, generate_code)",
    "test_memory_leak.py::test_memory_leak_write": "measures FFCV's writer's process memory "
                                                   "(psutil, minutes per run)",
    "test_basic_pipeline.py::test_multiple_epoch_doesnt_recompile":
        "checks that FFCV's generated code (loader.code) is not regenerated; fastdata generates "
        "none",
    "test_basic_pipeline.py::test_multiple_epoch_does_recompile":
        "checks that FFCV's generated code (loader.code) is regenerated; fastdata generates none "
        "(recompile=True redeclares FFCV-style operations: tests/test_loader_ffcv_api.py)",
}

#: Tests that need a CUDA device, left out where there is none.
NEEDS_CUDA = {
    "test_cuda_nonblocking.py": "copies batches to a CUDA device (ToDevice('cuda:0'))",
    "test_image_normalization.py::test_gpu_normalization": "normalises on a CUDA device",
}


def _left_out() -> dict[str, str]:
    """INTERNALS, and NEEDS_CUDA on a machine without a CUDA device."""
    import torch
    return {**INTERNALS, **({} if torch.cuda.is_available() else NEEDS_CUDA)}


def rewrite(text: str) -> tuple[str, list[str]]:
    """The file's text with SUBSTITUTIONS applied, and the reasons of those that applied."""
    used, lines = [], []
    for line in text.splitlines(keepends=True):
        for pattern, replacement, why in SUBSTITUTIONS:
            new = re.sub(pattern, replacement, line)
            if new != line:
                line = new
                if why not in used:
                    used.append(why)
        lines.append(line)
    out = "".join(lines)
    if "init_process_group(BACKEND" in out:
        out = BACKEND_LINE + out
    return out, used


def prepare(source: str, scratch: str) -> dict[str, list[str]]:
    """Copy and rewrite the tests into ``scratch``; what changed in each file."""
    changes = {}
    for name in sorted(os.listdir(source)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(source, name), encoding="utf-8") as f:
            text, used = rewrite(f.read())
        with open(os.path.join(scratch, name), "w", encoding="utf-8") as f:
            f.write(text)
        changes[name] = used
    shutil.copy(os.path.join(HERE, "cifar_standin.py"), scratch)
    return changes


def run(scratch: str, extra: list[str]) -> list[tuple[str, str, str]]:
    """(test id, outcome, detail) per test, from pytest's JUnit XML."""
    report = os.path.join(scratch, "report.xml")
    deselect = []
    for key in _left_out():
        deselect += ["--ignore" if "::" not in key else "--deselect",
                     os.path.join(scratch, key) if "::" not in key else key]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", scratch,
           "--continue-on-collection-errors",
           f"--junitxml={report}", *deselect, *extra, scratch]
    env = dict(os.environ, PYTHONPATH=scratch + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(cmd, cwd=scratch, env=env)
    results = []
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        # a file that fails to import is reported with an empty class name and the file's name
        nodeid = f"{module}.py::{case.get('name')}" if module else f"{case.get('name')}.py"
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "").splitlines()[0][:160] if \
                    node.get("message") else ""
                break
        results.append((nodeid, outcome, detail))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.path.join(HERE, "upstream"),
                        help="FFCV's tests/ folder (default: the copy in upstream/)")
    parser.add_argument("--keep", help="write the rewritten tests here and keep them")
    parser.add_argument("-k", help="pytest -k expression (a subset of the tests)")
    args = parser.parse_args(argv)
    scratch = args.keep or tempfile.mkdtemp(prefix="ffcv-upstream-")
    os.makedirs(scratch, exist_ok=True)
    try:
        changes = prepare(args.source, scratch)
        print("Changes to FFCV's tests:")
        for why in dict.fromkeys(w for used in changes.values() for w in used):
            print(f"  - {why}")
        results = run(scratch, ["-k", args.k] if args.k else [])
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'test':<70} result")
    for nodeid, outcome, detail in results:
        print(f"{nodeid:<70} {outcome}{': ' + detail if detail else ''}")
    left = _left_out()
    for key, reason in left.items():
        print(f"{key:<70} left out: {reason}")
    counts = {o: sum(1 for _, outcome, _ in results if outcome == o)
              for o in ("passed", "failed", "error", "skipped")}
    print(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
          f"{counts['skipped']} skipped; left out: {len(left)} entries")
    return 1 if counts["failed"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
