"""``objstore bench``'s arguments: what it says when it is given too little to run."""

from __future__ import annotations

from .conftest import run


def test_bench_without_a_target_says_how_to_give_one(capsys):
    code, out, err = run(capsys, "bench", "--graph", "small")
    assert (code, out) == (2, "")
    assert err == "objstore: give at least one --target (or --spawn)\n"


def test_bench_compare_takes_exactly_two_files(tmp_path, capsys):
    one = str(tmp_path / "a.json")
    for words in (["compare", one], ["compare", one, one, one], ["comapre", one, one]):
        code, out, err = run(capsys, "bench", *words)
        assert (code, out) == (2, ""), words
        assert err == "objstore: use 'objstore bench compare OLD.json NEW.json'\n", words
