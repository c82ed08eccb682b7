"""Security primitives: session tokens (`tokens`), password hashing (`passwords`), keys derived from
the site's secret (`keys`), the response-header policy (`headers`) and rate limits (`ratelimit`).

May import `config` only (and `wardgate.errors`): pure mechanisms with no storage of their own
(the rate limiter's Redis is its own store, chosen by URL).
"""
