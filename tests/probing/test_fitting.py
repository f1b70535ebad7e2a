"""Fitting helpers: the thread limit every worker task runs under."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_limit_threads_limits_every_pool_including_a_library_imported_after_the_first_call():
    # the controller is kept between calls; a library loaded later (LightGBM's OpenMP) must
    # still be limited, so run in a fresh process where it is not yet imported
    code = textwrap.dedent("""
        import sys
        from threadpoolctl import threadpool_info, threadpool_limits
        from embedx.probing.fitting import limit_threads
        with limit_threads(1):
            pass
        assert "lightgbm" not in sys.modules
        import lightgbm  # noqa: F401  (loads an OpenMP runtime)
        threadpool_limits(limits=3)  # every pool above 1 outside the block
        with limit_threads(1):
            inside = {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()}
        outside = {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()}
        assert any(api == "openmp" for api, _ in inside), inside
        assert set(inside.values()) == {1}, inside
        assert set(outside.values()) == {3}, outside
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
