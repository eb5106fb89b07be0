#!/usr/bin/python3
"""SSH keyboard-interactive client for the sshd end-to-end tests.

Run with Debian's /usr/bin/python3 (python3-paramiko is installed for it
alone). It logs in with keyboard-interactive, answers a password prompt with
--password and a code prompt with the code read from the outbox file (or a
deliberately wrong one), then runs `echo ok`.

Every step is printed to stdout as one JSON object per line, so the test can
assert on what the server asked:
  {"event": "round", "name", "instruction", "prompts": [[text, echo], ...]}
  {"event": "sms", "to", "code"}
  {"event": "answer", "prompt", "kind": "password" | "code" | "empty"}
  {"event": "auth", "ok": bool, "error"}
  {"event": "exec", "stdout", "stderr", "status"}

Exit status: 0 logged in and `echo ok` printed ok; 1 authentication refused;
2 anything else (connection, protocol, timeout, no SMS).
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import time

import paramiko


def emit(**fields):
    print(json.dumps(fields), flush=True)


def extract_code(message):
    """The first word of 6-10 digits or upper-case letters with a digit
    (the same rule as extract_code in tests/src/lib.rs)."""
    for word in re.split(r"[^0-9A-Za-z]+", message):
        if 6 <= len(word) <= 10 and re.fullmatch(r"[0-9A-Z]+", word) and re.search(r"[0-9]", word):
            return word
    return None


def outbox_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def wrong_variant(code):
    """A code of the same shape that is certainly not `code`."""
    last = code[-1]
    if last.isdigit():
        return code[:-1] + str((int(last) + 1) % 10)
    return code[:-1] + ("B" if last == "A" else "A")


class Answers:
    def __init__(self, args):
        self.args = args
        # SMS already in the outbox before we typed anything are not ours.
        self.seen_sms = len(outbox_lines(args.outbox)) if args.outbox else 0
        self.code = None

    def current_code(self):
        """The code of the newest SMS sent since we started. A retry prompt
        (after a wrong code) comes without a new SMS, so an earlier code is
        reused; before the first one, wait for it to arrive."""
        deadline = time.monotonic() + self.args.sms_wait
        while True:
            lines = outbox_lines(self.args.outbox)
            if len(lines) > self.seen_sms:
                self.seen_sms = len(lines)
                sms = json.loads(lines[-1])
                self.code = extract_code(sms.get("message", ""))
                emit(event="sms", to=sms.get("to"), code=self.code)
                return self.code
            if self.code is not None or time.monotonic() > deadline:
                if self.code is None:
                    emit(event="error", error=f"no new SMS in {self.args.outbox} after {self.args.sms_wait}s")
                return self.code
            time.sleep(0.02)

    def answer(self, prompt):
        lower = prompt.lower()
        if "password" in lower:
            emit(event="answer", prompt=prompt, kind="password")
            return self.args.password
        if "code" in lower and self.args.code != "none":
            code = self.current_code()
            if code is None:
                emit(event="answer", prompt=prompt, kind="empty")
                return ""
            if self.args.code == "wrong":
                code = wrong_variant(code)
            emit(event="answer", prompt=prompt, kind="code")
            return code
        emit(event="answer", prompt=prompt, kind="empty")
        return ""

    def handler(self, name, instruction, prompts):
        emit(event="round", name=name, instruction=instruction, prompts=[[p, bool(e)] for p, e in prompts])
        return [self.answer(p) for p, _ in prompts]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--outbox", help="outbox file (JSON lines) the code is read from")
    ap.add_argument("--code", choices=["right", "wrong", "none"], default="right")
    ap.add_argument("--sms-wait", type=float, default=10.0)
    ap.add_argument("--timeout", type=int, default=20, help="hard limit for the whole run, seconds")
    args = ap.parse_args()

    signal.signal(signal.SIGALRM, lambda *_: (emit(event="error", error="timeout"), os._exit(2)))
    signal.alarm(args.timeout)

    answers = Answers(args)
    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    transport = paramiko.Transport(sock)
    transport.auth_timeout = args.timeout
    try:
        transport.start_client(timeout=args.timeout)
        # The host key is a throwaway made by the test; nothing to verify.
        try:
            transport.auth_interactive(args.user, answers.handler)
        except paramiko.AuthenticationException as e:
            emit(event="auth", ok=False, error=str(e))
            return 1
        emit(event="auth", ok=transport.is_authenticated(), error=None)
        if not transport.is_authenticated():
            return 1
        chan = transport.open_session(timeout=args.timeout)
        chan.settimeout(args.timeout)
        chan.exec_command("echo ok")
        out = chan.makefile("rb").read().decode(errors="replace")
        err = chan.makefile_stderr("rb").read().decode(errors="replace")
        status = chan.recv_exit_status()
        emit(event="exec", stdout=out, stderr=err, status=status)
        return 0 if status == 0 and out.strip() == "ok" else 2
    except Exception as e:  # noqa: BLE001 - report anything as a harness error
        emit(event="error", error=f"{type(e).__name__}: {e}")
        return 2
    finally:
        transport.close()


if __name__ == "__main__":
    sys.exit(main())
