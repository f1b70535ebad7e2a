"""What the report says about the frames (or segments) of a study: :func:`describe` builds the
``frames`` entry of ``StudyResult.analyses`` (written to ``frames.json``), :func:`frames_section`
renders it in report.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.probing.analysis import Analysis

__all__ = ["FramesAnalysis", "describe", "frames_section"]


def describe(setup: Any, opts: Any, **extra: Any) -> dict[str, Any]:
    """The ``frames`` analysis entry: what the report says about the frames."""
    t = setup.table
    per_class = np.bincount(t.y, minlength=len(t.classes))
    return {
        "level": "segments" if opts.segments else "frames",
        "feature_set": setup.name,
        "alignments": setup.source,
        "stored_frames": int(t.total_frames),
        "labelled_frames": int(t.num_frames),
        "items": len(t.items),
        "speakers": None if setup.groups is None else len(np.unique(setup.groups)),
        "dropped": dict(t.dropped),
        "unlabelled": opts.unlabelled,
        "max_train_frames": opts.max_train_frames,
        "class_frames": pd.Series(per_class, index=t.classes).to_dict(),
        **extra,
    }


def frames_section(info: dict[str, Any]) -> list[str]:
    """The report's section on the frames (or segments) a study used."""
    level = info["level"]
    lines = [f"## {'Frame' if level == 'frames' else 'Segment'}-level probing", ""]
    lines.append(f"- feature set `{info['feature_set']}`, labels from `{info['alignments']}`: "
                 f"{info['labelled_frames']} of {info['stored_frames']} stored frames labelled, "
                 f"{info['items']} items" + ("" if info["speakers"] is None
                                             else f", {info['speakers']} speakers"))
    for what, n in info["dropped"].items():
        lines.append(f"- {n} {what}")
    if level == "frames":
        cap = info["max_train_frames"]
        used = info.get("n_train_used") or [0]
        lines.append("- training frames per fold: " + (
            f"a seeded class-stratified sample of at most {cap} (used {min(used)}–{max(used)})"
            if cap else "all") + "; every held-out frame evaluated")
        secs = info.get("seconds", {})
        if secs:
            lines.append(f"- time: read {secs.get('read', 0):.1f} s in {info.get('passes')} pass(es) "
                         f"over the stored frames, fit {secs.get('fit', 0):.1f} s, evaluate "
                         f"{secs.get('evaluate', 0):.1f} s, "
                         f"statistics {secs.get('statistics', 0):.1f} s")
    else:
        lines.append(f"- {info['segments']} segments, each pooled over the frames whose centres it "
                     f"covers; {info['empty_segments']} segments without a frame centre dropped")
    top = sorted(info["class_frames"].items(), key=lambda kv: -kv[1])[:10]
    lines.append("- frames per label: " + ", ".join(f"{k} ({v})" for k, v in top)
                 + (f", ... ({len(info['class_frames']) - 10} more)" if len(info["class_frames"]) > 10 else ""))
    lines.append("- the Data section below counts frames (or segments) as items")
    return lines


class FramesAnalysis(Analysis):
    """What a frame- or segment-level study used: counts, the training cap, timings.

    Not asked for by options: the frame-level and segment-level studies
    (:mod:`embedx.probing.frames.run`) hand their :func:`describe` to the study themselves; the
    report opens with :func:`frames_section` and ``frames.json`` holds it.
    """

    name = "frames"

    def wanted(self, options: Mapping[str, Any]) -> bool:
        return False

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> Any:
        return state

    def write(self, value: Any, out: Path, files: dict[str, str]) -> None:
        (out / "frames.json").write_text(json.dumps(value, indent=2, default=_plain), encoding="utf-8")
        files["frames"] = "frames.json"

    def headline(self, value: Any, study: Any) -> list[str]:
        return [*frames_section(value), ""]


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
