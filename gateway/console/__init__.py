"""The admin console: server-rendered pages on the admin listener, signed in with OIDC.

auth.py (who: SSO, session, role), csrf.py, security.py (headers), templating.py (the
one Jinja2 environment, autoescaped), routes.py (assembly behind the auth guard),
pages.py (the pages themselves). See docs/admin.md.
"""
