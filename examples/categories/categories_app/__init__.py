"""The reference app: live multi-tenant categories on Clarion.

FastAPI, SQLAlchemy (async) and Alembic on the server, a Vue 3 SPA (``web/``) on clarion-vue in
the browser. It broadcasts through ``clarion.broadcasting`` like any app would: validated events,
queued in the app's process, sent after the commit, to others than the sender. See README.md.
"""
