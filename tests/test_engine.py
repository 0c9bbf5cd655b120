"""The enclave on an OpenAI-compatible engine (issue 16, point 6), and the labels that name the
model (point 5): llama-cpp-python's own server (`python -m llama_cpp.server`, its `server` extra)
serving the embedded model's GGUF file under another name, started by the test on loopback;
`privproc up --engine URL --engine-model NAME --engine-model-file FILE` on it, as a person runs
it; private requests answered by the engine (its request log grows), named by the declared card,
under a measurement that holds the engine's settings. And the refusals: an engine that is down,
a model it does not serve, a digest that is not one, options that do not go together: each a
clear error, at once, before anything starts."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from privproc.api import ENGINE_REMOTE, SessionPolicy
from privproc.errors import UnusableAnswerError, UsageError
from privproc.parties.device.controls import Settings
from privproc.parties.device.private import PrivateProcessingClient
from privproc.parties.enclave.hardening import enclave_environment
from privproc.parties.enclave.inference.backends import MODEL_NAME, declare_engine, locate_smollm2
from privproc.parties.enclave.inference.models import EngineModel
from privproc.parties.enclave.workload import enclave_config, enclave_manifest
from privproc.system import free_port
from tests.servers import privproc_cli, stop_process

ROOT = Path(__file__).resolve().parent.parent
ENGINE_MODEL = "smollm2-engine"  # the name the engine serves it under: not the embedded one's
NO_DIGEST = "sha256:" + "0" * 64
CHAT = [
    {"sender": "Ana", "time": "10:00", "text": "are we still on for Saturday?"},
    {"sender": "Ben", "time": "10:01", "text": "yes, 10am at the park, bring the blue kite"},
]


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the engine did not start"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """llama-cpp-python's OpenAI-compatible server on the embedded model's file, on loopback;
    (its URL, its log: one access line per request). One thread: on a busy machine, llama.cpp's
    OpenMP threads spin waiting for each other and a token takes seconds."""
    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    port = free_port("127.0.0.1")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(locate_smollm2()),
             "--model_alias", ENGINE_MODEL, "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/v1/models", process, log, 120)
        yield url, log
    finally:
        stop_process(process)


def _engine(url: str) -> EngineModel:
    return declare_engine(url, ENGINE_MODEL, model_file=locate_smollm2())


@pytest.fixture(scope="module")
def engine_up(
    llama_server: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """`privproc up` on the engine, serving until the module ends; (its state, its output)."""
    url, _ = llama_server
    tmp = tmp_path_factory.mktemp("up")
    state, output = tmp / "privproc", tmp / "up.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "privproc.cli", "up", "--state", str(state),
             "--engine", url, "--engine-model", ENGINE_MODEL,
             "--engine-model-file", str(locate_smollm2())],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not re.search(r"^ready\b", output.read_text(errors="replace"), re.M):
            assert process.poll() is None, output.read_text(errors="replace")
            assert time.monotonic() < deadline, "privproc up never got ready"
            time.sleep(0.3)
        settings = Settings.load(state / "client")
        settings.set_feature("chat", True)
        settings.set_feature("writing-help", True)
        settings.save()
        yield state, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _engine_requests(log: Path) -> int:
    """How many chat completions the engine has answered (its access log)."""
    return log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')


def test_up_on_an_engine_says_which_model_answers(
    engine_up: tuple[Path, Path], llama_server: tuple[str, Path]
) -> None:
    url, log = llama_server
    _, output = engine_up
    said = output.read_text()
    card = _engine(url).card()
    # The embedded model's own file, served by the engine: still labelled a demonstration.
    assert f"model: {card.label()}" in said
    assert f"model: {ENGINE_MODEL}, 135M parameters, Q4_1, {card.digest[:15]}..., on " in said
    assert "a small demonstration model" in said
    assert "serve a bigger model on the engine" in said
    assert "private summary" in said  # the sample, served by the enclave on the engine
    assert '"GET /v1/models HTTP/1.1" 200' in log.read_text()  # up asked the engine first


def test_a_private_request_is_answered_by_the_engine_under_a_measurement_that_names_it(
    engine_up: tuple[Path, Path], llama_server: tuple[str, Path]
) -> None:
    url, log = llama_server
    state, _ = engine_up
    engine = _engine(url)
    before = _engine_requests(log)
    client = PrivateProcessingClient.from_state(state / "client")
    try:
        summary = client.summarize(CHAT)
        # A demonstration card: the summary is the chat's plan alone, the engine is not asked.
        assert _engine_requests(log) == before
        with contextlib.suppress(UnusableAnswerError):  # asked either way; its checks may refuse
            client.rewrite("thanks for the help", "professional")
        reply = client.chat("What is the capital of France?", max_tokens=20, temperature=0)
        stream = client.chat_stream("Name a colour.", max_tokens=10, temperature=0)
        streamed = "".join(stream)
        status, models = client.request("GET", "/v1/models")
    finally:
        client.close()
    assert _engine_requests(log) >= before + 3  # the rewrite and both answers came from it
    assert streamed
    assert stream.model_card == engine.card()  # a stream names its model in its first chunk
    assert summary.text
    assert reply.text
    assert summary.model_card == reply.model_card == engine.card()
    assert summary.model_card is not None
    assert (summary.model_card.name, summary.model_card.engine) == (ENGINE_MODEL, ENGINE_REMOTE)
    assert summary.model_card.digest == engine.digest
    assert reply.model == ENGINE_MODEL  # the declared name, not the engine's file path
    assert status == 200
    assert engine.card().to_dict().items() <= models["data"][0].items()

    # The enclave the client verified measured the engine's URL and the model's declaration;
    # the embedded model's build, or the same engine with other weights, measures otherwise.
    policy = SessionPolicy()
    config = enclave_config(ENGINE_MODEL, policy, engine=engine)
    assert json.loads(config)["engine"] == {
        "url": url, "model": ENGINE_MODEL, "digest": engine.digest, "size": "135M",
        "quantisation": "Q4_1", "demonstration": True,
    }  # fmt: skip
    measured = enclave_manifest(None, config)
    assert summary.provenance.measurement == measured.measurement.hex()
    assert summary.provenance.log_index is not None
    assert not [e for e in measured.entries if e.kind == "model"]  # no model file of its own
    embedded = enclave_manifest(locate_smollm2(), enclave_config(MODEL_NAME, policy))
    other = declare_engine(url, ENGINE_MODEL, digest=NO_DIGEST)
    for build in (embedded, enclave_manifest(None, enclave_config(ENGINE_MODEL, engine=other))):
        assert build.measurement != measured.measurement


def test_verbose_names_the_model_that_answered(
    engine_up: tuple[Path, Path], llama_server: tuple[str, Path]
) -> None:
    state, _ = engine_up
    done = privproc_cli(
        "summarize", str(ROOT / "examples" / "chat.json"), "--verbose", "--state", str(state)
    )
    assert done.returncode == 0, done.stderr
    assert f"model: {_engine(llama_server[0]).card().label()}" in done.stderr


def test_every_engine_setting_is_in_the_measured_configuration() -> None:
    """Config version 4: the engine's URL and each field of the declared model change the
    measurement; the configured model is the engine's."""
    base = declare_engine("http://127.0.0.1:8080", "m", digest=NO_DIGEST, size="8B",
                          quantisation="Q8_0")  # fmt: skip
    doc = json.loads(enclave_config("m", engine=base))
    assert doc["version"] == 4
    assert doc["engine"] == base.config()
    assert json.loads(enclave_config(MODEL_NAME))["engine"] is None
    variants = [
        declare_engine("http://127.0.0.1:8081", "m", digest=NO_DIGEST, size="8B",
                       quantisation="Q8_0"),
        declare_engine("http://127.0.0.1:8080", "m", digest="sha256:" + "1" * 64, size="8B",
                       quantisation="Q8_0"),
        declare_engine("http://127.0.0.1:8080", "m", digest=NO_DIGEST, size="70B",
                       quantisation="Q8_0"),
        declare_engine("http://127.0.0.1:8080", "m", digest=NO_DIGEST, size="8B",
                       quantisation="Q4_K_M"),
    ]  # fmt: skip
    measured = enclave_manifest(None, enclave_config("m", engine=base)).measurement
    for other in variants:
        assert enclave_manifest(None, enclave_config("m", engine=other)).measurement != measured
    renamed = declare_engine("http://127.0.0.1:8080", "n", digest=NO_DIGEST)
    assert enclave_config("n", engine=renamed) != enclave_config("m", engine=base)
    with pytest.raises(UsageError, match="the engine's model"):
        enclave_config("m", engine=renamed)


