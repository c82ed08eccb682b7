"""the change log names API keys in their own column

Revision ID: 0006
Revises: 0005

Entries about an API key carried the key's id in `session_id`; they now use `key_id`, so that each
column means one thing. Entries written before are moved over (the log keeps one day).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

auth_changes = sa.table(
    "auth_changes",
    sa.column("kind", sa.String),
    sa.column("session_id", sa.String),
    sa.column("key_id", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("auth_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=36), nullable=True))
    op.execute(
        auth_changes.update()
        .where(auth_changes.c.kind == "api_key")
        .values(key_id=auth_changes.c.session_id, session_id=None)
    )


def downgrade() -> None:
    op.execute(
        auth_changes.update().where(auth_changes.c.kind == "api_key").values(session_id=auth_changes.c.key_id)
    )
    with op.batch_alter_table("auth_changes", schema=None) as batch_op:
        batch_op.drop_column("key_id")
