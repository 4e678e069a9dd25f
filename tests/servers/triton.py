# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Triton Inference Server on loopback for tests (CPU, python backend).

The ``tritonserver`` binary and its python backend come from the nvidia-pytriton wheel, installed into a
venv of Debian's ``/usr/bin/python3`` (3.11) under ``build/triton-venv`` (see ../../../shared/TESTBED.md):

    venv = ensure_triton_venv()
    repo = write_model_repository(tmp_path / "models", delay_ms=20)
    with triton_server(repo) as triton:
        ...  # http://{triton.host}:{triton.http_port}/v2/..., metrics on triton.metrics_port

or with the arguments of a rendered Deployment's container, as the kubelet hands them to the container (its
environment resolved from the rendered Secrets, ``$(VAR)`` substituted):

    env = container_env(container, secrets)
    with triton_server_args([kube_expand(a, env) for a in container["args"]], log_dir) as triton:
        ...

Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import importlib
import json
import os
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .processes import PORT_ATTEMPTS, PortTaken, port_taken, start_retrying_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "build" / "triton-venv"
LOCK = ROOT / "build" / "triton-venv.lock"
PYTRITON_VERSION = "0.7.0"
BASE_PYTHON = Path("/usr/bin/python3")  # Debian 12: 3.11.2; the wheel's stubs exist for 3.8-3.13
PYVER = "3.11"
# the python backend stub links libpython: it must be the one of the interpreter that made the venv
LIBPYTHON_DIR = Path("/usr/lib/x86_64-linux-gnu")
_STAMP = VENV / ".gpu-ops-ready"
READY_TIMEOUT_S = 60.0


def _site_tritonserver(venv: Path = VENV) -> Path:
    return venv / "lib" / f"python{PYVER}" / "site-packages" / "pytriton" / "tritonserver"


