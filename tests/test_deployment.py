"""Flower's deployment engine on loopback, secured as the README says: TLS with `fedgan certs`'s
CA, SuperNode authentication with registered keys, the operator's registry of image counts. One
SuperLink, three SuperNodes each pointed at its own hospital store, the package's Flower app
submitted with `flwr run`, processes stopped by PID."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedgan.config import PreprocessConfig, StoreConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.federation.certs import make_certificates
from fedgan.federation.simulate import FLOWER_ENVIRONMENT
from fedgan.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = (
    "model.resolution=16 model.generator-width=32 model.discriminator-width=8 model.latent-dim=8 "
    "train.batch-size=4 train.sample-count=8"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(scope="module")
def hospital_stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three hospitals with their own photographs (different seeds), each prepared into its own store."""
    root = tmp_path_factory.mktemp("hospitals")
    stores = []
    for k in range(3):
        write_fundus_set(root / f"photos{k}", count=8 + 2 * k, size=128, seed=100 + k, workers=1, progress=False)
        prepare_store(
            root / f"photos{k}",
            root / f"store{k}",
            preprocess_config=PreprocessConfig(size=16),
            store_config=StoreConfig(heldout_fraction=0),
            workers=1,
            progress=False,
        )
        stores.append(root / f"store{k}")
    return stores


@dataclasses.dataclass
class Federation:
    env: dict[str, str]  # flwr's environment (its config names the SuperLink and the CA)
    certs: Path  # what `fedgan certs` made
    supernode: Callable[
        ..., subprocess.Popen
    ]  # (log name, private key, CA certificate, more flags) -> a started SuperNode


@pytest.fixture
def federation(tmp_path: Path, hospital_stores: list[Path]) -> Iterator[Federation]:
    """A TLS SuperLink with SuperNode authentication and three registered SuperNodes on 127.0.0.1."""
    certs = make_certificates(tmp_path / "certs", hospitals=4).folder  # hospital-3's key is never registered
    # SuperLink and SuperNodes start their helpers (flower-superexec, flwr-clientapp) from PATH.
    env = {
        **os.environ,
        **FLOWER_ENVIRONMENT,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    link_port = free_port()
    (tmp_path / "flwr-home").mkdir()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "hospitals"\n\n[superlink.hospitals]\n'
        f'address = "127.0.0.1:{link_port}"\nroot-certificates = "{certs / "ca.crt"}"\n'
    )
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process below
        processes.append(
            subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        return processes[-1]

    def supernode(name: str, key: Path, ca: Path, *more: str) -> subprocess.Popen:
        return start(
            name,
            "flower-supernode",
            "--root-certificates",
            str(ca),
            "--superlink",
            f"127.0.0.1:{link_port}",
            "--port",
            str(free_port()),
            "--auth-supernode-private-key",
            str(key),
            *more,
        )

    try:
        link = start(
            "superlink",
            "flower-superlink",
            "--ssl-ca-certfile",
            str(certs / "ca.crt"),
            "--ssl-certfile",
            str(certs / "superlink.crt"),
            "--ssl-keyfile",
            str(certs / "superlink.key"),
            "--enable-supernode-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(link_port),
            "--database",
            str(tmp_path / "state.db"),
            "--disable-runtime-dependency-installation",
        )
        wait_for_port(link_port, link)
        for k, store in enumerate(hospital_stores):
            registered = subprocess.run(
                [
                    str(BIN / "flwr"),
                    "supernode",
                    "register",
                    str(certs / "hospitals" / f"hospital-{k}.pub"),
                    "hospitals",
                ],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert registered.returncode == 0, registered.stdout + registered.stderr
            supernode(
                f"supernode{k}",
                certs / "hospitals" / f"hospital-{k}.key",
                certs / "ca.crt",
                "--node-config",
                f'data-dir="{store}" partition-id={k} state-dir="{tmp_path / f"state{k}"}"',
            )
        (tmp_path / "hospitals.toml").write_text(
            "[hospitals]\n"
            + "".join(f"{k} = {len(Store(store).labels('train'))}\n" for k, store in enumerate(hospital_stores))
        )
        yield Federation(env, certs, supernode)
    finally:
        for process in processes:  # by PID, then the process group for any app process left behind
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.stdout and process.stdout.close()
        assert all(p.returncode is not None for p in processes)


def flwr_run(federation: Federation, cwd: Path, run_config: str) -> None:
    run_config += f" federation.registry='{cwd / 'hospitals.toml'}'"
    result = subprocess.run(
        [str(BIN / "flwr"), "run", str(REPO), "hospitals", "--stream", "--run-config", run_config],
        env=federation.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_three_authenticated_supernodes_run_the_app_then_continue_with_secure_aggregation(
    federation: Federation, tmp_path: Path, hospital_stores: list[Path]
) -> None:
    # Intruders: a SuperNode with an unregistered key, and one that does not trust the federation's CA.
    certs = federation.certs
    other = make_certificates(tmp_path / "other-certs", hospitals=1).folder
    unregistered = federation.supernode(
        "unregistered", certs / "hospitals" / "hospital-3.key", certs / "ca.crt", "--max-retries", "1"
    )
    untrusting = federation.supernode(
        "untrusting", certs / "hospitals" / "hospital-0.key", other / "ca.crt", "--max-retries", "1"
    )
    run = tmp_path / "run"
    flwr_run(federation, tmp_path, f"federation.run-dir='{run}' federation.rounds=1 {TINY}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    sizes = [len(Store(store).labels("train")) for store in hospital_stores]
    clients = [r for r in records if "client" in r]
    assert sorted((r["round"], r["client"]) for r in clients) == [(1, 0), (1, 1), (1, 2)]
    assert all(
        r["examples"] == sizes[r["client"]] for r in clients
    )  # each SuperNode trained on its own store, all of it
    assert read_checkpoint(run)["extra"]["round"] == 1

    # The same run folder with more rounds resumes after round 1, with SecAgg+ (its weight range from the registry).
    flwr_run(federation, tmp_path, f"federation.run-dir='{run}' federation.rounds=2 federation.secagg=true {TINY}")
    secure = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][len(records) :]
    assert sorted(r["client"] for r in secure if "client" in r) == [0, 1, 2]
    assert all(r["clipped"] == 0 and r["round"] == 2 for r in secure if "client" in r)
    assert read_checkpoint(run)["extra"]["round"] == 2
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["round-0001.png", "round-0002.png"]

    # mdgan: the generator at the coordinator, each discriminator in its hospital's own state-dir
    # (all of a round's 8 generator steps in one exchange: each exchange costs every SuperNode a ClientApp process).
    split = tmp_path / "split"
    flwr_run(
        federation,
        tmp_path,
        f"federation.run-dir='{split}' federation.rounds=1 algorithm.name='mdgan' algorithm.pack=8 "
        f"model.num-classes=5 {TINY}",
    )
    judged = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines() if '"client"' in line]
    assert sorted(r["client"] for r in judged) == [0, 1, 2] and sum(r["bytes_sent"] for r in judged) > 0
    assert all((tmp_path / f"state{k}" / "round-0001.pt").exists() for k in range(3))

    # Only known hospitals get in (started with the runs above, so their retries overlap them).
    assert unregistered.wait(timeout=120) != 0 and untrusting.wait(timeout=120) != 0
    assert "Failed to activate SuperNode" in (tmp_path / "unregistered.log").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in (tmp_path / "untrusting.log").read_text()
