"""The attack suites reuse the Docker fixtures (the engine, fresh sandbox ids and their clean-up) and the
egress attacks' shared ones (tests/support/fixtures/egress_attacks.py)."""

from tests.support.fixtures.docker import docker_client, new_id  # noqa: F401
from tests.support.fixtures.egress_attacks import bridge_address, engine, model, model_port, sandboxes  # noqa: F401