def _serve_enclave(*engine_args: str) -> subprocess.CompletedProcess[str]:
    """`privproc serve enclave` on an engine, in the environment its allowlist accepts; it
    checks the engine before it touches the platform, so it needs none to be refused."""
    return subprocess.run(
        [sys.executable, "-m", "privproc.cli", "serve", "enclave", "--port", "0", *engine_args],
        capture_output=True, text=True, timeout=120, check=False,
        env=enclave_environment(os.environ),
    )  # fmt: skip


def test_the_enclave_does_not_start_on_an_engine_that_is_down() -> None:
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    done = _serve_enclave("--engine", down, "--engine-model", "m", "--engine-model-digest",
                          NO_DIGEST)  # fmt: skip
    assert done.returncode == 1
    assert f"the inference engine at {down} did not answer GET /v1/models" in done.stderr
    assert "ready enclave" not in done.stdout


def test_the_enclave_does_not_start_on_a_model_the_engine_does_not_serve(
    llama_server: tuple[str, Path],
) -> None:
    url, _ = llama_server
    done = _serve_enclave("--engine", url, "--engine-model", "gpt-9", "--engine-model-digest",
                          NO_DIGEST)  # fmt: skip
    assert done.returncode == 1
    assert f"does not serve the model 'gpt-9' (it serves '{ENGINE_MODEL}')" in done.stderr
    assert "ready enclave" not in done.stdout


