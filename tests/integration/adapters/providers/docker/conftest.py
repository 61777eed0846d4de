"""The fixtures of this folder's tests, from tests.support.fixtures.docker, and the egress attacks'
(tests/support/fixtures/egress_attacks.py; a module's own fixture of the same name wins)."""

from tests.support.fixtures.docker import docker_client, either_provider, new_id, provider, store  # noqa: F401
from tests.support.fixtures.egress_attacks import bridge_address, engine, model, model_port, sandboxes  # noqa: F401
