"""Framework integrations: Starlette/FastAPI, Django, SQLAlchemy, and the Redis queue (Dramatiq)."""
