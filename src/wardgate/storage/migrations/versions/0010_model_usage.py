"""model usage: model rules and budgets on accounts and API keys, usage records, budget counters

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35+ drops columns itself): a batch operation would copy `users`
    # and lose the expression index of 0009, which SQLAlchemy cannot reflect to copy.
    op.add_column("users", sa.Column("allowed_models", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("token_budget", sa.Text(), nullable=True))
    op.add_column("api_keys", sa.Column("models", sa.Text(), nullable=True))
    op.add_column("api_keys", sa.Column("token_budget", sa.Text(), nullable=True))
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("upstream", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("ttfb_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("metered", sa.Boolean(), nullable=False),
        sa.Column("chat_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_usage_records_at", "usage_records", ["at", "id"])
    op.create_index("ix_usage_records_user", "usage_records", ["user_id", "at"])
    op.create_index("ix_usage_records_key", "usage_records", ["api_key_id", "at"])
    op.create_index("ix_usage_records_model", "usage_records", ["model", "at"])
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("window_start", sa.BigInteger(), primary_key=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_budget_counters_expires_at", "budget_counters", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_counters_expires_at", table_name="budget_counters")
    op.drop_table("budget_counters")
    for name in ("model", "key", "user", "at"):
        op.drop_index(f"ix_usage_records_{name}", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_column("api_keys", "token_budget")
    op.drop_column("api_keys", "models")
    op.drop_column("users", "token_budget")
    op.drop_column("users", "allowed_models")
