"""bounded growth: repeated refusals share one audit row; expired sessions can be pruned by index

Revision ID: 0007
Revises: 0006

A flood of rate-limited attempts is recorded once per limit bucket and window: the row carries how
many refusals it stands for (`count`) and the window it belongs to (`window_key`, unique, so that
instances sharing the database add to one row). Sessions get an index on `expires_at` for pruning.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("window_key", sa.String(length=64), nullable=True))
        batch_op.create_index("uq_audit_events_window_key", ["window_key"], unique=True)
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_auth_sessions_expires", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_sessions_expires")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("uq_audit_events_window_key")
        batch_op.drop_column("window_key")
        batch_op.drop_column("count")
