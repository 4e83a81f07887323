"""Router and picture frame: page config, logging, navigation over pages/."""

import logging

import streamlit as st

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="Talk with a picture", page_icon=":material/image:", layout="wide")

page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
    ]
)
page.run()
