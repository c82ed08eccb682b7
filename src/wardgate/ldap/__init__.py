"""LDAP and Active Directory sign-in with Open WebUI's variables (`ENABLE_LDAP`, `LDAP_*`).

`directory` talks to the server through ldap3: a service bind, an escaped search, a bind as the
person. `signin` turns a verified person into a wardgate account and session with the same limits,
audit and second factors as a password sign-in.

May import `config`, `security`, `storage`, `audit`, `sessions`, `identity` and `wardgate.errors`;
the gateway builds it and the routes drive it.
"""
