"""A real OpenID Connect provider on loopback for the sign-in tests: oidc-provider-mock.

It serves discovery (/.well-known/openid-configuration), authorization, token, userinfo, JWKS and
end-session endpoints, signs real ID tokens, and accepts any client id and secret. Its authorization
page is a form: type a subject (`sub`) and press Authorize, and that user is signed in, with
email = sub. sign_in() below fills it in, as a person would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def oidc_provider() -> Iterator[str]:
    """Run the provider in a thread on a free port; yields its base URL (the token issuer)."""
    from oidc_provider_mock import run_server_in_thread

    # Plain http is fine on loopback: Authlib takes http://localhost as a secure transport (RFC 8252),
    # so neither the provider nor the app needs AUTHLIB_INSECURE_TRANSPORT.
    with run_server_in_thread(port=0) as server:
        yield f"http://localhost:{server.server_port}"


def auth_secrets(provider_url: str, app_port: int) -> str:
    """The `[auth]` section of .streamlit/secrets.toml for the app on app_port, as a person writes it."""
    return (
        "[auth]\n"
        f'redirect_uri = "http://localhost:{app_port}/oauth2callback"\n'
        'cookie_secret = "a-test-cookie-secret-of-enough-length"\n'
        'client_id = "talk-with-a-picture"\n'
        'client_secret = "any-secret-the-mock-accepts"\n'
        f'server_metadata_url = "{provider_url}/.well-known/openid-configuration"\n'
    )


def sign_in(page, subject: str) -> None:
    """On the provider's authorization form (where the app's sign-in sent the browser), sign in as subject."""
    page.wait_for_selector("text=Authorize Client")
    page.locator("input[name=sub]").fill(subject)
    page.get_by_role("button", name="Authorize").click()


def confirm_sign_out(page) -> None:
    """On the provider's end-session page (where the app's sign-out sent the browser), confirm."""
    page.get_by_role("button", name="End session").click()
