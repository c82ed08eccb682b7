"""The reverse proxy's web side: dispatch of paths wardgate does not own (`dispatch`), the
streaming HTTP relay (`streaming`) and the WebSocket relay (`websocket`).

May import `proxy` (admission, identity headers, the upstream client) and `identity`.
"""
