"""The command line of the fake cloud (``make fake-cloud``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .client import FakeCloudClient
from .config import (
    CONTROL_PREFIX,
    DEFAULT_ACCESS_KEY,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_REGION,
    FakeCloudConfig,
)
from .server import FakeCloud


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A fake AWS cloud (S3, SageMaker training, CloudWatch, Logs, IAM, STS) on loopback."
    )
    parser.add_argument("--host", default=os.environ.get("FAKE_CLOUD_HOST", DEFAULT_HOST))
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FAKE_CLOUD_PORT", DEFAULT_PORT)),
        help=f"TCP port (env FAKE_CLOUD_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("FAKE_CLOUD_STATE_DIR"),
        help="where job container roots live (env FAKE_CLOUD_STATE_DIR; default a temporary dir)",
    )
    parser.add_argument("--region", default=os.environ.get("FAKE_CLOUD_REGION", DEFAULT_REGION))
    parser.add_argument(
        "--min-training-seconds", type=float, help="every job trains (and bills) at least this long"
    )
    parser.add_argument("--starting-seconds", type=float, help="time each job spends in Starting")
    parser.add_argument(
        "--vertex-port",
        type=int,
        default=int(os.environ.get("FAKE_VERTEX_PORT", -1)),
        help="also serve the fake Vertex AI JobService (gRPC, scripts/fake_vertex.py) on this port "
        "(env FAKE_VERTEX_PORT; 0 picks a free one; default: not served)",
    )
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)

    config = FakeCloudConfig.from_env()
    if args.min_training_seconds is not None:
        config.update({"min_training_seconds": args.min_training_seconds})
    if args.starting_seconds is not None:
        config.update({"starting_seconds": args.starting_seconds})
    try:
        cloud = FakeCloud(args.host, args.port, args.state_dir, config).start()
    except OSError as exc:
        print(f"fake cloud: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    vertex = None
    if args.vertex_port >= 0:
        import fake_vertex  # scripts/ is on sys.path: __main__ put it there

        gcs_root = (cloud.state_dir / "gcs") if args.state_dir else None
        vertex = fake_vertex.start_fake_vertex(args.vertex_port, gcs_root)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    if args.exit_with_parent:
        # Started by start_fake_cloud(): a test process that dies (even by SIGKILL) takes its fake along.
        parent = os.getppid()

        def _watch_parent() -> None:
            while not done.wait(1.0):
                if os.getppid() != parent:
                    done.set()

        threading.Thread(target=_watch_parent, name="fake-cloud-parent-watch", daemon=True).start()
    client = FakeCloudClient(cloud.url, args.region)
    if args.ready_file:
        tmp = Path(args.ready_file).with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": cloud.url, "pid": os.getpid()}))
        os.replace(tmp, args.ready_file)
    if not args.quiet:
        print(f"Fake cloud (moto {_moto_version()} + SageMaker training runner) on {cloud.url}", flush=True)
        print("  services: s3, sagemaker, cloudwatch, logs, iam, sts", flush=True)
        print(
            f"  controls: {cloud.url}{CONTROL_PREFIX}/  (calls, faults, config, training-jobs, reset)",
            flush=True,
        )
        print(f"  job dirs: {cloud.state_dir / 'jobs'}", flush=True)
        print("Point Airflow's AWS connection at it:", flush=True)
        print(f"  export AIRFLOW_CONN_AWS_DEFAULT='{json.dumps(client.connection())}'", flush=True)
        print(
            f"or boto3 / the AWS CLI: AWS_ENDPOINT_URL={cloud.url} AWS_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY} "
            f"AWS_SECRET_ACCESS_KEY={DEFAULT_ACCESS_KEY} AWS_DEFAULT_REGION={args.region}",
            flush=True,
        )
        if vertex is not None:
            print(f"Fake Vertex AI JobService + Cloud Logging (gRPC) on {vertex.target}, Cloud Storage (JSON API) "
                  f"on {vertex.gcs.endpoint}, buckets in {vertex.gcs_root}", flush=True)
            print("  export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false", flush=True)
            print(
                f"  export AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT='{json.dumps(fake_vertex.connection(vertex))}'",
                flush=True,
            )
        print("Ctrl-C stops it (and every training job it runs).", flush=True)
    try:
        done.wait()
    finally:
        if vertex is not None:
            vertex.stop()
        cloud.stop()
    return 0


def _moto_version() -> str:
    import moto

    return moto.__version__
