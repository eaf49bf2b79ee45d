"""The dashboard at /ui: routes.py (the pages), views.py (what they read), forms.py, session.py (the
cookie and CSRF), lttb.py, templates/ and static/. Kept empty: service/auth.py imports session.py."""
