"""indexes for scale: every list and filter a person waits for walks an index, not the table

Revision ID: 0009
Revises: 0008

- users: listed by (created_at, id); pending ones by (role, created_at, id); searched by the
  beginning of the address or of the lower-cased name. PostgreSQL compares those two in the "C"
  collation (byte order), so that a prefix is one index range whatever the database's locale.
- auth_sessions: a person's sessions by (user_id, created_at, id); the revoked ones that have not
  expired (what start-up loads) by a partial index on expires_at.
- audit_events: newest first, overall and per event, outcome, actor and subject.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_index("ix_users_created", "users", ["created_at", "id"])
    op.create_index("ix_users_role_created", "users", ["role", "created_at", "id"])
    if postgres:
        op.execute('CREATE INDEX ix_users_email_prefix ON users ((email COLLATE "C"))')
        op.execute('CREATE INDEX ix_users_name_prefix ON users ((lower(name) COLLATE "C"))')
    else:
        op.create_index("ix_users_name_prefix", "users", [sa.text("lower(name)")])

    op.drop_index("ix_auth_sessions_user", table_name="auth_sessions")
    op.drop_index("ix_auth_sessions_revoked", table_name="auth_sessions")
    op.create_index("ix_auth_sessions_user_created", "auth_sessions", ["user_id", "created_at", "id"])
    op.create_index(
        "ix_auth_sessions_revoked_expiry",
        "auth_sessions",
        ["expires_at"],
        sqlite_where=sa.text("revoked_at IS NOT NULL"),
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )

    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_index("ix_audit_events_event", table_name="audit_events")
    op.create_index("ix_audit_events_at", "audit_events", ["at", "id"])
    for column in ("event", "outcome", "actor", "subject"):
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column, "at", "id"])


def downgrade() -> None:
    for column in ("event", "outcome", "actor", "subject"):
        op.drop_index(f"ix_audit_events_{column}", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_event", "audit_events", ["event"])

    op.drop_index("ix_auth_sessions_revoked_expiry", table_name="auth_sessions")
    op.drop_index("ix_auth_sessions_user_created", table_name="auth_sessions")
    op.create_index("ix_auth_sessions_revoked", "auth_sessions", ["revoked_at"])
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id"])

    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_users_email_prefix", table_name="users")
    op.drop_index("ix_users_name_prefix", table_name="users")
    op.drop_index("ix_users_role_created", table_name="users")
    op.drop_index("ix_users_created", table_name="users")
