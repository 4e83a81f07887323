"""Plain Python library behind the app: no streamlit here (tests/unit/test_core_is_plain.py)."""
