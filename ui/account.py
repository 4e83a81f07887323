"""Who is using the app, and so which folder their sessions live in.

Without sign-in configured (a local, single-user app) everyone shares LOG_DIR. With st.login set
up in .streamlit/secrets.toml ([auth] section, OpenID Connect), a user must sign in, and their
sessions are stored, listed and searched under a folder of their own.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.config import ConfigError, Settings
from core.store.session_log import user_log_dir


def signed_in_settings(settings: Settings) -> Settings:
    """settings with log_dir set to this user's folder; asks to sign in (and stops) when needed."""
    logged_in = st.user.get("is_logged_in")
    if logged_in is None:  # sign-in is not configured
        return settings
    if not logged_in:
        st.title("Talk with a picture")
        st.info("Sign in to talk with your pictures and see your past sessions.", icon=":material/lock:")
        st.button("Sign in", icon=":material/login:", on_click=st.login)
        st.stop()
    issuer, sub, email = st.user.get("iss", ""), st.user.get("sub"), st.user.get("email")
    if not (sub or email):
        st.error("Your sign-in provider gave no user id (sub) or email, so your sessions cannot be kept apart.")
        st.stop()
    # sub is unique per issuer; an email only stands in without one, in a namespace of its own
    by, subject = ("sub", sub) if sub else ("email", email)
    with st.sidebar:
        # st.text: a name or email from the provider is shown as it is (no Markdown, no mailto link)
        st.text(f"Signed in as {email or st.user.get('name') or 'you'}")
        st.button("Sign out", icon=":material/logout:", on_click=st.logout)
    return replace(settings, log_dir=user_log_dir(settings.log_dir, f"{issuer}|{subject}", by=by))


def page_settings() -> Settings:
    """What every page starts with: the settings from the environment (a configuration error is
    shown, and the page stops), with this user's log folder (asking to sign in when needed).

    Called by each page rather than by streamlit_app.py: AppTest runs a page of pages/ without the
    entry script after the first run, so a value the entry script computed would be stale there."""
    try:
        settings = Settings.from_env()
    except ConfigError as e:  # every variable the app cannot use, each with its fix
        st.title("Talk with a picture")
        for problem in e.problems:
            st.error(f"Configuration error: {problem}", icon=":material/error:")
        st.info("Fix the environment variable(s) above and restart the app.", icon=":material/info:")
        st.stop()
    return signed_in_settings(settings)
