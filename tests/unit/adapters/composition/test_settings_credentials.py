"""SANDBOX_EGRESS_CREDENTIALS and SANDBOX_EGRESS_UPSTREAM_CA in the settings: parsed into the Docker
provider's egress settings, never shown (repr, errors), refused for a host no kind allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.core.errors import ConfigError

SECRET = "Bearer PLANTED-settings-credential-42"


def test_parsed_kept_out_of_repr_and_the_ca_is_a_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    s = Settings.from_env(
        {
            "SANDBOX_EGRESS_ALLOW_DATA_APP": "api.service.test",
            "SANDBOX_EGRESS_CREDENTIALS": "api.service.test=Authorization:SVC_AUTH",
            "SVC_AUTH": SECRET,
            "SANDBOX_EGRESS_UPSTREAM_CA": str(ca),
        }
    )
    egress = s.provider_settings["docker"].egress
    assert dict(egress.credentials) == {"api.service.test": (("Authorization", SECRET),)}
    assert egress.upstream_ca == ca
    assert SECRET not in repr(s) and SECRET not in repr(egress)
    assert dict(Settings.from_env({}).provider_settings["docker"].egress.credentials) == {}


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({"SANDBOX_EGRESS_CREDENTIALS": "nowhere.test=Authorization:SVC_AUTH"}, "in no kind's allow-list"),
        ({"SANDBOX_EGRESS_CREDENTIALS": "api.anthropic.com=Authorization:UNSET_VAR"}, "UNSET_VAR"),
        ({"SANDBOX_EGRESS_CREDENTIALS": "api.anthropic.com=X:BAD_VALUE"}, "the value of BAD_VALUE"),
        ({"SANDBOX_EGRESS_UPSTREAM_CA": "/nonexistent/ca.pem"}, "SANDBOX_EGRESS_UPSTREAM_CA"),
    ],
)
def test_refused_naming_the_variable_never_the_value(environ: dict[str, str], why: str) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        Settings.from_env({**environ, "SVC_AUTH": SECRET, "BAD_VALUE": SECRET + "\r\nX: y"})
    assert "PLANTED" not in str(refused.value)
