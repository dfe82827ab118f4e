"""One POST to a checked address: the connection goes where the SSRF guard looked.

urllib3 is given a checked IP address (``Target.addresses``, tried in order until one
accepts the connection: a host's IPv6 address may be unreachable from here) to connect to,
and the URL's host for the ``Host`` header, TLS's SNI and the certificate check, so no
second DNS lookup happens between the check and the connect. No redirects are followed (a 3xx is the
receiver's answer, not a new address to call), no proxy from the environment is used, and
the answer's body is not read.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from stylequeue.shared.webhook_targets import Target

USER_AGENT = "stylequeue-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a status code, or why there was none."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None  # a 429's or 503's Retry-After, in seconds
    unconnected: bool = False  # no connection was made: another address may do


def _pool(target: Target, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    common = {
        "host": address,
        "port": target.port,
        "timeout": urllib3.Timeout(total=timeout),
        "retries": False,
        "maxsize": 1,
    }
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            **common,  # type: ignore[arg-type]
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ssl_context=ssl.create_default_context(),
        )
    return urllib3.HTTPConnectionPool(**common)  # type: ignore[arg-type]


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the delay form; an HTTP date is ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST ``body`` to ``target``; never raises for network trouble. The next address is
    tried only when the connection itself failed (nothing was sent)."""
    answer = Answer(None, "no address to connect to")
    for address in target.addresses:
        answer = _post(target, address, body, headers, timeout)
        if not answer.unconnected:
            break
    return answer


def _post(
    target: Target, address: str, body: bytes, headers: dict[str, str], timeout: float
) -> Answer:
    pool = _pool(target, address, timeout)
    sent = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=sent,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        status = int(response.status)
        after = retry_after(response.headers.get("Retry-After"))
        response.release_conn()
        return Answer(status, retry_after=after)
    except (NewConnectionError, ConnectTimeoutError) as exc:
        return Answer(None, f"connection failed: {exc}"[:255], unconnected=True)
    except Urllib3Timeout:
        return Answer(None, f"timed out after {timeout:g} s")
    except (HTTPError, OSError) as exc:
        return Answer(None, f"connection failed: {type(exc).__name__}: {exc}"[:255])
    finally:
        pool.close()
