"""Syntax trees kept across runs (compiler/frontend/parse_cache.py): the same tree as a fresh
parse, never a stale one, and never a cached syntax error."""
from __future__ import annotations

import pytest

from compiler.errors import DscError
from compiler.frontend import parse_cache
from compiler.frontend.parser import parse

TEXT = "model m {\n  size N = 8\n  input x: bf16[N, N]\n  output y: bf16[N, N] = x @ x\n}\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSC_CACHE", str(tmp_path))
    return tmp_path / "trees"


def _counting():
    calls = []

    def counted(text, shown):
        calls.append(shown)
        return parse(text, shown)
    return counted, calls


def test_a_second_run_reads_the_tree_it_kept(cache):
    counted, calls = _counting()
    first = parse_cache.cached_parse(TEXT, "m.ds", counted)
    again = parse_cache.cached_parse(TEXT, "m.ds", counted)
    assert calls == ["m.ds"] and again == first == parse(TEXT, "m.ds")
    assert len(list(cache.glob("*.pickle"))) == 1


def test_other_text_or_another_name_is_parsed_afresh(cache):
    counted, calls = _counting()
    parse_cache.cached_parse(TEXT, "m.ds", counted)
    other = parse_cache.cached_parse(TEXT.replace("8", "16"), "m.ds", counted)
    renamed = parse_cache.cached_parse(TEXT, "n.ds", counted)
    assert calls == ["m.ds", "m.ds", "n.ds"]
    assert renamed.items[0].loc.file == "n.ds"        # positions name the file shown
    assert other != parse_cache.cached_parse(TEXT, "m.ds", counted)


def test_a_syntax_error_is_raised_every_time_and_not_kept(cache):
    bad = TEXT.replace("@ x", "@")
    for _ in range(2):
        with pytest.raises(DscError, match="m.ds:5:1"):
            parse_cache.cached_parse(bad, "m.ds", parse)
    assert not cache.exists() or not list(cache.glob("*.pickle"))


def test_an_unreadable_entry_is_parsed_again_and_rewritten(cache):
    parse_cache.cached_parse(TEXT, "m.ds", parse)
    (entry,) = cache.glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    counted, calls = _counting()
    assert parse_cache.cached_parse(TEXT, "m.ds", counted) == parse(TEXT, "m.ds")
    assert calls == ["m.ds"] and entry.read_bytes() != b"not a pickle"


def test_cache_off_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DSC_CACHE", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    counted, calls = _counting()
    parse_cache.cached_parse(TEXT, "m.ds", counted)
    parse_cache.cached_parse(TEXT, "m.ds", counted)
    assert calls == ["m.ds", "m.ds"] and not any(tmp_path.rglob("*.pickle"))
