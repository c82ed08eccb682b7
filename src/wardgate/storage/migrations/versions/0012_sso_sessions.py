"""sso sessions: which provider session (OIDC `sid`) a wardgate session came from, for back-channel logout

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("auth_sessions", "mfa_pending_signins"):
        op.add_column(table, sa.Column("sso_provider", sa.String(32), nullable=True))
        op.add_column(table, sa.Column("sso_sid", sa.String(255), nullable=True))
    op.create_index("ix_auth_sessions_sso", "auth_sessions", ["sso_provider", "sso_sid"])


def downgrade() -> None:
    op.drop_index("ix_auth_sessions_sso", table_name="auth_sessions")
    for table in ("mfa_pending_signins", "auth_sessions"):
        op.drop_column(table, "sso_sid")
        op.drop_column(table, "sso_provider")
