"""What passes through to the services behind wardgate: the upstream table (`upstreams`), who may
reach which (`admission`), what the upstream is told (`identity`), and the HTTP/1.1 client (`client`).

What a model call is and who may make it (`models`). May import `config`, `identity` and `usage`
(and `wardgate.errors`); the web layer's relay drives it.
"""
