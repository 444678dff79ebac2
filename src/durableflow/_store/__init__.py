"""Everything that talks to Postgres. The only package that imports asyncpg,
SQLAlchemy or alembic; the rest of durableflow calls the functions here."""
