"""`fedgan certs`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, command


def add_parser(sub: Any) -> None:
    certs = command(
        sub,
        "certs",
        "make the TLS certificates and hospital keys of a secure deployment",
        """
        Writes into DIR: a certificate authority (ca.crt, ca.key), the SuperLink's TLS
        certificate for the --host names it is reached at (superlink.crt, superlink.key), and one
        EC P-384 key pair per hospital for Flower's SuperNode authentication
        (hospitals/hospital-N.key and .pub, OpenSSH format). Register each .pub with
        `flwr supernode register`, give each hospital its own .key and ca.crt, and keep ca.key
        away from the coordinator. Private keys are written with mode 600. See the README's
        "Deployment" section for the commands that use them.
        """,
        """
        fedgan certs --out certs --hospitals 3 --host coordinator.example.org --host 10.0.0.5
        fedgan certs --out /tmp/loopback-certs --hospitals 2
        """,
    )
    certs.add_argument("--out", type=Path, required=True, help="folder to create")
    certs.add_argument(
        "--hospitals", type=int, required=True, help="SuperNode key pairs to make (hospital-0 .. hospital-N-1)"
    )
    certs.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help="DNS name or IP address the SuperLink is reached at, repeatable (default: localhost and 127.0.0.1)",
    )
    certs.add_argument("--overwrite", action="store_true", help="replace a folder an earlier `fedgan certs` made")
    add_common(certs, seed=False)
    certs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.federation.certs import make_certificates

    made = make_certificates(
        args.out,
        hospitals=args.hospitals,
        hosts=tuple(args.hosts or ("localhost", "127.0.0.1")),
        overwrite=args.overwrite,
    )
    print(
        f"certificates for {', '.join(made.hosts)} and {made.hospitals} hospital key pairs in {made.folder}; "
        f"register each {made.folder / 'hospitals'}/hospital-N.pub with `flwr supernode register`"
    )
