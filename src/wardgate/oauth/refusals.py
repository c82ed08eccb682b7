"""What a person is told when single sign-on refuses them: one fixed message per refusal code.

The sign-in page is reached with `?error=<code>` and shows the message of that code, or a general
one for a code it does not know. It never shows text taken from the address: a link to the real
site must not be able to put an attacker's words on it.
"""

from __future__ import annotations

from types import MappingProxyType

from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.oauth.linking import (
    DOMAIN_NOT_ALLOWED,
    DOMAIN_UNVERIFIED,
    EMAIL_TAKEN,
    EMAIL_UNSUPPORTED,
    GROUP_BLOCKED,
    GROUPS_MISSING,
    IDENTITY_TAKEN,
    LINK_OTHER_BROWSER,
    LINK_SESSION_ENDED,
    LINK_TAKEN,
    MERGE_ADMIN,
    MERGE_SECOND_FACTOR,
    MERGE_TAKEN,
    MERGE_UNPROVEN,
    MERGE_UNVERIFIED,
    NO_EMAIL,
    ROLE_NOT_ALLOWED,
    SCOPE_NARROWED,
    SIGNUP_DISABLED,
)
from wardgate.oauth.state import STATE_EXPIRED, STATE_MISMATCH, STATE_MISSING, STATE_USED

GENERAL = "The sign-in could not be completed. Please try again, or sign in another way."
# The messages of the provider exchange itself, kept here (not beside the code that raises them) so
# that the sign-in page can show them without loading the OAuth client libraries.
CODE_REFUSED = "The sign-in provider did not accept this sign-in response. Please sign in again."
TOKEN_INVALID = "The sign-in provider's answer could not be verified, so the sign-in was refused."  # noqa: S105
ISSUER_MISMATCH = "The sign-in response came from a different provider than the one asked."
NO_SUBJECT = "The sign-in provider did not identify the account."
UNREACHABLE = "The sign-in provider could not be reached or sent an invalid answer. Please try again later."
UNKNOWN_PROVIDER = "Unknown or disabled sign-in provider."
LOGOUT_REFUSED = "The logout token was refused."
LOGOUT_TOKEN_USED = "This logout token was already used."  # noqa: S105 - a message

REFUSALS = MappingProxyType(
    {
        "account_disabled": ACCOUNT_DISABLED,
        # Back-channel logout answers a provider's server, not a person; listed for completeness.
        "logout_token_invalid": LOGOUT_REFUSED,
        "logout_token_used": LOGOUT_TOKEN_USED,
        "logout_token_unsigned": LOGOUT_REFUSED,
        "email_taken": EMAIL_TAKEN,
        "oauth_admin_merge": MERGE_ADMIN,
        "oauth_already_linked": MERGE_TAKEN,
        "oauth_domain": DOMAIN_NOT_ALLOWED,
        "oauth_domain_unverified": DOMAIN_UNVERIFIED,
        "oauth_email_unsupported": EMAIL_UNSUPPORTED,
        "oauth_group_blocked": GROUP_BLOCKED,
        "oauth_groups_missing": GROUPS_MISSING,
        "oauth_identity_taken": IDENTITY_TAKEN,
        "oauth_link_other_browser": LINK_OTHER_BROWSER,
        "oauth_link_session_ended": LINK_SESSION_ENDED,
        "oauth_link_taken": LINK_TAKEN,
        "oauth_merge_unproven": MERGE_UNPROVEN,
        "oauth_second_factor_merge": MERGE_SECOND_FACTOR,
        "oauth_no_email": NO_EMAIL,
        "oauth_role": ROLE_NOT_ALLOWED,
        "oauth_signup_disabled": SIGNUP_DISABLED,
        "oauth_state_invalid": STATE_EXPIRED,
        "oauth_state_mismatch": STATE_MISMATCH,
        "oauth_state_missing": STATE_MISSING,
        "oauth_state_used": STATE_USED,
        "oauth_unverified_email": MERGE_UNVERIFIED,
        "provider_code_refused": CODE_REFUSED,
        "provider_denied": "The sign-in provider did not complete the sign-in.",
        "provider_id_token": TOKEN_INVALID,
        "provider_issuer": ISSUER_MISMATCH,
        "provider_keys": UNREACHABLE,
        "provider_metadata": UNREACHABLE,
        "provider_no_code": CODE_REFUSED,
        "provider_no_id_token": TOKEN_INVALID,
        "provider_no_subject": NO_SUBJECT,
        "provider_scope": SCOPE_NARROWED,
        "provider_token": TOKEN_INVALID,
        "provider_unreachable": UNREACHABLE,
        "provider_userinfo": TOKEN_INVALID,
        "provider_userinfo_sub": TOKEN_INVALID,
        "unknown_provider": UNKNOWN_PROVIDER,
    }
)


def refusal_message(code: str) -> str:
    """The fixed message of a refusal code (the general one for a code this table does not know)."""
    return REFUSALS.get(code, GENERAL)
