"""Drive smtpkit with Python's smtplib, for the e2e tests.

Usage: /usr/bin/python3 smtplib_client.py SPEC

SPEC is a JSON object:
  mode      "smtp" (default), "ssl" (SMTP_SSL, implicit TLS) or "lmtp"
  host, port
  starttls  true to STARTTLS after the first EHLO
  cafile    the certificate to trust for TLS (hostname checked too)
  user, password, mech ("PLAIN" or "LOGIN"), ir (send an initial
            response, default true): AUTH through smtplib.SMTP.auth
  raw_auth  a command sent as it is with docmd, e.g. "AUTH PLAIN ..."
  from, to  the envelope (to is a list)
  message   path of a message file, sent as bytes with sendmail()
  mail_options  MAIL parameters for sendmail, e.g. ["SMTPUTF8"]
  utf8_without_smtputf8  true: also try the UTF-8 addresses without
            SMTPUTF8, with the command encoding forced to UTF-8

It prints a JSON object: "features" (the last EHLO's keywords) and
"replies", the [code, text] reply of each step by name.
"""

import json
import smtplib
import ssl
import sys


def reply(r):
    code, text = r
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [code, text]


def main():
    spec = json.loads(sys.argv[1])
    host, port = spec["host"], int(spec["port"])
    out = {"replies": {}}
    rep = out["replies"]

    ctx = None
    if spec.get("cafile"):
        ctx = ssl.create_default_context(cafile=spec["cafile"])

    mode = spec.get("mode", "smtp")
    if mode == "ssl":
        s = smtplib.SMTP_SSL(host, port, local_hostname="client.example", timeout=60, context=ctx)
    elif mode == "lmtp":
        s = smtplib.LMTP(host, port, local_hostname="client.example", timeout=60)
    else:
        s = smtplib.SMTP(host, port, local_hostname="client.example", timeout=60)

    rep["ehlo"] = reply(s.ehlo())  # LHLO for LMTP
    out["features_before_tls"] = sorted(s.esmtp_features)
    if spec.get("starttls"):
        rep["starttls"] = reply(s.starttls(context=ctx))
        rep["ehlo_tls"] = reply(s.ehlo())
    out["features"] = sorted(s.esmtp_features)
    if mode == "ssl" or spec.get("starttls"):
        out["tls_version"] = s.sock.version()

    if spec.get("raw_auth"):
        rep["auth"] = reply(s.docmd(spec["raw_auth"]))

    if spec.get("user"):
        s.user, s.password = spec["user"], spec["password"]
        mech = spec["mech"]
        try:
            rep["auth"] = reply(
                s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=spec.get("ir", True))
            )
        except smtplib.SMTPAuthenticationError as e:
            rep["auth"] = reply((e.smtp_code, e.smtp_error))
            rep["quit"] = reply(s.quit())
            print(json.dumps(out))
            return

    msg = None
    if spec.get("message"):
        with open(spec["message"], "rb") as f:
            msg = f.read()

    if mode == "lmtp" and msg is not None:
        # smtplib's data() reads one reply; LMTP sends one per accepted
        # recipient (RFC 2033 4.2), so read the others with getreply().
        rep["mail"] = reply(s.mail(spec["from"], spec.get("mail_options", [])))
        rep["rcpt"] = []
        accepted = 0
        for to in spec["to"]:
            s.command_encoding = "utf-8"  # lets a UTF-8 address go out without SMTPUTF8
            r = s.rcpt(to)
            rep["rcpt"].append(reply(r))
            accepted += r[0] == 250
        rep["data"] = [reply(s.data(msg))]
        for _ in range(accepted - 1):
            rep["data"].append(reply(s.getreply()))
    elif msg is not None:
        refused = s.sendmail(spec["from"], spec["to"], msg, mail_options=spec.get("mail_options", []))
        out["refused"] = {k: reply(v) for k, v in refused.items()}

    if spec.get("utf8_without_smtputf8"):
        # RFC 6531 3.4: a UTF-8 address without SMTPUTF8 is refused with 553.
        rep["rset0"] = reply(s.rset())
        s.command_encoding = "utf-8"
        rep["mail_no_smtputf8"] = reply(s.mail(spec["from"]))
        rep["rset1"] = reply(s.rset())
        rep["mail_ascii"] = reply(s.mail("ascii@example.com"))
        s.command_encoding = "utf-8"
        rep["rcpt_no_smtputf8"] = reply(s.rcpt(spec["to"][0]))
        rep["rset2"] = reply(s.rset())

    rep["quit"] = reply(s.quit())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
