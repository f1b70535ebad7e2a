"""Kill/stop matrix of `embedx extract` with default settings: kill -9 at ten points of a run's
life, SIGTERM and SIGINT mid-run, each run resuming the one before, then a final resume.

A mid-run stop comes once the run has durably written 2 more items than the store held at its
launch, and every run but the last waits before its 4th batch until the signal is sent (the
gate of tests/killrun.py), so each stop lands mid-run however loaded the machine is.

Prints one row per stopped run: the point, the signal, items done when it was sent, the exit code,
the decoding workers seen, the processes of the run alive 10 s later, the processes still holding
the store or its lock, and whether the resume (the next run of the chain) worked; then whether the
final store equals an uninterrupted run bit for bit (and the largest difference).

Usage::

    python benchmarks/kill_matrix.py [--items 48] [--zygote] [--batch-seconds S]

Default settings: no --workers (the default number of decoding workers), no --batch-seconds.
With default batch budgets a resumed run batches the remaining items differently from an
uninterrupted one, so its values agree within float rounding rather than bit for bit; pass
``--batch-seconds 0.5`` (one item per batch) for a bitwise comparison. ``--zygote`` forks the
runs from one pre-imported interpreter instead of starting ``python -m embedx`` each time
(saves ~10 s of imports per run; the processes are otherwise the same).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.killrun import (  # noqa: E402  (the repository root is on the path only now)
    SubprocessLauncher,
    ZygoteLauncher,
    compare_stores,
    default_points,
    run_matrix,
    write_corpus,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--zygote", action="store_true")
    parser.add_argument("--batch-seconds", type=float, default=None)
    opts = parser.parse_args()

    from embedx.extraction.extract import default_workers
    from embedx.testing.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = save_tiny_model("hubert", root / "model")
        wavs = write_corpus(root / "wavs", opts.items)
        args = ["extract", "--model", str(model), str(wavs), "--pooling", "mean,std", "--frames", "--quiet"]
        if opts.batch_seconds is not None:
            args += ["--batch-seconds", str(opts.batch_seconds)]
        launch = ZygoteLauncher() if opts.zygote else SubprocessLauncher()
        start = time.perf_counter()
        try:
            ref = launch([*args, "-o", str(root / "full.h5")], root / "full")
            assert ref.wait(timeout=600) == 0, ref.output()
            rows, rc, last = run_matrix(launch, args, root / "part.h5", default_points(opts.items), opts.items,
                                        root / "logs")
        finally:
            launch.close()
        equal, worst = compare_stores(root / "full.h5", root / "part.h5") if rc == 0 else (False, float("nan"))
        leftovers = sorted(p.name for p in root.glob("*.lock"))

    print(f"embedx extract, tiny HuBERT, {opts.items} items, default workers ({default_workers()}), "
          f"batch seconds {opts.batch_seconds or 'default'}, {'zygote' if opts.zygote else 'python -m embedx'}")
    head = ("point", "signal", "done at start", "done at stop", "in store", "exit", "workers", "alive 10 s", "holding", "gone (s)", "run (s)",
            "resume ok")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for k, row in enumerate(rows):
        # the next run of the chain (or the final one) is this run's resume
        resume_ok = (rows[k + 1].exit_code != 2) if k + 1 < len(rows) else rc == 0
        print(f"| {row.point} | {row.signal} | {row.done_at_start} | {row.done_at_stop} | {row.done_in_store} | "
              f"{row.exit_code} | {row.workers_seen} | "
              f"{row.survivors} | {row.store_holders} | {row.seconds_to_gone} | {row.seconds} | "
              f"{'yes' if resume_ok else 'NO'} |")
        if row.signal != "SIGKILL":
            print(f"|   message: {row.message} |")
    print(f"final resume: exit {rc} ({last}); equal to an uninterrupted run bit for bit: {equal}, "
          f"largest difference {worst:.3g}; lock files left: {leftovers or 'none'}; "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
