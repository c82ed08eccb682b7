"""Upstreams behind wardgate: which path goes where, who may reach it, what identity it is told."""
