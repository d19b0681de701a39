#!/usr/bin/env python3
"""moto's S3 server with IAM enforcement, for the least-privilege test (scripts/test.sh).

moto re-computes a request's SigV4 signature from its *decoded* URL, while clients sign the
encoded one (botocore's signer expects it encoded), so a key or a listing prefix with a character
S3 clients escape (lethe's `tenant=<id>` folders, or the `/` of `prefix=a/b`) fails with
SignatureDoesNotMatch, from boto3 as from object_store (and its query is only partly decoded).
This launcher hands moto's check the URL encoded as SigV4 wants it (path: all but unreserved characters and `/`; query: all but
unreserved characters), then runs moto's server unchanged.

Usage: moto_iam_server.py -H HOST -p PORT   (INITIAL_NO_AUTH_ACTION_COUNT set by the caller)
"""

import sys
from urllib.parse import quote, unquote, urlparse

from moto.core import authorization

_check = authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action


def _authenticate_and_authorize_action(self, iam_request_cls, resource="*"):
    raw = self.uri
    parsed = urlparse(raw)
    query = "&".join(
        "=".join(quote(unquote(part), safe="-_.~") for part in pair.partition("=")[::2])
        if "=" in pair
        else quote(unquote(pair), safe="-_.~")
        for pair in parsed.query.split("&")
        if pair
    )
    self.uri = parsed._replace(path=quote(parsed.path, safe="/~"), query=query).geturl()
    try:
        return _check(self, iam_request_cls, resource)
    finally:
        self.uri = raw


authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _authenticate_and_authorize_action

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
