import io

from memtrain.progress import progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_one_line_per_refresh_and_no_carriage_returns():
    log = io.StringIO()
    with progress_bar(total=3, desc="work", file=log, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() for line in lines)  # no blank clears
    assert "3/3" in lines[-1]


def test_terminal_keeps_in_place_redraws():
    tty = _Tty()
    with progress_bar(total=2, desc="work", file=tty, mininterval=0) as bar:
        bar.update(2)
    assert "\r" in tty.getvalue()


def test_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(3), file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_a_bar_that_ends_below_its_total_closes_at_its_real_count():
    """Totals announced up front can be upper bounds (data build drops, search episodes that answer early):
    the closing line is what was done, 15/15, not 15/18."""
    log = io.StringIO()
    with progress_bar(total=18, desc="data build", file=log, mininterval=0) as bar:
        bar.update(15)
    assert bar.total == 15 and "15/15" in log.getvalue().splitlines()[-1]


def test_a_bar_closed_by_an_error_keeps_the_short_count():
    log = io.StringIO()
    bar = progress_bar(total=18, desc="data build", file=log, mininterval=0)
    try:
        try:
            bar.update(15)
            raise RuntimeError("killed")
        finally:
            bar.close()
    except RuntimeError:
        pass
    assert bar.total == 18 and "15/18" in log.getvalue().splitlines()[-1]


def test_a_transient_bar_in_a_log_file_writes_its_closing_line():
    """leave=False bars (rollouts, held-out evaluations) finished between two refreshes; their last log
    line was an early refresh (`24/40`) of work that completed."""
    log = io.StringIO()
    bar = progress_bar(total=40, desc="rollout", file=log, leave=False)  # the log default: 30 s refreshes
    bar.update(24)
    bar.update(16)
    bar.close()
    assert "40/40" in log.getvalue().splitlines()[-1]


def test_nested_bars_write_no_cursor_moves_to_a_log_file():
    log = io.StringIO()
    with progress_bar(total=2, desc="train", file=log, mininterval=0) as outer:
        for _ in range(2):
            with progress_bar(total=3, desc="rollout", file=log, mininterval=0, leave=False) as inner:
                inner.update(3)
            outer.update(1)
    assert "\x1b" not in log.getvalue()
    assert all(line.strip() for line in log.getvalue().splitlines())


def test_the_rollout_bar_counts_only_the_conversations_it_will_make(tiny_engine, monkeypatch):
    """The rollout bar's total counts G2 IMR answers only for trajectories whose chunks give a probe:
    a document without one made the held-out bar stop at 24/40."""
    from helpers import make_tasks

    from memtrain.agent import loop
    from memtrain.agent.loop import AgentConfig
    from memtrain.rl.config import RolloutConfig
    from memtrain.rl.rollout import collect

    seen = []

    def recording_bar(*a, **k):
        bar = progress_bar(*a, **k)
        seen.append((k["total"], bar))
        return bar

    monkeypatch.setattr(loop, "progress_bar", recording_bar)
    probed, bare = make_tasks(2)
    bare.imr = [[], [], []]  # no IMR candidate anywhere: no probe, no IMR answers
    agent = AgentConfig(chunk_tokens=64, memory_tokens=3, answer_tokens=3, max_chunks=3)
    r = collect(tiny_engine, [probed, bare], agent, RolloutConfig(g1=2, g2=3), seed=0, progress=True)
    made = sum(len(tr.turns) for tr in r.trajectories) + sum(len(q.completions) for q in r.imr if q)
    (total, bar), = seen
    assert r.imr[2] is None and made == 2 * (4 + 3) + 2 * 4
    assert total == made and bar.n == made
