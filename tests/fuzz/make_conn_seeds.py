#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_downstream and fuzz_upstream (tests/fuzz/corpus/{downstream,
upstream}/), one file per shape of issue 8. Input layouts: see the comments at the top of
fuzz_downstream.cc and fuzz_upstream.cc. Run from anywhere; rewrites the seeds it names."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

KV = b"Host: localhost\r\n"
BLOB = b"Host: contoso.blob.core.windows.net\r\n"


def req(line, headers=b"", body=b""):
    return line + b"\r\n" + headers + b"\r\n" + body


def down(modes, reads, cuts, payload):
    # modes: token bits 0-1, connect 2-4, slow client bit 5, ending 6-7; reads/middle in byte 1.
    return bytes([modes, reads]) + bytes(cuts) + payload


D = {
    "get_api": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV)),
    "non_utf8_host": down(0, 0, [], req(b"GET /x HTTP/1.1", b"Host: \xff\xfe\r\n")),
    "non_utf8_path": down(0, 0, [], req(b"GET /api/\xc3\x28\xff HTTP/1.1", KV)),
    "te_gzip": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: gzip\r\n", b"abc")),
    "te_xchunked": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: xchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n")),
    "te_gzip_chunked": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n")),
    "two_cl": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd")),
    "cl_and_te": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n")),
    "huge_cl": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 18446744073709551615\r\n", b"abc")),
    "chunked_trailers": down(0, 3, [80, 128], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: chunked\r\nx-fuzz-reply: 2\r\n",
                                                  b"4;ext=v\r\nAAAA\r\n4\r\nBBBB\r\n0\r\nX-Trailer: t\r\n\r\n")),
    "chunked_bad_crlf": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: chunked\r\n", b"4\r\nAAAAXX0\r\n\r\n")),
    "chunked_bare_cr": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: chunked\r\n", b"4\rXAAAA\r\n0\r\n\r\n")),
    "head_bare_cr": down(0, 0, [], b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\rX"),
    "dot_2f": down(0, 0, [], req(b"GET /kv/..%2fsecrets HTTP/1.1", KV)),
    "dot_2e2e": down(0, 0, [], req(b"GET /kv/%2e%2e%2fsecrets HTTP/1.1", KV)),
    "dot_backslash": down(0, 0, [], req(b"GET /kv/..\\secrets HTTP/1.1", KV)),
    "dot_5c": down(0, 0, [], req(b"GET /kv/..%5csecrets HTTP/1.1", KV)),
    "dot_semicolon": down(0, 0, [], req(b"GET /kv/..;/secrets HTTP/1.1", KV)),
    "strip_makes_dots": down(0, 0, [], req(b"GET /kv../tenant-b/x HTTP/1.1", KV)),
    "orders_dotdot": down(0, 0, [], req(b"GET /orders/../x HTTP/1.1", BLOB)),
    "origin": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"Origin: https://evil.example\r\n")),
    "origin_allowed": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"Origin: https://app.example\r\n")),
    "sec_fetch_site": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"Sec-Fetch-Site: cross-site\r\n")),
    "rebinding_host": down(0, 0, [], req(b"GET /api/x HTTP/1.1", b"Host: attacker.example\r\n")),
    "expect_100": down(0, 2, [60], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Expect: 100-continue\r\nContent-Length: 5\r\nx-fuzz-reply: 3\r\n", b"hello")),
    "expect_http10": down(0, 0, [], req(b"PUT /api/a HTTP/1.0", b"Expect: 100-continue\r\nContent-Length: 5\r\nx-fuzz-reply: 3\r\n", b"hello")),
    "pipelined": down(0, 2, [100], req(b"GET /api/1 HTTP/1.1", KV) + req(b"HEAD /api/2 HTTP/1.1", KV) +
                      req(b"GET /nothing HTTP/1.1", KV) + req(b"HEAD /nothing HTTP/1.1", KV) + req(b"GET /api/3 HTTP/1.1", KV + b"x-fuzz-reply: 2\r\n")),
    "pipelined_slow_client": down(0x20, 0, [], (req(b"GET /nothing HTTP/1.1", KV) + req(b"GET /api/y HTTP/1.1", KV)) * 30),
    "connection_lists": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"Connection: x-a\r\nConnection: x-b, keep-alive\r\nx-a: 1\r\nx-b: 2\r\nx-fuzz-reply: 8\r\n")),
    "reply_204": down(0, 0, [], req(b"DELETE /api/x HTTP/1.1", KV + b"x-fuzz-reply: 1\r\n")),
    "reply_304": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"If-None-Match: \"x\"\r\nx-fuzz-reply: 7\r\n")),
    "reply_close_delimited": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"x-fuzz-reply: 6\r\n") + req(b"GET /api/y HTTP/1.1", KV)),
    "reply_close_delimited_http10": down(0, 0, [], req(b"GET /api/x HTTP/1.0", b"x-fuzz-reply: 6\r\n")),
    "early_403_upload": down(0, 3, [90, 128], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 100\r\nx-fuzz-reply: 5\r\n", b"x" * 100)),
    "upstream_reset_midbody": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"x-fuzz-reply: 9\r\n")),
    "cae_401_replay": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"x-fuzz-reply: 4\r\n")),
    "cae_401_body": down(0, 0, [], req(b"PUT /api/x HTTP/1.1", KV + b"x-fuzz-reply: 4\r\nContent-Length: 2\r\n", b"hi")),
    "scope_auto": down(0, 0, [], req(b"GET /kv/secrets/a HTTP/1.1", KV) + req(b"GET /kv/secrets/b HTTP/1.1", KV)),
    "scope_auto_two_scopes": down(0, 0, [], req(b"GET /kv/secrets/a HTTP/1.1", KV + b"x-fuzz-reply: 1\r\n")),
    "scope_auto_no_challenge": down(0, 0, [], req(b"GET /kv/secrets/a HTTP/1.1", KV + b"x-fuzz-reply: 2\r\n")),
    "scope_auto_put": down(2, 0, [], req(b"PUT /kv/secrets/a HTTP/1.1", KV + b"Content-Length: 3\r\n", b"abc")),
    "host_template": down(0, 0, [], req(b"GET /c/b?sig=secret&sv=1 HTTP/1.1", b"Host: acct.blob.core.windows.net\r\nx-ms-version: 2015-01-01\r\n")),
    "host_template_ip": down(0, 0, [], req(b"GET /c/b HTTP/1.1", b"Host: 0x7f.0.0.1.blob.core.windows.net\r\n")),
    "host_userinfo": down(0, 0, [], req(b"GET /c/b HTTP/1.1", b"Host: evil@acct.blob.core.windows.net\r\n")),
    "host_slash": down(0, 0, [], req(b"GET /api/x HTTP/1.1", b"Host: foo/bar\r\n")),
    "two_hosts": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + KV)),
    "absolute_form": down(0, 0, [], req(b"GET http://contoso.blob.core.windows.net/orders/a HTTP/1.1", BLOB)),
    "inbound_auth_reject": down(0, 0, [], req(b"GET /v1.0/me HTTP/1.1", b"Host: graph.local\r\nAuthorization: Bearer app\r\n")),
    "headers_rules": down(0, 0, [], req(b"GET /orders/a HTTP/1.1", BLOB + b"x-remove-me: 1\r\nx-route: app\r\nAuthorization: Bearer app\r\n")),
    "method_not_allowed": down(0, 0, [], req(b"PATCH /orders/a HTTP/1.1", BLOB)),
    "connect_method": down(0, 0, [], req(b"CONNECT localhost:443 HTTP/1.1", KV)),
    "upgrade": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"Connection: Upgrade\r\nUpgrade: websocket\r\n")),
    "http10_no_host": down(0, 0, [], req(b"GET /api/x HTTP/1.0", b"")),
    "http11_no_host": down(0, 0, [], req(b"GET /api/x HTTP/1.1", b"")),
    "two_spaces": down(0, 0, [], req(b"GET  /api/x HTTP/1.1", KV)),
    "header_name_space": down(0, 0, [], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer Encoding: chunked\r\nContent-Length: 1\r\n", b"x")),
    "empty_header_name": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b": x\r\n")),
    "big_header": down(0, 0, [], req(b"GET /api/x HTTP/1.1", KV + b"X-Big: " + b"a" * 9000 + b"\r\n")),
    "long_uri": down(0, 0, [], req(b"GET /api/" + b"u" * 2100 + b" HTTP/1.1", KV)),
    "head_no_route": down(0, 0, [], req(b"HEAD /nothing HTTP/1.1", KV)),
    "half_close_bodiless": down(0x80, 1, [255], req(b"GET /api/x HTTP/1.1", KV)),
    "half_close_midbody": down(0x80, 2 + 8, [60], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 10\r\n", b"0123456789")),
    "reset_midbody": down(0xc0, 2 + 8, [60], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Content-Length: 10\r\n", b"0123456789")),
    "reset_after": down(0x40, 0, [], req(b"GET /api/x HTTP/1.1", KV)),
    "token_fetch": down(2, 0, [], req(b"GET /api/x HTTP/1.1", KV)),
    "token_fail": down(3, 0, [], req(b"GET /api/x HTTP/1.1", KV) + req(b"GET /api/y HTTP/1.1", KV)),
    "connect_dns": down(1 << 2, 0, [], req(b"GET /api/x HTTP/1.1", KV)),
    "connect_tls": down(2 << 2, 0, [], req(b"PUT /api/x HTTP/1.1", KV + b"Content-Length: 2\r\n", b"hi")),
    "connect_timeout": down(3 << 2, 0, [], req(b"GET /api/x HTTP/1.1", KV)),
    "connect_refused": down(4 << 2, 0, [], req(b"HEAD /api/x HTTP/1.1", KV)),
    "byte_by_byte": down(0, 7, [1, 1, 1, 1, 1, 1], req(b"PUT /orders/a HTTP/1.1", BLOB + b"Transfer-Encoding: chunked\r\n", b"1\r\nA\r\n0\r\n\r\n")),
}


def up(modes, reads, cuts, payload):
    # modes: request bits 0-2, pooled bit 3, ending bits 4-5, slow client bit 6, answer at the head bit 7.
    return bytes([modes, reads]) + bytes(cuts) + payload


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
U = {
    "ok": up(0, 0, [], OK),
    "ok_split": up(0, 4, [10, 128, 200], OK),
    "head": up(1, 0, [], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    "chunked_trailers": up(0, 0, [], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    "chunked_bad_crlf": up(0, 0, [], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    "gzip_chunked": up(0, 0, [], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
    "two_cl": up(0, 0, [], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
    "cl_te": up(0, 0, [], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
    "no_length_close": up(0, 0, [], b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"),
    "no_length_http10_client": up(4, 0, [], b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
    "status_204_cl": up(0, 0, [], b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    "status_304": up(0, 0, [], b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n"),
    "huge_status_line": up(0, 0, [], b"HTTP/1.1 200 " + b"O" * 66000 + b"\r\nContent-Length: 0\r\n\r\n"),
    "huge_header": up(0, 0, [], b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 66000 + b"\r\nContent-Length: 0\r\n\r\n"),
    "connection_lists": up(0, 0, [], b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: x-b\r\nx-a: 1\r\nx-b: 2\r\nContent-Length: 0\r\n\r\n"),
    "continue_then_ok": up(5, 0, [], b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
    "continue_no_expect": up(0, 0, [], b"HTTP/1.1 100 Continue\r\nX: y\r\n\r\n" + OK),
    "switching_protocols": up(0, 0, [], b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx"),
    "cae_401": up(0, 0, [], b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnt9fQ==\"\r\nContent-Length: 0\r\n\r\n"),
    "invalid_token_put": up(2, 0, [], b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\"\r\nContent-Length: 1\r\n\r\nx"),
    "challenge_non_utf8": up(0, 0, [], b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"\xff\xfe\"\r\nx-ms-error-code: \xc3\x28\r\nContent-Length: 0\r\n\r\n"),
    "early_403_upload": up(0x82, 0, [], b"HTTP/1.1 403 Forbidden\r\nx-ms-error-code: AuthorizationFailure\r\nContent-Length: 9\r\n\r\nforbidden"),
    "early_403_chunked_upload": up(0x83, 0, [], b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"),
    "reset_midbody": up(0x10, 2, [128], b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 40),
    "eof_midbody": up(0, 2, [128], b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 40),
    "eof_midhead": up(0, 0, [], b"HTTP/1.1 200 OK\r\nContent-Le"),
    "pooled_eof_before_response": up(0x08, 0, [], b""),
    "pooled_reset_before_response": up(0x18, 0, [], b""),
    "pooled_put_eof": up(0x0a, 0, [], b""),
    "garbage": up(0, 0, [], b"SSH-2.0-OpenSSH_9.2\r\n"),
    "bare_lf": up(0, 0, [], b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    "obs_fold": up(0, 0, [], b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
    "status_999": up(0, 0, [], b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok"),
    "no_reason": up(0, 0, [], b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"),
    "http10_response": up(0, 0, [], b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "pipelined_extra": up(0, 0, [], OK + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"),
    "big_body_slow_client": up(0x40, 3, [50, 128], b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"q" * 300000),
    "post_ok": up(6, 0, [], b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    "delete_chunked": up(7, 0, [], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
}

for name, seeds in (("downstream", D), ("upstream", U)):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
