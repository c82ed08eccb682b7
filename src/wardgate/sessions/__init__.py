"""The revocation view and everything that keeps it true: what it knows of users and keys
(`records`), the view (`view`) and its registry (`registry`), the change log written with every change
(`changes`), and its synchronisation (`sync`) through a change channel (`channel`: Redis or in-process).

May import `config`, `security` and `storage` (and `wardgate.errors`). It knows nothing of
accounts or the web: `identity` builds on it.
"""
