"""Dev-only helpers shared by tests/ and bench/: never imported by the newsletter package.

- ``testkit.net``: free ports and waiting for a listener;
- ``testkit.smtp``: the loopback SMTP server (``testkit/smtp_server.py``, aiosmtpd with faults)
  and the misbehaving relay (``testkit/misbehaving_relay.py``), each in its own process;
- ``testkit.processes``: the `newsletter` command as a background process, and the one kill -9
  harness the crash tests use;
- ``testkit.tls``: a self-signed certificate for the TLS relays.
"""
