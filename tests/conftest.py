# FFCV's own tests (tests/ffcv_upstream/upstream/) import ffcv: they run only through
# tests/ffcv_upstream/run.py, which rewrites those imports (tests/test_ffcv_upstream.py).
collect_ignore_glob = ["ffcv_upstream/*"]
