"""Privacy: personal data masked where it is stored and logged, conversation text encrypted at
rest, and deleted on time (retention) or on request (erasure), with an audit log of counts.

Modules, one job each: ``redaction`` (find PII in a text), ``patterns`` (an integrator's patterns
per locale), ``masking`` (a whole turn and its trace), ``crypto`` (keys and Fernet), ``sealing``
(what Storage does to text on the way in and out), ``deletion``, ``retention``, ``audit``,
``rotation``, ``logs`` (a redacting log filter), ``restore`` (real values back into a generated
answer).
"""

from voicebot.privacy.redaction import Finding, redact, redact_many

__all__ = ["Finding", "redact", "redact_many"]
