"""Session factory: provider preference, and the IO-binding runner against a plain run.

The binding path is what CUDA uses; it is exercised here on the CPU (same ORT calls, device
"cpu"), so a CPU-only CI still checks that it returns exactly what `session.run` returns.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from perceptd.daemon.inference.session import (
    CPU,
    CUDA,
    TRT,
    Runner,
    SessionOptions,
    _providers,
    create_session,
    provider_of,
    tensorrt_loadable,
)


def test_provider_preference() -> None:
    assert _providers(SessionOptions(device="cpu")) == [CPU]
    auto = _providers(SessionOptions(device="auto", trt_cache_dir="/tmp/x"))
    assert auto[-1] == CPU
    names = [p[0] if isinstance(p, tuple) else p for p in auto]
    assert (TRT in names) == tensorrt_loadable()
    assert [p[0] if isinstance(p, tuple) else p for p in _providers(SessionOptions(providers=(CUDA, CPU)))] \
        == [CUDA, CPU]
    no_trt = _providers(SessionOptions(device="cuda", tensorrt=False))
    assert TRT not in [p[0] if isinstance(p, tuple) else p for p in no_trt]


def test_auto_reports_the_provider_really_used(bundle_dir) -> None:
    sess = create_session(bundle_dir / "vad.onnx", SessionOptions(device="auto"))
    assert provider_of(sess) in (CPU, CUDA, TRT)


@pytest.fixture(scope="module")
def fusion_session(bundle_dir):
    return create_session(bundle_dir / "fusion.onnx", SessionOptions(device="cpu"))


def _fusion_feeds(sess, rows: int = 3) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    dims = {i.name: i.shape for i in sess.get_inputs()}
    events, prompts = 5, 3
    sizes = {"batch": rows, "events": events, "events2": events, "prompts": prompts}
    arrays = {}
    for name, shape in dims.items():
        concrete = [sizes.get(d, d) if isinstance(d, str) else d for d in shape]
        arrays[name] = rng.random(concrete, dtype=np.float32)
    arrays["mask"] = np.ones((rows, 4), np.float32)
    feeds = {k: arrays.pop(k) for k in ("x", "mask")}
    return feeds, arrays


def test_bound_runner_returns_what_run_returns(fusion_session) -> None:
    feeds, constants = _fusion_feeds(fusion_session)
    names = [o.name for o in fusion_session.get_outputs()]
    plain = dict(zip(names, fusion_session.run(names, {**feeds, **constants}), strict=True))
    host = ("scores", "weights")
    bound = Runner(fusion_session, constants, host_outputs=host, bind=True).run(feeds)
    for name in names:
        if name in host:
            np.testing.assert_array_equal(bound[name], plain[name])
        else:  # left on the device, as a value another bound session can take as a feed
            assert isinstance(bound[name], ort.OrtValue)
            np.testing.assert_array_equal(bound[name].numpy(), plain[name])
    unbound = Runner(fusion_session, constants, host_outputs=host, bind=False).run(feeds)
    for name in names:  # the CPU path is a plain run: every output, unchanged
        np.testing.assert_array_equal(unbound[name], plain[name])


def test_runner_binds_only_on_a_gpu(fusion_session) -> None:
    assert Runner(fusion_session).bound is False


def test_providers_carry_the_cuda_graph_option() -> None:
    opts = SessionOptions(device="cuda", tensorrt=False, cuda_graph=True)
    cuda = next(p for p in _providers(opts) if p[0] == CUDA)[1]
    assert cuda["enable_cuda_graph"] == "1"
    plain = next(p for p in _providers(SessionOptions(device="cuda", tensorrt=False)) if p[0] == CUDA)[1]
    assert "enable_cuda_graph" not in plain


def test_fixed_batch_runner_pads_and_keeps_results(bundle_dir) -> None:
    """Fixed buffers (what a CUDA graph replays): padded rows are cut off, and the next call's
    writes into the same buffers do not change what the previous call returned."""
    from perceptd.daemon.inference.session import FixedBatchRunner

    sess = create_session(bundle_dir / "face_rnet.onnx", SessionOptions(device="cpu"))
    plain = Runner(sess)
    fixed = FixedBatchRunner(sess, batch=4)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8) for _ in range(2))
    first = fixed.run(a, rows=3)
    second = fixed.run(b, rows=4)
    for name, value in plain.run({fixed.input_name: a[:3]}).items():
        assert first[name].shape[0] == 3
        np.testing.assert_allclose(first[name], value, atol=1e-6)
    for name, value in plain.run({fixed.input_name: b}).items():
        np.testing.assert_allclose(second[name], value, atol=1e-6)
    assert fixed.runs == 2


def test_tensorrt_gets_one_profile_for_every_batch_size() -> None:
    from perceptd.daemon.inference.session import _trt_options

    opts = SessionOptions(device="cuda", trt_profile=(("image", (1, 224, 224, 3), (8, 224, 224, 3),
                                                                (8, 224, 224, 3)),))
    o = _trt_options(opts)
    assert o["trt_profile_min_shapes"] == "image:1x224x224x3"
    assert o["trt_profile_opt_shapes"] == o["trt_profile_max_shapes"] == "image:8x224x224x3"
    assert "trt_profile_min_shapes" not in _trt_options(SessionOptions(device="cuda"))
