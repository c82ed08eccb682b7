"""service keys: an API key an admin marked as acting for the people Open WebUI names

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing key acts for its owner only, as before.
    op.add_column(
        "api_keys",
        sa.Column("acts_for_users", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "acts_for_users")
