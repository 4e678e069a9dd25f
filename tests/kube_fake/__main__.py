# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fake API server as a process of its own, for Molecule scenarios and anything else that is not pytest.

    python -m tests.kube_fake serve --kubeconfig-out PATH --requests-out PATH.jsonl --state-out PATH.json \\
        [--seed FILE.yaml] [--crds all|NAME,...] [--nfd-master [--nfd-extra-label-ns nvidia.com]] [--pid-file PATH] \\
        [--max-seconds 1800] [--pod-exit-seconds 0] [--background [--log-out PATH]]
    python tests/kube_fake/__main__.py serve ...      (the same, without the package import)

Run from the repository root. It binds 127.0.0.1 on a free port, seeds the objects of --seed (multi-document
YAML), writes the kubeconfig (server, CA, token) once it listens, appends every request to --requests-out as one
JSON line when it is answered, rewrites --state-out after every change, and stops on SIGTERM/SIGINT or after
--max-seconds. Exit status 0 when stopped (signal or time), 2 for bad arguments or an unreadable seed.

With --background it starts the server as a process of its own session (what a Molecule task or a shell script
wants: it outlives the caller's process group) and returns once the kubeconfig is written: exit status 0, or
1 when the server exited or wrote no kubeconfig within 60 s. The server's output goes to --log-out.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, List, Optional

import yaml

if TYPE_CHECKING:
    from tests.kube_fake.crds import DEFAULT_EXTRA_LABEL_NS
    from tests.kube_fake.server import FakeKube
elif __package__:
    from .crds import DEFAULT_EXTRA_LABEL_NS
    from .server import FakeKube
else:  # run as a script: python tests/kube_fake/__main__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kube_fake.crds import DEFAULT_EXTRA_LABEL_NS
    from kube_fake.server import FakeKube


STOP_WAIT_S = 20.0  # more than FakeKube.stop() takes at most


def _write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def background(args: argparse.Namespace, argv: List[str]) -> int:
    """Start `serve` (the same arguments, without --background) in a new session; wait for its kubeconfig."""
    args.kubeconfig_out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *[a for a in argv if a != "--background"]]
    log = args.log_out if args.log_out is not None else Path(os.devnull)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not args.kubeconfig_out.exists():
        if child.poll() is not None:
            print(f"kube_fake: the server exited with {child.returncode} (see {log})", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            child.terminate()
            try:
                child.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=STOP_WAIT_S)
            print(f"kube_fake: no kubeconfig at {args.kubeconfig_out} within 60 s; stopped it (see {log})", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"kube_fake: serving in the background, pid {child.pid}, kubeconfig {args.kubeconfig_out}", flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    args.kubeconfig_out.unlink(missing_ok=True)  # a stale one would point at a server that is gone
    documents: List[object] = []
    if args.seed is not None:
        try:
            documents = list(yaml.safe_load_all(args.seed.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            print(f"kube_fake: cannot read the seed {args.seed}: {exc}", file=sys.stderr)
            return 2
    for path in (args.kubeconfig_out, args.requests_out, args.state_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.requests_out.write_text("", encoding="utf-8")  # this run's requests only
    kube = FakeKube(pod_exit_seconds=args.pod_exit_seconds, requests_out=args.requests_out, state_out=args.state_out, nfd_master=args.nfd_master,
                    nfd_extra_label_ns=args.nfd_extra_label_ns.split(",") if args.nfd_extra_label_ns else ())
    try:
        if args.crds is not None:
            kube.load_crds(None if args.crds == "all" else [n.strip() for n in args.crds.split(",") if n.strip()])
        kube.seed(documents)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"kube_fake: bad seed object in {args.seed}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an API error (e.g. a pod in a namespace the seed does not create)
        print(f"kube_fake: the seed was refused: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kube.start()
    try:
        if args.pid_file is not None:
            _write_atomically(args.pid_file, f"{os.getpid()}\n", 0o644)
        _write_atomically(args.kubeconfig_out, kube.kubeconfig_path.read_text(encoding="utf-8"))
        print(f"kube_fake: serving {kube.url} (kubeconfig {args.kubeconfig_out}, pid {os.getpid()})", flush=True)
        deadline = time.monotonic() + args.max_seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"kube_fake: --max-seconds {args.max_seconds} reached, stopping", flush=True)
                break
            stop.wait(min(left, 1.0))
    finally:
        try:
            kube.stop()  # RuntimeError when a thread of it does not end: reported, after the state and pid file
        finally:
            kube.write_state()
            if args.pid_file is not None:
                args.pid_file.unlink(missing_ok=True)
    print("kube_fake: stopped", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_fake", description="The kube_fake API server as a process.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve until SIGTERM/SIGINT or --max-seconds")
    run.add_argument("--kubeconfig-out", type=Path, required=True, help="where to write the kubeconfig once listening (mode 0600)")
    run.add_argument("--requests-out", type=Path, required=True, help="JSON lines, one per request, appended as answered (emptied at start)")
    run.add_argument("--state-out", type=Path, required=True, help="every object as a v1 List (JSON), rewritten after every change")
    run.add_argument("--seed", type=Path, help="multi-document YAML of objects to create first (Namespaces, Nodes, Pods, DaemonSets, PDBs, ...)")
    run.add_argument("--pid-file", type=Path, help="write the process id here; removed on exit")
    run.add_argument("--max-seconds", type=float, default=1800.0, help="stop by itself after this long (default 1800)")
    run.add_argument("--pod-exit-seconds", type=float, default=0.0,
                     help="how long pods take to stop after a graceful delete or eviction (default 0: at once)")
    run.add_argument("--crds", help="create vendored CRDs first: 'all' or comma-separated CRD names, kinds or plurals (NodeFeature,ServiceMonitor)")
    run.add_argument("--nfd-master", action="store_true", help="run nfd-master's part: NodeFeature objects' spec.labels become node labels")
    run.add_argument("--nfd-extra-label-ns", default=",".join(DEFAULT_EXTRA_LABEL_NS),
                     help="with --nfd-master: nfd-master's extraLabelNs, comma-separated (default: nvidia.com, as the device plugin chart sets it)")
    run.add_argument("--background", action="store_true", help="start the server in a session of its own, return once it listens")
    run.add_argument("--log-out", type=Path, help="with --background: where the server's output goes (appended)")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    if args.max_seconds <= 0 or args.pod_exit_seconds < 0:
        parser.error("--max-seconds must be > 0 and --pod-exit-seconds >= 0")
    if args.background:
        return background(args, arguments)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