def ensure_triton_venv() -> Path:
    """Build ``build/triton-venv`` once (idempotent, a stamp file; a file lock serialises concurrent callers)."""
    want = f"nvidia-pytriton=={PYTRITON_VERSION} {BASE_PYTHON}\n"
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _STAMP.is_file() and _STAMP.read_text() == want:
                return VENV
            if not BASE_PYTHON.is_file():
                raise RuntimeError(f"{BASE_PYTHON} is missing: `apt-get install python3-venv` (Debian 12)")
            subprocess.run([str(BASE_PYTHON), "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, text=True, timeout=300)
            pip = subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", f"nvidia-pytriton=={PYTRITON_VERSION}"],
                capture_output=True, text=True, timeout=900, check=False,
            )
            if pip.returncode != 0:
                raise RuntimeError(f"pip install nvidia-pytriton=={PYTRITON_VERSION} failed:\n{pip.stdout[-3000:]}{pip.stderr[-3000:]}")
            site = _site_tritonserver()
            stub = site / "python_backend_stubs" / PYVER / "triton_python_backend_stub"
            target = site / "backends" / "python" / "triton_python_backend_stub"
            target.write_bytes(stub.read_bytes())
            target.chmod(0o755)
            _STAMP.write_text(want)
            return VENV
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_MODEL_PY = '''\
# A python-backend model for tests: OUTPUT0 = INPUT0, after sleeping DELAY_MS per request.
import time

import triton_python_backend_utils as pb_utils

DELAY_S = {delay_s!r}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            if DELAY_S > 0:
                time.sleep(DELAY_S)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data.copy())]))
        return responses
'''

_CONFIG = '''\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
'''


def write_model_repository(root: Path, *, delay_ms: float = 0.0, name: str = "sleeper") -> Path:
    """A python-backend model ``name`` (no dynamic batching, one CPU instance: concurrent requests queue)."""
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(_MODEL_PY.format(delay_s=float(delay_ms) / 1000.0))
    (root / name / "config.pbtxt").write_text(_CONFIG.format(name=name))
    return root


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonProcess:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    pid: int
    log: Path
    argv: List[str] = field(default_factory=list)
    proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False, compare=False)
    stopped: bool = field(default=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def successes(self, model: str) -> int:
        """Successful inferences of ``model`` as this Triton counts them (``nv_inference_request_success`` on its
        /metrics; Triton counts a call when it releases the request, just after answering it); 0 before the first."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        pattern = r'^nv_inference_request_success\{[^}]*model="' + re.escape(model) + r'"[^}]*\} (\d+(?:\.\d+)?)$'
        match = re.search(pattern, text, re.MULTILINE)
        return int(float(match.group(1))) if match else 0

    def call(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None,
             headers: Optional[Mapping[str, str]] = None) -> Tuple[int, Any]:
        """One HTTP call to this Triton's HTTP port: (status, decoded JSON body or None); an error status is returned,
        not raised (Triton's errors are JSON bodies the tests read)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{self.host}:{self.http_port}{path}", method=method, data=data, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                return int(resp.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return int(err.code), json.loads(raw) if raw else None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s, then whatever is left of its process group (it runs in a session of its own: a
        tritonserver killed with SIGKILL leaves its python backend stubs behind, and they must not outlive the test);
        returns once nothing of it runs. A second call does nothing (the PID may be another process's by then)."""
        if not self.stopped:
            stop_process_group(self.pid, timeout=10.0, name="tritonserver", proc=self.proc)
            self.stopped = True


def _ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def triton_server(
    repo: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    grpc_port: int = 0,
    metrics_port: int = 0,
    extra_args: Sequence[str] = (),
) -> Iterator[TritonProcess]:
    """Start tritonserver on ``host`` (0 = a free port), wait for /v2/health/ready, stop it by PID on exit.
    With a port left to the OS that another process takes before Triton binds it, it starts again on other ports."""
    venv = ensure_triton_venv()
    attempts = PORT_ATTEMPTS if 0 in (http_port, grpc_port, metrics_port) else 1
    server = start_retrying_port(
        lambda: _start_triton(repo, venv, host, [p or free_port(host) for p in (http_port, grpc_port, metrics_port)], extra_args),
        _wait_ready, attempts=attempts, name="tritonserver", output=lambda s: s.log_tail())
    try:
        yield server
    finally:
        server.stop()


def _start_triton(repo: Path, venv: Path, host: str, ports: List[int], extra_args: Sequence[str]) -> TritonProcess:
    site = _site_tritonserver(venv)
    argv = [
        str(site / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={site / 'backends'}",
        f"--http-address={host}", f"--http-port={ports[0]}",
        f"--grpc-address={host}", f"--grpc-port={ports[1]}",
        f"--metrics-address={host}", f"--metrics-port={ports[2]}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    return _spawn(argv, venv, host, ports, repo.parent / f"tritonserver-{host}-{ports[0]}.log")


def _spawn(argv: List[str], venv: Path, host: str, ports: Sequence[int], log: Path) -> TritonProcess:
    """Start ``argv`` (a tritonserver command line) in a session of its own, output to ``log``."""
    site = _site_tritonserver(venv)
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LD_LIBRARY_PATH"] = f"{LIBPYTHON_DIR}:{site / 'external_libs'}" if (site / "external_libs").is_dir() else str(LIBPYTHON_DIR)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return TritonProcess(host=host, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], pid=proc.pid, log=log, argv=argv, proc=proc)


# --- a rendered Deployment's container, as the kubelet starts it -----------------------------------------


def kube_expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' substitution of ``$(VAR)`` in a container's command, args and env values (the rules documented on
    core/v1 Container.args and EnvVar.value, implemented in kubernetes/kubernetes
    third_party/forked/golang/expansion/expand.go, whose test table tests/integration/test_triton_restricted_api.py
    replays): ``$(NAME)`` becomes the variable's value when it is defined and stays as written when not, ``$$``
    becomes ``$``, any other ``$`` (a shell-style ``$NAME``, ``${NAME}``, an unclosed ``$(``) stays as written, and
    a substituted value is not expanded again."""
    out: List[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$" or i + 1 == n:
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":  # escaped operator
            out.append("$")
            i += 2
        elif text[i + 1] == "(":
            close = text.find(")", i + 2)
            if close < 0:  # an incomplete reference: kept, and scanning goes on after "$("
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:close]
                out.append(env.get(name, f"$({name})"))
                i = close + 1
        else:  # an operator that opens no reference
            out.append(text[i:i + 2])
            i += 2
    return "".join(out)


def _secret_value(secrets: Sequence[Mapping[str, Any]], namespace: str, name: str, key: str) -> Optional[str]:
    for secret in secrets:
        meta = secret.get("metadata", {})
        if secret.get("kind") == "Secret" and meta.get("name") == name and meta.get("namespace", namespace) == namespace:
            if key in (secret.get("stringData") or {}):
                return str(secret["stringData"][key])
            if key in (secret.get("data") or {}):
                return base64.b64decode(secret["data"][key]).decode()
            return None
    return None


def container_env(container: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]], namespace: str = "") -> Dict[str, str]:
    """The environment the kubelet gives ``container`` (its ``env`` list; the Deployment sets enableServiceLinks false):
    ``value`` expanded against the variables defined before it, ``valueFrom.secretKeyRef`` read from ``secrets`` (the
    rendered Secret objects, ``data`` base64 or ``stringData``). A missing Secret or key that is not ``optional`` is
    the kubelet's CreateContainerConfigError: raised here as a LookupError."""
    env: Dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = kube_expand(str(var.get("value", "")), env)
            continue
        ref = var["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise NotImplementedError(f"env {var['name']}: only value and valueFrom.secretKeyRef are modelled, got {var['valueFrom']}")
        found = _secret_value(secrets, namespace, ref["name"], ref["key"])
        if found is None:
            if ref.get("optional"):
                continue
            raise LookupError(f"env {var['name']}: secret \"{ref['name']}\" or its key \"{ref['key']}\" not found (CreateContainerConfigError)")
        env[var["name"]] = found
    return env


def _arg_port(args: Sequence[str], flag: str) -> int:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    if not values:
        raise ValueError(f"the arguments set no {flag}=: {list(args)}")
    return int(values[-1])  # getopt: the last one counts


@contextlib.contextmanager
def triton_server_args(args: Sequence[str], log_dir: Path, *, host: str = "127.0.0.1") -> Iterator[TritonProcess]:
    """Start tritonserver with exactly ``args`` (a rendered container's args, ``$(VAR)`` already substituted), plus only
    what the NGC image has built in and this machine lacks: the backend directory of the wheel, and listening on
    ``host`` alone instead of every address. The ports come from ``args``. Waits for /v2/health/ready and stops it by
    PID on exit; PortTaken when a port is held by another process (the caller picks others)."""
    venv = ensure_triton_venv()
    site = _site_tritonserver(venv)
    ports = [_arg_port(args, f) for f in ("--http-port", "--grpc-port", "--metrics-port")]
    argv = [str(site / "bin" / "tritonserver"), *args, f"--backend-directory={site / 'backends'}",
            f"--http-address={host}", f"--grpc-address={host}", f"--metrics-address={host}"]
    server = _spawn(argv, venv, host, ports, log_dir / f"tritonserver-{host}-{ports[0]}.log")
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()


def _wait_ready(server: TritonProcess) -> None:
    """Until /v2/health/ready answers (bounded); _PortTaken when it exited because a port was taken."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(server.host, server.http_port):
        if server.proc is not None and server.proc.poll() is not None:
            if port_taken(server.log_tail()):
                raise PortTaken
            raise RuntimeError(f"tritonserver exited before ready:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"tritonserver not ready on {server.host}:{server.http_port} within {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
        time.sleep(0.2)


# --- load generation (tritonclient, HTTP) -------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    """One request as its client saw it: wall-clock start and end (time.time(), as Prometheus timestamps)."""

    start: float
    end: float
    ok: bool

    @property
    def latency(self) -> float:
        return self.end - self.start


def _client(url: str) -> Any:
    httpclient = importlib.import_module("tritonclient.http")  # no type information: Any
    return httpclient.InferenceServerClient(url=url, connection_timeout=10.0, network_timeout=60.0)


def _request(url: str) -> Any:
    httpclient = importlib.import_module("tritonclient.http")
    numpy = importlib.import_module("numpy")
    data = numpy.arange(4, dtype=numpy.float32)
    inp = httpclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(data)
    return [inp]


class Load:
    """Bounded load on one Triton model: ``concurrency`` closed-loop clients, or, with ``period_s``, a burst of
    ``concurrency`` simultaneous requests every ``period_s`` seconds (a low, open-loop rate).

    Stops at ``stop()``, after ``max_s`` seconds, or after ``max_requests`` requests, whichever comes first.
    """

    def __init__(self, url: str, model: str = "sleeper", *, concurrency: int = 1, period_s: Optional[float] = None,
                 max_s: float = 120.0, max_requests: int = 200_000) -> None:
        self.url, self.model, self.concurrency, self.period_s = url, model, concurrency, period_s
        self.max_s, self.max_requests = max_s, max_requests
        self.completed: List[Completed] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def _record(self, item: Completed) -> bool:
        with self._lock:
            self.completed.append(item)
            return len(self.completed) < self.max_requests

    def _closed_loop(self, deadline: float, offset: float = 0.0) -> None:
        client = _client(self.url)
        inputs = _request(self.url)
        try:
            if offset:
                self._stop.wait(offset)
            while not self._stop.is_set() and time.monotonic() < deadline:
                start = time.time()
                try:
                    client.infer(self.model, inputs)
                    ok = True
                except Exception:  # a restarting server refuses connections: counted, not fatal
                    ok = False
                    self._stop.wait(0.05)
                if not self._record(Completed(start, time.time(), ok)):
                    break
                if self.period_s is not None:
                    # open loop: the next burst starts period_s after this one started
                    self._stop.wait(max(0.0, self.period_s - (time.time() - start)))
        finally:
            client.close()

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_s
        self.started_at = time.time()
        for _thread_index in range(self.concurrency):
            thread = threading.Thread(target=self._closed_loop, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)
        self.stopped_at = time.time()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def snapshot(self) -> List[Completed]:
        with self._lock:
            return list(self.completed)


def infer_http(port: int, n: int, model: str, body: bytes, host: str = "127.0.0.1") -> List[str]:
    """``n`` inference calls to ``model`` over one keep-alive HTTP connection to host:port (a Triton or a proxy in
    front of some), one after the other; the failures as text, empty when every call was answered 200. A connection
    error ends the calls."""
    errors: List[str] = []
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for _call in range(n):
            conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200:
                errors.append(f"http {resp.status}: {answer[:200]!r}")
    except (OSError, http.client.HTTPException) as exc:
        errors.append(f"http: {exc!r}")
    finally:
        conn.close()
    return errors


def service_time(url: str, model: str = "sleeper", samples: int = 20) -> float:
    """Median latency (s) of requests sent one at a time: what a request costs without queueing."""
    client = _client(url)
    inputs = _request(url)
    try:
        client.infer(model, inputs)  # warm-up
        latencies = []
        for _sample in range(samples):
            start = time.perf_counter()
            client.infer(model, inputs)
            latencies.append(time.perf_counter() - start)
        return float(statistics.median(latencies))
    finally:
        client.close()


def observed_queue_us(completed: Sequence[Completed], service_s: float, since: float, until: float) -> Optional[float]:
    """Queue time per request as the clients see it (latency minus the unqueued service time), in microseconds,
    averaged over the successful requests that completed in [since, until]; None when there are none."""
    waits = [max(0.0, c.latency - service_s) for c in completed if c.ok and since <= c.end <= until]
    if not waits:
        return None
    return 1e6 * sum(waits) / len(waits)


def queue_waits(completed: Sequence[Completed]) -> List[Tuple[float, float]]:
    """(end, queue wait in s) per successful request of ONE model on ONE server, reconstructed from the clients'
    timestamps alone: with one model instance the server runs requests one at a time in arrival order, so a
    request starts when the one completed just before it completes, and it waited max(0, that end - its start).
    Independent of any service-time estimate; it includes the network hops between client and server (loopback)."""
    done = sorted((c for c in completed if c.ok), key=lambda c: c.end)
    out: List[Tuple[float, float]] = []
    previous_end = float("-inf")
    for item in done:
        out.append((item.end, max(0.0, previous_end - item.start)))
        previous_end = item.end
    return out


def mean_wait_us(waits: Sequence[Tuple[float, float]], since: float, until: float) -> Optional[float]:
    """Average queue wait (us) of the requests that completed in (since, until]; None when there are none."""
    chosen = [w for end, w in waits if since < end <= until]
    return 1e6 * sum(chosen) / len(chosen) if chosen else None
