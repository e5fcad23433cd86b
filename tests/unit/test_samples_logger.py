"""SampleLogger's control-thread side: a `label now` request never waits for fusion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.samples.config import SamplesConfig
from perceptd.daemon.samples.logger import MAX_CAPTURES, LabelError, SampleLogger


@pytest.fixture()
def logger(tmp_path: Path):
    cfg = SamplesConfig.model_validate({"enabled": True, "dir": str(tmp_path),
                                        "encryption": {"enabled": False}})
    events = [EventConfig.model_validate({"name": "cat_present", "prompts": ["a cat"],
                                          "modalities": ["vision"]})]
    lg = SampleLogger(cfg, events, lambda: None)
    assert lg.start()
    yield lg
    lg.close()


def test_label_now_answers_at_once_with_an_id_that_takes_labels(logger: SampleLogger) -> None:
    t0 = time.perf_counter()
    sid = logger.capture("cat_present")  # no fusion thread runs: it must not wait for one
    assert time.perf_counter() - t0 < 0.05
    logger.label(sid, "cat_present")  # labelled before fusion took it: kept, not refused
    assert logger._captures[sid].late_labels == {"cat_present": 1}


def test_label_now_requests_waiting_are_bounded(logger: SampleLogger) -> None:
    for _ in range(MAX_CAPTURES):
        logger.capture("cat_present")
    with pytest.raises(LabelError, match="too many"):
        logger.capture("cat_present")
