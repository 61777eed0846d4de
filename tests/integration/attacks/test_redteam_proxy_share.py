"""Red team: one sandbox spends its whole share of the egress proxy on slow heads, big heads sent a byte
at a time and idle tunnels, while another sandbox's allowed requests are timed from inside it.

The deployment, the pinned model host and the timing script are the ones of test_egress_attacks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from tests.integration.attacks.test_egress_attacks import (  # noqa: F401 (fixtures)
    MODEL,
    TIMED,
    attack_provider,
)
from tests.support.fixtures.egress_attacks import (  # noqa: F401 (fixtures)
    bridge_address,
    egress_container,
    engine,
    model,
    model_port,
    py,
    sandboxes,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# For SECONDS: SLOW connections each trickling a request head a byte every 20 ms (a new one when the
# proxy ends it), BIG ones each trickling a 60 KiB header in 512-byte pieces, and IDLE open tunnels to
# the allowed host that never send a byte. Prints the bytes trickled and the tunnels held.
HOG = r"""
import json, socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
slow, big, idle, seconds = *map(int, sys.argv[3:6]), float(sys.argv[6])
end = time.monotonic() + seconds
sent, held, socks = [0], [0], []
def trickle(piece_size, pause, head):
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("egress", 3128), timeout=5)
            for i in range(0, len(head), piece_size):
                if time.monotonic() >= end:
                    break
                s.sendall(head[i:i + piece_size])
                sent[0] += piece_size
                time.sleep(pause)
            s.close()
        except OSError:
            time.sleep(0.05)
slow_head = f"GET http://{host}:{port}/v1/models HTTP/1.1\r\n".encode() + b"x-pad: " + b"a" * 4000
big_head = f"GET http://{host}:{port}/v1/models HTTP/1.1\r\n".encode() + b"x-pad: " + b"b" * 60000
threads = [threading.Thread(target=trickle, args=(1, 0.02, slow_head)) for _ in range(slow)]
threads += [threading.Thread(target=trickle, args=(512, 0.05, big_head)) for _ in range(big)]
for t in threads:
    t.start()
for _ in range(idle):
    try:
        s = socket.create_connection(("egress", 3128), timeout=5)
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        if b" 200 " in s.recv(4096):
            held[0] += 1
            socks.append(s)
    except OSError:
        pass
for t in threads:
    t.join(seconds + 30)
print(json.dumps({"trickled": sent[0], "idle_tunnels": held[0]}))
"""


def test_a_sandbox_spending_its_share_on_slow_and_idle_connections_does_not_slow_another(
    attack_provider: DockerProvider,  # noqa: F811 (the fixture imported above)
    docker_client: docker.DockerClient,
    sandboxes: Callable[[], str],  # noqa: F811
    model_port: int,  # noqa: F811
) -> None:
    attacker, bystander = sandboxes(), sandboxes()
    baseline = json.loads(py(attack_provider, bystander, TIMED, "proxy", MODEL, str(model_port), "3"))
    assert [status for status, _ in baseline] == [200] * 3, baseline
    before = egress_container(docker_client, bystander)
    with ThreadPoolExecutor(1) as pool:
        # 64 + 16 + 40 = 120 connections: just under the sandbox's share (128), for 15 s.
        hog = pool.submit(
            py, attack_provider, attacker, HOG, MODEL, str(model_port), "64", "16", "40", "15", timeout=120
        )
        time.sleep(3.0)
        during = json.loads(py(attack_provider, bystander, TIMED, "proxy", MODEL, str(model_port), "10"))
        spent = json.loads(hog.result(120))
    after = egress_container(docker_client, bystander)
    print(f"attacker {spent}; bystander baseline {baseline}; during the attack {during}")
    assert not after["State"]["OOMKilled"] and after["RestartCount"] == before["RestartCount"]
    assert spent["idle_tunnels"] > 0, spent  # the attack really held tunnels
    assert [status for status, _ in during] == [200] * len(during), during
    assert max(seconds for _, seconds in during) < 1.0, during
