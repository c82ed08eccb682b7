"""the admin lock row

Revision ID: 0005 (named 0005_admin_lock before the chain became linear)
Revises: 0004

Changes that can remove an administrator (demote, disable, delete) first update this row, so they
run one at a time: otherwise two admins removing each other concurrently could each see the other
still in place and leave none (write skew).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

app_state = sa.table("app_state", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.bulk_insert(app_state, [{"key": "admin_lock", "value": ""}])


def downgrade() -> None:
    op.execute(app_state.delete().where(app_state.c.key == "admin_lock"))
