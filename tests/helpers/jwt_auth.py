"""A real NATS decentralized-auth setup for tests: operator, account and user JWTs, signed
with NKeys, a server configuration that trusts them, and a user creds file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> tuple[Any, str, bytes]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    return kp, kp.public_key.decode(), seed


def _jwt(issuer: Any, issuer_pub: str, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer_pub,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    claims["jti"] = _b64(hashlib.sha256(json.dumps(claims).encode()).digest())
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


class JwtAuth:
    """Writes ``server.conf`` and ``user.creds`` (and a creds file for a stranger) to ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        op, op_pub, _ = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
        acc, acc_pub, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        operator_jwt = _jwt(op, op_pub, op_pub, "op", {"type": "operator"})
        account_jwt = _jwt(
            op,
            op_pub,
            acc_pub,
            "acc",
            {
                "type": "account",
                "limits": {
                    "subs": -1,
                    "data": -1,
                    "payload": -1,
                    "imports": -1,
                    "exports": -1,
                    "wildcards": True,
                    "conn": -1,
                    "leaf": -1,
                    "mem_storage": -1,
                    "disk_storage": -1,
                    "streams": -1,
                    "consumer": -1,
                },
            },
        )
        self.server_conf = tmp / "server.conf"
        self.server_conf.write_text(
            f"operator: {operator_jwt}\n"
            f"system_account: {acc_pub}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{ {acc_pub}: {account_jwt} }}\n"
        )
        self.user_creds = tmp / "user.creds"
        self.user_creds.write_text(self._creds(acc, acc_pub))
        # A user signed by an account the server does not know.
        other, other_pub, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.stranger_creds = tmp / "stranger.creds"
        self.stranger_creds.write_text(self._creds(other, other_pub))

    @staticmethod
    def _creds(account: Any, account_pub: str) -> str:
        _, user_pub, user_seed = _keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = _jwt(
            account,
            account_pub,
            user_pub,
            "router",
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        return (
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user_seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
