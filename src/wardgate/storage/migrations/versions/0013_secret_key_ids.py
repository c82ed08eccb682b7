"""secret key ids: which secret of the ring an API key's and a recovery code's digest is under

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A digest cannot tell which secret made it: the key id is written beside it, so that
    # `wardgate check --keys` counts what a fallback still holds before it is dropped. NULL: made
    # before this revision, under whichever secret was current then.
    for table in ("api_keys", "mfa_recovery_codes"):
        op.add_column(table, sa.Column("key_id", sa.String(16), nullable=True))


def downgrade() -> None:
    for table in ("mfa_recovery_codes", "api_keys"):
        op.drop_column(table, "key_id")
