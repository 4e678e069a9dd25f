# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Debian's nginx (1.22) on loopback for tests, running a config the role nginx_lb rendered.

The role renders a config for a pod (``listen 8000``, ``/tmp`` paths, logs to stdout/stderr). ``localize``
turns it into one for an unprivileged prefix directory on this machine, replacing exact strings of the
rendered text and failing when one is absent (so a template change cannot silently escape the test):

    conf = localize(rendered, prefix, {"listen 8000;": "listen 127.0.0.1:41000;", ...})
    with nginx_server(conf, prefix, ready_url="http://127.0.0.1:41002/healthz") as nginx:
        nginx.stub_status()

``write_test_pki`` makes a throw-away CA and server certificate for the TLS tests (what a kubernetes.io/tls Secret
would hold). Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[2]
NGINX = Path(shutil.which("nginx") or "/usr/sbin/nginx")
READY_TIMEOUT_S = 15.0


def version() -> str:
    """``1.22.1`` for Debian 12's nginx."""
    out = subprocess.run([str(NGINX), "-v"], capture_output=True, text=True, check=True, timeout=10).stderr
    match = re.search(r"nginx/(\d+\.\d+\.\d+)", out)
    if not match:
        raise RuntimeError(f"cannot read the nginx version from {out!r}")
    return match.group(1)


def localize(conf: str, prefix: Path, replacements: Mapping[str, str]) -> str:
    """The rendered ``conf`` with each key of ``replacements`` replaced (each must occur), ``/tmp/`` paths moved
    under ``prefix`` and the logs written to ``prefix/access.log`` and ``prefix/error.log``."""
    mapping = {**replacements, "/tmp/": f"{prefix}/", "/dev/stdout": f"{prefix}/access.log", "/dev/stderr": f"{prefix}/error.log"}
    for old in mapping:
        if old not in conf:
            raise AssertionError(f"{old!r} does not occur in the rendered nginx.conf")
    # one pass, longest first: a replacement's result (a path under /tmp, say) is never replaced again
    pattern = re.compile("|".join(re.escape(old) for old in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda match: mapping[match.group(0)], conf)


def loopback_swaps(*, http: int, grpc: int, status: int, resolver: str, service: str, upstream_http: int, upstream_grpc: int,
                   upstream_name: Optional[str] = None, one_worker: bool = True) -> Dict[str, str]:
    """The replacements (for ``localize``) that run the role's resolver-variable config on loopback: its HTTP, gRPC
    and status listeners on 127.0.0.1 ports, the test's DNS server as the resolver, and the headless Service
    ``service`` (its FQDN as rendered) at Triton's ports, under ``upstream_name`` when the test's DNS answers another
    name. ``one_worker``: nginx keeps a resolver cache per worker; with one, a DNS change is seen by the next request
    after the one query the DNS server logs."""
    swaps = {"worker_processes auto;": "worker_processes 1;"} if one_worker else {}
    swaps.update({
        "listen 8000;": f"listen 127.0.0.1:{http};",
        "listen 8001 http2;": f"listen 127.0.0.1:{grpc} http2;",
        "listen 8080;": f"listen 127.0.0.1:{status};",
        "resolver 10.96.0.10 ": f"resolver {resolver} ",
        f'{service}:8000"': f'{upstream_name or service}:{upstream_http}"',
        f'{service}:8001"': f'{upstream_name or service}:{upstream_grpc}"',
    })
    return swaps


def with_resolv_conf(argv: Sequence[str], resolv_conf: Optional[Path]) -> List[str]:
    """``argv`` run in a mount namespace of its own in which ``resolv_conf`` is bind-mounted on /etc/resolv.conf (needs
    root), so the system resolver (glibc getaddrinfo, which nginx uses for names in ``upstream`` blocks without
    ``resolve`` at start) asks the test's DNS server, as a pod's resolv.conf points at the cluster DNS; the machine's own
    /etc/resolv.conf is untouched. None: ``argv`` as is. ``exec`` keeps the PID: it is the program's."""
    if resolv_conf is None:
        return list(argv)
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        raise RuntimeError("a resolv.conf of the test's own needs root and unshare(1) (a private mount namespace)")
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(resolv_conf), *argv]


def check_config(conf: str, prefix: Path, *, resolv_conf: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``conf`` written to ``prefix/nginx.conf`` (with ``resolv_conf``: see ``with_resolv_conf``)."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return subprocess.run(with_resolv_conf([str(NGINX), "-t", "-e", "stderr", "-p", str(prefix), "-c", str(path)], resolv_conf),
                          capture_output=True, text=True, timeout=30, check=False)


