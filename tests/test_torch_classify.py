"""torchbert.classify: fine-tuning learns, bad input fails cleanly (cases shared with jaxbert in
tests/twin_classify_cases.py)."""

from __future__ import annotations

import pytest

import twin_classify_cases as cases

TWIN = "torch"


@pytest.mark.slow
def test_learns_from_hf_dir(tmp_path, cache_env, capsys):
    cases.learns_from_hf_dir(TWIN, tmp_path, cache_env, capsys)


def test_bad_input(tmp_path, capsys):
    cases.bad_input(TWIN, tmp_path, capsys)


@pytest.mark.slow
def test_resume_is_exact(tmp_path, cache_env, capsys, monkeypatch):
    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    cases.resume_is_exact(TWIN, tmp_path, capsys)


@pytest.mark.slow
def test_learns_from_pretraining_run(tmp_path, cache_env, capsys, monkeypatch):
    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    cases.learns_from_pretraining_run(TWIN, tmp_path, capsys)
