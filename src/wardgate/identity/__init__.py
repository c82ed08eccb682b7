"""Who is calling and what they may do: accounts and sessions (`accounts`), API keys (`api_keys`,
`key_material`), input rules (`validation`), role rules and their messages (`rules`), and the one
path from a presented credential to a caller (`authentication`).

May import `config`, `security`, `storage`, `audit` and `sessions` (and `wardgate.errors`).
"""
