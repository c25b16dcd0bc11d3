"""The REST API, one module per topic. Each exposes ``router(runtime) -> APIRouter``; the server
(voicebot.server) composes them with the channels' routes and the chat page.

- health: liveness and what is served
- sessions: session tokens for chat widgets and phone pages
- conversations: stored conversations, their turns and traces
- feedback: customer ratings (what `voicebot export-dataset` filters training data by)
- generator: the shared response generator, and swapping it
- privacy: erasure, the audit log, retention
- domain: the tenant's domain as served, and reloading it
- common: what several topics share (parameter bounds, OpenAPI response declarations)
"""
