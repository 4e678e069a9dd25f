# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Debian's dnsmasq on loopback for tests: a real DNS server standing in for the cluster DNS.

It answers A queries from a hosts file only (no upstream servers, no /etc/hosts, no config file), and re-reads
that file on SIGHUP, so a test can add and remove the addresses of a headless Service's "pods":

    with dnsmasq_server(tmp_path / "dns", {"triton-headless.triton.svc.cluster.local": ["127.0.0.11"]}) as dns:
        dns.set_records({"triton-headless.triton.svc.cluster.local": ["127.0.0.11", "127.0.0.12"]})
        query_a("triton-headless.triton.svc.cluster.local", dns.host, dns.port)   # -> ['127.0.0.11', '127.0.0.12']

Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

from .processes import PORT_ATTEMPTS, PortTaken, port_taken, start_retrying_port, stop_process_group

DNSMASQ = Path(shutil.which("dnsmasq") or "/usr/sbin/dnsmasq")
DEFAULT_HOST = "127.0.0.153"  # not 127.0.0.53 (systemd-resolved) nor 127.0.0.1
READY_TIMEOUT_S = 10.0
# Domains dnsmasq answers on its own authority: a name under them that the hosts file lacks gets NXDOMAIN, as from
# CoreDNS's kubernetes plugin for the cluster domain (a headless Service without ready endpoints has no address).
# Without --local, dnsmasq has no upstream to forward such a name to and answers REFUSED (dnsmasq(8), --local/--server).
LOCAL_DOMAINS = ("cluster.local",)
PROBE_NAME = "dnsmasq-answers.cluster.local"  # asked until dnsmasq answers at all (then its SIGHUP handler is installed)


def free_udp_port(host: str) -> int:
    for _attempt in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:  # dnsmasq listens on TCP too
            try:
                tcp.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def query_a(name: str, host: str, port: int, timeout: float = 1.0) -> List[str]:
    """The A records of ``name`` from the server at host:port (a minimal DNS client: one UDP query; a truncated answer,
    more addresses than 512 bytes hold, is asked again over TCP, as a resolver does: RFC 1035 4.2.1, RFC 7766)."""
    ident = random.randrange(1 << 16)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (host, port))
        data, _peer = sock.recvfrom(4096)
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != ident:
        raise RuntimeError("DNS answer with a foreign id")
    if flags & 0x0200:  # TC: truncated
        data = _query_tcp(query, host, port, timeout)
        rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
        if rid != ident:
            raise RuntimeError("DNS answer over TCP with a foreign id")
    rcode = flags & 0xF
    if rcode == 3:  # NXDOMAIN
        return []
    if rcode != 0:
        raise RuntimeError(f"DNS rcode {rcode} for {name}")
    offset = 12
    for _question in range(qd):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _answer in range(an):
        offset = _skip_name(data, offset)
        rtype, _rclass, _ttl, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += rdlength
    return sorted(addresses)


