"""single sign-on identities: one per account and issuer; stored addresses proved again

Revision ID: 0008
Revises: 0007

An account holds at most one identity per issuer (a unique index, so that two links racing cannot
both be made); a later duplicate, which only such a race could have made, is removed first.

Every stored identity's address is marked unproven until its next sign-in proves it again from the
provider's own claim: the release before stored addresses case-folded (`\\u212Aarl@` as `karl@`) and
merged onto addresses nobody had proved, so a row it wrote is no proof that an address belongs to
its account. Until then, merging by email onto such an account is refused (people link from the
account page instead).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

identities = sa.table("oauth_identities", sa.column("email_verified", sa.Boolean))

# Every identity with an earlier one (older, or as old with a smaller id) of the same account and issuer.
LATER_DUPLICATES = """
DELETE FROM oauth_identities WHERE id IN (
    SELECT later.id FROM oauth_identities AS later
    JOIN oauth_identities AS earlier
      ON earlier.user_id = later.user_id AND earlier.issuer = later.issuer
     AND (earlier.created_at < later.created_at
          OR (earlier.created_at = later.created_at AND earlier.id < later.id))
)
"""


def upgrade() -> None:
    op.execute(sa.text(LATER_DUPLICATES))
    with op.batch_alter_table("oauth_identities", schema=None) as batch_op:
        batch_op.create_index("uq_oauth_identities_user_issuer", ["user_id", "issuer"], unique=True)
    op.execute(identities.update().values(email_verified=False))


def downgrade() -> None:
    with op.batch_alter_table("oauth_identities", schema=None) as batch_op:
        batch_op.drop_index("uq_oauth_identities_user_issuer")
