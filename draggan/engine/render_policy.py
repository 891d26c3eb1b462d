"""When to render the live view during a drag: driven by measured time, not by step count.

A drag step and a render cost different, machine-dependent times (at 512 on one CPU thread ~0.1 s per step,
~0.75 s per exact render, ~0.28 s per preview), so "render every k steps" is either stale or slow somewhere.
`RenderPolicy` keeps two promises instead, decided after every step from the times measured so far:

- freshness: the view is never older than `max_age_s` — render now when waiting one more step and then
  rendering (their times estimated from the last ones) would deliver the next view later than that;
- cost: otherwise render only while rendering stays within `share` of the drag's wall time, counting the
  render about to happen: rendered_s + next_render_s ≤ share × (elapsed_s + next_render_s).

Freshness wins over cost (a view older than max_age_s is what the user sees as a frozen app), but only up
to `max_share` of the wall time: on a CPU shared with other work a render takes longer in wall-clock terms
and freshness alone would spend most of the drag rendering; there the view ages past max_age_s instead
(the render cost and budget are counted in the same way as for `share`). Estimates are
exponential moving averages (weight 0.5) of the measured step and render seconds; a run may start knowing
the render cost (render_costs.py keeps the last ones); when it is unknown it is counted as zero, so the first
step is followed by a render, which measures it. That measuring render is not counted against the shares:
it happens once per network and process, and counted at the run's start it would use up `max_share` early
and hold the next view back past `max_age_s` (2.3 s at 1024 on CPU).
`preview=True` asks for the cheap preview image during the drag (the network's `render_direct`); the final
image of a run is always the exact full render. Times are plain floats (seconds on any monotonic clock), so the
decisions are pure functions of the numbers fed in and testable with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderPolicy:
    """Render at most `share` of the wall time, and never leave the view older than `max_age_s` seconds
    while rendering stays within `max_share` of it."""

    share: float = 0.15   # + the exact closing render (~9 % of a 100-step drag at 512 on CPU): ≤ 1.3× the steps
    max_age_s: float = 2.0
    preview: bool = True
    max_share: float = 0.35

    def __post_init__(self) -> None:
        if not 0 <= self.share < 1:
            raise ValueError(f"share must be in [0, 1), got {self.share}")
        if not self.share <= self.max_share < 1:
            raise ValueError(f"max_share must be in [share, 1), got {self.max_share}")
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")

    def start(self, now: float, render_s: float | None = None) -> "RenderSchedule":
        """A schedule for one run that starts at time `now` (the view is fresh at the start), knowing that a
        render costs `render_s` seconds, or not yet (None)."""
        return RenderSchedule(self, now, render_s)


class RenderSchedule:
    """The running state of one `RenderPolicy`: call `step_done` after every step, `rendered` after a render."""

    _ALPHA = 0.5

    def __init__(self, policy: RenderPolicy, now: float, render_s: float | None = None) -> None:
        self.policy = policy
        self.start = now
        self.view_time = now          # when the shown view was last refreshed
        self.rendered_s = 0.0         # total seconds spent rendering in this run
        self.step_s: float | None = None
        self.render_s = render_s      # estimated seconds of one render (None: not known yet)

    @classmethod
    def _average(cls, old: float | None, new: float) -> float:
        return new if old is None else (1 - cls._ALPHA) * old + cls._ALPHA * new

    def step_done(self, now: float, seconds: float) -> bool:
        """Record a step of `seconds` that ended at `now`; True when the view should be rendered now."""
        self.step_s = self._average(self.step_s, max(seconds, 0.0))
        cost = self.render_s or 0.0
        share = self.policy.share
        if now - self.view_time + self.step_s + cost > self.policy.max_age_s:
            share = self.policy.max_share
        return self.rendered_s + cost <= share * (now - self.start + cost)

    def rendered(self, now: float, seconds: float) -> None:
        """Record a render of `seconds` that ended at `now` (the view is fresh again)."""
        if self.render_s is not None:        # (the first, measuring render is not counted: module docstring)
            self.rendered_s += max(seconds, 0.0)
        self.render_s = self._average(self.render_s, max(seconds, 0.0))
        self.view_time = now
