"""The one progress helper: plain periodic lines when stdout is not a terminal, silence when disabled."""

import io

from alignkit.progress import Progress, ProgressBar


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_every_tenth_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    with ProgressBar("generate", 100, stream=out, terminal=False, clock=clock) as bar:
        for _ in range(100):
            clock.t += 0.5
            bar.advance()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 100%
    assert lines[0] == "generate: 10/100 (10%), 2/s, elapsed 5s, ETA 45s"
    assert lines[-1] == "generate: 100/100 (100%), 2/s, elapsed 50s"


def test_plain_lines_every_30_seconds_on_slow_work_with_info():
    out, clock = io.StringIO(), Clock()
    with ProgressBar("train", 1000, stream=out, terminal=False, clock=clock, completed=10) as bar:
        clock.t = 31.0
        bar.advance(info="loss 0.6931")
        clock.t = 40.0
        bar.advance(info="loss 0.6")  # not due: < 10% and < 30 s since the last line
    assert out.getvalue().splitlines() == ["train: 11/1000 (1%), 0.0323/s, elapsed 31s, ETA 8h30m, loss 0.6931"]


def test_disabled_prints_nothing_and_tasks_share_one_display():
    out = io.StringIO()
    with ProgressBar("x", 3, enabled=False, stream=out, terminal=False) as bar:
        bar.advance(3)
    assert out.getvalue() == ""
    with Progress(stream=out, terminal=False) as p:
        a, b = p.task("statements", 2), p.task("support", 1)
        p.advance(a)
        p.advance(b)
        p.describe(a, "claims")
        p.advance(a)
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "statements: 1/2 (50%)", "support: 1/1 (100%)", "claims: 2/2 (100%)"]
