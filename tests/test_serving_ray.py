"""Ray Serve (`hf_multiexit.serving.ray_serve`): the server's app deployed on a local Ray instance bound to loopback
answers as the offline model does. A file of its own: starting Ray costs about half a minute, and as its own file
pytest-xdist can place it on whichever worker is free."""

from __future__ import annotations

import socket

import pytest
from test_serving import TOL, fire, offline, sentences, serving_setup

from hf_multiexit.serving import Prediction
from hf_multiexit.serving.server import label_and_score


@pytest.mark.slow
def test_ray_serve_deployment_answers_like_offline_calls(tmp_path):
    """The same app as a Ray Serve deployment (`build_application`) on a local Ray instance bound to loopback: each
    request answered as the offline call answers it."""
    import ray
    from ray import serve

    from hf_multiexit.serving.ray_serve import DEPLOYMENT_NAME, app_builder

    model, tokenizer, folder, rules = serving_setup(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cases = [(text, rules[i % len(rules)]) for i, text in enumerate(sentences(60, seed=7))]
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app_builder({"model": folder, "num_threads": "1"}), name=DEPLOYMENT_NAME, route_prefix="/")
        responses = fire(f"http://127.0.0.1:{port}", [{"inputs": text, "parameters": rule} for text, rule in cases], clients=8)
    finally:
        serve.shutdown()
        ray.shutdown()
    assert [status for status, _ in responses] == [200] * len(cases), responses[0]
    for (text, rule), (_, got) in zip(cases, responses):
        want = label_and_score(Prediction(**offline(model, tokenizer, text, rule)), model.config)
        assert (got["label"], got["exit_layer"]) == (want["label"], want["exit_layer"])
        assert abs(got["score"] - want["score"]) <= TOL
    with pytest.raises(ValueError, match="unknown arguments \\['modle'\\]"):
        app_builder({"modle": folder})
