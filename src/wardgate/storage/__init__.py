"""The database: the engine and sessions (`db`), the tables (`models`) and the one linear migration
chain with its commands (`schema`, `migrations/`).

May import `config` only (and `wardgate.errors`).
"""
