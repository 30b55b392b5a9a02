"""fit's progress bar (jaxconv._hooks.Progress) shows one rate: steps per second from the end
of the first chunk (which holds the compile) on, and never tqdm's own rate beside it."""

import re

import numpy as np

from jaxconv import _hooks


def _chunk(start, end, loss=1.0):
    losses = np.full(end - start, loss, np.float32)
    return _hooks.Chunk(start, end, losses, boundary=False)


def _last_line(text):
    return [line for line in re.split(r"[\r\n]", text) if line.strip()][-1]


def test_one_rate_measured_after_the_first_chunk(capsys):
    times = iter([10.0, 10.5, 11.0])  # the first chunk ends at 10 s: it held the compile
    bar = _hooks.Progress(300, 0, clock=lambda: next(times))
    for start in (0, 100, 200):
        bar.after_chunk(_chunk(start, start + 100, loss=0.25))
    bar.close()
    line = _last_line(capsys.readouterr().err)
    assert "300/300" in line
    assert "200 steps/s" in line  # 200 steps in the last 1.0 s
    assert len(re.findall(r"/s\b", line)) == 1, line  # no second (tqdm) rate
    assert "loss=2.500e-01" in line


def test_no_rate_before_a_second_chunk_and_nan_losses(capsys):
    bar = _hooks.Progress(100, 0, clock=lambda: 5.0)
    bar.after_chunk(_chunk(0, 100, loss=np.nan))
    bar.close()
    line = _last_line(capsys.readouterr().err)
    assert "/s" not in line and "loss=nan" in line