@dataclass
class NginxProcess:
    prefix: Path
    pid: int
    ready_url: str
    stopped: bool = field(default=False, repr=False)

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def access_lines(self) -> List[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stub_status(self, url: str) -> Dict[str, int]:
        """The counters of ``stub_status`` (active, accepts, handled, requests, reading, writing, waiting)."""
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        if len(numbers) != 7:
            raise AssertionError(f"unexpected stub_status: {text!r}")
        return dict(zip(("active", "accepts", "handled", "requests", "reading", "writing", "waiting"), numbers))

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT: in-flight requests finish), SIGKILL after ``timeout``; returns once neither the
        master nor a worker runs. Once stopped, a second call does nothing (the PID may be another process's by then)."""
        if not self.stopped:
            stop_process_group(self.pid, sig=signal.SIGQUIT, timeout=timeout, name="nginx")
            self.stopped = True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def nginx_server(conf: str, prefix: Path, *, ready_url: str, resolv_conf: Optional[Path] = None) -> Iterator[NginxProcess]:
    """Run nginx in the foreground on ``conf`` (written to ``prefix/nginx.conf``) until ``ready_url`` answers 200;
    stop it gracefully on exit. As root, the workers stay root so they can use the prefix directory. With
    ``resolv_conf``, nginx's system resolver reads that file (``with_resolv_conf``)."""
    check = check_config(conf, prefix, resolv_conf=resolv_conf)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    directives = "daemon off;" + (" user root root;" if os.geteuid() == 0 else "")
    argv = with_resolv_conf([str(NGINX), "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", directives],
                            resolv_conf)
    with (prefix / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = NginxProcess(prefix=prefix, pid=proc.pid, ready_url=ready_url)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(ready_url):
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited {proc.returncode} before ready:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx not ready at {ready_url} within {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            proc.wait(timeout=1)


@dataclass(frozen=True)
class Pki:
    """A throw-away CA and a server certificate it signed, as PEM files (the server's key unencrypted)."""

    ca: Path
    cert: Path
    key: Path


def write_test_pki(directory: Path, *, dns_names: Sequence[str] = ("localhost",), ip_addresses: Sequence[str] = ("127.0.0.1",),
                   valid_s: int = 3600) -> Pki:
    """A CA (``ca.crt``) and a server certificate for ``dns_names`` and ``ip_addresses`` (``tls.crt``: the leaf and the
    CA, the chain a kubernetes.io/tls Secret's tls.crt holds; ``tls.key``), EC P-256, valid ``valid_s`` seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("gpu-ops test CA")).issuer_name(name("gpu-ops test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(seconds=valid_s))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: List[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    leaf = (
        x509.CertificateBuilder().subject_name(name(dns_names[0] if dns_names else ip_addresses[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(seconds=valid_s))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(ca=directory / "ca.crt", cert=directory / "tls.crt", key=directory / "tls.key")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.cert.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    pki.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pki.key.chmod(0o600)
    return pki


# One pool behind the LB, its headless Service "triton-headless": what the tests and benchmarks that run one Triton
# Deployment's pods render (the example inventory plans a pool per MIG profile).
ONE_POOL: Tuple[Mapping[str, Any], ...] = ({"service": "triton-headless", "weight": 1, "max_replicas": 8},)


def render_role_config(workdir: Path, *extra: str, root: Path = REPO_ROOT,
                       pools: Optional[Sequence[Mapping[str, Any]]] = ONE_POOL) -> str:
    """nginx.conf as the role nginx_lb renders it: playbooks/load_balancer.yml in render mode on the example
    inventory, with ``extra`` arguments (e.g. ``-e nginx_lb_oss_version=1.22.1``) and ``pools`` as
    nginx_lb_upstream_pools (default: ONE_POOL; None: the inventory's serving pools); returns the ConfigMap's text."""
    if pools is not None:
        extra = ("-e", json.dumps({"nginx_lb_upstream_pools": [dict(pool) for pool in pools]}), *extra)
    binpath = Path(sys.executable).parent
    out = workdir / "render"
    env = dict(os.environ, PATH=f"{binpath}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", HOME=str(workdir), ANSIBLE_LOCALHOST_WARNING="0")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    argv = [
        str(binpath / "ansible-playbook"), "playbooks/load_balancer.yml", "-i", "inventories/dgx",
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", *extra,
    ]
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rendering nginx_lb failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    configmap = yaml.safe_load((out / "nginx_lb" / "01-configmap-nginx-lb-config.yaml").read_text())
    conf = configmap["data"]["nginx.conf"]
    if not isinstance(conf, str):
        raise RuntimeError("the ConfigMap has no nginx.conf")
    return conf
