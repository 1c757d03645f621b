"""A timeline from per-frame answers: consecutive sampled frames merged into labelled segments.

Each sampled frame's label is smoothed over a centered window of ``window`` sampled frames: the top-1 label
of most frames in the window wins (ties: the larger summed probability), so one odd frame between agreeing
neighbours does not split a segment (no one-frame flicker), while a real change of scene still starts its
segment at the right frame (a centered majority moves no boundary of a clean step, whatever the two
scenes' confidences).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..labels import Prediction

__all__ = ["Segment", "segments", "format_time", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 5  # sampled frames: 2.5 s at the default --fps 2


@dataclass(frozen=True)
class Segment:
    start: float  # seconds: the first frame's time
    end: float  # seconds: the next segment's first frame, or the last frame plus one sampling step
    label: str
    class_index: int
    probability: float  # mean probability of the label over the segment's frames
    frames: int  # sampled frames in the segment

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "class_index": self.class_index,
            "probability": round(self.probability, 4),
            "frames": self.frames,
        }

    def __str__(self) -> str:
        return f"{format_time(self.start)}\u2013{format_time(self.end)}  {self.label}  {self.probability:.2f}"


def format_time(seconds: float) -> str:
    """``mm:ss.s`` (``h:mm:ss.s`` past an hour): the timeline's clock."""
    tenths = int(round(seconds * 10))
    h, rest = divmod(tenths, 36000)
    m, rest = divmod(rest, 600)
    s = f"{m:02d}:{rest // 10:02d}.{rest % 10}"
    return f"{h}:{s}" if h else s


def segments(
    times: Sequence[float],
    predictions: Sequence[Sequence[Prediction]],
    window: int = DEFAULT_WINDOW,
    duration: float | None = None,
) -> list[Segment]:
    """Segments of the frames at ``times`` (seconds, increasing) with their top-k ``predictions``; the last
    one ends a sampling step after its last frame, but not past ``duration`` (the video's end) when known."""
    if window < 1:
        raise ValueError(f"the smoothing window must be >= 1 sampled frame, got {window}")
    n = len(times)
    if n != len(predictions):
        raise ValueError(f"{n} frame times but {len(predictions)} frames of predictions")
    half = window // 2
    smoothed: list[Prediction] = []
    for i in range(n):
        votes: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
        named: dict[int, Prediction] = {}
        for preds in predictions[max(0, i - half) : i + half + 1]:
            if preds:
                top = preds[0]
                votes[top.class_index][0] += 1
                votes[top.class_index][1] += top.probability
                named[top.class_index] = top
        smoothed.append(named[max(votes, key=lambda c: (votes[c][0], votes[c][1], -c))])
    step = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
    out: list[Segment] = []
    start = 0
    for i in range(1, n + 1):
        if i < n and smoothed[i].class_index == smoothed[start].class_index:
            continue
        label = smoothed[start]
        probs = [
            next((p.probability for p in predictions[j] if p.class_index == label.class_index), 0.0)
            for j in range(start, i)
        ]
        end = times[i] if i < n else times[-1] + step
        if i == n and duration is not None:
            end = max(times[-1], min(end, duration))
        out.append(Segment(times[start], end, label.label, label.class_index, sum(probs) / len(probs), i - start))
        start = i
    return out
