"""What passes through to the services behind wardgate: the upstream table (`upstreams`), who may
reach which (`admission`), what the upstream is told (`identity`), and the HTTP/1.1 client (`client`).

May import `config` and `identity` (and `wardgate.errors`); the web layer's relay drives it.
"""
