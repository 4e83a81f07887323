"""Past sessions, read from the log files."""

import streamlit as st

from core.config import Settings
from core.session_log import list_session_files, read_session

settings = Settings.from_env()
st.title("History")
files = list_session_files(settings.log_dir)
if not files:
    st.info("No sessions yet. Ask something on the Chat page and it will appear here.")
for path in files[:50]:
    logged = read_session(path)
    exchanges = logged.conversation.exchanges
    first = exchanges[0].question.text if exchanges else "(no question)"
    with st.expander(f"{logged.header.get('created', path.stem)[:19]} · {first[:80]} · {len(exchanges)} turns"):
        for note in logged.notes:
            st.caption(note)
        for exchange in exchanges:
            st.markdown(f"**You:** {exchange.question.text}")
            if exchange.answer:
                st.markdown(f"**Assistant:** {exchange.answer.text}")
