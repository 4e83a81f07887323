"""Which folder a signed-in user's sessions go to (ui/account.py), through AppTest."""

import hashlib

import pytest
from streamlit.testing.v1 import AppTest

from core.store.session_log import user_log_dir


def folder_script(log_dir: str):
    import streamlit as st

    from core.config import Settings
    from ui.account import signed_in_settings

    settings = Settings.from_env({"LOG_DIR": log_dir, "TTS_ENGINE": "none", "LLAVA_MODEL": "unused"})
    st.code(str(signed_in_settings(settings).log_dir))


def folder_of(tmp_path, user: dict):
    at = AppTest.from_function(folder_script, args=(str(tmp_path),))
    at.user = {"is_logged_in": True, "iss": "https://id.example", **user}
    at.run()
    assert not at.exception, at.exception
    return at.code[0].value


def test_a_user_with_a_sub_keeps_the_folder_they_always_had(tmp_path):
    assert folder_of(tmp_path, {"sub": "alice", "email": "a@example.com"}) == \
        str(tmp_path / "users" / hashlib.sha256(b"https://id.example|alice").hexdigest()[:24])


@pytest.mark.parametrize("sub", ["mallory@example.com", "email-like-sub"])
def test_an_email_never_leads_to_the_folder_of_a_user_whose_sub_is_that_text(tmp_path, sub):
    owner = folder_of(tmp_path, {"sub": sub, "email": "owner@example.com"})
    no_sub = folder_of(tmp_path, {"email": sub})
    assert owner != no_sub and owner == str(user_log_dir(tmp_path, f"https://id.example|{sub}"))
    assert folder_of(tmp_path, {"email": sub}) == no_sub  # and the same email always gets the same folder


def name_script(log_dir: str):
    from core.config import Settings
    from ui.account import signed_in_settings

    signed_in_settings(Settings.from_env({"LOG_DIR": log_dir, "TTS_ENGINE": "none", "LLAVA_MODEL": "unused"}))


def test_the_name_from_the_provider_is_shown_as_it_is(tmp_path):
    """A name or email from the identity provider is never read as Markdown (no links, no mailto)."""
    at = AppTest.from_function(name_script, args=(str(tmp_path),))
    at.user = {"is_logged_in": True, "iss": "https://id.example", "sub": "eve", "name": "**Eve** [me](https://x.example)"}
    at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.sidebar.text] == ["Signed in as **Eve** [me](https://x.example)"]
    assert not at.sidebar.caption and not at.sidebar.markdown