def _query_tcp(query: bytes, host: str, port: int, timeout: float) -> bytes:
    """One DNS query over TCP: each message prefixed with its length in two bytes (RFC 1035 4.2.2)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        data = b""
        for _read in range(1000):  # bounded: a 64 KiB answer arrives in far fewer reads
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
                break
    if len(data) < 14:
        raise OSError("short DNS answer over TCP")
    return data[2 : 2 + struct.unpack("!H", data[:2])[0]]


def _skip_name(data: bytes, offset: int) -> int:
    for _label in range(128):
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer
            return offset + 2
        offset += 1 + length
    raise RuntimeError("malformed DNS name")


@dataclass
class DnsmasqProcess:
    host: str
    port: int
    pid: int
    hosts_file: Path
    log: Path
    proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False, compare=False)
    stopped: bool = field(default=False, repr=False)

    @property
    def resolver(self) -> str:
        """``host:port``, as nginx's ``resolver`` directive takes it."""
        return f"{self.host}:{self.port}"

    def set_records(self, records: Mapping[str, Sequence[str]], *, wait: bool = True) -> None:
        """Replace the hosts file and make dnsmasq re-read it (SIGHUP); with ``wait``, until it answers so."""
        _write_hosts(self.hosts_file, records)
        os.kill(self.pid, signal.SIGHUP)
        if not wait:
            return
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name, addresses in records.items():
            while _addresses(name, self.host, self.port) != sorted(addresses):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dnsmasq still does not answer {name} -> {sorted(addresses)} after {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.02)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``; returns once it has exited. A second call does nothing."""
        if not self.stopped:
            stop_process_group(self.pid, timeout=timeout, name="dnsmasq", proc=self.proc)
            self.stopped = True


def _addresses(name: str, host: str, port: int) -> List[str]:
    """query_a, with a lost datagram (a timeout under load) answered as no address: the caller polls, bounded."""
    try:
        return query_a(name, host, port, timeout=0.5)
    except OSError:
        return []


def _answers(server: DnsmasqProcess) -> bool:
    """Whether dnsmasq answers a query at all (any rcode): it has started serving."""
    try:
        query_a(PROBE_NAME, server.host, server.port, timeout=0.5)
    except OSError:
        return False
    except RuntimeError:  # an answer, if not an address
        return True
    return True


def _write_hosts(path: Path, records: Mapping[str, Sequence[str]]) -> None:
    lines = [f"{address} {name}" for name, addresses in records.items() for address in addresses]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    tmp.replace(path)


@contextlib.contextmanager
def dnsmasq_server(workdir: Path, records: Mapping[str, Sequence[str]], *, host: str = DEFAULT_HOST, port: int = 0,
                   ttl: int = 1, local_domains: Sequence[str] = LOCAL_DOMAINS) -> Iterator[DnsmasqProcess]:
    """dnsmasq on host:port (0 = a free port) answering ``records`` (name -> addresses, an empty list: no address) with
    TTL ``ttl``; a name under ``local_domains`` that has no address gets NXDOMAIN. Returns once dnsmasq answers (so a
    SIGHUP from set_records finds its handler installed: before that, SIGHUP's default action would end it), also for
    no records at all. With a port left to the OS that another process takes before dnsmasq binds it, it starts again
    on another."""
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = workdir / "hosts"
    _write_hosts(hosts, records)
    attempts = 1 if port else PORT_ATTEMPTS
    server = start_retrying_port(lambda: _start(workdir, hosts, host, port or free_udp_port(host), ttl, local_domains),
                                 lambda s: _wait_answering(s, records), attempts=attempts, name="dnsmasq", output=_output)
    try:
        yield server
    finally:
        server.stop()


def _output(server: DnsmasqProcess) -> str:
    try:
        err = (server.log.parent / "dnsmasq.err").read_text(errors="replace")
    except OSError:
        err = ""
    return err + server.log_tail()


def _start(workdir: Path, hosts: Path, host: str, port: int, ttl: int, local_domains: Sequence[str]) -> DnsmasqProcess:
    log = workdir / "dnsmasq.log"
    argv = [
        str(DNSMASQ), "--keep-in-foreground", "--conf-file=/dev/null", f"--pid-file={workdir / 'dnsmasq.pid'}",
        "--no-resolv", "--no-poll", "--no-hosts", f"--addn-hosts={hosts}", f"--local-ttl={ttl}",
        f"--listen-address={host}", "--bind-interfaces", f"--port={port}", "--cache-size=0",
        f"--log-facility={log}", "--log-queries", *(f"--local=/{domain}/" for domain in local_domains),
    ]
    if os.geteuid() == 0:
        argv.append("--user=root")  # it would drop to 'dnsmasq'/'nobody', and then not read the hosts file on SIGHUP
    with (workdir / "dnsmasq.err").open("wb") as err:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    return DnsmasqProcess(host=host, port=port, pid=proc.pid, hosts_file=hosts, log=log, proc=proc)


def _wait_answering(server: DnsmasqProcess, records: Mapping[str, Sequence[str]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    want: Dict[str, List[str]] = {name: sorted(addresses) for name, addresses in records.items()}
    while not (_answers(server) and all(_addresses(name, server.host, server.port) == addresses for name, addresses in want.items())):
        if server.proc is not None and server.proc.poll() is not None:
            if port_taken(_output(server)):
                raise PortTaken
            raise RuntimeError(f"dnsmasq exited {server.proc.returncode}: {_output(server)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dnsmasq not answering on {server.host}:{server.port} within {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
        time.sleep(0.05)