def test_engine_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "privproc"
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    cases = [
        (["--engine", down, "--engine-model", "m", "--engine-model-digest", "sha256:abc"], 1,
         "a model digest is sha256: followed by 64 hex digits"),
        (["--engine", down, "--engine-model", "m"], 2,
         "--engine-model-file FILE or --engine-model-digest sha256:HEX"),
        (["--engine", down, "--engine-model-digest", NO_DIGEST], 2,
         "--engine needs --engine-model"),
        (["--engine-model", "m"], 2, "the --engine-model options go with --engine URL"),
        (["--engine", "ftp://x", "--engine-model", "m", "--engine-model-digest", NO_DIGEST], 1,
         "the engine URL is http:// or https://"),
        (["--engine", down, "--engine-model", "m", "--engine-model-digest", NO_DIGEST], 1,
         f"the inference engine at {down} did not answer GET /v1/models"),
    ]  # fmt: skip
    for args, status, message in cases:
        done = privproc_cli("up", "--once", "--state", str(state), *args)
        assert (done.returncode, message in done.stderr) == (status, True), (args, done.stderr)
        assert not state.exists()  # nothing started, nothing reset
    refused = _serve_enclave("--engine", down, "--engine-model", "m",
                             "--engine-model-digest", "md5:00")  # fmt: skip
    assert refused.returncode == 1
    assert "a model digest is sha256: followed by 64 hex digits" in refused.stderr


def test_the_readme_runs_up_on_an_engine_with_options_up_takes() -> None:
    """The README's engine example (llama.cpp's server, then `privproc up --engine ...`) uses
    only options that exist; the run above is that example on the embedded model's file."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- engine-example -->\n```sh\n(.*?)```", text, re.S)
    assert block is not None, "the README shows no engine example"
    example = block.group(1)
    assert "llama-server" in example
    up_line = next(line for line in example.splitlines() if line.startswith("privproc up"))
    helped = privproc_cli("up", "--help").stdout
    used = re.findall(r"--[a-z-]+", up_line.partition("  #")[0])
    assert {"--engine", "--engine-model", "--engine-model-file"} <= set(used)
    for option in used:
        assert option in helped, option
