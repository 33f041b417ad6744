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
